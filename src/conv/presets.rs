//! Named 2-D kernels ("presets") and their catalogue.
//!
//! Every preset is a `k_h × k_w` kernel of `f32` weights stored row-major and
//! meant for **cross-correlation** (the deep-learning convention: the kernel is
//! not flipped). With that convention `sobel_x` responds positively where the
//! intensity increases to the right and `sobel_y` where it increases downwards.
//! Parameterised presets (`identity`, `box`, `gaussian`, `unsharp`) take a JSON
//! object of parameters; missing (or `null`) parameters take their defaults,
//! unknown parameter names are rejected. Weights that involve real arithmetic
//! (Gaussian, box normalisation, unsharp mask) are computed in `f64` and cast
//! to `f32` once at the end.

use serde::Serialize;
use serde_json::{Map, Value};

/// One `k_h × k_w` kernel, row-major: the weight at row `r`, column `c` is
/// `weights[r * k_w + c]`, so `weights.len() == k_h * k_w`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Kernel2d {
    /// Number of rows (kernel height), ≥ 1.
    pub k_h: usize,
    /// Number of columns (kernel width), ≥ 1.
    pub k_w: usize,
    /// Row-major weights, `k_h * k_w` of them.
    pub weights: Vec<f32>,
}

/// Description of one preset parameter, as shown in the catalogue.
#[derive(Debug, Clone, Serialize)]
pub struct PresetParam {
    /// Parameter name, the key in the request's parameter object.
    pub name: &'static str,
    /// `"int"` (a JSON integer) or `"number"` (any finite JSON number).
    pub kind: &'static str,
    /// Value used when the parameter is absent; `null` means "derived from
    /// other parameters" (see the description).
    pub default: Value,
    /// Human-readable meaning, including extra constraints (e.g. "odd").
    pub description: &'static str,
    /// Inclusive lower bound, if any.
    pub min: Option<f64>,
    /// Inclusive upper bound, if any.
    pub max: Option<f64>,
}

/// Catalogue entry for one preset (served by `GET /v1/kernels`).
#[derive(Debug, Clone, Serialize)]
pub struct PresetInfo {
    /// Preset name, as accepted by [`build_preset`].
    pub name: &'static str,
    /// What the kernel does.
    pub description: &'static str,
    /// Accepted parameters (empty for fixed kernels).
    pub params: Vec<PresetParam>,
    /// Weights with default params.
    pub kernel: Kernel2d,
    /// True when the kernel is exactly rank-1 (separable), see [`is_separable`].
    pub separable: bool,
}

/// Why a preset could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PresetError {
    /// No preset has this name.
    #[error("unknown preset `{name}`; known presets: {known}")]
    Unknown { name: String, known: String },
    /// A parameter has the wrong type or is out of range.
    #[error("preset parameter `{param}`: {reason}")]
    BadParam { param: String, reason: String },
    /// The preset does not accept a parameter of this name.
    #[error("preset `{preset}` does not take parameter `{param}`; it takes: {accepted}")]
    UnknownParam {
        preset: String,
        param: String,
        accepted: String,
    },
}

/// Names of all presets, in catalogue order (derived from the preset table).
pub const PRESET_NAMES: &[&str] = &preset_names();

/// Largest accepted kernel side for parameterised presets.
pub const MAX_PRESET_SIZE: usize = 63;

/// Build a preset kernel from its name and parameters (a JSON object of the
/// user's parameters, missing ones take defaults).
///
/// # Errors
///
/// * [`PresetError::Unknown`] if `name` is not one of [`PRESET_NAMES`];
/// * [`PresetError::UnknownParam`] if `params` has a key the preset does not take;
/// * [`PresetError::BadParam`] if a value has the wrong JSON type, is not an
///   integer where one is required, is out of range, not finite, or a size that
///   must be odd is even.
pub fn build_preset(name: &str, params: &Map<String, Value>) -> Result<Kernel2d, PresetError> {
    let def = PRESETS
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| PresetError::Unknown {
            name: name.to_owned(),
            known: PRESET_NAMES.join(", "),
        })?;
    let args = Args::new(def, params)?;
    def.build(&args)
}

