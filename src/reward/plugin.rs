//! Reward plugins: dylibs built with the `stasc-plugin` SDK, loaded with libloading and used through the same
//! [`Reward`] trait as the built-ins.
//!
//! Loading checks, in order: the file exists, it is a loadable dylib, it exports the SDK's entry symbol, and the
//! descriptor's ABI version equals ours; only then is anything else read or called. A plugin's error or panic
//! becomes an error for that sample (the SDK's wrapper catches panics, so none crosses into the host), and a
//! non-finite score is rejected; the command scoring the sample stops with that error (README, "Rewards and
//! plugins"). Each loaded plugin is identified by its path and the SHA-256 of its file.

use std::env;
use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use libloading::Library;
use sha2::{Digest, Sha256};
use stasc_plugin::{EntryFn, LastErrorFn, ScoreFn, ABI_VERSION, ENTRY_SYMBOL, STATUS_ERROR, STATUS_OK, STATUS_PANIC};

use super::{Reward, RewardError};

/// Environment variable with extra plugin directories (separated like `PATH`).
pub const PLUGIN_PATH_ENV: &str = "STASC_PLUGIN_PATH";

/// Why a plugin could not be found or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// A plugin name matched no file in the plugin directories.
    #[error("plugin {name:?} not found: no {file} in {}", display_dirs(.searched))]
    NotFound {
        /// The name that was asked for.
        name: String,
        /// The file name that was looked for.
        file: String,
        /// The directories searched, in order.
        searched: Vec<PathBuf>,
    },
    /// A plugin path does not exist.
    #[error("plugin file {} does not exist", .path.display())]
    FileMissing {
        /// The path that was given.
        path: PathBuf,
    },
    /// The plugin file could not be read.
    #[error("cannot read plugin file {}: {source}", .path.display())]
    Read {
        /// The plugin file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not a loadable dynamic library.
    #[error("{} is not a loadable dynamic library: {reason}", .path.display())]
    NotADylib {
        /// The plugin file.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },
    /// The library does not export the SDK's entry function.
    #[error("{} is not a stasc reward plugin: it exports no `{symbol}` (build it with stasc_plugin::export_reward!)", .path.display())]
    MissingSymbol {
        /// The plugin file.
        path: PathBuf,
        /// The symbol that was looked for.
        symbol: String,
    },
    /// The entry function returned a null descriptor.
    #[error("plugin {} returned a null descriptor", .path.display())]
    NullDescriptor {
        /// The plugin file.
        path: PathBuf,
    },
    /// The plugin was built for another ABI version.
    #[error("plugin {} has ABI version {found}, but this stasc expects {expected}: rebuild it against this stasc-plugin", .path.display())]
    WrongAbi {
        /// The plugin file.
        path: PathBuf,
        /// The plugin's ABI version.
        found: u32,
        /// The host's ABI version.
        expected: u32,
    },
    /// The plugin's name is missing or not UTF-8.
    #[error("plugin {} declares no valid UTF-8 name", .path.display())]
    BadName {
        /// The plugin file.
        path: PathBuf,
    },
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "(no plugin directories)".to_string();
    }
    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// What `stasc plugin list` shows for a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The name the plugin declares.
    pub name: String,
    /// The plugin file.
    pub path: PathBuf,
    /// The plugin's ABI version.
    pub abi_version: u32,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
}

/// A loaded reward plugin.
pub struct PluginReward {
    info: PluginInfo,
    score_fn: ScoreFn,
    last_error_fn: LastErrorFn,
    // Keeps the code behind the function pointers mapped; dropped last.
    _library: Library,
}

impl std::fmt::Debug for PluginReward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginReward").field("info", &self.info).finish()
    }
}

