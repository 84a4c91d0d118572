//! Streamed PNG jobs give the whole decode's pictures bit for bit, fail as it fails, stop on
//! a cancel, and never deadlock, several at once on a 2-thread pool.

use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::codec::decode::stream::{open, tests::png_of};
use crate::codec::png_strips::STRIP_BYTES;
use crate::codec::{
    decode_pixels, BitDepth, CodecError, ColorMode, DecodeLimits, DecodeOptions, Grid, Normalize,
    OrientationMode,
};
use crate::conv::{Conv2dLayer, Conv2dParams, Padding, PaddingMode};
use crate::pipeline::tests::{geoms, pictures};
use crate::pipeline::{estimate, run};

fn limits() -> DecodeLimits {
    DecodeLimits {
        max_width: 1 << 14,
        max_height: 1 << 14,
        max_pixels: 1 << 26,
        max_alloc_bytes: 1 << 30,
    }
}

fn opts(color: ColorMode) -> DecodeOptions {
    DecodeOptions {
        color,
        orientation: OrientationMode::Exif,
        scale: 1.0 / 3.0,
    }
}

fn pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
}

/// A depthwise layer of `c` channels (pipeline's test layer, ReLU, with bias).
fn layer(c: usize, k: [usize; 2], p: Conv2dParams, seed: u32) -> Conv2dLayer {
    crate::pipeline::tests::layer(c, c, c, k, Conv2dParams { groups: c, ..p }, seed)
}

fn same(mode: PaddingMode, stride: usize, dil: usize) -> Conv2dParams {
    Conv2dParams {
        stride: [stride; 2],
        dilation: [dil; 2],
        padding: Padding::Same,
        padding_mode: mode,
        ..Default::default()
    }
}

/// One job's inputs: the PNG, how it is decoded, and the stack.
struct Case {
    png: Vec<u8>,
    color: ColorMode,
    layers: Vec<Conv2dLayer>,
}

impl Case {
    /// The picture the whole decode and the whole-tensor run give, and the one streamed
    /// in strips of `rows` (on the current pool), encoded as a PNG as it is rendered
    /// with `png`.
    fn both(
        &self,
        (mode, depth, per_map): (Normalize, BitDepth, bool),
        rows: usize,
        png: Option<usize>,
    ) -> (Result<Rendered, JobError>, Result<Rendered, JobError>) {
        let o = opts(self.color);
        let cancel = CancelToken::new();
        let px = decode_pixels(&self.png, &o, &limits()).unwrap();
        let gs = geoms(&self.layers, [1, px.channels, px.height, px.width]);
        let [n, c, oh, ow] = gs.last().unwrap().output_shape();
        let grid = Grid {
            n,
            c,
            h: oh,
            w: ow,
            k: 1,
        };
        let picture = |strip_rows, png| Picture {
            grid,
            per_map,
            mode,
            depth,
            strip_rows,
            png,
        };
        let whole = run(
            std::slice::from_ref(&px),
            None,
            (&self.layers, &gs),
            &picture(oh, None),
            &cancel,
        );
        let (_, stack, _) = estimate(
            &self.layers,
            &gs,
            &[px.bytes() as u64],
            grid,
            per_map,
            (mode, depth),
            2,
        );
        let stack = stack.expect("streams");
        let (dec, src) = open(&self.png[..], &o, &limits()).unwrap().expect("a PNG");
        let (streamed, _) = run_streamed((dec, &src), &stack, &picture(rows, png), &cancel, ());
        (whole, streamed)
    }
}

const OUTPUTS: [(Normalize, BitDepth, bool); 4] = [
    (Normalize::Clamp, BitDepth::Eight, false),
    (Normalize::Minmax, BitDepth::Sixteen, false),
    (Normalize::Abs, BitDepth::Eight, false),
    (Normalize::Minmax, BitDepth::Eight, true),
];