/// Catalogue for `GET /v1/kernels`, in [`PRESET_NAMES`] order, each with its
/// kernel built from default parameters.
pub fn catalogue() -> Vec<PresetInfo> {
    let no_params = Map::new();
    let info = |def: &'static PresetDef| {
        let args = Args {
            def,
            params: &no_params,
        };
        let kernel = def
            .build(&args)
            .expect("preset defaults are valid (unit-tested)");
        let params = def.params.iter().map(ParamDef::info).collect();
        let (name, description) = (def.name, def.description);
        PresetInfo {
            name,
            description,
            params,
            separable: is_separable(&kernel),
            kernel,
        }
    };
    PRESETS.iter().map(info).collect()
}

/// Factor a kernel as `K ≈ u · vᵀ` if it is rank-1: [`super::separable::rank1_factors`]
/// on the preset's weights.
pub fn rank1_factors(kernel: &Kernel2d) -> Option<(Vec<f64>, Vec<f64>)> {
    super::separable::rank1_factors(&kernel.weights, kernel.k_h, kernel.k_w)
}

/// True when the kernel is exactly rank-1 (see [`rank1_factors`]).
pub fn is_separable(kernel: &Kernel2d) -> bool {
    rank1_factors(kernel).is_some()
}

// ---------------------------------------------------------------------------
// Preset table

/// Static description of one preset.
struct PresetDef {
    name: &'static str,
    description: &'static str,
    params: &'static [ParamDef],
    build: Builder,
}