/// SHA-256 of a file, lowercase hex.
pub fn file_sha256(path: &Path) -> Result<String, PluginError> {
    let bytes = fs::read(path).map_err(|source| PluginError::Read { path: path.to_path_buf(), source })?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

impl PluginReward {
    /// Loads the plugin at `path`, checking the ABI version before reading anything else.
    pub fn load(path: &Path) -> Result<Self, PluginError> {
        if !path.is_file() {
            return Err(PluginError::FileMissing { path: path.to_path_buf() });
        }
        let sha256 = file_sha256(path)?;
        // SAFETY: loading runs the library's initialisers; a plugin is trusted code the user chose to load.
        let library = unsafe { Library::new(path) }
            .map_err(|e| PluginError::NotADylib { path: path.to_path_buf(), reason: e.to_string() })?;
        let symbol = format!("{ENTRY_SYMBOL}\0");
        // SAFETY: the symbol's type is fixed by the SDK; a library exporting the name with another type is broken.
        let entry: EntryFn = unsafe { library.get::<EntryFn>(symbol.as_bytes()) }
            .map(|s| *s)
            .map_err(|_| PluginError::MissingSymbol { path: path.to_path_buf(), symbol: ENTRY_SYMBOL.to_string() })?;
        // SAFETY: the entry takes no arguments and returns a pointer to a static descriptor (or null).
        let descriptor = unsafe { entry() };
        if descriptor.is_null() {
            return Err(PluginError::NullDescriptor { path: path.to_path_buf() });
        }
        // SAFETY: every ABI version starts the descriptor with the u32 version, so reading it is always valid.
        let abi_version = unsafe { std::ptr::read(descriptor as *const u32) };
        if abi_version != ABI_VERSION {
            return Err(PluginError::WrongAbi { path: path.to_path_buf(), found: abi_version, expected: ABI_VERSION });
        }
        // SAFETY: the version matches ours, so the descriptor has our layout.
        let descriptor = unsafe { &*descriptor };
        if descriptor.name.is_null() {
            return Err(PluginError::BadName { path: path.to_path_buf() });
        }
        // SAFETY: the SDK stores a static NUL-terminated string.
        let name = unsafe { CStr::from_ptr(descriptor.name) }
            .to_str()
            .map_err(|_| PluginError::BadName { path: path.to_path_buf() })?
            .to_string();
        Ok(Self {
            info: PluginInfo { name, path: path.to_path_buf(), abi_version, sha256 },
            score_fn: descriptor.score,
            last_error_fn: descriptor.last_error,
            _library: library,
        })
    }

    /// Name, path, ABI version and hash of the plugin.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The plugin file that was loaded.
    pub fn path(&self) -> &Path {
        &self.info.path
    }

    /// SHA-256 of the plugin file, lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.info.sha256
    }

    /// The plugin's ABI version.
    pub fn abi_version(&self) -> u32 {
        self.info.abi_version
    }

    fn last_error(&self) -> String {
        // SAFETY: the SDK returns a thread-local NUL-terminated string, valid until the next call on this thread.
        let message = unsafe { (self.last_error_fn)() };
        if message.is_null() {
            return "no message".to_string();
        }
        unsafe { CStr::from_ptr(message) }.to_string_lossy().into_owned()
    }
}

impl Reward for PluginReward {
    fn name(&self) -> &str {
        &self.info.name
    }

    fn score(&self, gold: &[String], text: &str) -> Result<f64, RewardError> {
        let failed = |message: String| RewardError::PluginFailed {
            reward: self.info.name.clone(),
            path: self.info.path.clone(),
            message,
        };
        // JSON escapes NUL as \u0000, so the gold list always fits a C string.
        let gold_json =
            CString::new(serde_json::to_string(gold).expect("strings serialise")).expect("JSON text has no NUL");
        let answer = CString::new(text)
            .map_err(|_| failed("the answer contains a NUL character, which the plugin ABI cannot pass".to_string()))?;
        let mut out = f64::NAN;
        // SAFETY: both strings are valid for the call and `out` points to a live f64; the ABI version was checked.
        let status = unsafe { (self.score_fn)(gold_json.as_ptr(), answer.as_ptr(), &mut out) };
        match status {
            STATUS_OK if out.is_finite() => Ok(out),
            STATUS_OK => Err(RewardError::NonFinite { reward: self.info.name.clone(), value: out }),
            STATUS_ERROR => Err(failed(self.last_error())),
            STATUS_PANIC => Err(RewardError::PluginPanicked {
                reward: self.info.name.clone(),
                path: self.info.path.clone(),
                message: self.last_error(),
            }),
            other => Err(failed(format!("unknown status {other} returned by score"))),
        }
    }
}

/// The file name cargo gives the cdylib of a crate named `crate_name` on this platform.
pub fn library_file_name(crate_name: &str) -> String {
    format!("{}{}{}", env::consts::DLL_PREFIX, crate_name.replace('-', "_"), env::consts::DLL_SUFFIX)
}

