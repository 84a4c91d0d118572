//! Tensors as they arrive in JSON: nested arrays or the Open Inference Protocol form.
//!
//! Accepted forms (both parse into a [`Tensor`], flat row-major float32 plus shape):
//! - a nested array, what `ndarray.tolist()` gives: `[[[[1, 2], [3, 4]]]]` → shape `[1,1,2,2]`;
//! - `{"shape": [1,1,2,2], "datatype": "FP32", "data": [1, 2, 3, 4]}` (`data` flat or nested,
//!   row-major; `datatype` one of `FP32`, `FP64`, `FP16`, `INT8…INT64`, `UINT8…UINT64`; the
//!   values are converted to float32 either way).
//!
//! Parsing streams numbers straight into one `Vec<f32>`: no intermediate JSON tree. Ragged
//! arrays, strings, booleans, `null` and numbers that are not finite in float32 are refused
//! with the position at fault (see `serde_path_to_error`).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// A dense float32 tensor: `data` is row-major with `shape.iter().product()` elements.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl Tensor {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The shape as exactly `N` dimensions, or `None` if the rank differs.
    pub fn shape_n<const N: usize>(&self) -> Option<[usize; N]> {
        self.shape.as_slice().try_into().ok()
    }
}

/// Shape discovered while walking a nested array.
#[derive(Default)]
struct Nest {
    data: Vec<f32>,
    /// Length seen at each depth (set by the first array finished at that depth; children
    /// finish before their parents, hence the `Option`).
    dims: Vec<Option<usize>>,
    /// Depth at which numbers sit, once the first number is seen.
    leaf_depth: Option<usize>,
}

struct NestSeed<'a> {
    depth: usize,
    nest: &'a mut Nest,
}

impl<'de> DeserializeSeed<'de> for NestSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl NestSeed<'_> {
    fn leaf<E: de::Error>(self, v: f64) -> Result<(), E> {
        match self.nest.leaf_depth {
            None => self.nest.leaf_depth = Some(self.depth),
            Some(d) if d != self.depth => {
                return Err(E::custom(format!(
                    "ragged array: a number at depth {} where other numbers sit at depth {d}",
                    self.depth
                )))
            }
            Some(_) => {}
        }
        let x = v as f32;
        if !x.is_finite() {
            return Err(E::custom(format!(
                "number {v} is not finite in float32 (|x| must be < 3.4028235e38)"
            )));
        }
        self.nest.data.push(x);
        Ok(())
    }
}

impl<'de> Visitor<'de> for NestSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or an array of numbers")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.leaf(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.leaf(v as f64)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.depth;
        if let Some(leaf) = self.nest.leaf_depth {
            if depth >= leaf {
                return Err(de::Error::custom(format!(
                    "ragged array: an array at depth {depth} where numbers sit at depth {leaf}"
                )));
            }
        }
        let mut count = 0usize;
        while seq
            .next_element_seed(NestSeed {
                depth: depth + 1,
                nest: &mut *self.nest,
            })?
            .is_some()
        {
            count += 1;
        }
        let dims = &mut self.nest.dims;
        if dims.len() <= depth {
            dims.resize(depth + 1, None);
        }
        match dims[depth] {
            None => dims[depth] = Some(count),
            Some(seen) if seen != count => {
                return Err(de::Error::custom(format!(
                    "ragged array: an array of length {count} at depth {depth} where its siblings have length {seen}"
                )))
            }
            Some(_) => {}
        }
        if count == 0 && self.nest.leaf_depth.is_some_and(|l| l > depth + 1) {
            return Err(de::Error::custom(format!(
                "ragged array: an empty array at depth {depth} among non-empty siblings"
            )));
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        if self.depth != 0 {
            return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
        }
        let t = parse_oip(map)?;
        self.nest.dims = t.shape.into_iter().map(Some).collect();
        self.nest.data = t.data;
        self.nest.leaf_depth = Some(self.nest.dims.len());
        Ok(())
    }
}

