//! ggml tensor types and their dequantisation to f32. Supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1
//! (ggml block layouts: a block of 32 values starts with an f16 scale `d`, the `_1` kinds add an f16 minimum `m`;
//! 4-bit values sit in 16 bytes, low nibbles are elements 0..16 and high nibbles 16..32; 5-bit kinds keep each
//! value's fifth bit in a 32-bit word). Every other type is known by name only, so errors can say what it is.

use half::{bf16, f16};

/// The supported types, for error messages.
pub const SUPPORTED_TYPES: &str = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1";

/// A ggml tensor type id, as stored in a GGUF tensor info.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlType(pub u32);

impl GgmlType {
    /// 32-bit float.
    pub const F32: Self = Self(0);
    /// 16-bit IEEE float.
    pub const F16: Self = Self(1);
    /// Blocks of 32: f16 scale + 16 bytes of 4-bit values offset by 8.
    pub const Q4_0: Self = Self(2);
    /// Blocks of 32: f16 scale + f16 minimum + 16 bytes of 4-bit values.
    pub const Q4_1: Self = Self(3);
    /// Blocks of 32: f16 scale + 32 high bits + 16 bytes of low nibbles, offset by 16.
    pub const Q5_0: Self = Self(6);
    /// Blocks of 32: f16 scale + f16 minimum + 32 high bits + 16 bytes of low nibbles.
    pub const Q5_1: Self = Self(7);
    /// Blocks of 32: f16 scale + 32 signed bytes.
    pub const Q8_0: Self = Self(8);
    /// bfloat16.
    pub const BF16: Self = Self(30);

    /// The ggml name, e.g. `Q4_K`, or `type id N` for ids ggml does not define.
    pub fn name(self) -> String {
        const NAMES: [&str; 40] = [
            "F32",
            "F16",
            "Q4_0",
            "Q4_1",
            "Q4_2",
            "Q4_3",
            "Q5_0",
            "Q5_1",
            "Q8_0",
            "Q8_1",
            "Q2_K",
            "Q3_K",
            "Q4_K",
            "Q5_K",
            "Q6_K",
            "Q8_K",
            "IQ2_XXS",
            "IQ2_XS",
            "IQ3_XXS",
            "IQ1_S",
            "IQ4_NL",
            "IQ3_S",
            "IQ2_S",
            "IQ4_XS",
            "I8",
            "I16",
            "I32",
            "I64",
            "F64",
            "IQ1_M",
            "BF16",
            "Q4_0_4_4",
            "Q4_0_4_8",
            "Q4_0_8_8",
            "TQ1_0",
            "TQ2_0",
            "IQ4_NL_4_4",
            "IQ4_NL_4_8",
            "IQ4_NL_8_8",
            "MXFP4",
        ];
        NAMES.get(self.0 as usize).map_or_else(|| format!("type id {}", self.0), |n| (*n).to_string())
    }

    /// Values per block for a supported type (1 for plain floats).
    pub fn block_size(self) -> Option<usize> {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => Some(1),
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 => Some(32),
            _ => None,
        }
    }

    /// Bytes per block for a supported type.
    pub fn block_bytes(self) -> Option<usize> {
        match self {
            Self::F32 => Some(4),
            Self::F16 | Self::BF16 => Some(2),
            Self::Q4_0 => Some(18),
            Self::Q4_1 => Some(20),
            Self::Q5_0 => Some(22),
            Self::Q5_1 => Some(24),
            Self::Q8_0 => Some(34),
            _ => None,
        }
    }

    /// Bytes that `elements` values take, for a supported type (rounded up to whole blocks).
    pub fn byte_len(self, elements: u64) -> Option<u64> {
        let (block, bytes) = (self.block_size()? as u64, self.block_bytes()? as u64);
        elements.div_ceil(block).checked_mul(bytes)
    }
}

/// Why raw bytes could not be dequantised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DequantError {
    /// The type is not one of [`SUPPORTED_TYPES`].
    Unsupported(GgmlType),
    /// The byte count does not match the element count for this type.
    Size {
        /// The bytes given.
        got: usize,
        /// The bytes the element count needs.
        expected: usize,
    },
}

