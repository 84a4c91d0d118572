//! The parameters of a layer apart from its tensors, as sent and as validated.
//!
//! `stride`, `padding`, `dilation`, `groups`, `padding_mode`, `activation`, all optional
//! with PyTorch's defaults. Short forms are accepted: `stride: 2` = `[2, 2]`; `padding: 1` =
//! `[1, 1, 1, 1]`, `[ph, pw]` = `[ph, ph, pw, pw]`, `[top, bottom, left, right]`,
//! `"same"`, `"valid"`. Values arrive as signed integers so that negatives get a precise
//! refusal rather than a type error.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::json::from_value;
use super::{invalid, SpecError};
use crate::conv::{Activation, Conv2dParams, Padding, PaddingMode};

/// The members of a layer that are convolution parameters, as named on the wire (every
/// other member of an image layer is a preset parameter).
pub const PARAM_NAMES: &[&str] = &[
    "stride",
    "padding",
    "dilation",
    "groups",
    "padding_mode",
    "activation",
];

/// One integer or a list of integers, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ints(pub Vec<i64>);

impl<'de> Deserialize<'de> for Ints {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ints;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a list of integers")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ints, E> {
                Ok(Ints(vec![v]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ints, E> {
                i64::try_from(v)
                    .map(|v| Ints(vec![v]))
                    .map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ints, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<i64>()? {
                    if out.len() == 8 {
                        return Err(de::Error::invalid_length(9, &"at most 4 integers"));
                    }
                    out.push(v);
                }
                Ok(Ints(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Padding as sent: integers or `"same"` / `"valid"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaddingJson {
    /// 1, 2 or 4 integers.
    Ints(Vec<i64>),
    /// `"same"`.
    Same,
    /// `"valid"`.
    Valid,
}

impl<'de> Deserialize<'de> for PaddingJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PaddingJson;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    r#"an integer, [ph, pw], [top, bottom, left, right], "same" or "valid""#,
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PaddingJson, E> {
                match v.to_ascii_lowercase().as_str() {
                    "same" => Ok(PaddingJson::Same),
                    "valid" => Ok(PaddingJson::Valid),
                    _ => Err(E::unknown_variant(v, &["same", "valid"])),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PaddingJson, E> {
                Ok(PaddingJson::Ints(vec![v]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PaddingJson, E> {
                Ints::deserialize(de::value::U64Deserializer::new(v))
                    .map(|i| PaddingJson::Ints(i.0))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<PaddingJson, A::Error> {
                Ints::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(|i| PaddingJson::Ints(i.0))
            }
        }
        d.deserialize_any(V)
    }
}

/// The parameters of a layer, apart from its tensors; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamsJson {
    /// `s` or `[s_h, s_w]`, default 1.
    pub stride: Option<Ints>,
    /// See the module doc; default 0.
    pub padding: Option<PaddingJson>,
    /// `d` or `[d_h, d_w]`, default 1.
    pub dilation: Option<Ints>,
    /// Default 1.
    pub groups: Option<i64>,
    /// Default `zeros`.
    pub padding_mode: Option<PaddingMode>,
    /// Default `none`.
    pub activation: Option<Activation>,
}

/// Checks the members left over beside a layer's tensors or shapes as a [`ParamsJson`].
/// `members` are the other members the object takes, so that an unknown member's message
/// lists everything it could have been (`weight_shape`, `layers`, …), not only the
/// parameters.
///
/// # Errors
/// [`SpecError::Invalid`] naming an unknown or mistyped member, at `base/member`.
pub fn params_from(
    rest: serde_json::Map<String, serde_json::Value>,
    base: &str,
    members: &[&str],
) -> Result<ParamsJson, SpecError> {
    if let Some(key) = rest.keys().find(|k| !PARAM_NAMES.contains(&k.as_str())) {
        let pointer = format!("{base}/{}", key.replace('~', "~0").replace('/', "~1"));
        let expected: Vec<String> = members
            .iter()
            .chain(PARAM_NAMES)
            .map(|m| format!("`{m}`"))
            .collect();
        return Err(invalid(format!(
            "`{pointer}`: unknown field `{key}`, expected one of {}",
            expected.join(", ")
        ))
        .at(pointer));
    }
    from_value(serde_json::Value::Object(rest), base)
}

fn pair(field: &'static str, v: &Option<Ints>, base: &str) -> Result<[usize; 2], SpecError> {
    let at = || format!("{base}/{field}");
    let vals = match v {
        None => return Ok([1, 1]),
        Some(Ints(v)) => v,
    };
    let [a, b] = match vals.as_slice() {
        [a] => [*a, *a],
        [a, b] => [*a, *b],
        _ => {
            return Err(invalid(format!(
                "{field} must be one integer or [{field}_h, {field}_w], got {} values",
                vals.len()
            ))
            .at(at()))
        }
    };
    if a < 1 || b < 1 {
        return Err(invalid(format!("{field} must be ≥ 1, got [{a}, {b}]")).at(at()));
    }
    Ok([a as usize, b as usize])
}

impl ParamsJson {
    /// Validates the scalar parameters (no shapes needed) into [`Conv2dParams`].
    ///
    /// # Errors
    /// [`SpecError::Invalid`] with the pointer `base/field`.
    pub fn resolve(&self, base: &str) -> Result<(Conv2dParams, Activation), SpecError> {
        let stride = pair("stride", &self.stride, base)?;
        let dilation = pair("dilation", &self.dilation, base)?;
        let padding = match &self.padding {
            None => Padding::default(),
            Some(PaddingJson::Same) => Padding::Same,
            Some(PaddingJson::Valid) => Padding::Valid,
            Some(PaddingJson::Ints(v)) => {
                if let Some(neg) = v.iter().find(|&&p| p < 0) {
                    return Err(invalid(format!("padding must be ≥ 0, got {neg}"))
                        .at(format!("{base}/padding")));
                }
                let p: Vec<usize> = v.iter().map(|&p| p as usize).collect();
                Padding::Explicit(match p.as_slice() {
                    [a] => [*a; 4],
                    [h, w] => [*h, *h, *w, *w],
                    [t, b, l, r] => [*t, *b, *l, *r],
                    _ => {
                        return Err(invalid(format!(
                            "padding must be an integer, [ph, pw] or [top, bottom, left, right]; got {} values",
                            p.len()
                        ))
                        .at(format!("{base}/padding")))
                    }
                })
            }
        };
        let groups = match self.groups {
            None => 1,
            Some(g) if g >= 1 => g as usize,
            Some(g) => {
                return Err(
                    invalid(format!("groups must be ≥ 1, got {g}")).at(format!("{base}/groups"))
                )
            }
        };
        Ok((
            Conv2dParams {
                stride,
                dilation,
                padding,
                groups,
                padding_mode: self.padding_mode.unwrap_or_default(),
            },
            self.activation.unwrap_or_default(),
        ))
    }
}
