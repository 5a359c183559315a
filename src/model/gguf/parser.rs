//! GGUF container reader (versions 2 and 3, little-endian): header, metadata key/values of every type including
//! nested arrays, tensor infos, alignment (`general.alignment`, default 32) and the data section. The file is
//! memory-mapped; tensor bytes are borrowed from the map, never copied until dequantisation.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::dequant::GgmlType;
use super::error::GgufError;
use super::metadata::MetadataValue;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// Where one tensor lives in the file and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The name as llama.cpp writes it, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions innermost-first, as GGUF lists them.
    pub dims: Vec<u64>,
    /// The storage type.
    pub ggml_type: GgmlType,
    /// Byte offset relative to the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The PyTorch shape (outermost-first): the GGUF dims reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// The number of elements.
    pub fn element_count(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed, memory-mapped GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    version: u32,
    metadata: BTreeMap<String, MetadataValue>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
}

impl GgufFile {
    /// Maps and parses `path`; fails with a message naming the file on any format problem.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; a file truncated by another process under us is outside our contract,
        // as it is for every mmap-based model loader.
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let parsed = parse(path, &map)?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            version: parsed.version,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Every metadata entry, by key.
    pub fn metadata(&self) -> &BTreeMap<String, MetadataValue> {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.metadata.get(key)
    }

    /// The tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The data-section alignment in bytes.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The absolute offset of the data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// The raw bytes of a tensor, checked against the file length.
    pub fn tensor_bytes(&self, tensor: &TensorInfo) -> Result<&[u8], GgufError> {
        let len =
            tensor.ggml_type.byte_len(tensor.element_count()).ok_or_else(|| GgufError::UnsupportedTensorType {
                path: self.path.clone(),
                tensor: tensor.name.clone(),
                type_name: tensor.ggml_type.name(),
            })?;
        let start = self.data_offset.checked_add(tensor.offset);
        let end = start.and_then(|s| s.checked_add(len));
        match (start, end) {
            (Some(start), Some(end)) if end <= self.map.len() as u64 => Ok(&self.map[start as usize..end as usize]),
            _ => Err(GgufError::Truncated {
                path: self.path.clone(),
                what: format!("the data of tensor \"{}\" ({len} bytes at data offset {})", tensor.name, tensor.offset),
                needed: end.unwrap_or(u64::MAX),
                len: self.map.len() as u64,
            }),
        }
    }

    /// The tensor's values as f32 in PyTorch (row-major, outermost-first) order.
    pub fn dequantize(&self, tensor: &TensorInfo) -> Result<Vec<f32>, GgufError> {
        let bytes = self.tensor_bytes(tensor)?;
        let innermost = tensor.dims.first().copied().unwrap_or(1);
        if innermost % tensor.ggml_type.block_size().unwrap_or(1) as u64 != 0 {
            return Err(GgufError::Malformed {
                path: self.path.clone(),
                message: format!(
                    "tensor \"{}\" has innermost dimension {innermost}, not a multiple of the {} block size {}",
                    tensor.name,
                    tensor.ggml_type.name(),
                    tensor.ggml_type.block_size().unwrap_or(1)
                ),
            });
        }
        super::dequant::dequantize(tensor.ggml_type, bytes, tensor.element_count() as usize).map_err(|_| {
            GgufError::UnsupportedTensorType {
                path: self.path.clone(),
                tensor: tensor.name.clone(),
                type_name: tensor.ggml_type.name(),
            }
        })
    }
}

/// What `parse` extracts from the bytes.
struct Parsed {
    version: u32,
    metadata: BTreeMap<String, MetadataValue>,
    tensors: Vec<TensorInfo>,
    alignment: u64,
    data_offset: u64,
}