/// How a preset's kernel is made.
#[derive(Clone, Copy)]
enum Builder {
    /// Parameterless `k_h × k_w` kernel with these row-major weights.
    Fixed(usize, usize, &'static [f32]),
    /// Kernel computed from validated parameters.
    Computed(BuildFn),
}

impl PresetDef {
    fn build(&self, args: &Args<'_>) -> Result<Kernel2d, PresetError> {
        match self.build {
            Builder::Fixed(k_h, k_w, w) => Ok(kernel(k_h, k_w, w.to_vec())),
            Builder::Computed(make) => make(args),
        }
    }
}

/// Static description of one parameter.
struct ParamDef {
    name: &'static str,
    kind: ParamKind,
    description: &'static str,
}

#[derive(Clone, Copy)]
enum ParamKind {
    /// Integer in `1..=MAX_PRESET_SIZE`; a `None` default is derived from
    /// other parameters.
    Size { default: Option<usize>, odd: bool },
    /// Finite number, at least `min` if given.
    Number { default: f64, min: Option<f64> },
}

impl ParamDef {
    fn info(&self) -> PresetParam {
        let (kind, default, min, max) = match self.kind {
            ParamKind::Size { default, .. } => {
                let default = default.map_or(Value::Null, Value::from);
                ("int", default, Some(1.0), Some(MAX_SIZE_F))
            }
            ParamKind::Number { default, min } => ("number", Value::from(default), min, None),
        };
        let (name, description) = (self.name, self.description);
        PresetParam {
            name,
            kind,
            default,
            description,
            min,
            max,
        }
    }
}

#[allow(clippy::cast_precision_loss)]
const MAX_SIZE_F: f64 = MAX_PRESET_SIZE as f64;

type Str = &'static str;
type BuildFn = fn(&Args<'_>) -> Result<Kernel2d, PresetError>;

const fn size(name: Str, default: Option<usize>, odd: bool, description: Str) -> ParamDef {
    let kind = ParamKind::Size { default, odd };
    ParamDef {
        name,
        kind,
        description,
    }
}

const fn number(name: Str, default: f64, min: Option<f64>, description: Str) -> ParamDef {
    let kind = ParamKind::Number { default, min };
    ParamDef {
        name,
        kind,
        description,
    }
}

const ODD_SIZE_5: ParamDef = size("size", Some(5), true, "kernel side in pixels (odd)");
const SIGMA: ParamDef = number(
    "sigma",
    0.0,
    Some(0.0),
    "Gaussian standard deviation in pixels; 0 means OpenCV's rule sigma = 0.3*((size-1)*0.5 - 1) + 0.8",
);

const fn fixed(
    name: Str,
    description: Str,
    k_h: usize,
    k_w: usize,
    w: &'static [f32],
) -> PresetDef {
    let build = Builder::Fixed(k_h, k_w, w);
    PresetDef {
        name,
        description,
        params: &[],
        build,
    }
}

const fn computed(
    name: Str,
    description: Str,
    params: &'static [ParamDef],
    f: BuildFn,
) -> PresetDef {
    let build = Builder::Computed(f);
    PresetDef {
        name,
        description,
        params,
        build,
    }
}

const E: f32 = -0.125;

#[rustfmt::skip]
const PRESETS: &[PresetDef] = &[
    computed("identity", "1 at the centre, 0 elsewhere: each channel passes through (with the default `channels: sum` several channels are added into one map)",
        &[size("size", Some(3), true, "kernel side in pixels (odd)")],
        |a| Ok(delta(a.size("size")?))),
    fixed("edge_1x3", "1×3 horizontal difference [1, 0, -1] (black/white boundary detector)", 1, 3,
        &[1.0, 0.0, -1.0]),
    fixed("laplacian", "Laplacian outline: 8 at the centre, -1 around, divided by 8", 3, 3,
        &[E, E, E,  E, 1.0, E,  E, E, E]),
    fixed("laplacian4", "4-neighbour Laplacian", 3, 3,
        &[0.0, -1.0, 0.0,  -1.0, 4.0, -1.0,  0.0, -1.0, 0.0]),
    fixed("sobel_x", "Sobel gradient, positive where intensity increases to the right", 3, 3,
        &[-1.0, 0.0, 1.0,  -2.0, 0.0, 2.0,  -1.0, 0.0, 1.0]),
    fixed("sobel_y", "Sobel gradient, positive where intensity increases downwards", 3, 3,
        &[-1.0, -2.0, -1.0,  0.0, 0.0, 0.0,  1.0, 2.0, 1.0]),
    fixed("scharr_x", "Scharr gradient, positive where intensity increases to the right", 3, 3,
        &[-3.0, 0.0, 3.0,  -10.0, 0.0, 10.0,  -3.0, 0.0, 3.0]),
    fixed("scharr_y", "Scharr gradient, positive where intensity increases downwards", 3, 3,
        &[-3.0, -10.0, -3.0,  0.0, 0.0, 0.0,  3.0, 10.0, 3.0]),
    fixed("prewitt_x", "Prewitt gradient, positive where intensity increases to the right", 3, 3,
        &[-1.0, 0.0, 1.0,  -1.0, 0.0, 1.0,  -1.0, 0.0, 1.0]),
    fixed("prewitt_y", "Prewitt gradient, positive where intensity increases downwards", 3, 3,
        &[-1.0, -1.0, -1.0,  0.0, 0.0, 0.0,  1.0, 1.0, 1.0]),
    computed("box", "Mean filter: height×width weights of 1/(height·width); even sizes allowed",
        &[
            size("size", Some(3), false, "kernel side in pixels (even allowed)"),
            size("height", None, false, "number of rows; defaults to size"),
            size("width", None, false, "number of columns; defaults to size"),
        ],
        |a| {
            let side = a.size("size")?;
            let h = a.opt_size("height")?.unwrap_or(side);
            let w = a.opt_size("width")?.unwrap_or(side);
            #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
            let weight = (1.0 / (h * w) as f64) as f32;
            Ok(kernel(h, w, vec![weight; h * w]))
        }),
    computed("gaussian", "Gaussian blur exp(-(x²+y²)/(2σ²)) normalised to sum 1",
        &[ODD_SIZE_5, SIGMA],
        |a| {
            let side = a.size("size")?;
            Ok(to_f32(side, &gaussian(side, a.number("sigma")?)))
        }),
    fixed("sharpen", "Sharpen: 5 at the centre, -1 at the 4 neighbours", 3, 3,
        &[0.0, -1.0, 0.0,  -1.0, 5.0, -1.0,  0.0, -1.0, 0.0]),
    fixed("emboss", "Emboss towards the bottom-right", 3, 3,
        &[-2.0, -1.0, 0.0,  -1.0, 1.0, 1.0,  0.0, 1.0, 2.0]),
    computed("unsharp", "Unsharp mask: identity·(1+amount) − amount·gaussian(size, sigma)",
        &[ODD_SIZE_5, SIGMA, number("amount", 1.0, None, "sharpening strength (finite)")],
        |a| {
            let side = a.size("size")?;
            let amount = a.number("amount")?;
            let mut w = gaussian(side, a.number("sigma")?);
            for g in &mut w {
                *g *= -amount;
            }
            w[side * side / 2] += 1.0 + amount;
            Ok(to_f32(side, &w))
        }),
    fixed("outline", "Outline: 8 at the centre, -1 around (unnormalised)", 3, 3,
        &[-1.0, -1.0, -1.0,  -1.0, 8.0, -1.0,  -1.0, -1.0, -1.0]),
];

// ---------------------------------------------------------------------------
// Parameter access

/// Validated view of the user's parameters for one preset.
struct Args<'a> {
    def: &'a PresetDef,
    params: &'a Map<String, Value>,
}

impl<'a> Args<'a> {
    /// Reject parameter names the preset does not take.
    fn new(def: &'a PresetDef, params: &'a Map<String, Value>) -> Result<Self, PresetError> {
        let Some(key) = params
            .keys()
            .find(|k| !def.params.iter().any(|p| p.name == *k))
        else {
            return Ok(Self { def, params });
        };
        let names: Vec<&str> = def.params.iter().map(|p| p.name).collect();
        Err(PresetError::UnknownParam {
            preset: def.name.to_owned(),
            param: key.clone(),
            accepted: if names.is_empty() {
                "no parameters".to_owned()
            } else {
                names.join(", ")
            },
        })
    }

