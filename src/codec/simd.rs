//! Run-time instruction-set dispatch for the codecs' per-sample loops (quantising,
//! interleaving).
//!
//! The crate is built for baseline x86-64, so a plain loop vectorises to 4-float SSE2 at
//! best: quantising a 12 MP photo's maps took 7 % of its job's CPU in `pshufhw`s. The
//! [`multiversion!`] macro compiles one `#[inline(always)]` body three times (AVX-512
//! F/BW/VL, AVX2 + FMA, baseline) and calls the widest the CPU runs, chosen once. The
//! same source, so the same IEEE operations in the same order: the variants agree bit for
//! bit (LLVM does not contract `a·b + c` into an FMA without fast-math flags). Tests call
//! every variant the host runs through the generated `…_at` function.
//!
//! Wider is not always faster: PNG's row filters compiled this way took 89 ms for a 12 MP
//! picture against 57 ms at baseline, so they stay as they are.
#![allow(unsafe_code)]

/// An instruction-set level a variant is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// AVX-512 F, BW and VL (with AVX2, FMA, BMI2).
    V4,
    /// AVX2 with FMA and BMI2.
    V3,
    /// Baseline x86-64 (SSE2), or any other architecture.
    Base,
}

/// Every level this CPU runs, widest first (always ends with [`Level::Base`]; detected
/// once).
pub fn available() -> &'static [Level] {
    static LEVELS: std::sync::OnceLock<Vec<Level>> = std::sync::OnceLock::new();
    LEVELS.get_or_init(|| {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let v3 = has!("avx2") && has!("fma") && has!("bmi2");
            if v3 && has!("avx512f") && has!("avx512bw") && has!("avx512vl") {
                v.push(Level::V4);
            }
            if v3 {
                v.push(Level::V3);
            }
        }
        v.push(Level::Base);
        v
    })
}

/// The widest level this CPU runs.
pub fn level() -> Level {
    available()[0]
}

/// `multiversion!(vis fn name(args) -> R = body_fn;)` defines `name(args)`, which runs
/// `body_fn(args)` compiled for the widest [`Level`] the CPU has, and `name_at(level,
/// args)`, which runs the variant of `level`. `body_fn` must be `#[inline(always)]` (and
/// so must what it calls, to be compiled for the level too).
///
/// # Panics
/// `name_at` panics for a level the CPU does not run.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident, $name_at:ident ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:path;) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            $name_at($crate::codec::simd::level(), $($arg),*)
        }

        /// The variant of `level` (see [`multiversion!`](crate::codec::simd)).
        #[allow(dead_code, unsafe_code)]
        $vis fn $name_at(level: $crate::codec::simd::Level, $($arg: $ty),*) $(-> $ret)? {
            use $crate::codec::simd::Level;
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,bmi2")]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma,bmi2")]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                assert!(
                    $crate::codec::simd::available().contains(&level),
                    "{level:?} is not run by this CPU"
                );
                match level {
                    // SAFETY: the CPU runs `level` (asserted above); the body is safe code.
                    Level::V4 => return unsafe { v4($($arg),*) },
                    // SAFETY: as above.
                    Level::V3 => return unsafe { v3($($arg),*) },
                    Level::Base => {}
                }
            }
            let _ = level;
            $body($($arg),*)
        }
    };
}

pub(crate) use multiversion;
