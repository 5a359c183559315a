//! Files that appear whole or not at all: every file stasc writes for others to read (run records, reports,
//! sweep files, scored JSONL, downloaded artifacts) goes through a temporary file in the same directory and a rename.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A failed atomic write: the file it was for (a missing directory that cannot be made is named as itself).
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct AtomicWriteError {
    /// The file being written, or the directory that could not be made for it.
    pub path: PathBuf,
    /// The operating system's error.
    pub source: std::io::Error,
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, making the directory if
/// needed. The temporary file never outlives a failed write, and ones left by a killed process writing `path` are
/// removed first.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), AtomicWriteError> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(|source| AtomicWriteError { path: dir.to_path_buf(), source })?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    remove_stale_temporaries(dir, &name);
    let tmp = dir.join(format!("{}{}", temp_prefix(&name), std::process::id()));
    let written = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
        .and_then(|_| fs::rename(&tmp, path));
    written.map_err(|source| {
        let _ = fs::remove_file(&tmp);
        AtomicWriteError { path: path.to_path_buf(), source }
    })
}

/// The name of [`write`]'s temporary files for `name`, up to the process id.
fn temp_prefix(name: &str) -> String {
    format!(".{name}.tmp-")
}

/// Removes temporary files of `name` in `dir` left by a process killed while writing it (or by a full disk before
/// temporary files were removed on failure). Best effort: a file that cannot be removed is overwritten later anyway.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = temp_prefix(name);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        if rest.parse::<u32>().is_ok_and(|pid| pid != std::process::id()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}
