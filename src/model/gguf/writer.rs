//! Output side of import: a streaming safetensors writer (header first, then one tensor at a time, so a model never
//! sits in memory twice) and the all-or-nothing output directory (written under a temporary name beside OUT_DIR and
//! renamed into place only when complete).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use half::bf16;
use serde_json::{json, Value};

use super::error::GgufError;

/// The element type written to model.safetensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputDtype {
    /// 32-bit float: exact for every supported GGUF type.
    #[default]
    F32,
    /// bfloat16, rounded to nearest even: half the size, loses precision on Q8_0 and wide Q4 scales.
    Bf16,
}

impl OutputDtype {
    /// The safetensors dtype tag.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::Bf16 => "BF16",
        }
    }

    /// The `torch_dtype` value for config.json.
    pub fn torch_name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::Bf16 => "bfloat16",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::Bf16 => 2,
        }
    }

    fn encode(self, values: &[f32], out: &mut Vec<u8>) {
        out.clear();
        out.reserve(values.len() * self.size());
        match self {
            Self::F32 => values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            Self::Bf16 => values.iter().for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
        }
    }
}

/// A safetensors file being written: the header is fixed up front from the declared shapes, then each tensor's
/// data must be supplied in the declared order.
pub struct SafetensorsWriter {
    path: PathBuf,
    out: BufWriter<File>,
    dtype: OutputDtype,
    pending: std::vec::IntoIter<(String, usize)>,
    scratch: Vec<u8>,
}

impl SafetensorsWriter {
    /// Creates `path` and writes the header for `tensors` (name, shape), in that order.
    pub fn create(
        path: &Path,
        dtype: OutputDtype,
        tensors: &[(String, Vec<usize>)],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self, GgufError> {
        let io = |source| GgufError::Write { path: path.to_path_buf(), source };
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), json!(metadata));
        let mut offset = 0usize;
        let mut pending = Vec::with_capacity(tensors.len());
        for (name, shape) in tensors {
            let bytes = shape.iter().product::<usize>() * dtype.size();
            header.insert(
                name.clone(),
                json!({"dtype": dtype.safetensors_name(), "shape": shape, "data_offsets": [offset, offset + bytes]}),
            );
            offset += bytes;
            pending.push((name.clone(), bytes));
        }
        let mut header = serde_json::to_vec(&Value::Object(header)).expect("a JSON map serialises");
        // Pad with spaces so the data starts 8-byte aligned, as the safetensors writers do.
        header.resize(header.len().div_ceil(8) * 8, b' ');
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path).map_err(io)?);
        out.write_all(&(header.len() as u64).to_le_bytes()).map_err(io)?;
        out.write_all(&header).map_err(io)?;
        Ok(Self { path: path.to_path_buf(), out, dtype, pending: pending.into_iter(), scratch: Vec::new() })
    }

    /// Writes the next tensor's values; `name` must be the next one declared.
    pub fn write_next(&mut self, name: &str, values: &[f32]) -> Result<(), GgufError> {
        let expected = self.pending.next();
        match &expected {
            Some((next, bytes)) if next == name && *bytes == values.len() * self.dtype.size() => {}
            _ => panic!("safetensors writer misuse: got {name} with {} values, expected {expected:?}", values.len()),
        }
        self.dtype.encode(values, &mut self.scratch);
        self.out.write_all(&self.scratch).map_err(|source| GgufError::Write { path: self.path.clone(), source })
    }

    /// Flushes and syncs the file; every declared tensor must have been written.
    pub fn finish(mut self) -> Result<(), GgufError> {
        if let Some((name, _)) = self.pending.next() {
            panic!("safetensors writer misuse: tensor {name} was declared but never written");
        }
        let io = |source| GgufError::Write { path: self.path.clone(), source };
        self.out.flush().map_err(io)?;
        self.out.get_ref().sync_all().map_err(io)
    }
}

/// Writes pretty JSON followed by a newline.
pub fn write_json(path: &Path, value: &Value) -> Result<(), GgufError> {
    let mut text = serde_json::to_string_pretty(value).expect("a JSON value serialises");
    text.push('\n');
    std::fs::write(path, text).map_err(|source| GgufError::Write { path: path.to_path_buf(), source })
}

/// A directory being filled under a temporary name beside its final place; dropped without `commit`, it is removed.
pub struct StagingDir {
    dir: Option<tempfile::TempDir>,
    target: PathBuf,
}

