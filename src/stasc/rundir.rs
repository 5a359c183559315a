//! The run directory: atomic file writes, JSONL records, chunked phase output and the config fingerprint that makes
//! resuming safe. A phase is complete exactly when its output file exists; every file appears by rename.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::StascError;

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StascError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir).map_err(|e| StascError::io(dir, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(|e| StascError::io(&tmp, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| StascError::io(&tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| StascError::io(path, e))
}

/// Serialises records as JSON lines and writes them atomically.
pub fn write_jsonl<T: Serialize>(path: &Path, records: &[T]) -> Result<(), StascError> {
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, r).map_err(|e| StascError::Json {
            path: path.to_path_buf(),
            line: 0,
            source: e,
        })?;
        out.push(b'\n');
    }
    write_atomic(path, &out)
}

/// Reads JSON lines; a bad line is an error naming the file and line number.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, StascError> {
    let text = fs::read_to_string(path).map_err(|e| StascError::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| StascError::Json { path: path.to_path_buf(), line: i + 1, source: e })
        })
        .collect()
}

/// Writes a value as pretty JSON, atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StascError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| StascError::Json {
        path: path.to_path_buf(),
        line: 0,
        source: e,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads a JSON file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StascError> {
    let text = fs::read_to_string(path).map_err(|e| StascError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| StascError::Json { path: path.to_path_buf(), line: e.line(), source: e })
}

/// Saved chunks of one generation phase (`iter_<n>/.partial/<phase>/chunk-NNNNN.jsonl`). A killed phase resumes
/// after its last saved chunk, so no sample is drawn twice.
pub struct ChunkStore {
    dir: PathBuf,
}

impl ChunkStore {
    /// The chunk store of `phase` in iteration directory `iter_dir`.
    pub fn new(iter_dir: &Path, phase: &str) -> Self {
        Self { dir: iter_dir.join(".partial").join(phase) }
    }

    fn chunk_path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("chunk-{index:05}.jsonl"))
    }

    /// Loads chunk `index` if it was saved.
    pub fn load<T: DeserializeOwned>(&self, index: usize) -> Result<Option<Vec<T>>, StascError> {
        let p = self.chunk_path(index);
        if p.exists() {
            read_jsonl(&p).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Saves chunk `index` atomically.
    pub fn save<T: Serialize>(&self, index: usize, records: &[T]) -> Result<(), StascError> {
        write_jsonl(&self.chunk_path(index), records)
    }

    /// Removes the chunks once the phase's final file exists.
    pub fn clear(&self) -> Result<(), StascError> {
        if self.dir.exists() {
            fs::remove_dir_all(&self.dir).map_err(|e| StascError::io(&self.dir, e))?;
        }
        // The shared `.partial` folder goes once its last phase is done; failure just means another phase is left.
        if let Some(parent) = self.dir.parent() {
            let _ = fs::remove_dir(parent);
        }
        Ok(())
    }
}

/// Compares the fingerprint of a previous run with the current one; returns the changed dotted keys, described.
pub fn config_changes(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_values("", old, new, &mut out);
    out
}

fn diff_values(prefix: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_values(&p, x, y, out),
                    (Some(x), None) => out.push(format!("{p} (was {x}, now absent)")),
                    (None, Some(y)) => out.push(format!("{p} (was absent, now {y})")),
                    (None, None) => {}
                }
            }
        }
        (a, b) if a != b => out.push(format!("{prefix} ({a} -> {b})")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn atomic_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b.json");
        write_atomic(&p, b"x").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"x");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn bad_jsonl_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.jsonl");
        fs::write(&p, "{\"a\":1}\nnot json\n").unwrap();
        let err = read_jsonl::<serde_json::Value>(&p).unwrap_err().to_string();
        assert!(err.contains("x.jsonl") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn config_changes_name_the_keys() {
        let a = json!({"sampling": {"temperature": 0.6, "top_p": 0.9}, "iterations": 3});
        let b = json!({"sampling": {"temperature": 0.7, "top_p": 0.9}, "iterations": 3, "extra": true});
        let ch = config_changes(&a, &b);
        assert_eq!(ch, vec!["extra (was absent, now true)".to_string(), "sampling.temperature (0.6 -> 0.7)".into()]);
        assert!(config_changes(&a, &a).is_empty());
    }
}