/// Dequantises `elements` values of type `ggml_type` stored in `bytes`.
pub fn dequantize(ggml_type: GgmlType, bytes: &[u8], elements: usize) -> Result<Vec<f32>, DequantError> {
    let block = ggml_type.block_size().ok_or(DequantError::Unsupported(ggml_type))?;
    let block_bytes = ggml_type.block_bytes().ok_or(DequantError::Unsupported(ggml_type))?;
    let expected = elements.div_ceil(block) * block_bytes;
    if bytes.len() != expected || !elements.is_multiple_of(block) {
        return Err(DequantError::Size { got: bytes.len(), expected });
    }
    let mut out = Vec::with_capacity(elements);
    let blocks = bytes.chunks_exact(block_bytes);
    match ggml_type {
        GgmlType::F32 => out.extend(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        GgmlType::F16 => out.extend(blocks.map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())),
        GgmlType::BF16 => out.extend(blocks.map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        GgmlType::Q8_0 => {
            for b in blocks {
                let d = half_at(b, 0);
                out.extend(b[2..34].iter().map(|&q| f32::from(q as i8) * d));
            }
        }
        GgmlType::Q4_0 => {
            for b in blocks {
                let d = half_at(b, 0);
                push_nibbles(&mut out, &b[2..18], |q| (f32::from(q) - 8.0) * d);
            }
        }
        GgmlType::Q4_1 => {
            for b in blocks {
                let (d, m) = (half_at(b, 0), half_at(b, 2));
                push_nibbles(&mut out, &b[4..20], |q| f32::from(q) * d + m);
            }
        }
        GgmlType::Q5_0 => {
            for b in blocks {
                let d = half_at(b, 0);
                let high = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
                push_five_bit(&mut out, &b[6..22], high, |q| (f32::from(q) - 16.0) * d);
            }
        }
        GgmlType::Q5_1 => {
            for b in blocks {
                let (d, m) = (half_at(b, 0), half_at(b, 2));
                let high = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
                push_five_bit(&mut out, &b[8..24], high, |q| f32::from(q) * d + m);
            }
        }
        other => return Err(DequantError::Unsupported(other)),
    }
    Ok(out)
}

fn half_at(block: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}

/// Low nibbles are elements 0..16 of the block, high nibbles 16..32.
fn push_nibbles(out: &mut Vec<f32>, qs: &[u8], value: impl Fn(u8) -> f32) {
    out.extend(qs.iter().map(|&q| value(q & 0x0f)));
    out.extend(qs.iter().map(|&q| value(q >> 4)));
}

/// Like [`push_nibbles`], with bit `i` of `high` as the fifth bit of element `i`.
fn push_five_bit(out: &mut Vec<f32>, qs: &[u8], high: u32, value: impl Fn(u8) -> f32) {
    let fifth = |i: usize| (((high >> i) & 1) as u8) << 4;
    out.extend(qs.iter().enumerate().map(|(i, &q)| value((q & 0x0f) | fifth(i))));
    out.extend(qs.iter().enumerate().map(|(i, &q)| value((q >> 4) | fifth(i + 16))));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn plain_floats() {
        let bytes: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(dequantize(GgmlType::F32, &bytes, 2).unwrap(), vec![1.5, -2.0]);
        let bytes: Vec<u8> = [0.5f32, -3.25].iter().flat_map(|&v| f16_bytes(v)).collect();
        assert_eq!(dequantize(GgmlType::F16, &bytes, 2).unwrap(), vec![0.5, -3.25]);
        let bytes: Vec<u8> = [0x3f80u16, 0xc040].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(dequantize(GgmlType::BF16, &bytes, 2).unwrap(), vec![1.0, -3.0]);
    }

    #[test]
    fn q8_0_block() {
        let mut block = f16_bytes(0.5).to_vec();
        block.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let values = dequantize(GgmlType::Q8_0, &block, 32).unwrap();
        let expected: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect();
        assert_eq!(values, expected);
    }

    #[test]
    fn q4_0_block() {
        // Byte j holds element j in its low nibble and element j + 16 in its high nibble.
        let mut block = f16_bytes(0.25).to_vec();
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let values = dequantize(GgmlType::Q4_0, &block, 32).unwrap();
        assert_eq!(values[0], -2.0); // (0 - 8) * 0.25
        assert_eq!(values[15], 1.75); // (15 - 8) * 0.25
        assert_eq!(values[16], 1.75); // high nibble of byte 0 is 15
        assert_eq!(values[31], -2.0);
        let expected: Vec<f32> =
            (0..16).map(|j| (j as f32 - 8.0) * 0.25).chain((0..16).map(|j| ((15 - j) as f32 - 8.0) * 0.25)).collect();
        assert_eq!(values, expected);
    }

    #[test]
    fn q4_1_block() {
        let mut block = f16_bytes(0.5).to_vec();
        block.extend_from_slice(&f16_bytes(-1.0));
        block.extend((0..16u8).map(|j| (j % 16) | (3 << 4)));
        let values = dequantize(GgmlType::Q4_1, &block, 32).unwrap();
        let expected: Vec<f32> =
            (0..16).map(|j| j as f32 * 0.5 - 1.0).chain(std::iter::repeat_n(3.0 * 0.5 - 1.0, 16)).collect();
        assert_eq!(values, expected);
    }

    #[test]
    fn q5_blocks() {
        // Fifth bits set for elements 1 and 17 only.
        let high: u32 = (1 << 1) | (1 << 17);
        let mut q5_0 = f16_bytes(1.0).to_vec();
        q5_0.extend_from_slice(&high.to_le_bytes());
        q5_0.extend(std::iter::repeat_n(0x21u8, 16)); // low nibble 1, high nibble 2
        let v = dequantize(GgmlType::Q5_0, &q5_0, 32).unwrap();
        assert_eq!(v[0], 1.0 - 16.0);
        assert_eq!(v[1], (1.0 + 16.0) - 16.0);
        assert_eq!(v[16], 2.0 - 16.0);
        assert_eq!(v[17], (2.0 + 16.0) - 16.0);

        let mut q5_1 = f16_bytes(2.0).to_vec();
        q5_1.extend_from_slice(&f16_bytes(0.5));
        q5_1.extend_from_slice(&high.to_le_bytes());
        q5_1.extend(std::iter::repeat_n(0x21u8, 16));
        let v = dequantize(GgmlType::Q5_1, &q5_1, 32).unwrap();
        assert_eq!([v[0], v[1], v[16], v[17]], [2.5, 34.5, 4.5, 36.5]);
    }

    #[test]
    fn unsupported_and_size_errors() {
        assert_eq!(dequantize(GgmlType(12), &[0; 144], 256), Err(DequantError::Unsupported(GgmlType(12))));
        assert_eq!(GgmlType(12).name(), "Q4_K");
        assert_eq!(GgmlType(999).name(), "type id 999");
        assert_eq!(dequantize(GgmlType::Q8_0, &[0; 33], 32), Err(DequantError::Size { got: 33, expected: 34 }));
    }
}
