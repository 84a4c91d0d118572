//! A planned stack run on a strip of output rows, from a source of input rows: what lets
//! a picture be computed strip by strip at bounded memory, with exactly the values the
//! whole-tensor run gives.
//!
//! Output rows `a .. b` of a layer (stride `s`, dilation `d`, kernel `k`, padding `p_t`
//! on top) read the padded input rows `a·s − p_t ..= (b − 1)·s − p_t + d·(k − 1)`. The
//! strip is that layer run on just those rows, with the algorithm planned for the whole
//! tensor:
//! - rows inside the input are asked of the layer below (recursively; the stack's input
//!   rows come from the caller's source), so each strip recomputes the halo it needs;
//! - zero padding stays virtual, as in the whole run: a strip at the top edge is given the
//!   top padding it reaches, one at the bottom edge the bottom padding;
//! - any other padding mode is made real: each padded row is the input row the mode maps it
//!   to (for `circular`, rows from the far edge, asked of the layer below like the others),
//!   and the strip runs with no vertical padding.
//!
//! Every algorithm computes an output from the rows it reads in an order that does not
//! depend on where the rows sit in the tensor, so a strip's values are the whole run's,
//! bit for bit (property-tested below for every algorithm, mode, stride and dilation);
//! Winograd's 2-row output tiles are kept on the whole run's grid by starting its strips
//! on even rows.
//!
//! [`StripStack::new`] refuses two kinds of layer, which callers run whole:
//! - a zero-padded layer whose padding alone fills some output row (`p_t` or `p_b` beyond
//!   `d·(k − 1)`): it has no input rows for that row;
//! - a layer planned as one of the `gemm` crate's GEMMs ([`streams`]).

use std::ops::Range;

use ndarray::{s, Array4, ArrayView4, Axis};

use super::params::{Activation, Conv2dGeometry, Conv2dParams, Padding, PaddingMode};
use super::plan::{plan_with_weights, Conv2dAlgo, Conv2dPlan};
use super::separable::SeparablePlan;
use super::stack::Conv2dLayer;
use super::{conv2d_with, CancelToken, Cancelled};

/// Fills `out` (`[c, rows.len(), w]` of the stack's input, row-major, of one image) with
/// input rows `rows`.
pub trait RowSource: Sync {
    /// Writes rows `rows` of every channel; `out.len() == c · rows.len() · w`. Every
    /// element of `out` must be written: it comes unzeroed from the buffer cache.
    fn rows(&self, rows: Range<usize>, out: &mut [f32]);
}

/// One layer as the strips run it.
#[derive(Debug)]
struct StripLayer<'a> {
    layer: &'a Conv2dLayer,
    /// The whole-tensor geometry (`n` as planned).
    geom: Conv2dGeometry,
    algorithm: Conv2dAlgo,
    separable: Option<SeparablePlan>,
}

/// A planned stack, ready to run strip by strip (see the module docs).
#[derive(Debug)]
pub struct StripStack<'a> {
    layers: Vec<StripLayer<'a>>,
}

/// Why a stack cannot run in strips.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotStreamable(pub String);

impl<'a> StripStack<'a> {
    /// Plans each layer as the whole-tensor run would ([`plan_with_weights`] on `geoms`),
    /// and returns the stack with those plans.
    ///
    /// # Errors
    /// [`NotStreamable`] for a zero-padded layer whose padding alone fills an output row, or
    /// a layer planned as a GEMM that does not [stream](streams).
    pub fn new(
        layers: &'a [Conv2dLayer],
        geoms: &[Conv2dGeometry],
    ) -> Result<(Self, Vec<Conv2dPlan>), NotStreamable> {
        assert_eq!(layers.len(), geoms.len());
        let mut out = Vec::with_capacity(layers.len());
        let mut plans = Vec::with_capacity(layers.len());
        for (i, (layer, g)) in layers.iter().zip(geoms).enumerate() {
            let (plan, separable) = plan_with_weights(g, layer.weight.view());
            check_layer(i, g, plan.algorithm)?;
            out.push(StripLayer {
                layer,
                geom: *g,
                algorithm: plan.algorithm,
                separable,
            });
            plans.push(plan);
        }
        Ok((Self { layers: out }, plans))
    }

    /// [`StripStack::new`] with the algorithm of each layer chosen by the caller.
    #[cfg(test)]
    pub(crate) fn with_algorithms(
        layers: &'a [Conv2dLayer],
        geoms: &[Conv2dGeometry],
        algos: &[Conv2dAlgo],
    ) -> Result<Self, NotStreamable> {
        let layers = layers
            .iter()
            .zip(geoms)
            .zip(algos)
            .enumerate()
            .map(|(i, ((layer, g), &algorithm))| {
                check_layer(i, g, algorithm)?;
                let separable = match algorithm {
                    Conv2dAlgo::Separable => Some(
                        super::separable::plan(layer.weight.view(), g)
                            .ok_or_else(|| NotStreamable("not rank-1".into()))?,
                    ),
                    _ => None,
                };
                Ok(StripLayer {
                    layer,
                    geom: *g,
                    algorithm,
                    separable,
                })
            })
            .collect::<Result<_, NotStreamable>>()?;
        Ok(Self { layers })
    }

