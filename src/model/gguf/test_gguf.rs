//! Test-only builder of GGUF bytes (header, metadata entries, tensor infos and aligned data), so parser and import
//! tests can make exactly the file they need, well-formed or broken.

/// Builds GGUF bytes for tests: header, the given metadata entries (already encoded) and tensors.
pub struct Builder {
    /// The version field.
    pub version: u32,
    /// Encoded metadata entries, from [`kv`].
    pub kvs: Vec<Vec<u8>>,
    /// (name, GGUF dims innermost-first, ggml type id, raw data).
    pub tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    /// Data alignment used to lay out the file (declare `general.alignment` yourself when not 32).
    pub alignment: u64,
}

/// A GGUF string: u64 length then bytes.
pub fn gguf_string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

/// A metadata entry: key, value type id, encoded value.
pub fn kv(key: &str, type_id: u32, value: &[u8]) -> Vec<u8> {
    let mut out = gguf_string(key);
    out.extend_from_slice(&type_id.to_le_bytes());
    out.extend_from_slice(value);
    out
}

impl Builder {
    /// An empty version-3 file with the default alignment.
    pub fn new() -> Self {
        Self { version: 3, kvs: Vec::new(), tensors: Vec::new(), alignment: 32 }
    }

    /// The file's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kvs.len() as u64).to_le_bytes());
        for kv in &self.kvs {
            out.extend_from_slice(kv);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for (name, dims, type_id, data) in &self.tensors {
            out.extend_from_slice(&gguf_string(name));
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&type_id.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = (offset + data.len() as u64).div_ceil(self.alignment) * self.alignment;
        }
        while !(out.len() as u64).is_multiple_of(self.alignment) {
            out.push(0);
        }
        let start = out.len();
        for ((_, _, _, data), off) in self.tensors.iter().zip(offsets) {
            out.resize(start + off as usize, 0);
            out.extend_from_slice(data);
        }
        out
    }
}
