//! Image jobs whose output is a picture (PNG of one map, RGB, a montage, or a ZIP of PNGs),
//! at a memory that does not grow with float planes: each photo stays as the 8-bit samples
//! its decoder gave, the stack runs a strip of output rows at a time
//! ([`crate::conv::strip`]), and each strip is normalised and quantised straight into the
//! picture ([`crate::codec::render`]), which is encoded once, after the render or, with
//! [`Picture::png`], strip by strip as its rows are rendered
//! ([`crate::codec::png_strips::PngStream`]). Knows nothing of HTTP.
//!
//! Working memory of a job ([`Estimate`]): the decoded samples of its images, the
//! quantised picture, a strip's float buffers per compute thread, and then the encoded
//! bytes (the samples are dropped before encoding). A stack that cannot run in strips
//! ([`crate::conv::strip::NotStreamable`]) runs whole: its float input and the largest
//! layer's input and output are counted instead of the strips.

use std::ops::Range;

use crate::codec::{
    kept_floats, render, BitDepth, CodecError, Grid, Normalize, Pixels, Rendered, Strips,
};
use crate::conv::strip::{check_layer, working_floats, RowSource, StripStack};
use crate::conv::{
    buffers, run_stack, CancelToken, Cancelled, Conv2dAlgo, Conv2dGeometry, Conv2dLayer, Conv2dPlan,
};

mod streamed;

pub use streamed::{run_streamed, StreamTimes};

/// Floats a strip should hold at most (its layers' input and output strips together):
/// 8 MiB, so that a 50 MP colour photo fits the default job budget, while the halo each
/// strip recomputes stays under a tenth (40 rows of 8,660 RGB pixels for a 5×5 blur).
const STRIP_FLOATS: u64 = 2 << 20;

/// What a job holds besides its buffers: the decoder's and the encoder's own state, row
/// and tile buffers, the job's tasks (measured: 6 MiB beyond the buffers for a 50 MP PNG).
const FIXED_BYTES: u64 = 16 << 20;

/// A picture job's memory, in bytes, as the plan sees it before anything is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Estimate {
    /// The images' decoded samples.
    pub decoded_bytes: u64,
    /// Float buffers: the strips in flight (one per compute thread), or for a stack run
    /// whole its input and largest layer; and a small job's maps, kept between the two
    /// passes of min-max and `abs` (at most 16 MiB).
    pub working_bytes: u64,
    /// The quantised picture(s).
    pub picture_bytes: u64,
    /// The encoded output (bounded by the picture's size: PNG's filters and deflate do
    /// not grow photos' samples), and the PNG writer's strips in flight
    /// ([`crate::codec::png_strips::working_bytes`]).
    pub encoded_bytes: u64,
    /// The request body, where one PNG is decoded row by row into the strips
    /// ([`Estimate::with_streamed_body`]): it is held until the last row is decoded,
    /// alongside the picture. 0 where the images are decoded whole first (the body is
    /// freed before the picture exists).
    pub body_bytes: u64,
    /// The peak: `max(decoded + working + picture + body, picture + encoded)`, or their
    /// sum less the picture counted twice, `decoded + working + picture + body + encoded`,
    /// when the PNG is encoded as the picture is rendered ([`Estimate::overlapped`]); plus
    /// the weights and 16 MiB for the codecs' own state and small buffers. A body decoded
    /// whole is not counted: `max_inflight_body_bytes` holds it, and it is freed once
    /// decoded.
    pub total_bytes: u64,
    /// Whether the PNG is encoded while the picture is rendered
    /// ([`Estimate::with_overlapped_encode`]); not serialised when not (a ZIP manifest
    /// shows the estimate, and a ZIP is never encoded so).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub overlapped: bool,
    /// Whether the stack runs in strips.
    pub streamed: bool,
    /// Output rows per strip (the whole map when not streamed).
    pub strip_rows: usize,
}