/// A bounds-checked little-endian cursor that knows what it is reading, for the truncation message.
struct Cursor<'a> {
    path: &'a Path,
    data: &'a [u8],
    pos: usize,
    what: String,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], GgufError> {
        let end = (self.pos as u64).checked_add(n).filter(|&e| e <= self.data.len() as u64);
        let Some(end) = end else {
            return Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: self.what.clone(),
                needed: (self.pos as u64).saturating_add(n),
                len: self.data.len() as u64,
            });
        };
        let bytes = &self.data[self.pos..end as usize];
        self.pos = end as usize;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        Ok(self.take(N as u64)?.try_into().expect("take returns exactly N bytes"))
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.u64()?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| GgufError::Malformed {
            path: self.path.to_path_buf(),
            message: format!("{} holds a string that is not valid UTF-8 ({e})", self.what),
        })
    }

    /// A count that promises `count` items of at least `min_item_bytes` each; rejected before allocating when the
    /// rest of the file cannot hold them, so a corrupt count cannot ask for terabytes.
    fn count(&mut self, min_item_bytes: u64) -> Result<usize, GgufError> {
        let count = self.u64()?;
        let remaining = (self.data.len() - self.pos) as u64;
        if count.saturating_mul(min_item_bytes) > remaining {
            return Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: format!("{} ({count} items)", self.what),
                needed: (self.pos as u64).saturating_add(count.saturating_mul(min_item_bytes)),
                len: self.data.len() as u64,
            });
        }
        Ok(count as usize)
    }

    fn value(&mut self, key: &str, type_id: u32) -> Result<MetadataValue, GgufError> {
        use MetadataValue as V;
        Ok(match type_id {
            0 => V::U8(self.array::<1>()?[0]),
            1 => V::I8(i8::from_le_bytes(self.array()?)),
            2 => V::U16(u16::from_le_bytes(self.array()?)),
            3 => V::I16(i16::from_le_bytes(self.array()?)),
            4 => V::U32(self.u32()?),
            5 => V::I32(i32::from_le_bytes(self.array()?)),
            6 => V::F32(f32::from_le_bytes(self.array()?)),
            7 => V::Bool(self.array::<1>()?[0] != 0),
            8 => V::String(self.string()?),
            9 => {
                let element_type = self.u32()?;
                if element_type > 12 {
                    return Err(GgufError::UnknownMetadataType {
                        path: self.path.to_path_buf(),
                        key: key.to_string(),
                        type_id: element_type,
                    });
                }
                let min_bytes = match element_type {
                    0 | 1 | 7 | 9 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    _ => 8,
                };
                let count = self.count(min_bytes)?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.value(key, element_type)?);
                }
                V::Array(items)
            }
            10 => V::U64(self.u64()?),
            11 => V::I64(i64::from_le_bytes(self.array()?)),
            12 => V::F64(f64::from_le_bytes(self.array()?)),
            _ => {
                return Err(GgufError::UnknownMetadataType {
                    path: self.path.to_path_buf(),
                    key: key.to_string(),
                    type_id,
                })
            }
        })
    }
}

fn parse(path: &Path, data: &[u8]) -> Result<Parsed, GgufError> {
    if data.len() < 4 || &data[..4] != MAGIC {
        return Err(GgufError::BadMagic { path: path.to_path_buf(), found: data[..data.len().min(4)].to_vec() });
    }
    let mut cur = Cursor { path, data, pos: 4, what: "the header".to_string() };
    let version = cur.u32()?;
    if version != 2 && version != 3 {
        let hint = if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            "; the file looks big-endian, which stasc does not read".to_string()
        } else if version == 1 {
            "; version 1 files predate 64-bit counts: reconvert the model with a current llama.cpp".to_string()
        } else {
            String::new()
        };
        return Err(GgufError::UnsupportedVersion { path: path.to_path_buf(), version, hint });
    }
    // Every tensor info and metadata entry takes at least 8 bytes (its name's length), which bounds the counts.
    let tensor_count = cur.u64()?;
    cur.what = "the header's metadata count".to_string();
    let kv_count = cur.count(8 + 4)?;
    let remaining = (data.len() - cur.pos) as u64;
    if tensor_count.saturating_mul(8 + 4 + 4 + 8) > remaining {
        return Err(GgufError::Truncated {
            path: path.to_path_buf(),
            what: format!("the {tensor_count} tensor infos the header announces"),
            needed: (cur.pos as u64).saturating_add(tensor_count.saturating_mul(24)),
            len: data.len() as u64,
        });
    }

    let mut metadata = BTreeMap::new();
    for index in 0..kv_count {
        cur.what = format!("metadata entry {index}");
        let key = cur.string()?;
        cur.what = format!("metadata entry {index} (\"{key}\")");
        let type_id = cur.u32()?;
        let value = cur.value(&key, type_id)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(GgufError::Malformed {
                path: path.to_path_buf(),
                message: format!("metadata key \"{key}\" appears twice"),
            });
        }
    }

    let mut tensors = Vec::with_capacity(tensor_count as usize);
    for index in 0..tensor_count {
        cur.what = format!("tensor info {index}");
        let name = cur.string()?;
        cur.what = format!("tensor info {index} (\"{name}\")");
        let n_dims = cur.u32()?;
        if n_dims > 8 {
            return Err(GgufError::Malformed {
                path: path.to_path_buf(),
                message: format!("tensor \"{name}\" claims {n_dims} dimensions (GGML allows at most 4)"),
            });
        }
        let dims = (0..n_dims).map(|_| cur.u64()).collect::<Result<Vec<_>, _>>()?;
        if dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).is_none() {
            return Err(GgufError::Malformed {
                path: path.to_path_buf(),
                message: format!("tensor \"{name}\" has dimensions {dims:?} whose product overflows"),
            });
        }
        let ggml_type = GgmlType(cur.u32()?);
        let offset = cur.u64()?;
        tensors.push(TensorInfo { name, dims, ggml_type, offset });
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(value) => match value.as_u64() {
            Some(a) if a.is_power_of_two() => a,
            _ => {
                return Err(GgufError::BadKey {
                    path: path.to_path_buf(),
                    key: "general.alignment".to_string(),
                    found: value.describe(),
                    expected: "a power of two",
                })
            }
        },
    };
    let data_offset = (cur.pos as u64).div_ceil(alignment) * alignment;
    if data_offset > data.len() as u64 && !tensors.is_empty() {
        return Err(GgufError::Truncated {
            path: path.to_path_buf(),
            what: "the start of the tensor data section".to_string(),
            needed: data_offset,
            len: data.len() as u64,
        });
    }
    Ok(Parsed { version, metadata, tensors, alignment, data_offset })
}

