//! Fused CUDA kernels for decoding and for the optimiser step, compiled at run time with NVRTC from the CUDA C
//! sources beside this file (embedded in the binary) and launched through the driver API on libtorch's current
//! stream, so CUDA graph capture records them like libtorch's own kernels. Building needs no GPU; on the CPU,
//! without the C++ shim (no current stream), for dtypes other than bf16/f32, or with `STASC_FUSED_KERNELS=0`,
//! callers use libtorch ops instead.
//!
//! - sampler.cu + window_sampler.cu: top-k/top-p/temperature sampling without sorting the vocabulary (exactly the
//!   sort path's tokens): per-value histograms for bf16 logits (window_sampler.cu), radix selection otherwise;
//! - norm.cu: RMSNorm with the residual add, and SiLU-and-multiply;
//! - adamw.cu: the optimiser's whole AdamW update in one pass over its flat buffers (training);
//! - gemv.cu: matrix-vector products for decode steps of a few rows (bf16), where cuBLAS's GEMM tiles idle;
//! - train_ops.cu: the rotary embedding and SiLU-and-multiply of training passes, forward and backward (autograd
//!   ops: train_ops.rs);
//! - loss.cu: the LM head's cross-entropy in training passes, forward and backward (an autograd op: loss.rs);
//! - attention.cu (compiled per head size and group): split-K decode attention over the cache for rows of
//!   different lengths (a prompt prefix common to all rows read once for all of them: prefix.rs), and the rotary
//!   embedding fused with the cache write.

mod adamw;
mod attention;
mod gemv;
mod loss;
mod norm;
mod prefix;
mod sample;
mod train_ops;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use tch::{Device, Kind, Tensor};

pub use adamw::AdamWStep;
pub use attention::set_mma_attention;
pub use gemv::{set_gemv, GEMV_ROWS};
pub use loss::cross_entropy_autograd;
pub use prefix::set_shared_prefix_attention;
pub use sample::set_windowed_sampler;
pub use train_ops::{rotary_autograd, silu_mul_autograd, silu_mul_rows_autograd, train_op_launches};

use crate::ffi::driver::{Context, Function};
use crate::ffi::{nvrtc, FfiError};
use crate::switch::Switch;

/// The environment variable that turns the fused kernels off when set to `0` (for parity checks and benchmarks;
/// a run's stasc_config `fused_kernels` takes its default from it and decides).
pub const SWITCH_ENV: &str = "STASC_FUSED_KERNELS";

/// The CUDA C sources compiled once per device, by file name.
pub const SOURCES: &[(&str, &str)] = &[
    // The windowed sampler falls back on sampler.cu's radix selection: one program.
    ("sampler.cu", concat!(include_str!("sampler.cu"), include_str!("window_sampler.cu"))),
    ("norm.cu", include_str!("norm.cu")),
    ("adamw.cu", include_str!("adamw.cu")),
    ("gemv.cu", include_str!("gemv.cu")),
    ("train_ops.cu", include_str!("train_ops.cu")),
    ("loss.cu", include_str!("loss.cu")),
];

/// The element types and bf16 rounding every source uses, put in front of each one when it is compiled.
pub const DTYPE_HEADER: &str = include_str!("dtype.cuh");

/// The source compiled once per model shape (`-DHEAD_DIM`, `-DGROUP`).
pub const ATTENTION_SOURCE: &str = concat!(include_str!("attention.cu"), include_str!("attention_mma.cu"));

/// The kernels each source defines.
const FUNCTIONS: &[(&str, &[&str])] = &[
    (
        "sampler.cu",
        &[
            "stasc_sample_bf16",
            "stasc_sample_f32",
            "stasc_split_begin",
            "stasc_split_max_bf16",
            "stasc_split_max_f32",
            "stasc_split_hist_bf16",
            "stasc_split_hist_f32",
            "stasc_split_select_bf16",
            "stasc_split_select_f32",
            "stasc_window_sample_bf16",
        ],
    ),
    (
        "norm.cu",
        &[
            "stasc_add_rms_norm_bf16",
            "stasc_add_rms_norm_f32",
            "stasc_add_rms_norm8_bf16",
            "stasc_silu_mul_bf16",
            "stasc_silu_mul_f32",
            "stasc_silu_mul8_bf16",
        ],
    ),
    ("adamw.cu", &["stasc_adamw_bf16", "stasc_adamw_f32"]),
    ("gemv.cu", &gemv::FUNCTIONS),
    ("train_ops.cu", &train_ops::FUNCTIONS),
    ("loss.cu", &loss::FUNCTIONS),
];

