//! The run directory: atomic file writes, JSONL records, chunked phase output and the config fingerprint that makes
//! resuming safe. A phase is complete exactly when its output file exists; every file appears by rename.

use std::fs;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::StascError;

/// Writes `bytes` to `path` atomically (crate::atomic_file); an error names `path`, or the directory that could not
/// be made for it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StascError> {
    crate::atomic_file::write(path, bytes).map_err(|e| StascError::io(&e.path, e.source))
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
/// Keys an earlier stasc wrote under another name are read under today's first, so a rename is no change.
pub fn config_changes(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    let mut old = old.clone();
    if let Some(execution) = old.get_mut("execution") {
        crate::config::Execution::upgrade_recorded(execution);
    }
    let mut out = Vec::new();
    diff_values("", &old, new, &mut out);
    out
}

/// Keys of the fingerprint that say what the configuration files were called, not what they contain: the run name
/// (by default the stasc_config file's name) and which file chose the dtype. The same YAML copied under another name
/// is the same run.
const FILE_NAMES_ONLY: &[&str] = &["stasc_config.run_name", "execution.dtype_source"];

fn diff_values(prefix: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                if FILE_NAMES_ONLY.contains(&p.as_str()) {
                    continue;
                }
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

    #[test]
    fn temporaries_left_by_a_killed_or_failed_write_are_removed_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let chunks = ChunkStore::new(dir.path(), "initial");
        // What a full disk left behind: a 0-byte temporary chunk of another (earlier) process.
        let stale = chunks.dir.join(".chunk-00003.jsonl.tmp-4000000");
        fs::create_dir_all(&chunks.dir).unwrap();
        fs::write(&stale, b"").unwrap();
        let other = chunks.dir.join(".chunk-00004.jsonl.tmp-4000000");
        fs::write(&other, b"").unwrap();
        chunks.save(3, &[json!({"sample": 0})]).unwrap();
        assert!(!stale.exists(), "the resumed write of chunk 3 removes its leftover");
        assert!(other.exists(), "another file's temporary is left to that file's own write");
        assert_eq!(chunks.load::<serde_json::Value>(3).unwrap(), Some(vec![json!({"sample": 0})]));
    }

    #[test]
    fn a_failed_write_names_the_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        // The rename onto a directory fails, as a write fails on a full disk.
        let target = dir.path().join("metrics.json");
        fs::create_dir_all(target.join("x")).unwrap();
        let err = write_atomic(&target, b"{}").unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: ", target.display())), "{err}");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("metrics.json")], "no temporary file is left");
    }

    #[test]
    fn the_same_config_under_another_file_name_is_no_change() {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let text =
            fs::read_to_string(root.join("configs/cpu_demo.yaml")).unwrap().replace("run_name: \"cpu_demo\"\n", "");
        let fingerprint = |name: &str, text: &str| {
            let config = dir.path().join(name);
            fs::write(&config, text).unwrap();
            let paths = crate::config::RunConfigPaths {
                config,
                ft_config: root.join("configs/cpu_fine_tune.yaml"),
                accelerate_config: None,
            };
            let run = crate::config::RunConfig::load(&paths).unwrap();
            let (_, scorer) = super::super::from_config::prompts_and_scorer(&run).unwrap();
            super::super::from_config::fingerprint(&run, &scorer)
        };
        let original = fingerprint("stasc_config.yaml", &text);
        // Both name the file: the run by default, and the key that chose the dtype.
        assert_eq!(original["stasc_config"]["run_name"], json!("stasc_config"));
        assert_eq!(original["execution"]["dtype_source"], json!("stasc_config.yaml: dtype"));
        assert_eq!(config_changes(&original, &fingerprint("copy.yaml", &text)), Vec::<String>::new());
        let changed = fingerprint("copy.yaml", &text.replace("temperature: 0.6", "temperature: 0.7"));
        assert_eq!(config_changes(&original, &changed), vec!["stasc_config.temperature (0.6 -> 0.7)".to_string()]);

        // config.resolved.yaml as an earlier stasc wrote it, with `execution.num_devices`: the run still resumes.
        let yaml = serde_yaml::to_string(&original).unwrap();
        assert!(yaml.contains("  data_parallel_ranks: 1\n"), "{yaml}");
        let old: serde_json::Value =
            serde_yaml::from_str(&yaml.replace("  data_parallel_ranks: 1\n", "  num_devices: 1\n")).unwrap();
        assert_eq!(config_changes(&old, &original), Vec::<String>::new());
        let other: serde_json::Value =
            serde_yaml::from_str(&yaml.replace("  data_parallel_ranks: 1\n", "  num_devices: 2\n")).unwrap();
        assert_eq!(config_changes(&other, &original), vec!["execution.data_parallel_ranks (2 -> 1)".to_string()]);
    }
}
