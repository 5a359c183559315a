//! GGUF metadata values: the thirteen value types of the format (integers of every width, floats, bool, string and
//! arrays of any of them), with typed accessors that accept any integer width where a count or id is expected.

/// One metadata value, typed as the file stores it.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 6.
    F32(f32),
    /// Type 7.
    Bool(bool),
    /// Type 8 (UTF-8).
    String(String),
    /// Type 9: elements all of one type.
    Array(Vec<MetadataValue>),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

impl MetadataValue {
    /// The value as an unsigned integer, when it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, when it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::I8(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float, keeping an f32 at its shortest decimal form (1e-5 stays 1e-5, not 9.99999974e-6).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => format!("{v}").parse().ok(),
            Self::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements of an array value.
    pub fn as_array(&self) -> Option<&[MetadataValue]> {
        match self {
            Self::Array(items) => Some(items),
            _ => None,
        }
    }

    /// A short description for error messages, e.g. `a u32 (7)` or `an array of 3 values`.
    pub fn describe(&self) -> String {
        match self {
            Self::String(s) => format!("a string {s:?}"),
            Self::Array(items) => format!("an array of {} values", items.len()),
            Self::Bool(b) => format!("a bool ({b})"),
            Self::F32(v) => format!("an f32 ({v})"),
            Self::F64(v) => format!("an f64 ({v})"),
            other => match other.as_i64() {
                Some(v) => format!("an integer ({v})"),
                None => format!("an integer ({})", other.as_u64().unwrap_or_default()),
            },
        }
    }
}