    fn kind(&self, name: &str) -> ParamKind {
        let spec = self.def.params.iter().find(|p| p.name == name);
        spec.expect("builders only ask for declared parameters")
            .kind
    }

    /// The user's value, or `None` when absent or `null`.
    fn raw(&self, name: &str) -> Option<&'a Value> {
        self.params.get(name).filter(|v| !v.is_null())
    }

    /// Size parameter, falling back to its default.
    fn size(&self, name: &str) -> Result<usize, PresetError> {
        match (self.opt_size(name)?, self.kind(name)) {
            (Some(n), _)
            | (
                None,
                ParamKind::Size {
                    default: Some(n), ..
                },
            ) => Ok(n),
            _ => Err(bad(name, "is required".to_owned())),
        }
    }

    /// Size parameter without default substitution: a JSON integer (or
    /// integral float such as `3.0`) in `1..=MAX_PRESET_SIZE`, odd if required.
    fn opt_size(&self, name: &str) -> Result<Option<usize>, PresetError> {
        let ParamKind::Size { odd, .. } = self.kind(name) else {
            return Err(bad(name, "is not an integer parameter".to_owned()));
        };
        let Some(v) = self.raw(name) else {
            return Ok(None);
        };
        let x = v.as_f64().filter(|x| x.is_finite() && x.fract() == 0.0);
        let x = x.ok_or_else(|| bad(name, format!("must be an integer, got {v}")))?;
        if !(1.0..=MAX_SIZE_F).contains(&x) {
            return Err(bad(
                name,
                format!("must be between 1 and {MAX_PRESET_SIZE}, got {v}"),
            ));
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = x as usize; // exact: integral and in 1..=MAX_PRESET_SIZE
        if odd && n.is_multiple_of(2) {
            return Err(bad(name, format!("must be odd, got {n}")));
        }
        Ok(Some(n))
    }

    /// Finite number parameter, falling back to its default.
    fn number(&self, name: &str) -> Result<f64, PresetError> {
        let ParamKind::Number { default, min } = self.kind(name) else {
            return Err(bad(name, "is not a number parameter".to_owned()));
        };
        let Some(v) = self.raw(name) else {
            return Ok(default);
        };
        let x = v.as_f64().filter(|x| x.is_finite());
        let x = x.ok_or_else(|| bad(name, format!("must be a finite number, got {v}")))?;
        match min {
            Some(min) if x < min => Err(bad(name, format!("must be at least {min}, got {v}"))),
            _ => Ok(x),
        }
    }
}

fn bad(param: &str, reason: String) -> PresetError {
    PresetError::BadParam {
        param: param.to_owned(),
        reason,
    }
}

// ---------------------------------------------------------------------------
// Kernel construction

/// The list behind [`PRESET_NAMES`].
const fn preset_names() -> [&'static str; PRESETS.len()] {
    let mut names = [""; PRESETS.len()];
    let mut i = 0;
    while i < PRESETS.len() {
        names[i] = PRESETS[i].name;
        i += 1;
    }
    names
}

fn kernel(k_h: usize, k_w: usize, weights: Vec<f32>) -> Kernel2d {
    Kernel2d { k_h, k_w, weights }
}

/// `n × n` kernel with a single 1 at the centre (`n` odd).
fn delta(n: usize) -> Kernel2d {
    let mut weights = vec![0.0; n * n];
    weights[n * n / 2] = 1.0;
    kernel(n, n, weights)
}

/// OpenCV's default σ for a Gaussian of odd side `size`
/// (`getGaussianKernel` with `sigma <= 0`): `0.3·((size−1)·0.5 − 1) + 0.8`.
pub fn opencv_sigma(size: usize) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let s = size as f64;
    0.3 * ((s - 1.0) * 0.5 - 1.0) + 0.8
}