/// Plans the picture job of `layers` over images of `decoded` bytes each: whether it runs
/// in strips (the stack to run them with), its memory estimate ([`estimate_of`]) and the
/// plan of each layer. `grid` is the picture (`per_map`: one per map, a ZIP); `threads`
/// the compute threads.
pub fn estimate<'a>(
    layers: &'a [Conv2dLayer],
    geoms: &[Conv2dGeometry],
    decoded: &[u64],
    grid: Grid,
    per_map: bool,
    (mode, depth): (Normalize, BitDepth),
    threads: usize,
) -> (Estimate, Option<StripStack<'a>>, Vec<Conv2dPlan>) {
    let (stack, plans) = match StripStack::new(layers, geoms) {
        Ok((stack, plans)) => (Some(stack), plans),
        Err(_) => {
            let plans = geoms
                .iter()
                .zip(layers)
                .map(|(g, l)| crate::conv::plan_with_weights(g, l.weight.view()).0)
                .collect();
            (None, plans)
        }
    };
    let algos: Vec<Conv2dAlgo> = plans.iter().map(|p| p.algorithm).collect();
    let weights: u64 = layers
        .iter()
        .map(|l| 4 * (l.weight.len() + l.bias.as_ref().map_or(0, |b| b.len())) as u64)
        .sum();
    let shape = Shape {
        geoms,
        algos: &algos,
        weight_bytes: weights,
    };
    let e = estimate_of(
        &shape,
        decoded.iter().sum(),
        grid,
        per_map,
        (mode, depth),
        threads,
    );
    debug_assert_eq!(e.streamed, stack.is_some());
    (e, stack, plans)
}

/// What [`estimate_of`] needs of a stack: its layers, their algorithms and the bytes of
/// their weights.
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    /// The layers' geometries.
    pub geoms: &'a [Conv2dGeometry],
    /// The algorithm of each layer.
    pub algos: &'a [Conv2dAlgo],
    /// Bytes of the weights and biases.
    pub weight_bytes: u64,
}

/// The memory estimate of a picture job over a stack known by its shapes (see
/// [`Estimate`]); `decoded_bytes` are its images' decoded samples.
pub fn estimate_of(
    stack: &Shape<'_>,
    decoded_bytes: u64,
    grid: Grid,
    per_map: bool,
    (mode, depth): (Normalize, BitDepth),
    threads: usize,
) -> Estimate {
    let Shape {
        geoms,
        algos,
        weight_bytes,
    } = *stack;
    let sample = match depth {
        BitDepth::Eight => 1,
        BitDepth::Sixteen => 2,
    };
    let (width, height) = grid.size();
    let samples = if per_map {
        [grid.n, grid.c, grid.h, grid.w]
            .iter()
            .fold(1u64, |a, &d| a.saturating_mul(d as u64))
    } else {
        (width as u64)
            .saturating_mul(height as u64)
            .saturating_mul(grid.k as u64)
    };
    let picture_bytes = samples.saturating_mul(sample);
    let streamed = geoms
        .iter()
        .zip(algos)
        .enumerate()
        .all(|(i, (g, &a))| check_layer(i, g, a).is_ok());
    let (working_bytes, strip_rows) = if streamed {
        let one = working_floats(geoms, algos, 1);
        let per_row = working_floats(geoms, algos, 2).saturating_sub(one).max(1);
        let rows = (STRIP_FLOATS.saturating_sub(one) / per_row).max(1) as usize;
        let rows = rows.min(grid.h);
        (
            4 * working_floats(geoms, algos, rows) * threads as u64,
            rows,
        )
    } else {
        // The whole output is cut into strips of about the same size for quantising.
        let row = (grid.c * grid.w).max(1) as u64;
        let rows = (STRIP_FLOATS / row).clamp(1, grid.h as u64) as usize;
        (
            4 * (tensor_floats(geoms) + rows as u64 * row * threads as u64),
            rows,
        )
    };
    let working_bytes = working_bytes + 4 * kept_floats(grid, per_map, mode);
    let row_bytes = (width * grid.k) as u64 * sample;
    let encoded_bytes = picture_bytes
        + crate::codec::png_strips::working_bytes(row_bytes as usize, threads).min(
            // A picture smaller than the writer's group is all the strips there are.
            picture_bytes.saturating_mul(3),
        );
    let mut e = Estimate {
        decoded_bytes,
        working_bytes,
        picture_bytes,
        encoded_bytes,
        body_bytes: 0,
        total_bytes: 0,
        overlapped: false,
        streamed,
        strip_rows,
    };
    e.total_bytes = e
        .peak()
        .saturating_add(weight_bytes)
        .saturating_add(FIXED_BYTES);
    e
}

