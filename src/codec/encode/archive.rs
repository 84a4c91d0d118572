//! ZIP export of a grid of float maps: one file per map (grayscale PNG, lossless WebP or
//! float32 TIFF, [`ZipInner`]) plus a JSON manifest describing how each map's pixels
//! relate to its float values.

use std::io::{Cursor, Write};

use rayon::prelude::*;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::super::CodecError;
use super::render::{render, Rendered, Target, WholeMaps};
use super::{check_grid, BitDepth, Grid, MapRange, Normalize, PngSpeed};

/// The format of each map inside a ZIP (`output.zip_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ZipInner {
    /// Grayscale PNG (`.png`), 8 or 16 bit, normalised.
    #[default]
    Png,
    /// Lossless WebP (`.webp`), the pixels of the 8-bit PNG.
    Webp,
    /// Float32 TIFF (`.tif`), the raw values (no normalisation, no `range`).
    Tiff,
}

impl ZipInner {
    fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Webp => "webp",
            Self::Tiff => "tif",
        }
    }
}

/// Encodes an `n`×`c` grid of maps as a ZIP archive.
///
/// The archive holds one file per map named `n{i}_c{j}.png` (or `.webp`, `.tif` per
/// `inner`; stored uncompressed, the files are compressed or raw floats) plus a deflated
/// `manifest.json`:
/// `manifest` with an added member `"maps"`, an array in map order of
/// `{"name", "n", "c", "min", "max", "range": {"lo", "hi"}, "normalize"}`
/// where `min`/`max` are the map's actual float extremes ignoring NaN (JSON
/// `null` when infinite or when the map is all NaN). A `null` manifest is
/// treated as `{}`. TIFF entries have no `range` and `normalize` (the values are raw).
/// Returns the archive and each map's range (the manifest's `range`; none for TIFF),
/// as [`encode_montage`](super::encode_montage) does.
///
/// # Errors
///
/// As [`encode_montage`](super::encode_montage), plus [`CodecError::Encode`] if `manifest` is neither
/// an object nor `null`, or the ZIP writer fails.
#[allow(clippy::too_many_arguments)]
pub fn encode_zip(
    maps: &[&[f32]],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    mode: Normalize,
    depth: BitDepth,
    speed: PngSpeed,
    inner: ZipInner,
    manifest: serde_json::Value,
) -> Result<(Vec<u8>, Vec<MapRange>), CodecError> {
    check_grid(maps, n, c, h, w)?;
    if inner == ZipInner::Tiff {
        return Ok((zip_tiffs(maps, c, h, w, manifest)?, Vec::new()));
    }
    let grid = Grid { n, c, h, w, k: 1 };
    let rendered = render(&WholeMaps { maps, c, w }, grid, true, mode, depth, h, None)?;
    zip_rendered(rendered, c, mode, speed, inner, manifest)
}

/// The ZIP of [`encode_zip`] with one float32 TIFF per map (raw values; whole maps).
///
/// # Errors
/// As [`encode_zip`].
pub fn zip_tiffs(
    maps: &[&[f32]],
    c: usize,
    h: usize,
    w: usize,
    manifest: serde_json::Value,
) -> Result<Vec<u8>, CodecError> {
    let files = maps
        .par_iter()
        .map(|m| super::super::tiff_out::encode_tiff(&[m], 1, h, w, serde_json::Value::Null))
        .collect::<Vec<_>>();
    let entries = maps.iter().map(|m| (non_nan_min_max(m), None)).collect();
    archive(
        files,
        entries,
        c,
        ZipInner::Tiff,
        Normalize::default(),
        manifest,
    )
}

/// Packs rendered per-map pictures (a [`render`] with `per_map`) as the ZIP archive of
/// [`encode_zip`], the PNGs encoded in parallel on the current rayon pool.
///
/// # Errors
/// As [`encode_zip`].
pub fn zip_rendered(
    rendered: Rendered,
    c: usize,
    mode: Normalize,
    speed: PngSpeed,
    inner: ZipInner,
    manifest: serde_json::Value,
) -> Result<(Vec<u8>, Vec<MapRange>), CodecError> {
    let Target::PerMap(canvases) = rendered.target else {
        return Err(CodecError::Encode("a ZIP needs one picture per map".into()));
    };
    // Members are encoded in order and written as they come, so the job holds the ZIP and
    // one member (a group of one per thread for WebP), not every member twice. A PNG
    // member is already encoded on every thread ([`super::super::png_strips`]); the WebP
    // encoder runs on one, so its members go a group at a time.
    let group = match inner {
        ZipInner::Webp => rayon::current_num_threads().max(1),
        _ => 1,
    };
    let files = canvases.chunks(group).flat_map(|members| {
        members
            .par_iter()
            .map(|cv| match inner {
                ZipInner::Webp => cv.webp(),
                _ => cv.png(speed),
            })
            .collect::<Vec<_>>()
    });
    let entries = rendered
        .stats
        .iter()
        .zip(&rendered.ranges)
        .map(|(s, r)| (s.min_max(), Some(*r)))
        .collect();
    let zip = archive(files, entries, c, inner, mode, manifest)?;
    Ok((zip, rendered.ranges))
}

