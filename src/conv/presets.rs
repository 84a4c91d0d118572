//! Named 2-D kernels ("presets"): the catalogue and its parameter schema.
//!
//! The kernel maths (Gaussian, box, unsharp, the fixed weights) is in [`kernels`]; this
//! module holds the table of presets, the parameters each takes, how the request's
//! parameter object is checked against them, and the catalogue served by `GET /v1/kernels`.
//! Parameterised presets (`identity`, `box`, `gaussian`, `unsharp`) take a JSON object of
//! parameters; missing (or `null`) parameters take their defaults, unknown parameter names
//! are rejected.

pub mod kernels;

use serde::Serialize;
use serde_json::{Map, Value};

use kernels::{self as k, box_mean, delta, gaussian, kernel, unsharp};
pub use kernels::{is_separable, opencv_sigma, rank1_factors, Kernel2d};

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

/// Largest kernel side of [`build_preset`] and [`catalogue`]: the largest odd side within
/// the server's default `max_kernel_side` (64). The server bounds the sides by its
/// configured `max_kernel_side` instead ([`build_preset_within`], [`catalogue_within`]), so
/// that a preset and a `kernel` of the same size are accepted or refused alike.
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
    build_preset_within(name, params, MAX_PRESET_SIZE)
}

/// [`build_preset`] with sides (`size`, `height`, `width`) of at most `max_side`.
///
/// # Errors
/// As [`build_preset`].
pub fn build_preset_within(
    name: &str,
    params: &Map<String, Value>,
    max_side: usize,
) -> Result<Kernel2d, PresetError> {
    let def = PRESETS
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| PresetError::Unknown {
            name: name.to_owned(),
            known: PRESET_NAMES.join(", "),
        })?;
    let args = Args::new(def, params, max_side)?;
    def.build(&args)
}

/// Catalogue for `GET /v1/kernels`, in [`PRESET_NAMES`] order, each with its
/// kernel built from default parameters.
pub fn catalogue() -> Vec<PresetInfo> {
    catalogue_within(MAX_PRESET_SIZE)
}

/// [`catalogue`] with sides of at most `max_side` (the parameters' `max`).
pub fn catalogue_within(max_side: usize) -> Vec<PresetInfo> {
    let no_params = Map::new();
    let info = |def: &'static PresetDef| {
        let args = Args {
            def,
            params: &no_params,
            max_side,
        };
        let kernel = def
            .build(&args)
            .expect("preset defaults are valid (unit-tested)");
        let params = def.params.iter().map(|p| p.info(max_side)).collect();
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
    /// Integer in `1..=max_side`; a `None` default is derived from
    /// other parameters.
    Size { default: Option<usize>, odd: bool },
    /// Finite number, at least `min` if given.
    Number { default: f64, min: Option<f64> },
}

impl ParamDef {
    fn info(&self, max_side: usize) -> PresetParam {
        let (kind, default, min, max) = match self.kind {
            ParamKind::Size { default, .. } => {
                let default = default.map_or(Value::Null, Value::from);
                #[allow(clippy::cast_precision_loss)]
                let max = max_side as f64;
                ("int", default, Some(1.0), Some(max))
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

#[rustfmt::skip]
const PRESETS: &[PresetDef] = &[
    computed("identity", "1 at the centre, 0 elsewhere: each channel passes through (with the default `channels: sum` several channels are added into one map)",
        &[size("size", Some(3), true, "kernel side in pixels (odd)")],
        |a| Ok(delta(a.size("size")?))),
    fixed("edge_1x3", "1×3 horizontal difference [1, 0, -1] (black/white boundary detector)", 1, 3,
        &k::EDGE_1X3),
    fixed("laplacian", "Laplacian outline: 8 at the centre, -1 around, divided by 8", 3, 3,
        &k::LAPLACIAN),
    fixed("laplacian4", "4-neighbour Laplacian", 3, 3, &k::LAPLACIAN4),
    fixed("sobel_x", "Sobel gradient, positive where intensity increases to the right", 3, 3,
        &k::SOBEL_X),
    fixed("sobel_y", "Sobel gradient, positive where intensity increases downwards", 3, 3,
        &k::SOBEL_Y),
    fixed("scharr_x", "Scharr gradient, positive where intensity increases to the right", 3, 3,
        &k::SCHARR_X),
    fixed("scharr_y", "Scharr gradient, positive where intensity increases downwards", 3, 3,
        &k::SCHARR_Y),
    fixed("prewitt_x", "Prewitt gradient, positive where intensity increases to the right", 3, 3,
        &k::PREWITT_X),
    fixed("prewitt_y", "Prewitt gradient, positive where intensity increases downwards", 3, 3,
        &k::PREWITT_Y),
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
            Ok(box_mean(h, w))
        }),
    computed("gaussian", "Gaussian blur exp(-(x²+y²)/(2σ²)) normalised to sum 1",
        &[ODD_SIZE_5, SIGMA],
        |a| Ok(gaussian(a.size("size")?, a.number("sigma")?))),
    fixed("sharpen", "Sharpen: 5 at the centre, -1 at the 4 neighbours", 3, 3, &k::SHARPEN),
    fixed("emboss", "Emboss towards the bottom-right", 3, 3, &k::EMBOSS),
    computed("unsharp", "Unsharp mask: identity·(1+amount) − amount·gaussian(size, sigma)",
        &[ODD_SIZE_5, SIGMA, number("amount", 1.0, None, "sharpening strength (finite)")],
        |a| {
            let (side, amount) = (a.size("size")?, a.number("amount")?);
            Ok(unsharp(side, a.number("sigma")?, amount))
        }),
    fixed("outline", "Outline: 8 at the centre, -1 around (unnormalised)", 3, 3, &k::OUTLINE),
];

// ---------------------------------------------------------------------------
// Parameter access

/// Validated view of the user's parameters for one preset.
struct Args<'a> {
    def: &'a PresetDef,
    params: &'a Map<String, Value>,
    /// Largest side.
    max_side: usize,
}

impl<'a> Args<'a> {
    /// Reject parameter names the preset does not take.
    fn new(
        def: &'a PresetDef,
        params: &'a Map<String, Value>,
        max_side: usize,
    ) -> Result<Self, PresetError> {
        let Some(key) = params
            .keys()
            .find(|k| !def.params.iter().any(|p| p.name == *k))
        else {
            return Ok(Self {
                def,
                params,
                max_side,
            });
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
    /// integral float such as `3.0`) in `1..=max_side`, odd if required.
    fn opt_size(&self, name: &str) -> Result<Option<usize>, PresetError> {
        let ParamKind::Size { odd, .. } = self.kind(name) else {
            return Err(bad(name, "is not an integer parameter".to_owned()));
        };
        let Some(v) = self.raw(name) else {
            return Ok(None);
        };
        let x = v.as_f64().filter(|x| x.is_finite() && x.fract() == 0.0);
        let x = x.ok_or_else(|| bad(name, format!("must be an integer, got {v}")))?;
        #[allow(clippy::cast_precision_loss)]
        let max = self.max_side as f64;
        if !(1.0..=max).contains(&x) {
            let max = self.max_side;
            return Err(bad(name, format!("must be between 1 and {max}, got {v}")));
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = x as usize; // exact: integral and in 1..=max_side
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
// Names

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

#[cfg(test)]
mod tests;