/// Parses the `{"shape", "datatype", "data"}` form.
fn parse_oip<'de, A: MapAccess<'de>>(mut map: A) -> Result<Tensor, A::Error> {
    let mut shape: Option<Vec<usize>> = None;
    let mut datatype: Option<String> = None;
    let mut data: Option<Nest> = None;
    while let Some(key) = map.next_key::<String>()? {
        match key.as_str() {
            "shape" => shape = Some(map.next_value()?),
            "datatype" => datatype = Some(map.next_value()?),
            "data" => {
                let mut nest = Nest::default();
                map.next_value_seed(NestSeed {
                    depth: 0,
                    nest: &mut nest,
                })?;
                data = Some(nest);
            }
            "name" | "parameters" => {
                map.next_value::<de::IgnoredAny>()?;
            }
            other => {
                return Err(de::Error::unknown_field(
                    other,
                    &["shape", "datatype", "data", "name", "parameters"],
                ))
            }
        }
    }
    let shape = shape.ok_or_else(|| de::Error::missing_field("shape"))?;
    let data = data.ok_or_else(|| de::Error::missing_field("data"))?.data;
    if let Some(dt) = &datatype {
        const KNOWN: &[&str] = &[
            "FP32", "FP64", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
            "UINT64",
        ];
        if !KNOWN.contains(&dt.as_str()) {
            return Err(de::Error::unknown_variant(dt, KNOWN));
        }
    }
    // ndarray (and every buffer behind it) needs the product of the non-zero dimensions
    // to fit in `isize`, even when a zero dimension makes the tensor empty.
    let fits = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d.max(1)))
        .is_some_and(|n| isize::try_from(n).is_ok());
    if !fits {
        return Err(de::Error::custom(format!(
            "shape {shape:?} is too large for any tensor"
        )));
    }
    let expected = shape.iter().product::<usize>();
    if expected != data.len() {
        return Err(de::Error::custom(format!(
            "shape {shape:?} needs {expected} values but data has {}",
            data.len()
        )));
    }
    Ok(Tensor { shape, data })
}

impl<'de> serde::Deserialize<'de> for Tensor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut nest = Nest::default();
        NestSeed {
            depth: 0,
            nest: &mut nest,
        }
        .deserialize(d)?;
        let Some(mut shape) = nest.dims.into_iter().collect::<Option<Vec<usize>>>() else {
            return Err(de::Error::custom("ragged array: inconsistent nesting"));
        };
        if shape.is_empty() {
            return Err(de::Error::custom(
                "expected an array of numbers, not a single number",
            ));
        }
        // An all-empty nest like `[[[]]]` has no leaves: its shape is the depths it saw.
        shape.truncate(nest.leaf_depth.unwrap_or(shape.len()));
        if shape.iter().product::<usize>() != nest.data.len() {
            return Err(de::Error::custom("ragged array: inconsistent nesting"));
        }
        Ok(Tensor {
            shape,
            data: nest.data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Tensor, String> {
        serde_json::from_str::<Tensor>(s).map_err(|e| e.to_string())
    }

    #[test]
    fn nested_arrays_give_their_shape() {
        let t = parse("[[[[1,2,3],[4,5,6]]]]").unwrap();
        assert_eq!(t.shape, vec![1, 1, 2, 3]);
        assert_eq!(t.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn oip_form_is_accepted() {
        let t = parse(r#"{"shape":[1,1,2,2],"datatype":"FP32","data":[1,2,3,4]}"#).unwrap();
        assert_eq!(t.shape, vec![1, 1, 2, 2]);
        assert_eq!(t.data, vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn oip_length_mismatch_is_refused() {
        assert!(parse(r#"{"shape":[2,2],"data":[1,2,3]}"#).is_err());
    }

    #[test]
    fn oversized_shapes_of_empty_tensors_are_refused() {
        // Found by the contract test: zero elements, but ndarray cannot hold the shape.
        let e = parse(r#"{"shape":[4530567944702430720,0,5,1],"data":[]}"#).unwrap_err();
        assert!(e.contains("too large"), "{e}");
        assert!(parse(r#"{"shape":[9223372036854775807,0],"data":[]}"#).is_ok());
        assert!(parse(r#"{"shape":[9223372036854775807,2,0],"data":[]}"#).is_err());
    }

    #[test]
    fn ragged_rows_are_refused() {
        let e = parse("[[[[1,2],[3]]]]").unwrap_err();
        assert!(e.contains("ragged"), "{e}");
        assert!(parse("[[1,[2]]]").is_err());
        assert!(parse("[[[1]], 2]").is_err());
        assert!(parse("[[1], []]").is_err());
    }

    #[test]
    fn strings_and_nulls_are_refused() {
        assert!(parse(r#"[["1.0", 2]]"#).is_err());
        assert!(parse("[[null]]").is_err());
        assert!(parse("[[true]]").is_err());
    }

    #[test]
    fn numbers_beyond_float32_are_refused() {
        let e = parse("[[1e39]]").unwrap_err();
        assert!(e.contains("not finite"), "{e}");
    }

    #[test]
    fn empty_arrays_give_zero_dimensions() {
        assert_eq!(parse("[]").unwrap().shape, vec![0]);
        assert_eq!(parse("[[[]]]").unwrap().shape, vec![1, 1, 0]);
    }

    #[test]
    fn float32_values_round_trip_exactly() {
        let t = parse("[0.10000000149011612]").unwrap();
        assert_eq!(t.data[0], 0.1f32);
    }
}
