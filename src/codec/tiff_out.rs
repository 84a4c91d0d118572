//! Float32 TIFF of raw feature maps: a whole-tensor format like `.npy`, no normalisation,
//! that image tools (ImageJ/Fiji, QGIS, GDAL, tifffile, Pillow) open with the values intact.
//!
//! An `[n, c, h, w]` result is `n · c` pages (IFDs) of `h × w` gray float32
//! (`SampleFormat = 3`, `BitsPerSample = 32`, uncompressed, little-endian), in the ZIP's
//! order: page `k` is batch item `k / c`, channel `k % c`. The first page's
//! ImageDescription (tag 270) holds the manifest as JSON (ASCII): the caller's members
//! (`shape` `[n, c, h, w]` first, so that tifffile reads the pages back as one array of
//! that shape) plus `maps`, in page order, `{"page", "n", "c", "min", "max"}`.

use std::io::Cursor;

use tiff::encoder::colortype::Gray32Float;
use tiff::encoder::TiffEncoder;
use tiff::tags::Tag;

use super::CodecError;

/// Encodes `maps` (each `h · w` floats; `c` per batch item) as a multi-page float32 TIFF
/// with `manifest` (a JSON object, or `null` for `{}`) in the first page's description.
///
/// # Errors
/// [`CodecError::Empty`] for no maps or a zero side; [`CodecError::Encode`] for a map of
/// the wrong length, `c` not dividing the map count, a manifest that is not an object, a
/// side over `u32`, or a file over 4 GiB (the classic TIFF limit).
pub fn encode_tiff(
    maps: &[&[f32]],
    c: usize,
    h: usize,
    w: usize,
    manifest: serde_json::Value,
) -> Result<Vec<u8>, CodecError> {
    if maps.is_empty() || c == 0 || h == 0 || w == 0 {
        return Err(CodecError::Empty);
    }
    if !maps.len().is_multiple_of(c) || maps.iter().any(|m| m.len() != h * w) {
        return Err(CodecError::Encode(format!(
            "tiff: {} maps of {h}x{w} in groups of {c}",
            maps.len()
        )));
    }
    let mut manifest = super::encode::manifest_object(manifest)?;
    let entries = maps
        .iter()
        .enumerate()
        .map(|(k, m)| {
            let (lo, hi) = super::encode::non_nan_min_max(m);
            serde_json::json!({
                "page": k,
                "n": k / c,
                "c": k % c,
                "min": super::encode::f32_json(lo),
                "max": super::encode::f32_json(hi),
            })
        })
        .collect();
    manifest.insert("maps".into(), serde_json::Value::Array(entries));
    // `shape` first: tifffile reads a first-page JSON description that starts with it as
    // the shape of the whole series (its own "shaped" convention).
    let shape = manifest.remove("shape");
    let rest = ascii_json(&serde_json::Value::Object(manifest));
    let description = match shape {
        Some(s) => format!("{{\"shape\":{},{}", ascii_json(&s), &rest[1..]),
        None => rest,
    };

    let bytes = maps.len() as u64 * (h * w) as u64 * 4;
    if bytes >= u64::from(u32::MAX) - (1 << 20) {
        return Err(CodecError::Encode(format!(
            "tiff: {bytes} bytes exceed the 4 GiB of a classic TIFF"
        )));
    }
    let side = |v: usize| u32::try_from(v).map_err(|e| CodecError::Encode(e.to_string()));
    let (tw, th) = (side(w)?, side(h)?);
    let err = |e: tiff::TiffError| CodecError::Encode(format!("tiff: {e}"));
    let mut out = Cursor::new(Vec::with_capacity(bytes as usize + 4096));
    let mut enc = TiffEncoder::new(&mut out).map_err(err)?;
    for (k, map) in maps.iter().enumerate() {
        let mut page = enc.new_image::<Gray32Float>(tw, th).map_err(err)?;
        if k == 0 {
            page.encoder()
                .write_tag(Tag::ImageDescription, description.as_str())
                .map_err(err)?;
        }
        page.write_data(map).map_err(err)?;
    }
    Ok(out.into_inner())
}

/// JSON with every non-ASCII character escaped (`\uXXXX`): TIFF ASCII fields are 7-bit.
fn ascii_json(v: &serde_json::Value) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if ch.is_ascii() {
            out.push(ch);
        } else {
            let mut buf = [0u16; 2];
            for unit in ch.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiff::decoder::{Decoder, DecodingResult};

    /// Every page of `bytes` as f32 values, and the first page's description.
    pub(crate) fn read_pages(bytes: &[u8]) -> (Vec<Vec<f32>>, String) {
        let mut d = Decoder::new(Cursor::new(bytes)).unwrap();
        let desc = d.get_tag_ascii_string(Tag::ImageDescription).unwrap();
        let mut pages = Vec::new();
        loop {
            match d.read_image().unwrap() {
                DecodingResult::F32(v) => pages.push(v),
                _ => panic!("not float"),
            }
            if !d.more_images() {
                break;
            }
            d.next_image().unwrap();
        }
        (pages, desc)
    }

    #[test]
    fn pages_hold_the_maps_bit_for_bit_in_order_with_the_manifest() {
        let maps: Vec<Vec<f32>> = vec![
            vec![-1.5, 0.1, f32::NAN, f32::INFINITY, 3.0, -0.0],
            vec![1e-30, -1e30, 2.0, 2.5, 7.0, 8.0],
            vec![0.0; 6],
            vec![f32::MIN_POSITIVE, f32::MAX, -7.25, 1.0, 2.0, 3.0],
        ];
        let refs: Vec<&[f32]> = maps.iter().map(Vec::as_slice).collect();
        let manifest = serde_json::json!({"shape": [2, 2, 2, 3], "note": "é"});
        let bytes = encode_tiff(&refs, 2, 2, 3, manifest).unwrap();
        let (pages, desc) = read_pages(&bytes);
        assert_eq!(pages.len(), 4);
        for (p, m) in pages.iter().zip(&maps) {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(p), bits(m));
        }
        assert!(desc.is_ascii());
        assert!(desc.starts_with("{\"shape\":[2,2,2,3],"), "{desc}");
        let v: serde_json::Value = serde_json::from_str(&desc).unwrap();
        assert_eq!(v["shape"], serde_json::json!([2, 2, 2, 3]));
        assert_eq!(v["note"], "é");
        assert_eq!(
            v["maps"][3],
            serde_json::json!({"page": 3, "n": 1, "c": 1, "min": -7.25, "max": 3.4028235e38})
        );
        assert_eq!(v["maps"][0]["max"], serde_json::Value::Null);
    }

    #[test]
    fn wrong_shapes_are_refused() {
        let m = [0.0f32; 4];
        assert!(matches!(
            encode_tiff(&[], 1, 2, 2, serde_json::Value::Null),
            Err(CodecError::Empty)
        ));
        let err = encode_tiff(&[&m, &m, &m], 2, 2, 2, serde_json::Value::Null).unwrap_err();
        assert!(matches!(err, CodecError::Encode(_)), "{err:?}");
        let err = encode_tiff(&[&m], 1, 3, 2, serde_json::Value::Null).unwrap_err();
        assert!(matches!(err, CodecError::Encode(_)), "{err:?}");
    }
}
