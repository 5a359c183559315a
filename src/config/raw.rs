//! Declaring a configuration section once. [`raw_config!`] takes one list of fields (name and Rust type) and makes
//! both the raw serde struct (every field optional, unknown keys refused) and the section's known-key table that
//! [`super::keys::check`] walks, so the two cannot disagree. The kind a key accepts comes from its field's Rust type
//! through [`KeyKind`]; a nested raw struct is a section. What a key means and its default are documented once, on
//! the resolved struct.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::{Kind, Node};

/// What a raw field's type accepts in a config file, as a key of the known-key table.
pub trait KeyKind {
    /// The field's node: a leaf of some [`Kind`], or a section of further keys.
    const NODE: Node;
}

/// Implements [`KeyKind`] for leaf types.
macro_rules! leaf_kind {
    ($($ty:ty => $kind:ident),+ $(,)?) => {
        $(impl KeyKind for $ty {
            const NODE: Node = Node::Leaf(Kind::$kind);
        })+
    };
}

leaf_kind! {
    bool => Bool,
    i64 => Int,
    u64 => UInt,
    f64 => Number,
    String => Str,
    Vec<String> => StrList,
    StrOrStrList => StrOrStrList,
    StrOrInt => StrOrInt,
    Value => Any,
}

/// A string or a list of strings (HF's `report_to`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum StrOrStrList {
    /// One string.
    One(String),
    /// A list of strings.
    Many(Vec<String>),
}

impl StrOrStrList {
    /// The strings, one or many.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StrOrStrList::One(s) => vec![s],
            StrOrStrList::Many(v) => v,
        }
    }
}

/// A string or an integer (accelerate's `gpu_ids`: `all`, `0,1` or `0`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum StrOrInt {
    /// A string.
    Str(String),
    /// An integer, as written (any sign and size: the resolver says what is wrong with it).
    Int(serde_json::Number),
}

impl StrOrInt {
    /// The value as text, integers as written.
    pub fn text(&self) -> String {
        match self {
            StrOrInt::Str(s) => s.clone(),
            StrOrInt::Int(n) => n.to_string(),
        }
    }
}

/// Declares a raw configuration section: `raw_config! { /// doc  pub struct RawX, keys X_KEYS { field: Type, ... } }`
/// makes `RawX` (serde, `deny_unknown_fields`, every field `Option<Type>`, `Default`) and `X_KEYS`, the known-key
/// table with one key per field, in field order (the order closest-key suggestions break ties by), and makes `RawX`
/// usable as a section of an enclosing `raw_config!` struct.
macro_rules! raw_config {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident, keys $keys:ident {
            $($(#[$field_meta:meta])* $field:ident: $ty:ty),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
        #[serde(deny_unknown_fields)]
        // Each key's meaning and default are documented once, on the resolved struct.
        #[allow(missing_docs)]
        $vis struct $name {
            $($(#[$field_meta])* pub $field: Option<$ty>,)+
        }

        #[doc = concat!("Every key of [`", stringify!($name), "`], one per field, in field order.")]
        $vis const $keys: &[$crate::config::keys::Key] = &[$(
            $crate::config::keys::Key {
                name: stringify!($field),
                node: <$ty as $crate::config::raw::KeyKind>::NODE,
            },
        )+];

        impl $crate::config::raw::KeyKind for $name {
            const NODE: $crate::config::keys::Node = $crate::config::keys::Node::Section($keys);
        }
    };
}

pub(crate) use raw_config;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::keys::{check, Key};
    use super::*;

    /// The names of the keys of a table.
    fn names(keys: &[Key]) -> Vec<&'static str> {
        keys.iter().map(|k| k.name).collect()
    }

    /// The field names of a raw struct, as serde writes them.
    fn fields<T: Default + Serialize>() -> Vec<String> {
        let mut fields: Vec<String> =
            serde_json::to_value(T::default()).unwrap().as_object().unwrap().keys().cloned().collect();
        fields.sort_unstable();
        fields
    }

    /// Every raw field is a key of its table and every key a field, under the same name (a serde rename of a field
    /// would break that), and the defaults pass the check.
    fn agree<T: Default + Serialize>(keys: &'static [Key]) {
        let mut expected: Vec<&str> = names(keys);
        expected.sort_unstable();
        assert_eq!(fields::<T>(), expected);
        check(Path::new("x"), &serde_json::to_value(T::default()).unwrap(), keys).unwrap();
    }

    #[test]
    fn every_raw_field_is_a_key_and_every_key_a_field() {
        use crate::config::accelerate::{RawAccelerateConfig, ACCELERATE_KEYS};
        use crate::config::fine_tune::{
            RawDataArgs, RawFineTuneConfig, RawModelArgs, RawPeftArgs, RawTrainingArgs, DATA_KEYS, FINE_TUNE_KEYS,
            MODEL_KEYS, PEFT_KEYS, TRAINING_KEYS,
        };
        use crate::config::stasc_config::{RawStascConfig, STASC_KEYS};
        agree::<RawStascConfig>(STASC_KEYS);
        agree::<RawAccelerateConfig>(ACCELERATE_KEYS);
        agree::<RawFineTuneConfig>(FINE_TUNE_KEYS);
        agree::<RawModelArgs>(MODEL_KEYS);
        agree::<RawDataArgs>(DATA_KEYS);
        agree::<RawTrainingArgs>(TRAINING_KEYS);
        agree::<RawPeftArgs>(PEFT_KEYS);
    }

    #[test]
    fn kinds_follow_the_rust_types() {
        raw_config! {
            /// A test section.
            struct RawInner, keys INNER_KEYS { rate: f64 }
        }
        raw_config! {
            /// A test file.
            struct RawOuter, keys OUTER_KEYS { name: String, count: u64, delta: i64, on: bool, tags: Vec<String>,
                report_to: StrOrStrList, gpu_ids: StrOrInt, anything: Value, inner: RawInner }
        }
        let kinds: Vec<String> = OUTER_KEYS
            .iter()
            .map(|k| match k.node {
                Node::Leaf(kind) => format!("{}: {kind:?}", k.name),
                Node::Section(keys) => format!("{}: {:?}", k.name, names(keys)),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "name: Str",
                "count: UInt",
                "delta: Int",
                "on: Bool",
                "tags: StrList",
                "report_to: StrOrStrList",
                "gpu_ids: StrOrInt",
                "anything: Any",
                "inner: [\"rate\"]",
            ]
        );
        let raw: RawOuter = serde_json::from_value(serde_json::json!({"gpu_ids": -1, "report_to": "none"})).unwrap();
        assert_eq!(raw.gpu_ids.unwrap().text(), "-1");
        assert_eq!(raw.report_to.unwrap().into_vec(), ["none"]);
        assert!(raw.inner.is_none());
    }
}
