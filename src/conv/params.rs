//! Validated convolution parameters and the geometry they imply.
//!
//! Everything a convolution needs to know about shapes is resolved here, once, with
//! checked arithmetic, *before* any buffer is allocated: a [`Conv2dGeometry`] can only be
//! built from a spec that is possible, and every refusal names the field at fault.
//!
//! Conventions (those of `torch.nn.functional.conv2d` / `paddle.nn.functional.conv2d`):
//! - input `[n, c_in, h, w]`, weight `[c_out, c_in / groups, k_h, k_w]`, bias `[c_out]`;
//! - padding is `[top, bottom, left, right]` in pixels (Paddle's order);
//! - `out_h = floor((h + top + bottom − d_h·(k_h − 1) − 1) / s_h) + 1`, likewise for `out_w`.

use std::fmt;

/// How samples outside the input are made up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PaddingMode {
    /// Zeros outside the image.
    #[default]
    Zeros,
    /// Mirror without repeating the edge: `c b | a b c | b a` (needs padding < size).
    Reflect,
    /// Repeat the edge sample: `a a | a b c | c c`.
    Replicate,
    /// Wrap around: `b c | a b c | a b` (needs padding ≤ size, PyTorch's rule).
    Circular,
    /// Mirror including the edge: `b a | a b c | c b` (OpenCV's `BORDER_REFLECT`, scipy's
    /// `reflect`; needs padding ≤ size).
    Symmetric,
}

impl PaddingMode {
    /// The name used in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zeros => "zeros",
            Self::Reflect => "reflect",
            Self::Replicate => "replicate",
            Self::Circular => "circular",
            Self::Symmetric => "symmetric",
        }
    }

    /// Maps a coordinate of the padded input (`i` may be negative or ≥ `size`) to the input
    /// sample it reads, or `None` for a zero.
    ///
    /// Only valid for the padding limits [`Conv2dGeometry::new`] enforces (one reflection
    /// or wrap at most); `size` ≥ 1.
    #[inline]
    pub fn source_index(self, i: isize, size: usize) -> Option<usize> {
        let n = size as isize;
        if (0..n).contains(&i) {
            return Some(i as usize);
        }
        let j = match self {
            Self::Zeros => return None,
            Self::Replicate => i.clamp(0, n - 1),
            Self::Reflect => {
                if i < 0 {
                    -i
                } else {
                    2 * (n - 1) - i
                }
            }
            Self::Symmetric => {
                if i < 0 {
                    -i - 1
                } else {
                    2 * n - 1 - i
                }
            }
            Self::Circular => i.rem_euclid(n),
        };
        // Defensive: clamping keeps a bad geometry from ever indexing out of bounds.
        Some(j.clamp(0, n - 1) as usize)
    }
}

/// Padding as requested, before it is resolved against an input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// `[top, bottom, left, right]`.
    Explicit([usize; 4]),
    /// Output size `ceil(h / s)`; the total padding `max(0, (out − 1)·s + d·(k − 1) + 1 − h)`
    /// is split with the odd pixel at the bottom/right, as TensorFlow does. Dilation is
    /// honoured (effective kernel `d·(k − 1) + 1`), unlike Paddle, which resets it to 1.
    Same,
    /// No padding.
    Valid,
}

impl Default for Padding {
    fn default() -> Self {
        Self::Explicit([0; 4])
    }
}

/// Activation applied after a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Identity.
    #[default]
    None,
    /// `max(0, x)`.
    Relu,
}

/// The parameters of one convolution layer, apart from its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    /// `[s_h, s_w]`, each ≥ 1.
    pub stride: [usize; 2],
    /// `[d_h, d_w]`, each ≥ 1.
    pub dilation: [usize; 2],
    /// Requested padding.
    pub padding: Padding,
    /// Number of groups, ≥ 1; `c_in` and `c_out` must be divisible by it.
    pub groups: usize,
    /// How the padding is filled.
    pub padding_mode: PaddingMode,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Self {
            stride: [1, 1],
            dilation: [1, 1],
            padding: Padding::default(),
            groups: 1,
            padding_mode: PaddingMode::Zeros,
        }
    }
}

/// A refused spec: the field at fault (relative to the layer, e.g. `"stride"`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// Field name within the layer spec: `input`, `weight`, `bias`, `stride`, `padding`,
    /// `dilation`, `groups`, `padding_mode`.
    pub field: &'static str,
    /// Human-readable reason, naming the numbers involved.
    pub reason: String,
}

impl SpecError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for SpecError {}