    /// Output `[c_out, out_h, out_w]` of one image.
    pub fn output_dims(&self) -> [usize; 3] {
        let g = &self.layers.last().expect("a layer").geom;
        [g.c_out, g.out_h, g.out_w]
    }

    /// Floats a strip of `rows` output rows holds at its peak ([`working_floats`]).
    pub fn working_floats(&self, rows: usize) -> u64 {
        let geoms: Vec<_> = self.layers.iter().map(|l| l.geom).collect();
        let algos: Vec<_> = self.layers.iter().map(|l| l.algorithm).collect();
        working_floats(&geoms, &algos, rows)
    }

    /// Output rows `rows` of the last layer, for one image whose input rows `source` gives:
    /// `[1, c_out, rows.len(), out_w]`, bit for bit those rows of the whole-tensor run.
    ///
    /// # Errors
    /// [`Cancelled`] if `cancel` fires.
    ///
    /// # Panics
    /// If `rows` is empty or beyond the output.
    pub fn run(
        &self,
        source: &dyn RowSource,
        rows: Range<usize>,
        cancel: &CancelToken,
    ) -> Result<Array4<f32>, Cancelled> {
        let [_, out_h, _] = self.output_dims();
        assert!(
            rows.start < rows.end && rows.end <= out_h,
            "rows {rows:?} of {out_h}"
        );
        self.produce(self.layers.len(), rows, source, cancel)
    }

    /// Rows `rows` of the input of layer `l` (of the stack's output for `l = len`), as
    /// `[1, c, rows.len(), w]`.
    fn produce(
        &self,
        l: usize,
        rows: Range<usize>,
        source: &dyn RowSource,
        cancel: &CancelToken,
    ) -> Result<Array4<f32>, Cancelled> {
        if l == 0 {
            let g = &self.layers[0].geom;
            let mut data = super::buffers::take_unzeroed(g.c_in * rows.len() * g.w);
            source.rows(rows.clone(), &mut data);
            return Ok(Array4::from_shape_vec((1, g.c_in, rows.len(), g.w), data)
                .expect("source strip shape"));
        }
        let layer = &self.layers[l - 1];
        let g = &layer.geom;
        // Winograd's tiles stay on the whole run's grid of 2-row tiles.
        let start = if layer.algorithm == Conv2dAlgo::Winograd {
            rows.start & !1
        } else {
            rows.start
        };
        let (s, reach) = (g.stride[0], g.dilation[0] * (g.k_h - 1));
        let first = (start * s) as isize - g.padding[0] as isize;
        let last = ((rows.end - 1) * s + reach) as isize - g.padding[0] as isize;
        let (input, top, bottom) = if g.padding_mode == PaddingMode::Zeros {
            let lo = first.max(0) as usize;
            let hi = last.min(g.h as isize - 1) as usize;
            let x = self.produce(l - 1, lo..hi + 1, source, cancel)?;
            (
                x,
                (lo as isize - first) as usize,
                (last - hi as isize) as usize,
            )
        } else {
            let wanted: Vec<usize> = (first..=last)
                .map(|i| {
                    g.padding_mode
                        .source_index(i, g.h)
                        .expect("a padded row maps to a row")
                })
                .collect();
            (self.gather(l - 1, &wanted, source, cancel)?, 0, 0)
        };
        let params = Conv2dParams {
            stride: g.stride,
            dilation: g.dilation,
            padding: Padding::Explicit([top, bottom, g.padding[2], g.padding[3]]),
            groups: g.groups,
            padding_mode: g.padding_mode,
        };
        let sg = Conv2dGeometry::new(
            [1, g.c_in, input.shape()[2], g.w],
            g.weight_shape(),
            layer.layer.bias.as_ref().map(|b| b.len()),
            &params,
        )
        .expect("a strip of a valid layer is valid");
        debug_assert_eq!(sg.out_h, rows.end - start);
        let bias = layer.layer.bias.as_ref().map(|b| b.view());
        let mut y = match &layer.separable {
            Some(sep) => sep.run(input.view(), bias, &sg, cancel),
            None => conv2d_with(
                layer.algorithm,
                input.view(),
                layer.layer.weight.view(),
                bias,
                &sg,
                cancel,
            ),
        };
        super::buffers::recycle(input);
        if let (Ok(y), Activation::Relu) = (&mut y, layer.layer.activation) {
            y.mapv_inplace(|v| v.max(0.0));
        }
        let y = y?;
        Ok(if start == rows.start {
            y
        } else {
            let part = y.slice(s![.., .., rows.start - start.., ..]).to_owned();
            super::buffers::recycle(y);
            part
        })
    }