#[cfg(test)]
mod tests {
    use super::super::test_gguf::{gguf_string, kv, Builder};
    use super::*;

    fn parse_bytes(bytes: &[u8]) -> Result<Parsed, GgufError> {
        parse(Path::new("test.gguf"), bytes)
    }

    #[test]
    fn parses_every_metadata_type_and_tensor_infos() {
        let mut b = Builder::new();
        b.kvs.push(kv("a.u8", 0, &[7]));
        b.kvs.push(kv("a.i8", 1, &[0xff]));
        b.kvs.push(kv("a.u16", 2, &500u16.to_le_bytes()));
        b.kvs.push(kv("a.i16", 3, &(-500i16).to_le_bytes()));
        b.kvs.push(kv("a.u32", 4, &70000u32.to_le_bytes()));
        b.kvs.push(kv("a.i32", 5, &(-70000i32).to_le_bytes()));
        b.kvs.push(kv("a.f32", 6, &1e-5f32.to_le_bytes()));
        b.kvs.push(kv("a.bool", 7, &[1]));
        b.kvs.push(kv("a.str", 8, &gguf_string("héllo")));
        let mut arr = 8u32.to_le_bytes().to_vec();
        arr.extend_from_slice(&2u64.to_le_bytes());
        arr.extend_from_slice(&gguf_string("x y"));
        arr.extend_from_slice(&gguf_string(""));
        b.kvs.push(kv("a.arr", 9, &arr));
        let mut nested = 9u32.to_le_bytes().to_vec();
        nested.extend_from_slice(&1u64.to_le_bytes());
        nested.extend_from_slice(&5u32.to_le_bytes());
        nested.extend_from_slice(&2u64.to_le_bytes());
        nested.extend_from_slice(&(-1i32).to_le_bytes());
        nested.extend_from_slice(&3i32.to_le_bytes());
        b.kvs.push(kv("a.nested", 9, &nested));
        b.kvs.push(kv("a.u64", 10, &(1u64 << 40).to_le_bytes()));
        b.kvs.push(kv("a.i64", 11, &(-5i64).to_le_bytes()));
        b.kvs.push(kv("a.f64", 12, &0.25f64.to_le_bytes()));
        b.tensors.push(("t".into(), vec![2, 3], 0, vec![0; 24]));
        let p = parse_bytes(&b.build()).unwrap();
        let m = &p.metadata;
        assert_eq!(m["a.u8"], MetadataValue::U8(7));
        assert_eq!(m["a.i8"].as_i64(), Some(-1));
        assert_eq!(m["a.u16"].as_u64(), Some(500));
        assert_eq!(m["a.i16"].as_i64(), Some(-500));
        assert_eq!(m["a.u32"].as_u64(), Some(70000));
        assert_eq!(m["a.i32"].as_i64(), Some(-70000));
        assert_eq!(m["a.f32"].as_f64(), Some(1e-5));
        assert_eq!(m["a.bool"].as_bool(), Some(true));
        assert_eq!(m["a.str"].as_str(), Some("héllo"));
        assert_eq!(
            m["a.arr"].as_array().unwrap(),
            &[MetadataValue::String("x y".into()), MetadataValue::String(String::new())]
        );
        assert_eq!(
            m["a.nested"],
            MetadataValue::Array(vec![MetadataValue::Array(vec![MetadataValue::I32(-1), MetadataValue::I32(3)])])
        );
        assert_eq!(m["a.u64"].as_u64(), Some(1 << 40));
        assert_eq!(m["a.i64"].as_i64(), Some(-5));
        assert_eq!(m["a.f64"].as_f64(), Some(0.25));
        assert_eq!(p.tensors.len(), 1);
        assert_eq!(p.tensors[0].dims, vec![2, 3]);
        assert_eq!(p.tensors[0].shape(), vec![3, 2]);
        assert_eq!(p.alignment, 32);
        assert_eq!(p.data_offset % 32, 0);
    }