/// Fully resolved shapes of one convolution: every field is known to be consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Conv2dGeometry {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height in pixels.
    pub h: usize,
    /// Input width in pixels.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel height.
    pub k_h: usize,
    /// Kernel width.
    pub k_w: usize,
    /// `[s_h, s_w]`.
    pub stride: [usize; 2],
    /// `[d_h, d_w]`.
    pub dilation: [usize; 2],
    /// Resolved padding `[top, bottom, left, right]`.
    pub padding: [usize; 4],
    /// Groups.
    pub groups: usize,
    /// Padding mode.
    pub padding_mode: PaddingMode,
    /// Output height.
    pub out_h: usize,
    /// Output width.
    pub out_w: usize,
}

impl Conv2dGeometry {
    /// Resolves and checks a layer: `input` is `[n, c_in, h, w]`, `weight` is
    /// `[c_out, c_in / groups, k_h, k_w]`, `bias_len` the bias length if a bias is given.
    ///
    /// # Errors
    /// A [`SpecError`] naming the first field at fault: zero-sized dimensions, stride or
    /// dilation < 1, groups not dividing the channels, weight not matching the input
    /// channels, bias length ≠ `c_out`, padding beyond what the mode allows, or an effective
    /// kernel larger than the padded input.
    pub fn new(
        input: [usize; 4],
        weight: [usize; 4],
        bias_len: Option<usize>,
        params: &Conv2dParams,
    ) -> Result<Self, SpecError> {
        let [n, c_in, h, w] = input;
        let [c_out, c_per_group, k_h, k_w] = weight;
        if n == 0 || c_in == 0 || h == 0 || w == 0 {
            return Err(SpecError::new(
                "input",
                format!("input shape {input:?} has a zero-sized dimension; every dimension of N×C×H×W must be ≥ 1"),
            ));
        }
        if c_out == 0 || c_per_group == 0 || k_h == 0 || k_w == 0 {
            return Err(SpecError::new(
                "weight",
                format!("weight shape {weight:?} has a zero-sized dimension; every dimension of C_out×C_in/groups×kh×kw must be ≥ 1"),
            ));
        }
        let Conv2dParams {
            stride,
            dilation,
            groups,
            padding_mode,
            ..
        } = *params;
        if stride.contains(&0) {
            return Err(SpecError::new("stride", "stride must be ≥ 1"));
        }
        if dilation.contains(&0) {
            return Err(SpecError::new("dilation", "dilation must be ≥ 1"));
        }
        if groups == 0 {
            return Err(SpecError::new("groups", "groups must be ≥ 1"));
        }
        if c_in % groups != 0 {
            return Err(SpecError::new(
                "groups",
                format!("input channels ({c_in}) must be divisible by groups ({groups})"),
            ));
        }
        if c_out % groups != 0 {
            return Err(SpecError::new(
                "groups",
                format!("output channels ({c_out}, weight dimension 0) must be divisible by groups ({groups})"),
            ));
        }
        if c_per_group != c_in / groups {
            return Err(SpecError::new(
                "weight",
                format!(
                    "weight has {c_per_group} input channels per group (dimension 1) but the input has {c_in} channels in {groups} group(s): expected weight shape [{c_out}, {}, {k_h}, {k_w}]",
                    c_in / groups
                ),
            ));
        }
        if let Some(len) = bias_len {
            if len != c_out {
                return Err(SpecError::new(
                    "bias",
                    format!("bias has {len} values but there are {c_out} output channels"),
                ));
            }
        }
        let eff_h = effective_kernel(k_h, dilation[0])?;
        let eff_w = effective_kernel(k_w, dilation[1])?;
        let padding = match params.padding {
            Padding::Explicit(p) => p,
            Padding::Valid => [0; 4],
            Padding::Same => {
                let (t, b) = same_padding(h, eff_h, stride[0])?;
                let (l, r) = same_padding(w, eff_w, stride[1])?;
                [t, b, l, r]
            }
        };
        check_mode_limits(padding_mode, padding, h, w)?;
        let out_h = output_size(h, padding[0], padding[1], eff_h, stride[0], "height")?;
        let out_w = output_size(w, padding[2], padding[3], eff_w, stride[1], "width")?;
        Ok(Self {
            n,
            c_in,
            h,
            w,
            c_out,
            k_h,
            k_w,
            stride,
            dilation,
            padding,
            groups,
            padding_mode,
            out_h,
            out_w,
        })
    }

