//! Links libtorch_cuda even though no symbol of it is used directly: without it the CUDA backend never registers and
//! `tch::Cuda::is_available()` is silently false. Also sets an rpath to libtorch so the binary and the test binaries
//! run without LD_LIBRARY_PATH.

fn main() {
    // torch-sys (links = "tch") exports the directory it linked against.
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        let cuda = std::path::Path::new(&lib).join("libtorch_cuda.so");
        if cuda.exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH");
}