/// Row-major `size × size` Gaussian in `f64`, normalised to sum 1;
/// `sigma == 0` selects [`opencv_sigma`]. Offsets `x, y` run over
/// `−(size−1)/2 ..= (size−1)/2` pixels.
fn gaussian(size: usize, sigma: f64) -> Vec<f64> {
    let sigma = if sigma > 0.0 {
        sigma
    } else {
        opencv_sigma(size)
    };
    #[allow(clippy::cast_precision_loss)]
    let half = (size / 2) as f64;
    let two_s2 = 2.0 * sigma * sigma;
    let mut w: Vec<f64> = (0..size * size)
        .map(|i| {
            #[allow(clippy::cast_precision_loss)]
            let (y, x) = ((i / size) as f64 - half, (i % size) as f64 - half);
            let d2 = x * x + y * y;
            // The centre is exactly 1 even when 2σ² underflows to 0.
            if d2 == 0.0 {
                1.0
            } else {
                (-d2 / two_s2).exp()
            }
        })
        .collect();
    // The centre weight is exp(0) = 1, so the sum is ≥ 1 and never zero.
    let sum: f64 = w.iter().sum();
    for v in &mut w {
        *v /= sum;
    }
    w
}

#[allow(clippy::cast_possible_truncation)]
fn to_f32(size: usize, w: &[f64]) -> Kernel2d {
    kernel(size, size, w.iter().map(|&v| v as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(name: &str, params: Value) -> Result<Kernel2d, PresetError> {
        let Value::Object(map) = params else {
            panic!("params must be an object")
        };
        build_preset(name, &map)
    }

    fn default(name: &str) -> Kernel2d {
        build(name, json!({})).expect("defaults build")
    }

    fn k(k_h: usize, k_w: usize, weights: &[f32]) -> Kernel2d {
        Kernel2d {
            k_h,
            k_w,
            weights: weights.to_vec(),
        }
    }

    fn assert_close(actual: &[f32], expected: &[f64], tol: f64) {
        assert_eq!(actual.len(), expected.len());
        for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
            assert!((f64::from(a) - e).abs() <= tol, "weight {i}: {a} vs {e}");
        }
    }

    #[test]
    fn fixed_presets_have_the_textbook_weights() {
        let cases: &[(&str, Kernel2d)] = &[
            ("edge_1x3", k(1, 3, &[1., 0., -1.])),
            (
                "laplacian",
                k(
                    3,
                    3,
                    &[
                        -0.125, -0.125, -0.125, -0.125, 1., -0.125, -0.125, -0.125, -0.125,
                    ],
                ),
            ),
            (
                "laplacian4",
                k(3, 3, &[0., -1., 0., -1., 4., -1., 0., -1., 0.]),
            ),
            ("sobel_x", k(3, 3, &[-1., 0., 1., -2., 0., 2., -1., 0., 1.])),
            ("sobel_y", k(3, 3, &[-1., -2., -1., 0., 0., 0., 1., 2., 1.])),
            (
                "scharr_x",
                k(3, 3, &[-3., 0., 3., -10., 0., 10., -3., 0., 3.]),
            ),
            (
                "scharr_y",
                k(3, 3, &[-3., -10., -3., 0., 0., 0., 3., 10., 3.]),
            ),
            (
                "prewitt_x",
                k(3, 3, &[-1., 0., 1., -1., 0., 1., -1., 0., 1.]),
            ),
            (
                "prewitt_y",
                k(3, 3, &[-1., -1., -1., 0., 0., 0., 1., 1., 1.]),
            ),
            (
                "sharpen",
                k(3, 3, &[0., -1., 0., -1., 5., -1., 0., -1., 0.]),
            ),
            ("emboss", k(3, 3, &[-2., -1., 0., -1., 1., 1., 0., 1., 2.])),
            (
                "outline",
                k(3, 3, &[-1., -1., -1., -1., 8., -1., -1., -1., -1.]),
            ),
        ];
        for (name, expected) in cases {
            assert_eq!(&default(name), expected, "preset {name}");
        }
    }

    #[test]
    fn sobel_x_responds_positively_to_intensity_increasing_to_the_right() {
        let kernel = default("sobel_x");
        // 3×3 patch whose columns are 0, 1, 2 (brighter to the right).
        let response: f32 = kernel
            .weights
            .iter()
            .enumerate()
            .map(|(i, w)| w * (i % 3) as f32)
            .sum();
        assert!(response > 0.0);
    }

    #[test]
    fn identity_has_a_single_one_in_the_centre() {
        assert_eq!(
            default("identity"),
            k(3, 3, &[0., 0., 0., 0., 1., 0., 0., 0., 0.])
        );
        let five = build("identity", json!({"size": 5})).unwrap();
        assert_eq!((five.k_h, five.k_w), (5, 5));
        assert_eq!(five.weights[12], 1.0);
        assert_eq!(five.weights.iter().sum::<f32>(), 1.0);
        assert_eq!(
            build("identity", json!({"size": 1})).unwrap(),
            k(1, 1, &[1.])
        );
    }

    #[test]
    fn box_is_normalised_and_allows_even_and_rectangular_sizes() {
        assert_eq!(default("box"), k(3, 3, &[1. / 9.; 9]));
        assert_eq!(
            build("box", json!({"size": 2})).unwrap(),
            k(2, 2, &[0.25; 4])
        );
        assert_eq!(
            build("box", json!({"size": 4, "width": 2})).unwrap(),
            k(4, 2, &[0.125; 8])
        );
        assert_eq!(
            build("box", json!({"height": 1, "width": 5})).unwrap(),
            k(1, 5, &[0.2; 5])
        );
        assert_eq!(
            build("box", json!({"size": 63})).unwrap().weights.len(),
            63 * 63
        );
    }

    #[test]
    fn gaussian_matches_a_hand_computed_3x3_sigma_1_kernel() {
        let g = build("gaussian", json!({"size": 3, "sigma": 1.0})).unwrap();
        // Corner e^-1, edge e^-0.5, centre 1, normalised by their sum.
        let (c, e) = ((-1.0_f64).exp(), (-0.5_f64).exp());
        let s = 1.0 + 4.0 * e + 4.0 * c;
        let expected = [
            c / s,
            e / s,
            c / s,
            e / s,
            1.0 / s,
            e / s,
            c / s,
            e / s,
            c / s,
        ];
        assert_close(&g.weights, &expected, 1e-7);
        assert_close(
            &g.weights[..3],
            &[0.075_113_61, 0.123_841_36, 0.075_113_61],
            1e-7,
        );
    }

    #[test]
    fn gaussian_sums_to_one_and_uses_the_opencv_sigma_rule_by_default() {
        for size in [1, 3, 5, 7, 15, 63] {
            let g = build("gaussian", json!({"size": size})).unwrap();
            let sum: f64 = g.weights.iter().map(|&w| f64::from(w)).sum();
            assert!((sum - 1.0).abs() < 1e-5, "size {size}: sum {sum}");
        }
        assert!((opencv_sigma(5) - 1.1).abs() < 1e-12);
        assert!((opencv_sigma(3) - 0.8).abs() < 1e-12);
        let by_rule = default("gaussian");
        let explicit = build("gaussian", json!({"size": 5, "sigma": 1.1})).unwrap();
        assert_close(
            &by_rule.weights,
            &explicit
                .weights
                .iter()
                .map(|&w| f64::from(w))
                .collect::<Vec<_>>(),
            1e-7,
        );
        assert_eq!((by_rule.k_h, by_rule.k_w), (5, 5));
    }

    #[test]
    fn unsharp_is_scaled_identity_minus_scaled_gaussian() {
        let u = build("unsharp", json!({"size": 3, "sigma": 1, "amount": 0.5})).unwrap();
        let g = build("gaussian", json!({"size": 3, "sigma": 1})).unwrap();
        let expected: Vec<f64> = g
            .weights
            .iter()
            .enumerate()
            .map(|(i, &w)| if i == 4 { 1.5 } else { 0.0 } - 0.5 * f64::from(w))
            .collect();
        assert_close(&u.weights, &expected, 1e-6);
        let sum: f32 = default("unsharp").weights.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "unsharp preserves flat areas");
        assert_eq!(default("unsharp").k_h, 5);
    }

    #[test]
    fn separability_is_detected_for_rank_one_kernels_only() {
        let separable: Vec<&str> = catalogue()
            .iter()
            .filter(|p| p.separable)
            .map(|p| p.name)
            .collect();
        assert_eq!(
            separable,
            [
                "identity",
                "edge_1x3",
                "sobel_x",
                "sobel_y",
                "scharr_x",
                "scharr_y",
                "prewitt_x",
                "prewitt_y",
                "box",
                "gaussian"
            ]
        );
        let (u, v) = rank1_factors(&default("sobel_x")).unwrap();
        let sobel = default("sobel_x");
        for (i, &w) in sobel.weights.iter().enumerate() {
            assert!((u[i / 3] * v[i % 3] - f64::from(w)).abs() < 1e-12);
        }
        assert!(is_separable(&k(2, 2, &[0.0; 4])));
        assert!(
            !is_separable(&k(2, 2, &[1.0; 3])),
            "inconsistent length is not separable"
        );
    }

    #[test]
    fn catalogue_lists_every_preset_in_order_with_its_parameters() {
        let cat = catalogue();
        let names: Vec<&str> = cat.iter().map(|p| p.name).collect();
        assert_eq!(names, PRESET_NAMES);
        assert_eq!(PRESETS.len(), PRESET_NAMES.len());
        let gaussian = cat.iter().find(|p| p.name == "gaussian").unwrap();
        let params: Vec<&str> = gaussian.params.iter().map(|p| p.name).collect();
        assert_eq!(params, ["size", "sigma"]);
        assert_eq!(gaussian.params[0].default, json!(5));
        assert_eq!(gaussian.params[0].kind, "int");
        assert_eq!(gaussian.params[1].kind, "number");
        let json = serde_json::to_value(&cat).unwrap();
        assert_eq!(json[0]["kernel"]["k_h"], json!(3));
        assert_eq!(json[10]["params"][1]["default"], Value::Null);
        for p in &cat {
            assert_eq!(
                p.kernel.weights.len(),
                p.kernel.k_h * p.kernel.k_w,
                "{}",
                p.name
            );
        }
    }

    #[test]
    fn integral_floats_and_nulls_are_accepted_as_parameters() {
        assert_eq!(build("identity", json!({"size": 5.0})).unwrap().k_h, 5);
        assert_eq!(
            build("box", json!({"width": null})).unwrap(),
            default("box")
        );
    }

    #[test]
    fn unknown_presets_list_the_known_ones() {
        let err = build("blur", json!({})).unwrap_err();
        assert!(matches!(&err, PresetError::Unknown { name, .. } if name == "blur"));
        assert!(err.to_string().contains("sobel_x, sobel_y"), "{err}");
    }

    #[test]
    fn unknown_parameters_are_rejected_with_the_accepted_list() {
        let err = build("gaussian", json!({"radius": 2})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "preset `gaussian` does not take parameter `radius`; it takes: size, sigma"
        );
        let err = build("sobel_x", json!({"size": 3})).unwrap_err();
        assert!(
            err.to_string().ends_with("it takes: no parameters"),
            "{err}"
        );
    }

    #[test]
    fn bad_parameter_values_are_rejected() {
        let cases = [
            ("gaussian", json!({"size": 4}), "size", "must be odd"),
            ("identity", json!({"size": 2}), "size", "must be odd"),
            ("gaussian", json!({"size": 65}), "size", "between 1 and 63"),
            ("box", json!({"size": 0}), "size", "between 1 and 63"),
            ("box", json!({"width": 64}), "width", "between 1 and 63"),
            ("box", json!({"size": 2.5}), "size", "must be an integer"),
            ("box", json!({"size": "3"}), "size", "must be an integer"),
            ("box", json!({"size": -3}), "size", "between 1 and 63"),
            ("gaussian", json!({"sigma": -1.0}), "sigma", "at least 0"),
            (
                "gaussian",
                json!({"sigma": "wide"}),
                "sigma",
                "finite number",
            ),
            ("unsharp", json!({"amount": [1]}), "amount", "finite number"),
            (
                "unsharp",
                json!({"amount": true}),
                "amount",
                "finite number",
            ),
        ];
        for (preset, params, param, reason) in cases {
            match build(preset, params.clone()) {
                Err(PresetError::BadParam {
                    param: p,
                    reason: r,
                }) => {
                    assert_eq!(p, param, "{preset} {params}");
                    assert!(r.contains(reason), "{preset} {params}: {r}");
                }
                other => panic!("{preset} {params}: expected BadParam, got {other:?}"),
            }
        }
    }

    #[test]
    fn huge_sigma_and_tiny_sigma_still_give_finite_normalised_kernels() {
        for sigma in [1e-300, 1e-3, 1e6, 1e200] {
            let g = build("gaussian", json!({"size": 3, "sigma": sigma})).unwrap();
            assert!(g.weights.iter().all(|w| w.is_finite()), "sigma {sigma}");
            let sum: f32 = g.weights.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "sigma {sigma}");
        }
    }
}