    /// Output shape `[n, c_out, out_h, out_w]`.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.n, self.c_out, self.out_h, self.out_w]
    }

    /// Input shape `[n, c_in, h, w]`.
    pub fn input_shape(&self) -> [usize; 4] {
        [self.n, self.c_in, self.h, self.w]
    }

    /// Weight shape `[c_out, c_in / groups, k_h, k_w]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        [self.c_out, self.c_in / self.groups, self.k_h, self.k_w]
    }

    /// Number of output elements, saturating at `u64::MAX`.
    pub fn output_len(&self) -> u64 {
        self.output_shape()
            .iter()
            .fold(1u64, |a, &d| a.saturating_mul(d as u64))
    }

    /// Multiply-accumulates: `n·c_out·out_h·out_w·(c_in/groups)·k_h·k_w`, saturating.
    pub fn macs(&self) -> u64 {
        [self.c_in / self.groups, self.k_h, self.k_w]
            .iter()
            .fold(self.output_len(), |a, &d| a.saturating_mul(d as u64))
    }

    /// Effective (dilated) kernel extent `[d_h·(k_h − 1) + 1, d_w·(k_w − 1) + 1]`.
    pub fn effective_kernel(&self) -> [usize; 2] {
        [
            self.dilation[0] * (self.k_h - 1) + 1,
            self.dilation[1] * (self.k_w - 1) + 1,
        ]
    }
}

fn effective_kernel(k: usize, d: usize) -> Result<usize, SpecError> {
    (k - 1)
        .checked_mul(d)
        .and_then(|x| x.checked_add(1))
        .ok_or_else(|| SpecError::new("dilation", "dilated kernel size overflows"))
}

/// TensorFlow's `SAME` rule: `(before, after)` with the odd pixel after.
///
/// `size` and `stride` are ≥ 1, so `(out − 1)·stride < size` and only the kernel can overflow.
fn same_padding(size: usize, eff_k: usize, stride: usize) -> Result<(usize, usize), SpecError> {
    let out = size.div_ceil(stride);
    let needed = ((out - 1) * stride)
        .checked_add(eff_k)
        .ok_or_else(|| SpecError::new("dilation", "dilated kernel size overflows"))?
        .saturating_sub(size);
    Ok((needed / 2, needed - needed / 2))
}

fn check_mode_limits(
    mode: PaddingMode,
    p: [usize; 4],
    h: usize,
    w: usize,
) -> Result<(), SpecError> {
    let (max_h, max_w, rule) = match mode {
        PaddingMode::Zeros | PaddingMode::Replicate => return Ok(()),
        PaddingMode::Reflect => (h - 1, w - 1, "padding must be < the input size"),
        PaddingMode::Circular | PaddingMode::Symmetric => {
            (h, w, "padding must be ≤ the input size")
        }
    };
    let worst_h = p[0].max(p[1]);
    let worst_w = p[2].max(p[3]);
    if worst_h > max_h || worst_w > max_w {
        return Err(SpecError::new(
            "padding",
            format!(
                "{} padding {p:?} does not fit an input of {h}×{w}: {rule} (at most {max_h} rows and {max_w} columns)",
                mode.as_str()
            ),
        ));
    }
    Ok(())
}