#[test]
fn streamed_pngs_give_the_whole_decodes_pictures_bit_for_bit() {
    use png::BitDepth::{Eight, Sixteen};
    use png::ColorType::{Grayscale, Rgb, Rgba};
    let cases = [
        // A kernel taller than the strips.
        Case {
            png: png_of(23, 17, Rgb, Eight, None, 1),
            color: ColorMode::Auto,
            layers: vec![layer(3, [7, 7], same(PaddingMode::Zeros, 1, 1), 1)],
        },
        // Reflect padding, dilated.
        Case {
            png: png_of(19, 21, Rgb, Sixteen, None, 2),
            color: ColorMode::Rgb,
            layers: vec![layer(3, [5, 3], same(PaddingMode::Reflect, 1, 2), 2)],
        },
        // Stride 2, explicit zero padding, gray luma of RGB samples.
        Case {
            png: png_of(20, 15, Rgba, Eight, None, 3),
            color: ColorMode::Gray,
            layers: vec![layer(
                1,
                [3, 3],
                Conv2dParams {
                    stride: [2, 2],
                    padding: Padding::Explicit([1, 2, 0, 1]),
                    ..Default::default()
                },
                3,
            )],
        },
        // A circular stack: the top strips need the last rows.
        Case {
            png: png_of(16, 12, Grayscale, Sixteen, None, 4),
            color: ColorMode::Auto,
            layers: vec![
                layer(1, [3, 3], same(PaddingMode::Circular, 1, 1), 4),
                layer(1, [5, 5], same(PaddingMode::Circular, 1, 1), 5),
            ],
        },
        // One row.
        Case {
            png: png_of(30, 1, Rgb, Eight, None, 6),
            color: ColorMode::Rgba,
            layers: vec![layer(4, [1, 5], same(PaddingMode::Replicate, 1, 1), 6)],
        },
        // Larger than a strip by far: strips wait for rows while the decoder runs.
        Case {
            png: png_of(300, 260, Rgb, Eight, None, 7),
            color: ColorMode::Auto,
            layers: vec![
                layer(3, [5, 5], same(PaddingMode::Zeros, 1, 1), 7),
                layer(3, [3, 3], same(PaddingMode::Reflect, 1, 1), 8),
            ],
        },
    ];
    pool().install(|| {
        for (ci, case) in cases.iter().enumerate() {
            for out in OUTPUTS {
                // The PNG written after the render, and as it goes in strips of rows
                // (encoded as rows come, in strips of about 300 bytes or the usual).
                for (rows, png) in [(1, None), (3, Some(300)), (7, Some(STRIP_BYTES))] {
                    let (whole, streamed) = case.both(out, rows, png);
                    let sb = png.unwrap_or(STRIP_BYTES);
                    assert!(
                        pictures(whole.unwrap(), sb) == pictures(streamed.unwrap(), sb),
                        "case {ci}, {out:?}, strips of {rows}, PNG {png:?}"
                    );
                }
            }
        }
    });
}

#[test]
fn a_corrupt_png_fails_as_the_whole_decode_fails() {
    let png = png_of(200, 300, png::ColorType::Rgb, png::BitDepth::Eight, None, 9);
    let layers = vec![layer(3, [5, 5], same(PaddingMode::Zeros, 1, 1), 9)];
    for cut in [png.len() / 3, png.len() - 30] {
        let bad = Case {
            png: png[..cut].to_vec(),
            color: ColorMode::Auto,
            layers: layers.clone(),
        };
        let o = opts(bad.color);
        let want = decode_pixels(&bad.png, &o, &limits()).unwrap_err();
        // `both` with the whole decode's error in place of its picture.
        let px = decode_pixels(&png, &o, &limits()).unwrap();
        let gs = geoms(&layers, [1, 3, px.height, px.width]);
        let grid = Grid {
            n: 1,
            c: 3,
            h: px.height,
            w: px.width,
            k: 1,
        };
        for out in OUTPUTS {
            let (_, stack, _) = estimate(&layers, &gs, &[0], grid, out.2, (out.0, out.1), 2);
            let stack = stack.unwrap();
            let (dec, src) = open(&bad.png[..], &o, &limits()).unwrap().unwrap();
            let (got, _) = pool().install(|| {
                let picture = Picture {
                    grid,
                    per_map: out.2,
                    mode: out.0,
                    depth: out.1,
                    strip_rows: 16,
                    png: None,
                };
                run_streamed((dec, &src), &stack, &picture, &CancelToken::new(), ())
            });
            match got {
                Err(JobError::Decode(e)) => assert_eq!(e.to_string(), want.to_string()),
                other => panic!("cut {cut}: {other:?}"),
            }
            assert!(matches!(want, CodecError::Corrupt(_)), "{want:?}");
        }
    }
}

