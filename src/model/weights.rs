//! Checkpoint tensors by HF key name: safetensors headers read through a memory map (single file or shards), the
//! comparison of what an architecture needs against what the file holds (one report listing every problem), and
//! the creation of named variables in a `tch::nn::VarStore` whose names equal the checkpoint keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype as StDtype, TensorInfo};
use safetensors::SafeTensors;
use tch::{nn::VarStore, Device, Kind, Tensor};

use super::error::{ModelError, TensorReport};
use super::files::{shard_weight_map, WeightFiles};

/// How a weight is initialised when no checkpoint is loaded (random-weight benchmarks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Normal(0, std).
    Normal(f64),
    /// All ones (norm weights).
    Ones,
    /// All zeros (biases).
    Zeros,
}

/// One tensor an architecture needs: its checkpoint key, shape and random initialisation.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightSpec {
    /// The HF checkpoint key, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// The expected shape.
    pub shape: Vec<i64>,
    /// The initialisation used for random weights.
    pub init: Init,
}

impl WeightSpec {
    /// A spec with the given key, shape and initialisation.
    pub fn new(name: impl Into<String>, shape: &[i64], init: Init) -> Self {
        Self { name: name.into(), shape: shape.to_vec(), init }
    }
}

struct Entry {
    file: usize,
    info: TensorInfo,
}

/// The tensors of a checkpoint (one or several safetensors files), read lazily through memory maps.
pub struct Checkpoint {
    files: Vec<(PathBuf, Mmap, usize)>,
    entries: BTreeMap<String, Entry>,
}

impl Checkpoint {
    /// Opens every safetensors file of the checkpoint and reads their headers.
    pub fn open(weights: &WeightFiles) -> Result<Self, ModelError> {
        let mut files = Vec::new();
        let mut entries = BTreeMap::new();
        for (index, path) in weights.paths().into_iter().enumerate() {
            let st_err = |message: String| ModelError::Safetensors { path: path.into(), message };
            let file =
                std::fs::File::open(path).map_err(|source| ModelError::Io { path: path.into(), error: source })?;
            // SAFETY: the map is read-only and the file is not expected to change while stasc reads it.
            let mmap =
                unsafe { Mmap::map(&file) }.map_err(|source| ModelError::Io { path: path.into(), error: source })?;
            let (header_len, metadata) =
                SafeTensors::read_metadata(&mmap).map_err(|e| st_err(format!("invalid safetensors header: {e}")))?;
            for (name, info) in metadata.tensors() {
                if entries.contains_key(&name) {
                    return Err(st_err(format!("tensor {name} is stored in more than one shard")));
                }
                entries.insert(name, Entry { file: index, info: info.clone() });
            }
            files.push((path.to_path_buf(), mmap, 8 + header_len));
        }
        if let WeightFiles::Sharded { index, .. } = weights {
            check_index(index, &files, &entries)?;
        }
        Ok(Checkpoint { files, entries })
    }

    /// Every tensor name in the checkpoint, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Whether the checkpoint holds a tensor of this name.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The shape of a stored tensor.
    pub fn shape(&self, name: &str) -> Option<Vec<i64>> {
        self.entries.get(name).map(|e| e.info.shape.iter().map(|&d| d as i64).collect())
    }

    /// Compares the needed tensors with the stored ones. Stored rotary caches (`rotary_emb.inv_freq`, written by old
    /// transformers versions) are derived data and never count as unexpected.
    pub fn compare(&self, specs: &[WeightSpec]) -> TensorReport {
        let mut report = TensorReport::default();
        for spec in specs {
            match self.shape(&spec.name) {
                None => report.missing.push(spec.name.clone()),
                Some(found) if found != spec.shape => {
                    report.misshaped.push((spec.name.clone(), spec.shape.clone(), found))
                }
                Some(_) => {}
            }
        }
        let wanted: std::collections::HashSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        report.unexpected = self
            .names()
            .filter(|n| !wanted.contains(n) && !n.ends_with("rotary_emb.inv_freq"))
            .map(String::from)
            .collect();
        report
    }

