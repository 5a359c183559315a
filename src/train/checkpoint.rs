//! Writing what training produced: an HF model directory (model.safetensors with `format: pt` metadata, config.json
//! with the saved dtype, generation config and tokenizer files copied from the base) that transformers and stasc
//! load, and PEFT adapter directories (adapter_config.json + adapter_model.safetensors).
//!
//! Everything is written into `<out>.partial` and renamed to `<out>` at the end, replacing an older `<out>`; a
//! crash leaves only the `.partial` directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, View};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use super::error::TrainError;

/// The base-directory files a checkpoint carries over unchanged.
pub const COPIED_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
];

/// A tensor's contiguous host copy, written as it lies (no copy into a byte vector).
struct HostTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    tensor: Tensor,
}

impl View for &HostTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        let len = self.data_len();
        if len == 0 {
            return std::borrow::Cow::Borrowed(&[]);
        }
        // SAFETY: `tensor` is a contiguous CPU tensor of `len` bytes that lives as long as `self`, and nothing
        // writes to it while it is borrowed.
        std::borrow::Cow::Borrowed(unsafe { std::slice::from_raw_parts(self.tensor.data_ptr() as *const u8, len) })
    }
    fn data_len(&self) -> usize {
        self.tensor.numel() * self.tensor.kind().elt_size_in_bytes()
    }
}

fn to_host(name: &str, t: &Tensor) -> Result<HostTensor, TrainError> {
    let dtype = match t.kind() {
        Kind::Float => Dtype::F32,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        other => return Err(TrainError::Invalid(format!("cannot save tensor {name} of kind {other:?}"))),
    };
    let tensor = tch::no_grad(|| t.f_detach().and_then(|x| x.f_to_device(Device::Cpu)).and_then(|x| x.f_contiguous()))
        .map_err(TrainError::torch(format!("copying {name} to the host")))?;
    Ok(HostTensor { dtype, shape: tensor.size().iter().map(|&d| d as usize).collect(), tensor })
}

/// Writes `tensors` to a safetensors file (via a temporary name in the same directory).
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), TrainError> {
    let host: Vec<(String, HostTensor)> =
        tensors.iter().map(|(n, t)| Ok((n.clone(), to_host(n, t)?))).collect::<Result<_, TrainError>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let tmp = temp_name(path);
    safetensors::tensor::serialize_to_file(host.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata), &tmp)
        .map_err(|e| TrainError::Safetensors { path: path.to_path_buf(), message: e.to_string() })?;
    std::fs::rename(&tmp, path).map_err(TrainError::io(path))
}

/// Writes JSON (pretty, trailing newline) via a temporary name.
pub fn write_json(path: &Path, value: &Value) -> Result<(), TrainError> {
    let mut text =
        serde_json::to_string_pretty(value).map_err(|source| TrainError::Json { path: path.into(), source })?;
    text.push('\n');
    write_file(path, text.as_bytes())
}

/// Writes bytes via a temporary name in the same directory.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let tmp = temp_name(path);
    std::fs::write(&tmp, bytes).map_err(TrainError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(TrainError::io(path))
}

fn temp_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

/// HF's name of a dtype in config.json.
fn hf_dtype(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        Kind::Double => "float64",
        _ => "float32",
    }
}

/// The staging directory of `out`.
pub fn partial_dir(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    out.with_file_name(format!("{name}.partial"))
}

/// Creates an empty staging directory for `out`.
pub fn begin(out: &Path) -> Result<PathBuf, TrainError> {
    let partial = partial_dir(out);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(TrainError::io(&partial))?;
    }
    std::fs::create_dir_all(&partial).map_err(TrainError::io(&partial))?;
    Ok(partial)
}

/// Renames the finished staging directory to `out`, replacing what was there.
pub fn finish(partial: &Path, out: &Path) -> Result<(), TrainError> {
    if out.exists() {
        let old = out.with_file_name(format!(
            "{}.old{}",
            out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            std::process::id()
        ));
        std::fs::rename(out, &old).map_err(TrainError::io(out))?;
        std::fs::rename(partial, out).map_err(TrainError::io(out))?;
        std::fs::remove_dir_all(&old).map_err(TrainError::io(&old))
    } else {
        std::fs::rename(partial, out).map_err(TrainError::io(out))
    }
}

/// Copies the tokenizer and generation files of `base` into `dir`; an error names the file being written.
pub fn copy_base_files(base: &Path, dir: &Path) -> Result<(), TrainError> {
    for name in COPIED_FILES {
        let src = base.join(name);
        if src.is_file() {
            let dst = dir.join(name);
            std::fs::copy(&src, &dst).map_err(TrainError::io(&dst))?;
        }
    }
    Ok(())
}

/// Bytes the tensors take on disk (their data; safetensors adds a small header).
pub fn tensor_bytes<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) -> u64 {
    tensors.into_iter().map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as u64).sum()
}