/// Runs `f` on a thread and fails if it takes longer than `secs` (a deadlock).
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(Duration::from_secs(secs))
        .expect("finished in time (no deadlock)")
}

#[test]
fn a_cancel_mid_stream_stops_the_job() {
    within(60, || {
        let side = 2000;
        let png = png_of(
            side,
            side,
            png::ColorType::Rgb,
            png::BitDepth::Eight,
            None,
            10,
        );
        let side = side as usize;
        let layers = vec![layer(3, [5, 5], same(PaddingMode::Circular, 1, 1), 10)];
        let gs = geoms(&layers, [1, 3, side, side]);
        let grid = Grid {
            n: 1,
            c: 3,
            h: side,
            w: side,
            k: 1,
        };
        let mode = (Normalize::Minmax, BitDepth::Eight);
        let (_, stack, _) = estimate(&layers, &gs, &[0], grid, false, mode, 2);
        let stack = stack.unwrap();
        let o = opts(ColorMode::Auto);
        let (dec, src) = open(&png[..], &o, &limits()).unwrap().unwrap();
        let cancel = CancelToken::new();
        let pool = pool();
        let got = std::thread::scope(|s| {
            // Fires once the first rows are in (the strips wait: circular padding needs
            // the last rows), long before the last.
            s.spawn(|| {
                while src.decoded() == 0 {
                    std::hint::spin_loop();
                }
                cancel.cancel();
            });
            pool.install(|| {
                let picture = Picture {
                    grid,
                    per_map: false,
                    mode: mode.0,
                    depth: mode.1,
                    strip_rows: 8,
                    png: Some(1000),
                };
                run_streamed((dec, &src), &stack, &picture, &cancel, ())
            })
            .0
        });
        assert!(matches!(got, Err(JobError::Cancelled)), "{got:?}");
        assert!(src.decoded() < side, "stopped early: {}", src.decoded());
    });
}

#[test]
fn several_streamed_jobs_at_once_on_a_2_thread_pool_all_finish() {
    within(120, || {
        let pool = std::sync::Arc::new(pool());
        let jobs: Vec<_> = (0..6)
            .map(|j| {
                let pool = pool.clone();
                std::thread::spawn(move || {
                    let case = Case {
                        png: png_of(
                            400 + 10 * j,
                            300,
                            png::ColorType::Rgb,
                            png::BitDepth::Eight,
                            None,
                            j,
                        ),
                        color: ColorMode::Auto,
                        layers: vec![layer(
                            3,
                            [5, 5],
                            same(
                                if j % 2 == 0 {
                                    PaddingMode::Zeros
                                } else {
                                    PaddingMode::Circular
                                },
                                1,
                                1,
                            ),
                            j,
                        )],
                    };
                    let out = OUTPUTS[j as usize % OUTPUTS.len()];
                    let (whole, streamed) = pool.install(|| case.both(out, 4, Some(500)));
                    assert!(pictures(whole.unwrap(), 500) == pictures(streamed.unwrap(), 500));
                })
            })
            .collect();
        for j in jobs {
            j.join().unwrap();
        }
    });
}