/// Bits needed for the ids of a vocabulary of `vocab` tokens (the sampler's order key ends with them).
pub fn id_bits(vocab: usize) -> u32 {
    usize::BITS - vocab.saturating_sub(1).leading_zeros()
}

static SWITCH: Switch = Switch::new(SWITCH_ENV, true);

/// Whether the fused kernels are switched on: `STASC_FUSED_KERNELS` unset or not `0`, unless [`set_enabled`] said
/// otherwise.
pub fn enabled() -> bool {
    SWITCH.get()
}

/// Switches the fused kernels on or off for the whole process (parity checks compare both paths in one run).
pub fn set_enabled(on: bool) {
    SWITCH.set(on);
}

/// The kernels loaded on one CUDA device.
#[derive(Debug)]
pub struct Kernels {
    device: usize,
    arch: u32,
    context: Context,
    functions: Vec<(&'static str, Function)>,
    /// Attention kernels by (head_dim, group), compiled on first use; `None` when compiling failed (reported once).
    attention: Mutex<HashMap<(i64, i64), Option<attention::AttentionKernels>>>,
}

impl Kernels {
    fn function(&self, name: &str) -> Result<&Function, tch::TchError> {
        self.functions
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| f)
            .ok_or_else(|| tch::TchError::Kind(format!("kernel {name} is not loaded")))
    }

    /// The raw current stream of this device (what libtorch queues on, and what graph capture records).
    fn stream(&self) -> Result<*mut std::ffi::c_void, tch::TchError> {
        crate::ffi::current_raw_stream(self.device).map_err(launch_error)
    }
}

/// Whether a device pointer sits on a 16-byte boundary, as the kernels' 16-byte loads need (null does).
fn aligned16(p: *mut std::ffi::c_void) -> bool {
    (p as usize).is_multiple_of(16)
}

/// The name of kernel `stem`'s variant for `kind`: `stem` + `8_bf16` (eight bf16 elements a thread through 16-byte
/// accesses) where `packed`, else `_bf16` or `_f32`.
fn variant(stem: &str, kind: Kind, packed: bool) -> String {
    let suffix = match (kind == Kind::BFloat16, packed) {
        (true, true) => "8_bf16",
        (true, false) => "_bf16",
        (false, _) => "_f32",
    };
    format!("{stem}{suffix}")
}

fn launch_error(error: FfiError) -> tch::TchError {
    tch::TchError::Kind(format!("fused CUDA kernel: {error}"))
}

/// Compiles one kernel source for `sm_<arch>` behind [`DTYPE_HEADER`]; `#line` keeps NVRTC's messages pointing at
/// the source's own lines.
pub fn compile(name: &str, source: &str, arch: u32, options: &[String]) -> Result<Vec<u8>, FfiError> {
    let text = format!("{DTYPE_HEADER}\n#line 1 \"{name}\"\n{source}");
    nvrtc::compile(name, &text, arch, options)
}

/// Compiles every source for `sm_<arch>` (the CPU tests check they compile).
pub fn compile_all(arch: u32) -> Result<Vec<(&'static str, Vec<u8>)>, FfiError> {
    SOURCES.iter().map(|(name, source)| Ok((*name, compile(name, source, arch, &[])?))).collect()
}