/// Packs one file per map, with each map's extremes and range, and the manifest. Each
/// file is dropped once written.
fn archive(
    files: impl IntoIterator<Item = Result<Vec<u8>, CodecError>>,
    entries: Vec<((f32, f32), Option<MapRange>)>,
    c: usize,
    inner: ZipInner,
    mode: Normalize,
    manifest: serde_json::Value,
) -> Result<Vec<u8>, CodecError> {
    let mut manifest = manifest_object(manifest)?;
    let zip_err = |e: zip::result::ZipError| CodecError::Encode(format!("zip: {e}"));
    let io_err = |e: std::io::Error| CodecError::Encode(format!("zip: {e}"));
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let mut list = Vec::with_capacity(entries.len());
    for (k, (file, ((min, max), range))) in files.into_iter().zip(entries).enumerate() {
        let file = file?;
        let (i, j) = (k / c, k % c);
        let name = format!("n{i}_c{j}.{}", inner.extension());
        let opts = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .large_file(file.len() as u64 >= u64::from(u32::MAX));
        zip.start_file(name.as_str(), opts).map_err(zip_err)?;
        zip.write_all(&file).map_err(io_err)?;
        let mut entry = serde_json::json!({
            "name": name,
            "n": i,
            "c": j,
            "min": f32_json(min),
            "max": f32_json(max),
        });
        if let Some(r) = range {
            entry["range"] = serde_json::json!({ "lo": f32_json(r.lo), "hi": f32_json(r.hi) });
            entry["normalize"] = serde_json::json!(mode);
        }
        list.push(entry);
    }
    manifest.insert("maps".into(), serde_json::Value::Array(list));
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| CodecError::Encode(format!("manifest: {e}")))?;
    let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
    zip.start_file("manifest.json", opts).map_err(zip_err)?;
    zip.write_all(&json).map_err(io_err)?;
    Ok(zip.finish().map_err(zip_err)?.into_inner())
}

