//! Links libtorch_cuda even though no symbol of it is used directly: without it the CUDA backend never registers and
//! `tch::Cuda::is_available()` is silently false. Sets an rpath to libtorch (its real directory in the cache, then
//! the .libtorch link) so the binary and the test binaries run without LD_LIBRARY_PATH, wherever the binary is copied
//! or installed, and tells the binary where that libtorch is (NVRTC is looked up beside it). Compiles the C++ shim,
//! src/ffi/cuda_device.cpp, cuda_graph.cpp, profiler.cpp, attention.cpp, linear.cpp and train_ops.cpp (what tch does not expose: see LOST_WITHOUT_SHIM), when libtorch has
//! CUDA and the CUDA headers (torch's nvidia wheels + nvidia-cuda-crt) are present.

use std::path::PathBuf;

/// What a binary built without the shim cannot do on a GPU.
const LOST_WITHOUT_SHIM: &str = "the current CUDA stream (NCCL all-reduces and the fused kernels run on it), \
     per-device seeding, setting the current device, emptyCache (GPU memory stays cached between phases), the \
     memory fraction (gpu_memory_utilization), pool streams and CUDA graphs (decode runs eagerly), the fused \
     CUDA kernels, variable-length flash attention in packed training passes, weight gradients added within their products, the training passes' rotary and SiLU kernels, and Kineto traces (bench generate \
     --trace)";

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=src/ffi/cuda_device.cpp");
    println!("cargo:rerun-if-changed=src/ffi/cuda_graph.cpp");
    println!("cargo:rerun-if-changed=src/ffi/profiler.cpp");
    println!("cargo:rerun-if-changed=src/ffi/attention.cpp");
    println!("cargo:rerun-if-changed=src/ffi/linear.cpp");
    println!("cargo:rerun-if-changed=src/ffi/train_ops.cpp");
    println!("cargo:rerun-if-changed=src/ffi/shim.h");
    println!("cargo::rustc-check-cfg=cfg(stasc_cuda_shim)");
    // torch-sys (links = "tch") exports the directory it linked against.
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else { return };
    let lib = PathBuf::from(lib);
    // Resolve the .libtorch link: an installed binary (`cargo install --path .`) then finds libtorch in the cache
    // even without the clone; the link stays second, for a cache that moved. The nvidia wheels sit beside the real
    // torch directory in site-packages.
    let real = lib.canonicalize().unwrap_or_else(|_| lib.clone());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", real.display());
    if real != lib {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
    println!("cargo:rustc-env=STASC_LIBTORCH_LIB={}", real.display());
    if !lib.join("libtorch_cuda.so").exists() {
        return;
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    let torch = real.parent().expect("libtorch's lib directory has a parent");
    let cuda_include = torch.parent().map(|sp| sp.join("nvidia/cu13/include"));
    let Some(cuda_include) = cuda_include.filter(|p| p.join("crt/host_config.h").exists()) else {
        println!(
            "cargo:warning=CUDA headers (nvidia-cuda-crt) not found beside libtorch, so the C++ shim is not built; \
             lost on GPUs: {LOST_WITHOUT_SHIM}. scripts/setup.sh installs the headers"
        );
        return;
    };
    cc::Build::new()
        .cpp(true)
        .file("src/ffi/cuda_device.cpp")
        .file("src/ffi/cuda_graph.cpp")
        .file("src/ffi/profiler.cpp")
        .file("src/ffi/attention.cpp")
        .file("src/ffi/linear.cpp")
        .file("src/ffi/train_ops.cpp")
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"))
        .include(&cuda_include)
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false)
        .compile("stasc_cuda_device");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cuda");
    println!("cargo:rustc-link-lib=dylib=c10_cuda");
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-cfg=stasc_cuda_shim");
}