fn output_size(
    size: usize,
    before: usize,
    after: usize,
    eff_k: usize,
    stride: usize,
    axis: &str,
) -> Result<usize, SpecError> {
    let padded = size
        .checked_add(before)
        .and_then(|x| x.checked_add(after))
        .ok_or_else(|| SpecError::new("padding", "padded size overflows"))?;
    if eff_k > padded {
        return Err(SpecError::new(
            "weight",
            format!("the (dilated) kernel {axis} {eff_k} is larger than the padded input {axis} {padded} ({size} + padding {before} + {after})"),
        ));
    }
    Ok((padded - eff_k) / stride + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(
        input: [usize; 4],
        weight: [usize; 4],
        p: Conv2dParams,
    ) -> Result<Conv2dGeometry, SpecError> {
        Conv2dGeometry::new(input, weight, None, &p)
    }

    #[test]
    fn output_size_follows_the_floor_rule() {
        let p = Conv2dParams {
            stride: [2, 3],
            padding: Padding::Explicit([1, 2, 0, 1]),
            dilation: [2, 1],
            ..Default::default()
        };
        let g = geom([1, 1, 10, 11], [1, 1, 3, 4], p).unwrap();
        // floor((10 + 3 − 2·2 − 1)/2) + 1 = 5; floor((11 + 1 − 3 − 1)/3) + 1 = 3
        assert_eq!((g.out_h, g.out_w), (5, 3));
    }

    #[test]
    fn same_padding_puts_the_odd_pixel_last_and_honours_dilation() {
        let p = Conv2dParams {
            padding: Padding::Same,
            ..Default::default()
        };
        assert_eq!(
            geom([1, 1, 5, 5], [1, 1, 2, 2], p).unwrap().padding,
            [0, 1, 0, 1]
        );
        let p = Conv2dParams {
            padding: Padding::Same,
            dilation: [2, 2],
            ..Default::default()
        };
        let g = geom([1, 1, 5, 5], [1, 1, 3, 3], p).unwrap();
        assert_eq!(g.padding, [2, 2, 2, 2]);
        assert_eq!((g.out_h, g.out_w), (5, 5));
        let p = Conv2dParams {
            padding: Padding::Same,
            stride: [2, 2],
            ..Default::default()
        };
        let g = geom([1, 1, 5, 5], [1, 1, 3, 3], p).unwrap();
        assert_eq!((g.out_h, g.out_w), (3, 3));
    }

    #[test]
    fn kernel_larger_than_padded_input_is_rejected() {
        let e = geom(
            [1, 1, 2, 2],
            [1, 1, 3, 3],
            Conv2dParams {
                stride: [2, 2],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(e.field, "weight");
    }

    #[test]
    fn reflect_padding_must_be_smaller_than_the_input() {
        let p = Conv2dParams {
            padding: Padding::Explicit([0, 0, 5, 0]),
            padding_mode: PaddingMode::Reflect,
            ..Default::default()
        };
        assert_eq!(
            geom([1, 1, 5, 5], [1, 1, 1, 1], p).unwrap_err().field,
            "padding"
        );
        let p = Conv2dParams {
            padding: Padding::Explicit([0, 0, 5, 0]),
            padding_mode: PaddingMode::Circular,
            ..Default::default()
        };
        assert!(geom([1, 1, 5, 5], [1, 1, 1, 1], p).is_ok());
    }

    #[test]
    fn channel_and_group_mismatches_name_their_field() {
        let g2 = Conv2dParams {
            groups: 2,
            ..Default::default()
        };
        assert_eq!(
            geom([1, 3, 4, 4], [2, 1, 1, 1], g2).unwrap_err().field,
            "groups"
        );
        assert_eq!(
            geom([1, 4, 4, 4], [3, 2, 1, 1], g2).unwrap_err().field,
            "groups"
        );
        assert_eq!(
            geom([1, 4, 4, 4], [2, 1, 1, 1], g2).unwrap_err().field,
            "weight"
        );
        assert_eq!(
            Conv2dGeometry::new(
                [1, 1, 4, 4],
                [1, 1, 1, 1],
                Some(3),
                &Conv2dParams::default()
            )
            .unwrap_err()
            .field,
            "bias"
        );
    }

    #[test]
    fn padding_modes_map_indices_as_pytorch_does() {
        let idx = |m: PaddingMode| (-2..7).map(|i| m.source_index(i, 5)).collect::<Vec<_>>();
        let s = |v: &[usize]| v.iter().map(|&i| Some(i)).collect::<Vec<_>>();
        assert_eq!(idx(PaddingMode::Reflect), s(&[2, 1, 0, 1, 2, 3, 4, 3, 2]));
        assert_eq!(idx(PaddingMode::Symmetric), s(&[1, 0, 0, 1, 2, 3, 4, 4, 3]));
        assert_eq!(idx(PaddingMode::Replicate), s(&[0, 0, 0, 1, 2, 3, 4, 4, 4]));
        assert_eq!(idx(PaddingMode::Circular), s(&[3, 4, 0, 1, 2, 3, 4, 0, 1]));
        assert_eq!(PaddingMode::Zeros.source_index(-1, 5), None);
    }

    /// Sizes a hostile request may carry: small, boundary and huge.
    fn any_size() -> impl proptest::strategy::Strategy<Value = usize> {
        use proptest::prelude::*;
        prop_oneof![
            0usize..5,
            Just(usize::MAX),
            Just(usize::MAX / 2),
            Just(1usize << 32),
            Just(4_530_567_944_702_430_720),
            any::<usize>(),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// Found by the contract test: channel and group counts near `usize::MAX` overflowed.
        /// Any shape and parameters give a geometry or a `SpecError`, never a panic, and an
        /// accepted geometry satisfies the output-size rule.
        #[test]
        fn extreme_shapes_never_panic(
            input in proptest::array::uniform4(any_size()),
            weight in proptest::array::uniform4(any_size()),
            stride in proptest::array::uniform2(any_size()),
            dilation in proptest::array::uniform2(any_size()),
            pad in proptest::array::uniform4(any_size()),
            groups in any_size(),
            same in proptest::bool::ANY,
            mode in proptest::sample::select(vec![
                PaddingMode::Zeros, PaddingMode::Reflect, PaddingMode::Replicate,
                PaddingMode::Circular, PaddingMode::Symmetric,
            ]),
        ) {
            let p = Conv2dParams {
                stride,
                dilation,
                padding: if same { Padding::Same } else { Padding::Explicit(pad) },
                groups,
                padding_mode: mode,
            };
            if let Ok(g) = Conv2dGeometry::new(input, weight, Some(weight[0]), &p) {
                let _ = (g.output_len(), g.macs());
                let _ = crate::conv::receptive_fields(std::slice::from_ref(&g));
                let eff = g.effective_kernel();
                let padded_h = g.h + g.padding[0] + g.padding[1];
                proptest::prop_assert_eq!(g.out_h, (padded_h - eff[0]) / g.stride[0] + 1);
            }
        }
    }
}