impl Estimate {
    /// `max(decoded + working + picture + body, picture + encoded)`, or
    /// `decoded + working + picture + body + encoded` when overlapped.
    fn peak(&self) -> u64 {
        let first = [self.working_bytes, self.picture_bytes, self.body_bytes]
            .iter()
            .fold(self.decoded_bytes, |a, &b| a.saturating_add(b));
        if self.overlapped {
            first.saturating_add(self.encoded_bytes)
        } else {
            first.max(self.picture_bytes.saturating_add(self.encoded_bytes))
        }
    }

    /// The estimate of the same job with its one PNG encoded as the picture is rendered
    /// ([`Picture::png`]): the file and the writer's strips in flight are held while the
    /// decoded samples, the render's strips and the body still are.
    pub fn with_overlapped_encode(&self) -> Self {
        let fixed = self.total_bytes - self.peak();
        let mut e = Self {
            overlapped: true,
            ..*self
        };
        e.total_bytes = e.peak().saturating_add(fixed);
        e
    }

    /// The estimate of the same job with its one PNG of `body` bytes decoded row by row
    /// into the strips, the body held until the last row is decoded.
    pub fn with_streamed_body(&self, body: u64) -> Self {
        let fixed = self.total_bytes - self.peak();
        let mut e = Self {
            body_bytes: body,
            ..*self
        };
        e.total_bytes = e.peak().saturating_add(fixed);
        e
    }
}

/// Floats a whole-tensor run holds at its peak: the input, and the largest layer's padded
/// input and output.
pub fn tensor_floats(geoms: &[Conv2dGeometry]) -> u64 {
    let input = geoms[0]
        .input_shape()
        .iter()
        .fold(1u64, |a, &d| a.saturating_mul(d as u64));
    let layer = geoms
        .iter()
        .map(|g| {
            let [t, b, l, r] = g.padding;
            let padded = [g.n, g.c_in, g.h + t + b, g.w + l + r]
                .iter()
                .fold(1u64, |a, &d| a.saturating_mul(d as u64));
            g.output_len().saturating_add(padded)
        })
        .max()
        .unwrap_or(0);
    input.saturating_add(layer)
}

/// The picture(s) a job makes: where its maps go, how they are normalised, and the strip
/// height (from [`estimate`]).
#[derive(Debug, Clone, Copy)]
pub struct Picture {
    /// The picture's grid of maps.
    pub grid: Grid,
    /// One gray picture per map (a ZIP) instead of one picture.
    pub per_map: bool,
    /// The normalisation.
    pub mode: Normalize,
    /// 8 or 16 bits per sample.
    pub depth: BitDepth,
    /// Output rows per strip ([`Estimate::strip_rows`]).
    pub strip_rows: usize,
    /// `Some(strip_bytes)`: encode the one picture (not `per_map`) as a fast PNG as its
    /// rows are rendered ([`crate::codec::render`], [`Rendered::png`]), in strips of about
    /// `strip_bytes` ([`crate::codec::png_strips::STRIP_BYTES`] for the file
    /// [`crate::codec::Canvas::png`] writes); the job then holds the file alongside the
    /// render ([`Estimate::with_overlapped_encode`]).
    pub png: Option<usize>,
}