    /// Reads one tensor, converted to `kind` on `device`.
    pub fn tensor(&self, name: &str, kind: Kind, device: Device) -> Result<Tensor, ModelError> {
        let entry = self.entries.get(name).ok_or_else(|| ModelError::Safetensors {
            path: self.files.first().map(|f| f.0.clone()).unwrap_or_default(),
            message: format!("no tensor named {name}"),
        })?;
        let (path, mmap, data_start) = &self.files[entry.file];
        let st_err = |message: String| ModelError::Safetensors { path: path.clone(), message };
        let file_kind = match entry.info.dtype {
            StDtype::F32 => Kind::Float,
            StDtype::F16 => Kind::Half,
            StDtype::BF16 => Kind::BFloat16,
            StDtype::F64 => Kind::Double,
            other => return Err(st_err(format!("tensor {name} has dtype {other:?}; expected F32, F16 or BF16"))),
        };
        let (start, end) = entry.info.data_offsets;
        let bytes = mmap
            .get(data_start + start..data_start + end)
            .ok_or_else(|| st_err(format!("tensor {name}'s data lies beyond the end of the file")))?;
        let shape: Vec<i64> = entry.info.shape.iter().map(|&d| d as i64).collect();
        let context = || format!("loading tensor {name} from {}", path.display());
        let cpu = Tensor::f_from_data_size(bytes, &shape, file_kind).map_err(ModelError::torch(context()))?;
        // Move in the file's dtype first: bf16 checkpoints then travel at half the bytes and convert on the GPU.
        cpu.f_to_device(device).and_then(|t| t.f_to_kind(kind)).map_err(ModelError::torch(context()))
    }
}

/// Checks that every tensor the shard index lists is in the shard it names, and that no shard holds unlisted ones.
fn check_index(
    index: &Path,
    files: &[(PathBuf, Mmap, usize)],
    entries: &BTreeMap<String, Entry>,
) -> Result<(), ModelError> {
    let map = shard_weight_map(index)?;
    let mut problems = Vec::new();
    for (name, shard) in &map {
        match entries.get(name) {
            None => problems.push(format!("{name} (listed in {shard}) is in no shard")),
            Some(e) => {
                let actual = files[e.file].0.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
                if &actual != shard {
                    problems.push(format!("{name} is listed in {shard} but stored in {actual}"));
                }
            }
        }
    }
    problems.extend(entries.keys().filter(|n| !map.contains_key(*n)).map(|n| format!("{n} is not in the index")));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ModelError::Safetensors { path: index.into(), message: problems.join("; ") })
    }
}

/// Adds `tensor` to `vs` under the dotted checkpoint key `name` (e.g. `model.layers.0.mlp.up_proj.weight`), as a
/// trainable variable.
pub fn add_named(vs: &VarStore, name: &str, tensor: Tensor) {
    let mut parts: Vec<&str> = name.split('.').collect();
    let leaf = parts.pop().unwrap_or(name);
    let path = parts.iter().fold(vs.root(), |p, part| p.sub(*part));
    let _ = path.add(leaf, tensor, true);
}

/// Creates a tensor for `spec` with its random initialisation.
pub fn random_tensor(spec: &WeightSpec, kind: Kind, device: Device) -> Result<Tensor, ModelError> {
    let opts = (kind, device);
    let context = || format!("initialising {}", spec.name);
    match spec.init {
        Init::Normal(std) => Tensor::f_randn(&spec.shape, (Kind::Float, device))
            .and_then(|t| t.f_mul_scalar(std))
            .and_then(|t| t.f_to_kind(kind)),
        Init::Ones => Tensor::f_ones(&spec.shape, opts),
        Init::Zeros => Tensor::f_zeros(&spec.shape, opts),
    }
    .map_err(ModelError::torch(context()))
}

/// Loaded variables looked up by checkpoint key while the layers are assembled.
pub struct NamedWeights {
    map: std::collections::HashMap<String, Tensor>,
}

impl NamedWeights {
    /// Wraps a `VarStore::variables()` map.
    pub fn new(map: std::collections::HashMap<String, Tensor>) -> Self {
        Self { map }
    }

    /// The variable named `name` (a handle sharing its storage).
    pub fn get(&self, name: &str) -> Result<Tensor, ModelError> {
        self.map.get(name).map(Tensor::shallow_clone).ok_or_else(|| ModelError::Torch {
            context: "assembling layers".into(),
            error: tch::TchError::Shape(format!("no variable named {name}")),
        })
    }

    /// The linear layer `{prefix}.weight` (+ `{prefix}.bias` when `bias`).
    pub fn linear(&self, prefix: &str, bias: bool) -> Result<super::layers::Linear, ModelError> {
        Ok(super::layers::Linear {
            weight: self.get(&format!("{prefix}.weight"))?,
            bias: if bias { Some(self.get(&format!("{prefix}.bias"))?) } else { None },
            adapter: None,
        })
    }
}