/// Bytes available to this user on the file system that holds `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct, which the call then fills in.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and outlives the call; `stat` is a valid, writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// Fails, naming `dir` and both sizes, when its file system has less than `needed` bytes free: checked before a
/// long phase that ends in writing them, so a full disk costs seconds instead of a whole training run.
pub fn ensure_free_space(dir: &Path, needed: u64, what: &str) -> Result<(), TrainError> {
    let free = free_bytes(dir).map_err(TrainError::io(dir))?;
    if free >= needed {
        return Ok(());
    }
    let mib = |b: u64| b.div_ceil(1 << 20);
    let message = format!("{what} needs {} MiB, only {} MiB are free there", mib(needed), mib(free));
    Err(TrainError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::StorageFull, message),
    })
}

/// Writes an HF model directory into `dir`: `weights` (checkpoint keys), config.json from `base` with the dtype of
/// the weights, and the base's tokenizer and generation files.
pub fn write_model_dir(base: &Path, dir: &Path, weights: &[(String, Tensor)]) -> Result<(), TrainError> {
    let config_path = base.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(TrainError::io(&config_path))?;
    let mut config: Value =
        serde_json::from_str(&text).map_err(|source| TrainError::Json { path: config_path.clone(), source })?;
    if let (Some(obj), Some((_, t))) = (config.as_object_mut(), weights.first()) {
        let dtype = Value::String(hf_dtype(t.kind()).into());
        // transformers 5 writes `dtype`, older versions `torch_dtype`: keep whichever the base has in step.
        if obj.contains_key("torch_dtype") {
            obj.insert("torch_dtype".into(), dtype.clone());
        }
        obj.insert("dtype".into(), dtype);
    }
    write_json(&dir.join("config.json"), &config)?;
    copy_base_files(base, dir)?;
    write_safetensors(&dir.join("model.safetensors"), weights)
}

/// Writes a PEFT adapter directory into `dir`.
pub fn write_adapter_dir(dir: &Path, config: &Value, tensors: &[(String, Tensor)]) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
    write_json(&dir.join("adapter_config.json"), config)?;
    write_safetensors(&dir.join("adapter_model.safetensors"), tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_with_pt_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]);
        let b = Tensor::from_slice(&[0.5f32]).to_kind(Kind::BFloat16);
        // A transposed view is written as its contiguous copy; an empty tensor as no bytes.
        let (c, e) = (a.tr(), Tensor::zeros([0, 3], (Kind::Float, Device::Cpu)));
        let tensors =
            [("a".into(), a.shallow_clone()), ("b".into(), b), ("c".into(), c.shallow_clone()), ("e".into(), e)];
        write_safetensors(&path, &tensors).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap().get("format").map(String::as_str), Some("pt"));
        let loaded = Tensor::read_safetensors(&path).unwrap();
        let got: HashMap<_, _> = loaded.into_iter().collect();
        assert!(got["a"].equal(&a) && got["c"].equal(&c));
        assert_eq!(got["b"].kind(), Kind::BFloat16);
        assert_eq!(got["e"].size(), [0, 3]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }

    #[test]
    fn a_failed_copy_names_the_file_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let (base, out) = (dir.path().join("base"), dir.path().join("out"));
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("tokenizer.json"), "{}").unwrap();
        // A directory where the copy must go: the write fails, as it would on a full disk.
        std::fs::create_dir_all(out.join("tokenizer.json")).unwrap();
        let err = copy_base_files(&base, &out).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: ", out.join("tokenizer.json").display())), "{err}");
    }

    #[test]
    fn free_space_is_checked_against_what_will_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        ensure_free_space(dir.path(), 1, "the checkpoint").unwrap();
        let needed = free + (1 << 40);
        let err = ensure_free_space(dir.path(), needed, "the checkpoint").unwrap_err().to_string();
        let expected =
            format!("{}: the checkpoint needs {} MiB, only ", dir.path().display(), needed.div_ceil(1 << 20));
        assert!(err.starts_with(&expected), "{err}\nexpected {expected}");
        assert!(err.ends_with(" MiB are free there"), "{err}");
        let a = Tensor::zeros([3, 4], (Kind::BFloat16, Device::Cpu));
        let b = Tensor::zeros([5], (Kind::Float, Device::Cpu));
        assert_eq!(tensor_bytes([&a, &b]), 3 * 4 * 2 + 5 * 4);
    }

    #[test]
    fn finish_replaces_an_older_output() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("model");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("old.txt"), "x").unwrap();
        let partial = begin(&out).unwrap();
        std::fs::write(partial.join("new.txt"), "y").unwrap();
        finish(&partial, &out).unwrap();
        assert!(out.join("new.txt").is_file() && !out.join("old.txt").exists() && !partial.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
