//! NVRTC, CUDA's run-time compiler, loaded with dlopen from the nvidia wheel that comes with torch
//! (nvidia/cu13/lib beside torch/lib): CUDA C source in, a CUBIN for one GPU architecture out. Compiling needs no
//! GPU, so the kernels' sources are checked on a CPU-only machine too.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::PathBuf;
use std::sync::OnceLock;

use libloading::Library;

use super::FfiError;

type Program = *mut c_void;

#[allow(clippy::type_complexity)]
struct Api {
    _libs: Vec<Library>,
    create: unsafe extern "C" fn(
        *mut Program,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> c_int,
    compile: unsafe extern "C" fn(Program, c_int, *const *const c_char) -> c_int,
    log_size: unsafe extern "C" fn(Program, *mut usize) -> c_int,
    log: unsafe extern "C" fn(Program, *mut c_char) -> c_int,
    cubin_size: unsafe extern "C" fn(Program, *mut usize) -> c_int,
    cubin: unsafe extern "C" fn(Program, *mut c_char) -> c_int,
    destroy: unsafe extern "C" fn(*mut Program) -> c_int,
    error_string: unsafe extern "C" fn(c_int) -> *const c_char,
}

/// Directories that may hold libnvrtc: the nvidia wheel beside the loaded libtorch (found in /proc/self/maps), then
/// the one beside the libtorch this binary was built against.
fn candidate_dirs() -> Vec<PathBuf> {
    let mut torch_libs = Vec::new();
    if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
        if let Some(path) =
            maps.lines().filter_map(|l| l.split_whitespace().nth(5)).find(|p| p.ends_with("/libtorch_cpu.so"))
        {
            torch_libs.extend(PathBuf::from(path).parent().map(PathBuf::from));
        }
    }
    if let Some(built) = option_env!("STASC_LIBTORCH_LIB") {
        torch_libs.push(PathBuf::from(built));
    }
    // torch/lib -> site-packages/nvidia/cu13/lib (the .libtorch link resolves to site-packages/torch).
    torch_libs
        .into_iter()
        .filter_map(|lib| lib.canonicalize().ok())
        .filter_map(|lib| lib.parent()?.parent().map(|sp| sp.join("nvidia/cu13/lib")))
        .collect()
}

fn load() -> Result<Api, FfiError> {
    let mut tried = Vec::new();
    for dir in candidate_dirs() {
        let (builtins, nvrtc) = (dir.join("libnvrtc-builtins.so.13.0"), dir.join("libnvrtc.so.13"));
        if !nvrtc.exists() {
            tried.push(nvrtc.display().to_string());
            continue;
        }
        // SAFETY: NVRTC's libraries run no code on load that depends on us. libnvrtc opens its builtins by bare
        // name, which finds them only when already loaded (the wheel sets no search path), so they are loaded first.
        unsafe {
            let builtins =
                Library::new(&builtins).map_err(|e| FfiError::Library(format!("{}: {e}", builtins.display())))?;
            let lib = Library::new(&nvrtc).map_err(|e| FfiError::Library(format!("{}: {e}", nvrtc.display())))?;
            macro_rules! sym {
                ($name:literal) => {
                    *lib.get(concat!($name, "\0").as_bytes())
                        .map_err(|e| FfiError::Library(format!("{}: {e}", $name)))?
                };
            }
            return Ok(Api {
                create: sym!("nvrtcCreateProgram"),
                compile: sym!("nvrtcCompileProgram"),
                log_size: sym!("nvrtcGetProgramLogSize"),
                log: sym!("nvrtcGetProgramLog"),
                cubin_size: sym!("nvrtcGetCUBINSize"),
                cubin: sym!("nvrtcGetCUBIN"),
                destroy: sym!("nvrtcDestroyProgram"),
                error_string: sym!("nvrtcGetErrorString"),
                _libs: vec![builtins, lib],
            });
        }
    }
    Err(FfiError::Library(format!("libnvrtc.so.13 not found (looked for {})", tried.join(", "))))
}

fn api() -> Result<&'static Api, FfiError> {
    static API: OnceLock<Result<Api, FfiError>> = OnceLock::new();
    API.get_or_init(load).as_ref().map_err(Clone::clone)
}

/// Whether NVRTC can be loaded (false on a machine whose torch has no CUDA wheels).
pub fn available() -> bool {
    api().is_ok()
}

/// Compiles `source` (named `name` in messages) for `sm_<arch>` (e.g. 90) with extra `options` (`-D...`) and returns
/// the CUBIN; a compile error carries NVRTC's log.
pub fn compile(name: &str, source: &str, arch: u32, options: &[String]) -> Result<Vec<u8>, FfiError> {
    let api = api()?;
    let c = |s: &str| CString::new(s).map_err(|_| FfiError::Library(format!("{name}: a NUL byte in {s:?}")));
    let (src, file) = (c(source)?, c(name)?);
    let mut args: Vec<CString> = vec![c(&format!("--gpu-architecture=sm_{arch}"))?, c("--std=c++17")?];
    for o in options {
        args.push(c(o)?);
    }
    let arg_ptrs: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).collect();
    // SAFETY: NVRTC's C API used as documented; every buffer is sized by the matching size query.
    unsafe {
        let failed = |code: c_int, what: &str| {
            let text = CStr::from_ptr((api.error_string)(code)).to_string_lossy();
            FfiError::Compile { kernel: name.to_string(), log: format!("{what}: {text}") }
        };
        let mut program: Program = std::ptr::null_mut();
        let code = (api.create)(&mut program, src.as_ptr(), file.as_ptr(), 0, std::ptr::null(), std::ptr::null());
        if code != 0 {
            return Err(failed(code, "nvrtcCreateProgram"));
        }
        let code = (api.compile)(program, arg_ptrs.len() as c_int, arg_ptrs.as_ptr());
        let result = if code != 0 {
            let mut size = 0usize;
            (api.log_size)(program, &mut size);
            let mut log = vec![0u8; size.max(1)];
            (api.log)(program, log.as_mut_ptr() as *mut c_char);
            let log = String::from_utf8_lossy(&log).trim_end_matches('\0').trim().to_string();
            Err(FfiError::Compile {
                kernel: name.to_string(),
                log: if log.is_empty() { failed(code, "nvrtcCompileProgram").to_string() } else { log },
            })
        } else {
            let mut size = 0usize;
            (api.cubin_size)(program, &mut size);
            let mut cubin = vec![0u8; size];
            let code = (api.cubin)(program, cubin.as_mut_ptr() as *mut c_char);
            if code != 0 {
                Err(failed(code, "nvrtcGetCUBIN"))
            } else {
                Ok(cubin)
            }
        };
        (api.destroy)(&mut program);
        result
    }
}