/// Minimum and maximum ignoring NaN (infinities included); NaN if none (also the oracle
/// of [`super::MapStats::min_max`]).
pub(crate) fn non_nan_min_max(map: &[f32]) -> (f32, f32) {
    // f32::min/max return the non-NaN operand, so NaN only survives if every
    // value is NaN.
    map.iter()
        .fold((f32::NAN, f32::NAN), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

/// A manifest's members: those of a JSON object, none for `null`.
///
/// # Errors
/// [`CodecError::Encode`] for any other JSON value.
pub(crate) fn manifest_object(
    manifest: serde_json::Value,
) -> Result<serde_json::Map<String, serde_json::Value>, CodecError> {
    match manifest {
        serde_json::Value::Null => Ok(serde_json::Map::new()),
        serde_json::Value::Object(m) => Ok(m),
        other => Err(CodecError::Encode(format!(
            "manifest must be a JSON object, got {other}"
        ))),
    }
}

/// JSON number for finite values, `null` otherwise.
///
/// Goes through the shortest `f32` decimal so that e.g. `0.1f32` is written
/// as `0.1` rather than its widened `f64` value `0.10000000149011612`.
pub(crate) fn f32_json(x: f32) -> serde_json::Value {
    x.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn map_stats_give_the_extremes_ignoring_nan_in_any_strips() {
        let (inf, nan) = (f32::INFINITY, f32::NAN);
        let maps: [&[f32]; 8] = [
            &[1.0, -2.0, 3.5],
            &[nan, nan],
            &[nan, inf],
            &[-inf, nan, 4.0],
            &[inf, -inf],
            &[-inf],
            &[0.25, nan, -7.0, inf],
            &[-0.0, 0.0],
        ];
        for m in maps {
            for cut in 0..=m.len() {
                let mut a = crate::codec::MapStats::default();
                a.add(&m[..cut]);
                let mut b = crate::codec::MapStats::default();
                b.add(&m[cut..]);
                let (lo, hi) = a.merge(b).min_max();
                let (want_lo, want_hi) = non_nan_min_max(m);
                assert!(
                    lo == want_lo || (lo.is_nan() && want_lo.is_nan()),
                    "{m:?}: {lo}"
                );
                assert!(
                    hi == want_hi || (hi.is_nan() && want_hi.is_nan()),
                    "{m:?}: {hi}"
                );
            }
        }
    }

    #[test]
    fn zip_holds_one_png_per_map_and_a_manifest() {
        let maps: Vec<Vec<f32>> = vec![
            vec![0.0, 1.0, 2.0, 3.0],
            vec![-0.1, 0.1, f32::NAN, 0.0],
            vec![5.0; 4],
            vec![0.0, 0.0, 0.0, f32::INFINITY],
        ];
        let refs: Vec<&[f32]> = maps.iter().map(Vec::as_slice).collect();
        let manifest = serde_json::json!({ "shape": [2, 2, 2, 2] });
        let bytes = encode_zip(
            &refs,
            2,
            2,
            2,
            2,
            Normalize::Minmax,
            BitDepth::Eight,
            PngSpeed::Fast,
            ZipInner::Png,
            manifest,
        )
        .unwrap()
        .0;
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        let names: Vec<&str> = zip.file_names().collect();
        for want in [
            "n0_c0.png",
            "n0_c1.png",
            "n1_c0.png",
            "n1_c1.png",
            "manifest.json",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert_eq!(zip.len(), 5);

        let mut png = Vec::new();
        let mut f = zip.by_name("n0_c0.png").unwrap();
        assert_eq!(f.compression(), CompressionMethod::Stored);
        f.read_to_end(&mut png).unwrap();
        drop(f);
        let img = image::load_from_memory(&png).unwrap().into_luma8();
        assert_eq!(img.into_raw(), [0, 85, 170, 255]);

        let mut text = String::new();
        let mut f = zip.by_name("manifest.json").unwrap();
        assert_eq!(f.compression(), CompressionMethod::Deflated);
        f.read_to_string(&mut text).unwrap();
        let m: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(m["shape"], serde_json::json!([2, 2, 2, 2]));
        let entries = m["maps"].as_array().unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(
            entries[1],
            serde_json::json!({
                "name": "n0_c1.png", "n": 0, "c": 1, "min": -0.1, "max": 0.1,
                "range": { "lo": -0.1, "hi": 0.1 }, "normalize": "minmax"
            })
        );
        assert_eq!(
            entries[2]["range"],
            serde_json::json!({ "lo": 5.0, "hi": 5.0 })
        );
        assert_eq!(entries[3]["max"], serde_json::Value::Null);
        assert_eq!(entries[3]["name"], "n1_c1.png");
    }

    #[test]
    fn zip_rejects_a_non_object_manifest() {
        let m = [0.0f32];
        let r = encode_zip(
            &[&m],
            1,
            1,
            1,
            1,
            Normalize::Abs,
            BitDepth::Eight,
            PngSpeed::Fast,
            ZipInner::Png,
            serde_json::json!([1]),
        );
        assert!(matches!(r, Err(CodecError::Encode(_))));
    }

    #[test]
    fn webp_and_tiff_inner_files_hold_the_png_pixels_and_the_raw_values() {
        let maps: Vec<Vec<f32>> = vec![vec![-1.5, 0.25, 7.0, 3.0], vec![2.0, 2.0, 1.0, -0.5]];
        let refs: Vec<&[f32]> = maps.iter().map(Vec::as_slice).collect();
        let zip_of = |inner| {
            let bytes = encode_zip(
                &refs,
                1,
                2,
                2,
                2,
                Normalize::Minmax,
                BitDepth::Eight,
                PngSpeed::Fast,
                inner,
                serde_json::Value::Null,
            )
            .unwrap();
            (zip::ZipArchive::new(Cursor::new(bytes.0)).unwrap(), bytes.1)
        };
        let read = |z: &mut zip::ZipArchive<Cursor<Vec<u8>>>, name: &str| {
            let mut v = Vec::new();
            z.by_name(name).unwrap().read_to_end(&mut v).unwrap();
            v
        };
        let (mut png, r_png) = zip_of(ZipInner::Png);
        let (mut webp, r_webp) = zip_of(ZipInner::Webp);
        assert_eq!(r_png, r_webp);
        for j in 0..2 {
            let a = image::load_from_memory(&read(&mut png, &format!("n0_c{j}.png"))).unwrap();
            let b = image::load_from_memory(&read(&mut webp, &format!("n0_c{j}.webp"))).unwrap();
            assert_eq!(a.to_rgb8(), b.to_rgb8());
        }
        let (mut tif, r_tif) = zip_of(ZipInner::Tiff);
        assert!(r_tif.is_empty());
        let mut d = tiff::decoder::Decoder::new(Cursor::new(read(&mut tif, "n0_c1.tif"))).unwrap();
        match d.read_image().unwrap() {
            tiff::decoder::DecodingResult::F32(v) => assert_eq!(v, maps[1]),
            _ => panic!("not float"),
        }
        let m: serde_json::Value =
            serde_json::from_slice(&read(&mut tif, "manifest.json")).unwrap();
        assert_eq!(m["maps"][1]["name"], "n0_c1.tif");
        assert!(m["maps"][1].get("range").is_none());
    }
}