    /// Rows `wanted` (in that order, repeats allowed) of the input of layer `l`: each run
    /// of consecutive rows among them is produced once, then the rows are copied in order.
    fn gather(
        &self,
        l: usize,
        wanted: &[usize],
        source: &dyn RowSource,
        cancel: &CancelToken,
    ) -> Result<Array4<f32>, Cancelled> {
        let contiguous = wanted.windows(2).all(|p| p[1] == p[0] + 1);
        if contiguous {
            return self.produce(l, wanted[0]..wanted[wanted.len() - 1] + 1, source, cancel);
        }
        let mut sorted = wanted.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut runs: Vec<(Range<usize>, Array4<f32>)> = Vec::new();
        let mut i = 0;
        while i < sorted.len() {
            let mut j = i + 1;
            while j < sorted.len() && sorted[j] == sorted[j - 1] + 1 {
                j += 1;
            }
            let r = sorted[i]..sorted[j - 1] + 1;
            runs.push((r.clone(), self.produce(l, r, source, cancel)?));
            i = j;
        }
        let (c, w) = (runs[0].1.shape()[1], runs[0].1.shape()[3]);
        let mut out = Array4::zeros((1, c, wanted.len(), w));
        for (k, &row) in wanted.iter().enumerate() {
            let (r, x) = runs
                .iter()
                .find(|(r, _)| r.contains(&row))
                .expect("every wanted row was produced");
            out.slice_mut(s![.., .., k, ..])
                .assign(&x.slice(s![.., .., row - r.start, ..]));
        }
        for (_, x) in runs {
            super::buffers::recycle(x);
        }
        Ok(out)
    }
}

/// Whether layer `i`, run by `algo`, can run in strips (see [`StripStack::new`]).
///
/// # Errors
/// [`NotStreamable`] with the reason.
pub fn check_layer(i: usize, g: &Conv2dGeometry, algo: Conv2dAlgo) -> Result<(), NotStreamable> {
    let reach = g.dilation[0] * (g.k_h - 1);
    if g.padding_mode == PaddingMode::Zeros && g.padding[0].max(g.padding[1]) > reach {
        return Err(NotStreamable(format!(
            "layer {i}: vertical zero padding {:?} beyond the kernel's reach {reach} gives output rows of padding only",
            &g.padding[..2]
        )));
    }
    if !streams(algo) {
        return Err(NotStreamable(format!(
            "layer {i}: {algo} sums in an order that depends on the strip's size"
        )));
    }
    Ok(())
}

/// Floats a strip of `rows` output rows of a stack (one image; layers `geoms` run by
/// `algos`) holds at its peak: for each layer, the strip of its input and of its output,
/// with the halo each layer below adds (an upper bound: only two neighbouring layers'
/// buffers are alive at once, but every layer is counted).
pub fn working_floats(geoms: &[Conv2dGeometry], algos: &[Conv2dAlgo], rows: usize) -> u64 {
    let mut need = rows as u64;
    let mut total = 0u64;
    for (g, &a) in geoms.iter().zip(algos).rev() {
        let out = need;
        let align = u64::from(a == Conv2dAlgo::Winograd);
        let inp = (out + align - 1) * g.stride[0] as u64 + (g.dilation[0] * (g.k_h - 1)) as u64 + 1;
        total += out * (g.c_out * g.out_w) as u64 + inp * (g.c_in * g.w) as u64;
        need = inp.min(g.h as u64);
    }
    total
}

/// Whether `algo`'s value for an output is the same whatever the size of the tensor it
/// runs on. The GEMMs of the `gemm` crate are not: it picks its kernel (a GEMV for one
/// column, its K blocking for small matrices) by the matrix's size, so a strip's sums
/// could round differently from the whole run's.
pub fn streams(algo: Conv2dAlgo) -> bool {
    !matches!(algo, Conv2dAlgo::GemmPointwise | Conv2dAlgo::GemmIm2col)
}

/// A [`RowSource`] over a whole `[1, c, h, w]` tensor (for tests and library use).
pub struct TensorRows<'a>(pub ArrayView4<'a, f32>);

impl RowSource for TensorRows<'_> {
    fn rows(&self, rows: Range<usize>, out: &mut [f32]) {
        let part = self.0.slice(s![0, .., rows, ..]);
        for (o, v) in out.iter_mut().zip(part.iter()) {
            *o = *v;
        }
    }
}

/// Concatenates strips `[1, c, r_i, w]` along the rows (for tests and library use).
pub fn concat_rows(strips: &[Array4<f32>]) -> Array4<f32> {
    let views: Vec<_> = strips.iter().map(|s| s.view()).collect();
    ndarray::concatenate(Axis(2), &views).expect("strips of one tensor")
}

#[cfg(test)]
mod tests;