impl Picture {
    /// Renders `strips` into this picture ([`render`]).
    fn render<S: Strips>(&self, strips: &S) -> Result<Rendered, S::Error> {
        render(
            strips,
            self.grid,
            self.per_map,
            self.mode,
            self.depth,
            self.strip_rows,
            self.png,
        )
    }
}

/// The pictures of a job: its maps computed (in strips or whole) and rendered.
///
/// `images` are the decoded inputs (one image per batch item), `stack` the strips from
/// [`estimate`] (`None`: run whole).
///
/// # Errors
/// [`JobError::Cancelled`] if `cancel` fires; [`JobError::Codec`] for a picture too large
/// for PNG.
pub fn run(
    images: &[Pixels],
    stack: Option<&StripStack<'_>>,
    (layers, geoms): (&[Conv2dLayer], &[Conv2dGeometry]),
    picture: &Picture,
    cancel: &CancelToken,
) -> Result<Rendered, JobError> {
    match stack {
        Some(stack) => {
            let strips = Streamed {
                stack,
                images,
                cancel,
            };
            picture.render(&strips)
        }
        None => {
            let planes: Vec<f32> = images.iter().flat_map(|p| p.planes()).collect();
            let [n, c, h, w] = geoms[0].input_shape();
            let input = ndarray::Array4::from_shape_vec((n, c, h, w), planes)
                .map_err(|e| JobError::Codec(CodecError::Encode(e.to_string())))?;
            let (out, _) = run_stack(input.view(), layers, geoms, cancel)?;
            buffers::recycle(input);
            let data = out.as_slice().expect("contiguous");
            let maps: Vec<&[f32]> = data.chunks_exact(picture.grid.h * picture.grid.w).collect();
            let strips = crate::codec::WholeMaps {
                maps: &maps,
                c: picture.grid.c,
                w: picture.grid.w,
            };
            let r = picture.render(&strips)?;
            buffers::recycle(out);
            Ok(r)
        }
    }
}

/// Why a job stopped.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The computation was cancelled (deadline, client gone).
    #[error("cancelled")]
    Cancelled,
    /// The picture could not be made.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The input could not be decoded (a PNG streamed into the strips,
    /// [`run_streamed`]): the error the whole decode gives.
    #[error("decode: {0}")]
    Decode(CodecError),
}

impl From<Cancelled> for JobError {
    fn from(_: Cancelled) -> Self {
        Self::Cancelled
    }
}

/// The strips of a streamed job.
struct Streamed<'a, 'b> {
    stack: &'a StripStack<'b>,
    images: &'a [Pixels],
    cancel: &'a CancelToken,
}

/// One decoded image as the stack's row source.
struct ImageRows<'a>(&'a Pixels);

impl RowSource for ImageRows<'_> {
    fn rows(&self, rows: Range<usize>, out: &mut [f32]) {
        self.0.rows(rows, out);
    }
}

impl Strips for Streamed<'_, '_> {
    type Error = JobError;

    fn strip(&self, image: usize, rows: Range<usize>) -> Result<Vec<f32>, JobError> {
        let out = self
            .stack
            .run(&ImageRows(&self.images[image]), rows, self.cancel)?;
        Ok(out.into_raw_vec_and_offset().0)
    }

