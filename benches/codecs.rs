//! Image codecs on a 12-megapixel photo (4032 × 3024, the size of a phone photo): the
//! decoders and PNG encoders the ecosystem offers, against what convd uses today (the
//! `image` crate: zune-jpeg for JPEG, `png` with `CompressionType::Fast` and adaptive
//! filters). Groundwork for streaming photos through the pipeline (issue #14): the codec
//! is where a photo's time goes (decode 200–260 ms and encode 370–480 ms against a
//! 22–59 ms convolution, measured 2026-11-28).
//!
//! The photo is `bench/data/astronaut_1080p.png` scaled up (Catmull-Rom) with a little
//! deterministic grain, so that it compresses like a photo rather than like a gradient.
//! `cargo bench --bench codecs` runs every entry; results are in README "Codecs"
//! (mtpng and jpeg-decoder were measured too, slower on every task, and left out since).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ImageEncoder, RgbImage};

const W: u32 = 4032;
const H: u32 = 3024;

fn photo() -> RgbImage {
    let src = image::open(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/bench/data/astronaut_1080p.png"
    ))
    .expect("bench photo")
    .to_rgb8();
    let mut img = image::imageops::resize(&src, W, H, image::imageops::FilterType::CatmullRom);
    let mut s = 0x9e37_79b9u32;
    for p in img.pixels_mut() {
        for c in p.0.iter_mut() {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            *c = c.saturating_add((s % 5) as u8).saturating_sub(2);
        }
    }
    img
}

fn png_image_crate(img: &RgbImage, compression: CompressionType, filter: FilterType) -> Vec<u8> {
    let mut out = Vec::new();
    PngEncoder::new_with_quality(&mut out, compression, filter)
        .write_image(img.as_raw(), W, H, image::ExtendedColorType::Rgb8)
        .expect("png");
    out
}

fn bench(c: &mut Criterion) {
    let img = photo();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .write_image(img.as_raw(), W, H, image::ExtendedColorType::Rgb8)
        .expect("jpeg");
    let png = png_image_crate(&img, CompressionType::Fast, FilterType::Adaptive);
    let pixels = u64::from(W * H);
    eprintln!(
        "12 MP photo: JPEG q90 {} KB, PNG (image, fast, adaptive) {} KB, PNG (image, fast, no filter) {} KB, PNG (convd strips) {} KB",
        jpeg.len() / 1024,
        png.len() / 1024,
        png_image_crate(&img, CompressionType::Fast, FilterType::NoFilter).len() / 1024,
        convd::codec::encode_png_strips(
            img.as_raw(),
            convd::codec::PngRows { width: W, height: H, channels: 3, bits: 8 },
            convd::codec::png_strips::STRIP_BYTES,
        )
        .expect("png")
        .len()
            / 1024,
    );

    let mut g = c.benchmark_group("decode_jpeg_12mp");
    g.sample_size(10);
    g.throughput(Throughput::Elements(pixels));
    g.bench_function("image (zune-jpeg)", |b| {
        b.iter(|| black_box(image::load_from_memory(&jpeg).expect("jpeg")))
    });
    g.bench_function("zune-jpeg", |b| {
        b.iter(|| {
            let mut d = zune_jpeg::JpegDecoder::new(zune_core::bytestream::ZCursor::new(&jpeg));
            black_box(d.decode().expect("jpeg"))
        })
    });
    g.finish();

    // Samples → float planes, as the strip pipeline converts them: 1 MiB of floats per
    // strip, one thread.
    let px = convd::codec::decode_pixels(
        &png,
        &convd::codec::DecodeOptions::default(),
        &convd::codec::DecodeLimits {
            max_width: W,
            max_height: H,
            max_pixels: u64::from(W * H),
            max_alloc_bytes: 1 << 30,
        },
    )
    .expect("png");
    let mut g = c.benchmark_group("samples_to_floats_12mp");
    g.sample_size(20);
    g.throughput(Throughput::Elements(pixels));
    g.bench_function("rgb8", |b| {
        let rows = (1 << 18) / (3 * W as usize);
        let mut out = vec![0.0f32; 3 * rows * W as usize];
        b.iter(|| {
            for y in (0..H as usize).step_by(rows) {
                let r = y..(y + rows).min(H as usize);
                let n = 3 * r.len() * W as usize;
                px.rows(r, &mut out[..n]);
            }
            black_box(&out);
        })
    });
    g.finish();

    let mut g = c.benchmark_group("decode_png_12mp");
    g.sample_size(10);
    g.throughput(Throughput::Elements(pixels));
    g.bench_function("image (png)", |b| {
        b.iter(|| black_box(image::load_from_memory(&png).expect("png")))
    });
    g.bench_function("zune-png", |b| {
        b.iter(|| {
            let mut d = zune_png::PngDecoder::new(zune_core::bytestream::ZCursor::new(&png));
            black_box(d.decode().expect("png"))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("encode_png_12mp");
    g.sample_size(10);
    g.throughput(Throughput::Elements(pixels));
    for (name, compression, filter) in [
        (
            "image fast adaptive (today)",
            CompressionType::Fast,
            FilterType::Adaptive,
        ),
        ("image fast sub", CompressionType::Fast, FilterType::Sub),
        (
            "image fast none",
            CompressionType::Fast,
            FilterType::NoFilter,
        ),
        (
            "image default adaptive",
            CompressionType::Default,
            FilterType::Adaptive,
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(png_image_crate(&img, compression, filter)))
        });
    }
    // convd's writer (codec::png_strips): the same filter rule and compressor in strips,
    // on a pool of one thread (its cost per byte) and of every core (what the server runs).
    let rows = convd::codec::PngRows {
        width: W,
        height: H,
        channels: 3,
        bits: 8,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for n in [1, threads] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("pool");
        g.bench_function(format!("convd strips, {n} threads"), |b| {
            b.iter(|| {
                pool.install(|| {
                    black_box(
                        convd::codec::encode_png_strips(
                            img.as_raw(),
                            rows,
                            convd::codec::png_strips::STRIP_BYTES,
                        )
                        .expect("png"),
                    )
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