fn load(device: usize) -> Result<Kernels, FfiError> {
    if !crate::ffi::HAS_SHIM {
        return Err(FfiError::Shim("no C++ shim to find libtorch's current stream".into()));
    }
    let (context, arch) = Context::primary(device)?;
    let mut functions = Vec::new();
    for (name, cubin) in compile_all(arch)? {
        let names = FUNCTIONS.iter().find(|(n, _)| *n == name).map_or(&[][..], |(_, f)| *f);
        functions.extend(names.iter().copied().zip(context.load(&cubin, names)?));
    }
    Ok(Kernels { device, arch, context, functions, attention: Mutex::new(HashMap::new()) })
}

/// The kernels for CUDA tensors like `t` when they are switched on and load; `None` on the CPU. The first failure
/// to load on a device is reported once on stderr (decoding then uses libtorch ops).
pub fn for_tensor(t: &Tensor) -> Option<&'static Kernels> {
    const MAX_DEVICES: usize = 64;
    static LOADED: [OnceLock<Option<Kernels>>; MAX_DEVICES] = [const { OnceLock::new() }; MAX_DEVICES];
    let Device::Cuda(device) = t.device() else { return None };
    if device >= MAX_DEVICES || !enabled() || !matches!(t.kind(), Kind::BFloat16 | Kind::Float) {
        return None;
    }
    LOADED[device]
        .get_or_init(|| match load(device) {
            Ok(kernels) => Some(kernels),
            Err(why) => {
                eprintln!("fused CUDA kernels unavailable on cuda:{device} ({why}); using libtorch ops");
                None
            }
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_source_compiles_with_nvrtc() {
        // NVRTC comes with torch's nvidia wheels (scripts/setup.sh), and compiling needs no GPU. Hopper (the H200)
        // and Ampere; attention for the head sizes and groups of Qwen2.5 (128 x 6, 7), Llama 3 (128 x 4),
        // SmolLM2 (64 x 3) and the limits.
        assert!(nvrtc::available(), "libnvrtc.so.13 not found beside libtorch (scripts/setup.sh installs torch)");
        for arch in [80, 90] {
            let compiled = compile_all(arch).unwrap();
            assert_eq!(compiled.len(), SOURCES.len());
            for (head_dim, group) in [(128, 6), (128, 7), (128, 4), (64, 3), (32, 1), (256, 8)] {
                assert!(attention::supported(head_dim, group));
                let cubin = compile("attention.cu", ATTENTION_SOURCE, arch, &attention::defines(head_dim, group));
                assert!(!cubin.unwrap().is_empty());
            }
        }
        assert!(!attention::supported(80, 2) && !attention::supported(128, 16));
    }

    /// Every kernel a source is loaded for is in its compiled code (the cubin's symbol table names it), and every
    /// variant the training ops' launchers name ([`variant`]) is one of them: a misspelt name would only fail on a
    /// GPU.
    #[test]
    fn loaded_kernels_are_compiled_and_launchers_name_loaded_ones() {
        let compiled = compile_all(90).unwrap();
        for (file, names) in FUNCTIONS {
            let cubin = &compiled.iter().find(|(f, _)| f == file).expect("a loaded file is a source").1;
            for name in *names {
                let defined =
                    cubin.windows(name.len() + 1).any(|w| &w[..name.len()] == name.as_bytes() && w[name.len()] == 0);
                assert!(defined, "{name} is not in the compiled {file}");
            }
        }
        let loaded = |name: &str| FUNCTIONS.iter().any(|(_, names)| names.contains(&name));
        let stems = [
            "stasc_silu_mul_train",
            "stasc_silu_mul_train_backward",
            "stasc_cross_entropy",
            "stasc_cross_entropy_backward",
        ];
        for stem in stems {
            for (kind, packed) in [(Kind::BFloat16, true), (Kind::BFloat16, false), (Kind::Float, false)] {
                assert!(loaded(&variant(stem, kind, packed)), "{}", variant(stem, kind, packed));
            }
        }
    }

    #[test]
    fn a_broken_source_reports_nvrtc_log() {
        // Behind the shared header, errors still name the source's own line.
        let err = compile("broken.cu", "\n__global__ void k() { undefined_name(); }", 90, &[]).unwrap_err();
        assert!(err.to_string().contains("broken.cu(2)") && err.to_string().contains("undefined_name"), "{err}");
    }
}