impl StagingDir {
    /// Refuses an existing `target` unless `force`; creates the parent and a hidden temporary sibling.
    pub fn new(target: &Path, force: bool) -> Result<Self, GgufError> {
        if target.exists() && !force {
            return Err(GgufError::OutputExists { path: target.to_path_buf() });
        }
        let name = target.file_name().ok_or_else(|| GgufError::Write {
            path: target.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "the output path has no final component"),
        })?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let io = |source| GgufError::Write { path: parent.clone(), source };
        std::fs::create_dir_all(&parent).map_err(io)?;
        let prefix = format!(".{}.importing-", name.to_string_lossy());
        let dir = tempfile::Builder::new().prefix(&prefix).tempdir_in(&parent).map_err(io)?;
        Ok(Self { dir: Some(dir), target: target.to_path_buf() })
    }

    /// The temporary directory to write into.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("staging dir is present until commit").path()
    }

    /// Moves the finished directory into place, replacing (with `force` already checked) an existing one.
    pub fn commit(mut self) -> Result<PathBuf, GgufError> {
        let dir = self.dir.take().expect("commit happens once");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| GgufError::Write { path, source }
        };
        // rename cannot replace a non-empty directory, so the old one is moved aside first and removed last.
        let old = if self.target.exists() {
            let parent = dir.path().parent().expect("staging dir has a parent").to_path_buf();
            let aside = tempfile::Builder::new().prefix(".replaced-").tempdir_in(&parent).map_err(io(&parent))?;
            let aside_target = aside.path().join("old");
            std::fs::rename(&self.target, &aside_target).map_err(io(&self.target))?;
            Some(aside)
        } else {
            None
        };
        let staged = dir.keep();
        if let Err(source) = std::fs::rename(&staged, &self.target) {
            let _ = std::fs::remove_dir_all(&staged);
            return Err(GgufError::Write { path: self.target.clone(), source });
        }
        drop(old); // removes the replaced directory
        Ok(self.target.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_through_the_crate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let tensors = vec![("b".to_string(), vec![2, 3]), ("a".to_string(), vec![3])];
        let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
        for dtype in [OutputDtype::F32, OutputDtype::Bf16] {
            let mut w = SafetensorsWriter::create(&path, dtype, &tensors, &meta).unwrap();
            w.write_next("b", &[1.0, 2.0, 3.0, 4.0, 5.0, -6.5]).unwrap();
            w.write_next("a", &[0.5, 0.25, 1.0 / 3.0]).unwrap();
            w.finish().unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            assert_eq!((8 + header_len) % 8, 0);
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let b = st.tensor("b").unwrap();
            assert_eq!(b.shape(), &[2, 3]);
            let a = st.tensor("a").unwrap();
            match dtype {
                OutputDtype::F32 => {
                    assert_eq!(a.dtype(), safetensors::Dtype::F32);
                    assert_eq!(
                        a.data(),
                        [0.5f32, 0.25, 1.0 / 3.0].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()
                    );
                }
                OutputDtype::Bf16 => {
                    assert_eq!(a.dtype(), safetensors::Dtype::BF16);
                    assert_eq!(bf16::from_le_bytes([b.data()[10], b.data()[11]]).to_f32(), -6.5);
                }
            }
        }
    }

    #[test]
    fn staging_dir_is_all_or_nothing() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("nested").join("out");
        {
            let staging = StagingDir::new(&target, false).unwrap();
            std::fs::write(staging.path().join("x"), "1").unwrap();
            // dropped without commit: nothing is left behind
        }
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(root.path().join("nested")).unwrap().count(), 0);

        let staging = StagingDir::new(&target, false).unwrap();
        std::fs::write(staging.path().join("x"), "1").unwrap();
        staging.commit().unwrap();
        assert_eq!(std::fs::read_to_string(target.join("x")).unwrap(), "1");

        assert!(matches!(StagingDir::new(&target, false), Err(GgufError::OutputExists { .. })));
        let staging = StagingDir::new(&target, true).unwrap();
        std::fs::write(staging.path().join("y"), "2").unwrap();
        staging.commit().unwrap();
        assert!(!target.join("x").exists());
        assert_eq!(std::fs::read_to_string(target.join("y")).unwrap(), "2");
        assert_eq!(std::fs::read_dir(root.path().join("nested")).unwrap().count(), 1);
    }
}