/// Turns `plugin:` specs into files: a spec containing a path separator or ending in the dylib suffix is a path;
/// anything else is a crate name looked up as `lib<name>.so` in `dirs`, in order.
pub fn resolve(spec: &str, dirs: &[PathBuf]) -> Result<PathBuf, PluginError> {
    let looks_like_path =
        spec.contains('/') || spec.contains(std::path::MAIN_SEPARATOR) || spec.ends_with(env::consts::DLL_SUFFIX);
    if looks_like_path {
        let path = PathBuf::from(spec);
        return if path.is_file() { Ok(path) } else { Err(PluginError::FileMissing { path }) };
    }
    let file = library_file_name(spec);
    dirs.iter().map(|dir| dir.join(&file)).find(|candidate| candidate.is_file()).ok_or_else(|| PluginError::NotFound {
        name: spec.to_string(),
        file,
        searched: dirs.to_vec(),
    })
}

/// Where plugins are looked for when no directory is given: `STASC_PLUGIN_PATH`, the directory of the running
/// executable (cargo puts the workspace's plugin cdylibs beside the stasc binary), and `target/{debug,release}`
/// (or `$CARGO_TARGET_DIR/...`) under the current directory. Only existing directories, without repeats.
pub fn default_plugin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(paths) = env::var_os(PLUGIN_PATH_ENV) {
        dirs.extend(env::split_paths(&paths));
    }
    if let Some(exe_dir) = env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        // Test binaries live in target/<profile>/deps; the plugins are one level up.
        if exe_dir.file_name().is_some_and(|name| name == "deps") {
            if let Some(profile_dir) = exe_dir.parent() {
                dirs.push(profile_dir.to_path_buf());
            }
        }
        dirs.push(exe_dir);
    }
    let target = env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    dirs.push(target.join("debug"));
    dirs.push(target.join("release"));
    unique_dirs(dirs)
}

/// Existing directories, each once (compared after resolving links and relative paths), in their first order.
fn unique_dirs(dirs: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut unique: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        if let Ok(canonical) = dir.canonicalize() {
            if canonical.is_dir() && !unique.contains(&canonical) {
                unique.push(canonical);
            }
        }
    }
    unique
}

/// A candidate found while scanning plugin directories: its info, or why it could not be loaded.
pub type Discovered = (PathBuf, Result<PluginInfo, PluginError>);

/// Every dylib in `dirs` that exports the plugin entry symbol, loaded to read its name and ABI version.
/// Libraries without the entry symbol are not plugins and are left out; other load failures are reported.
pub fn discover(dirs: &[PathBuf]) -> Vec<Discovered> {
    let mut found = Vec::new();
    for dir in &unique_dirs(dirs.to_vec()) {
        let Ok(entries) = fs::read_dir(dir) else { continue };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.is_file()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(env::consts::DLL_PREFIX) && n.ends_with(env::consts::DLL_SUFFIX))
            })
            .collect();
        files.sort();
        for path in files {
            match PluginReward::load(&path) {
                Ok(plugin) => found.push((path, Ok(plugin.info().clone()))),
                Err(PluginError::MissingSymbol { .. }) => {}
                Err(err) => found.push((path, Err(err))),
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_to_platform_file_names() {
        let file = library_file_name("math-tolerance");
        assert!(file.contains("math_tolerance"), "{file}");
        let dir = tempfile::tempdir().unwrap();
        let err = resolve("math-tolerance", &[dir.path().to_path_buf()]).unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
        fs::write(dir.path().join(&file), b"").unwrap();
        assert_eq!(resolve("math-tolerance", &[dir.path().to_path_buf()]).unwrap(), dir.path().join(&file));
    }

    #[test]
    fn missing_and_non_dylib_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.so");
        assert!(matches!(resolve(missing.to_str().unwrap(), &[]), Err(PluginError::FileMissing { .. })));
        assert!(matches!(PluginReward::load(&missing), Err(PluginError::FileMissing { .. })));
        let text = dir.path().join("libnotes.so");
        fs::write(&text, "just some text, not a library\n").unwrap();
        let err = PluginReward::load(&text).unwrap_err();
        assert!(matches!(err, PluginError::NotADylib { .. }), "{err}");
        assert!(err.to_string().contains("is not a loadable dynamic library"), "{err}");
        // A directory scan reports the broken file instead of skipping it silently.
        let found = discover(&[dir.path().to_path_buf()]);
        assert_eq!(found.len(), 1);
        assert!(found[0].1.is_err());
    }

    #[test]
    fn hashes_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        fs::write(&path, b"abc").unwrap();
        assert_eq!(file_sha256(&path).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