    fn done(&self, strip: Vec<f32>) {
        buffers::give(strip);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::codec::png_strips::STRIP_BYTES;
    use crate::codec::{ColorMode, DecodeLimits, Target};
    use crate::conv::{Activation, Conv2dParams, Padding, PaddingMode};
    use ndarray::{Array1, Array4};

    fn photo(w: u32, h: u32) -> Pixels {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 37 + y * 11) as u8, (x * y) as u8, (x ^ y) as u8 * 3])
        });
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png).unwrap();
        let limits = DecodeLimits {
            max_width: 1 << 14,
            max_height: 1 << 14,
            max_pixels: 1 << 28,
            max_alloc_bytes: 1 << 30,
        };
        let opts = crate::codec::DecodeOptions {
            color: ColorMode::Rgb,
            scale: 1.0 / 3.0,
            ..Default::default()
        };
        crate::codec::decode_pixels(png.get_ref(), &opts, &limits).unwrap()
    }

    /// A layer with pseudo-random weights and bias from `seed`, ReLU (also for
    /// `streamed`'s tests).
    pub(crate) fn layer(
        c_in: usize,
        c_out: usize,
        groups: usize,
        k: [usize; 2],
        p: Conv2dParams,
        seed: u32,
    ) -> Conv2dLayer {
        let mut s = seed | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2000) as f32 / 997.0 - 1.0
        };
        Conv2dLayer {
            weight: Array4::from_shape_simple_fn([c_out, c_in / groups, k[0], k[1]], &mut next),
            bias: Some(Array1::from_shape_simple_fn(c_out, &mut next)),
            params: p,
            activation: Activation::Relu,
        }
    }

    /// The geometries of `layers` run in turn on an input of `shape`.
    pub(crate) fn geoms(layers: &[Conv2dLayer], mut shape: [usize; 4]) -> Vec<Conv2dGeometry> {
        layers
            .iter()
            .map(|l| {
                let g = Conv2dGeometry::new(
                    shape,
                    l.weight.shape().try_into().unwrap(),
                    Some(l.weight.shape()[0]),
                    &l.params,
                )
                .unwrap();
                shape = g.output_shape();
                g
            })
            .collect()
    }

    /// A job's picture bytes and map ranges (also for `streamed`'s tests): the PNG it
    /// encoded as it rendered, else its pictures' fast PNGs in strips of `strip_bytes`.
    pub(crate) fn pictures(r: Rendered, strip_bytes: usize) -> (Vec<u8>, Vec<String>) {
        let ranges = r
            .ranges
            .iter()
            .map(|r| format!("{}:{}", r.lo, r.hi))
            .collect();
        let bytes = match (r.png, r.target) {
            (Some(png), _) => png,
            (None, Target::One(c)) => c.png_in_strips(strip_bytes).unwrap(),
            (None, Target::PerMap(cs)) => cs
                .iter()
                .flat_map(|c| c.png_in_strips(strip_bytes).unwrap())
                .collect(),
        };
        (bytes, ranges)
    }

    /// Stacks whose kernels are taller than a strip, at stride 2, dilated, reflect- and
    /// circular-padded, and one-row images: `(layers, width, height, batch)`, 3 channels in.
    fn stack_cases() -> Vec<(Vec<Conv2dLayer>, u32, u32, usize)> {
        let same = |mode: PaddingMode, stride: usize, dil: usize| Conv2dParams {
            stride: [stride; 2],
            dilation: [dil; 2],
            padding: Padding::Same,
            groups: 3,
            padding_mode: mode,
        };
        vec![
            (
                vec![layer(3, 3, 3, [7, 7], same(PaddingMode::Zeros, 1, 1), 1)],
                23,
                17,
                2,
            ),
            (
                vec![layer(3, 3, 3, [5, 3], same(PaddingMode::Reflect, 1, 2), 2)],
                19,
                21,
                1,
            ),
            (
                vec![layer(
                    3,
                    6,
                    3,
                    [3, 3],
                    Conv2dParams {
                        stride: [2, 2],
                        padding: Padding::Explicit([1, 2, 0, 1]),
                        groups: 3,
                        ..Default::default()
                    },
                    3,
                )],
                20,
                15,
                1,
            ),
            (
                vec![
                    layer(3, 3, 3, [3, 3], same(PaddingMode::Circular, 1, 1), 4),
                    layer(3, 3, 3, [5, 5], same(PaddingMode::Circular, 1, 1), 5),
                ],
                16,
                12,
                1,
            ),
            (
                vec![layer(
                    3,
                    3,
                    3,
                    [1, 5],
                    same(PaddingMode::Replicate, 1, 1),
                    6,
                )],
                30,
                1,
                2,
            ),
        ]
    }

    /// Strips of 1, 2, 3 and 7 rows, and the whole run, give the same pictures, for
    /// stacks whose kernels are taller than a strip, at stride 2, dilated, reflect- and
    /// circular-padded, one-row images, every normalisation, both depths, ZIP and batch.
    #[test]
    fn strips_of_any_height_give_the_whole_runs_pictures() {
        let cases = stack_cases();
        for (ci, (layers, w, h, n)) in cases.iter().enumerate() {
            let images: Vec<Pixels> = (0..*n).map(|_| photo(*w, *h)).collect();
            let geoms = geoms(layers, [*n, 3, *h as usize, *w as usize]);
            let [n, c, oh, ow] = geoms.last().expect("a layer").output_shape();
            for (mode, depth, per_map) in [
                (Normalize::Minmax, BitDepth::Eight, false),
                (Normalize::Abs, BitDepth::Sixteen, false),
                (Normalize::Clamp, BitDepth::Eight, true),
                (Normalize::Minmax, BitDepth::Sixteen, true),
            ] {
                let grid = Grid {
                    n,
                    c,
                    h: oh,
                    w: ow,
                    k: 1,
                };
                let cancel = CancelToken::new();
                let picture = |strip_rows| Picture {
                    grid,
                    per_map,
                    mode,
                    depth,
                    strip_rows,
                    png: None,
                };
                let whole = pictures(
                    run(&images, None, (layers, &geoms), &picture(oh), &cancel).unwrap(),
                    STRIP_BYTES,
                );
                let (_, stack, _) = estimate(
                    layers,
                    &geoms,
                    &[0; 2][..n],
                    grid,
                    per_map,
                    (mode, depth),
                    2,
                );
                let stack = stack.expect("streams");
                for rows in [1, 2, 3, 7] {
                    let got = pictures(
                        run(
                            &images,
                            Some(&stack),
                            (layers, &geoms),
                            &picture(rows),
                            &cancel,
                        )
                        .unwrap(),
                        STRIP_BYTES,
                    );
                    assert!(
                        got == whole,
                        "case {ci}, {mode:?} {depth:?} zip {per_map}, strips of {rows}"
                    );
                }
            }
        }
    }

    /// The PNG encoded as the picture is rendered ([`Picture::png`]) is the file of the
    /// picture rendered first, byte for byte: whole runs and strips of 1 to 7 rows, gray
    /// and RGB tiles, single pictures and montages (the batch of 2, 6 maps), every
    /// normalisation, both depths, PNG strips of one row to the whole picture.
    #[test]
    fn the_png_encoded_as_rendered_is_the_rendered_pictures_file() {
        for (ci, (layers, w, h, n)) in stack_cases().iter().enumerate() {
            let images: Vec<Pixels> = (0..*n).map(|_| photo(*w, *h)).collect();
            let geoms = geoms(layers, [*n, 3, *h as usize, *w as usize]);
            let [n, c, oh, ow] = geoms.last().expect("a layer").output_shape();
            for (mode, depth, k) in [
                (Normalize::Clamp, BitDepth::Eight, 3),
                (Normalize::Minmax, BitDepth::Eight, 1),
                (Normalize::Abs, BitDepth::Sixteen, 3),
                (Normalize::Minmax, BitDepth::Sixteen, 1),
            ] {
                let grid = Grid {
                    n,
                    c,
                    h: oh,
                    w: ow,
                    k,
                };
                let cancel = CancelToken::new();
                let picture = |strip_rows, png| Picture {
                    grid,
                    per_map: false,
                    mode,
                    depth,
                    strip_rows,
                    png,
                };
                let (_, stack, _) =
                    estimate(layers, &geoms, &[0; 2][..n], grid, false, (mode, depth), 2);
                let stack = stack.expect("streams");
                for strip_bytes in [1, 45, 400, STRIP_BYTES] {
                    for (rows, stack) in [
                        (oh, None),
                        (1, Some(&stack)),
                        (3, Some(&stack)),
                        (7, Some(&stack)),
                    ] {
                        let job = |png| {
                            run(
                                &images,
                                stack,
                                (layers, &geoms),
                                &picture(rows, png),
                                &cancel,
                            )
                        };
                        let first = pictures(job(None).unwrap(), strip_bytes);
                        let as_rendered = job(Some(strip_bytes)).unwrap();
                        assert!(as_rendered.png.is_some());
                        assert!(
                            pictures(as_rendered, strip_bytes) == first,
                            "case {ci}, {mode:?} {depth:?} k {k}, strips of {rows} rows, PNG strips of {strip_bytes} bytes"
                        );
                    }
                }
            }
        }
    }

    /// A render that fails part-way (a cancel) while the PNG is encoded as it goes ends
    /// with the error, on a 2-thread pool, and nothing waits for the rows never written.
    #[test]
    fn a_cancel_mid_render_ends_the_png_as_it_goes_without_waiting() {
        let (layers, w, h, _) = stack_cases().swap_remove(0);
        let images = [photo(w * 2, h * 3)];
        let geoms = geoms(&layers, [1, 3, h as usize * 3, w as usize * 2]);
        let [n, c, oh, ow] = geoms.last().expect("a layer").output_shape();
        let grid = Grid {
            n,
            c,
            h: oh,
            w: ow,
            k: 3,
        };
        let (_, stack, _) = estimate(
            &layers,
            &geoms,
            &[0],
            grid,
            false,
            (Normalize::Clamp, BitDepth::Eight),
            2,
        );
        let stack = stack.expect("streams");
        let picture = Picture {
            grid,
            per_map: false,
            mode: Normalize::Clamp,
            depth: BitDepth::Eight,
            strip_rows: 1,
            png: Some(64),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        // Fails its 20th strip: the strips after the failure may be written, those
        // around it never are.
        struct FailAt<'a>(Streamed<'a, 'a>, std::sync::atomic::AtomicUsize);
        impl Strips for FailAt<'_> {
            type Error = JobError;
            fn strip(&self, image: usize, rows: Range<usize>) -> Result<Vec<f32>, JobError> {
                if self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 20 {
                    self.0.cancel.cancel();
                }
                self.0.strip(image, rows)
            }
        }
        for _ in 0..3 {
            let cancel = CancelToken::new();
            let strips = FailAt(
                Streamed {
                    stack: &stack,
                    images: &images,
                    cancel: &cancel,
                },
                std::sync::atomic::AtomicUsize::new(0),
            );
            let got = pool.install(|| picture.render(&strips));
            assert!(matches!(got, Err(JobError::Cancelled)), "{got:?}");
        }
    }

    #[test]
    fn the_estimate_counts_samples_picture_and_strips_and_refuses_nothing_itself() {
        let l = layer(
            3,
            3,
            3,
            [5, 5],
            Conv2dParams {
                padding: Padding::Same,
                groups: 3,
                ..Default::default()
            },
            9,
        );
        let g = Conv2dGeometry::new([1, 3, 3024, 4032], [3, 1, 5, 5], Some(3), &l.params).unwrap();
        let layers = [l];
        let grid = Grid {
            n: 1,
            c: 3,
            h: 3024,
            w: 4032,
            k: 3,
        };
        let decoded = 3024 * 4032 * 3;
        let (e, stack, _) = estimate(
            &layers,
            &[g],
            &[decoded],
            grid,
            false,
            (Normalize::Clamp, BitDepth::Eight),
            2,
        );
        assert!(stack.is_some() && e.streamed);
        assert_eq!(e.picture_bytes, decoded);
        assert!(e.working_bytes <= 2 * 4 * STRIP_FLOATS, "{e:?}");
        assert!(e.strip_rows >= 64, "{e:?}");
        assert!(
            e.total_bytes < 110 << 20,
            "a 12 MP colour photo's job: {e:?}"
        );
    }
}