    #[test]
    fn honours_general_alignment() {
        let mut b = Builder::new();
        b.alignment = 64;
        b.kvs.push(kv("general.alignment", 4, &64u32.to_le_bytes()));
        b.tensors.push(("t".into(), vec![4], 0, vec![0; 16]));
        let p = parse_bytes(&b.build()).unwrap();
        assert_eq!(p.alignment, 64);
        assert_eq!(p.data_offset % 64, 0);
    }

    #[test]
    fn rejects_bad_magic() {
        let err = parse_bytes(b"GGML\x03\0\0\0").err().unwrap();
        assert!(matches!(err, GgufError::BadMagic { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("test.gguf") && msg.contains("not a GGUF file"), "{msg}");
        assert!(matches!(parse_bytes(b"GG").err().unwrap(), GgufError::BadMagic { .. }));
    }

    #[test]
    fn rejects_unsupported_version() {
        let mut b = Builder::new();
        b.version = 1;
        let err = parse_bytes(&b.build()).err().unwrap();
        assert!(matches!(err, GgufError::UnsupportedVersion { version: 1, .. }), "{err}");
        b.version = 3u32.swap_bytes();
        assert!(parse_bytes(&b.build()).err().unwrap().to_string().contains("big-endian"));
    }

    #[test]
    fn rejects_truncation_everywhere() {
        let mut b = Builder::new();
        b.kvs.push(kv("general.name", 8, &gguf_string("model")));
        b.tensors.push(("t".into(), vec![8], 0, vec![1; 32]));
        let bytes = b.build();
        // Every proper prefix that cuts into the header, metadata or tensor infos is a truncation error.
        let infos_end = bytes.len() - 32;
        for cut in 4..infos_end {
            let err = parse_bytes(&bytes[..cut]).err();
            assert!(
                matches!(err, Some(GgufError::Truncated { .. }) | Some(GgufError::UnsupportedVersion { .. })),
                "cut at {cut}: {err:?}"
            );
        }
        let err = parse_bytes(&bytes[..10]).err().unwrap().to_string();
        assert!(err.contains("test.gguf is truncated"), "{err}");
    }

    #[test]
    fn rejects_unknown_metadata_type() {
        let mut b = Builder::new();
        b.kvs.push(kv("odd.key", 13, &[0; 8]));
        let err = parse_bytes(&b.build()).err().unwrap();
        assert!(matches!(&err, GgufError::UnknownMetadataType { key, type_id: 13, .. } if key == "odd.key"), "{err}");
        let mut arr = 99u32.to_le_bytes().to_vec();
        arr.extend_from_slice(&0u64.to_le_bytes());
        let mut b = Builder::new();
        b.kvs.push(kv("odd.array", 9, &arr));
        assert!(matches!(parse_bytes(&b.build()).err().unwrap(), GgufError::UnknownMetadataType { type_id: 99, .. }));
    }

    #[test]
    fn rejects_huge_counts_without_allocating() {
        let mut arr = 4u32.to_le_bytes().to_vec();
        arr.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut b = Builder::new();
        b.kvs.push(kv("big", 9, &arr));
        assert!(matches!(parse_bytes(&b.build()).err().unwrap(), GgufError::Truncated { .. }));
    }

    #[test]
    fn tensor_data_past_the_end_is_truncation() {
        let mut b = Builder::new();
        b.tensors.push(("t".into(), vec![8], 0, vec![1; 32]));
        let mut bytes = b.build();
        bytes.truncate(bytes.len() - 4);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short.gguf");
        std::fs::write(&path, &bytes).unwrap();
        let file = GgufFile::open(&path).unwrap();
        let err = file.dequantize(&file.tensors()[0]).err().unwrap();
        assert!(matches!(err, GgufError::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("tensor \"t\""), "{err}");
    }
}
