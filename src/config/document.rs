//! Reading a configuration file into a checked document, typed deserialization of a checked document, and the
//! collection of keys we accept but do not act on (reported as one warning line, never dropped silently).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::error::ConfigError;
use super::keys::{check, lookup, yaml_to_json, Key};

/// Reads the YAML file at `path` and checks it against the known keys `root`.
pub fn load_yaml(path: &Path, root: &'static [Key]) -> Result<Value, ConfigError> {
    let text = read_text(path)?;
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| ConfigError::Syntax {
        file: path.to_path_buf(),
        format: "YAML",
        message: e.to_string(),
    })?;
    let document = yaml_to_json(path, yaml)?;
    check(path, &document, root)?;
    Ok(document)
}

/// Reads a text file; a missing file is [`ConfigError::NotFound`] naming the path.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ConfigError::NotFound { path: path.to_path_buf() },
        _ => ConfigError::Io { path: path.to_path_buf(), source },
    })
}

/// Deserializes a document already checked by [`check`] into its raw struct. Checking has ruled out unknown keys
/// and wrong types, so what can still fail here is a number out of the field's range.
pub fn deserialize<T: DeserializeOwned>(file: &Path, document: &Value) -> Result<T, ConfigError> {
    let document = if document.is_null() { Value::Object(Default::default()) } else { document.clone() };
    serde_json::from_value(document).map_err(|e| ConfigError::invalid(file, "<document>", e.to_string()))
}

/// Sets the value at a dotted key path of a document, creating sections as needed (for sweep overrides).
pub fn set_dotted(document: &mut Value, dotted: &str, value: Value) {
    let mut node = document;
    for part in dotted.split('.') {
        if !node.is_object() {
            *node = Value::Object(Default::default());
        }
        node = node.as_object_mut().expect("just made an object").entry(part).or_insert(Value::Null);
    }
    *node = value;
}

/// The value under which ignoring a key changes nothing, so its presence needs no warning.
#[derive(Debug, Clone, Copy)]
pub enum Neutral {
    /// Every value of the key is worth a warning.
    Never,
    /// This boolean.
    Bool(bool),
    /// This integer.
    Int(i64),
    /// This string.
    Str(&'static str),
    /// An empty list or mapping.
    Empty,
    /// HF `report_to` values that report nowhere: "none", ["none"] or [].
    ReportToNone,
}

impl Neutral {
    fn is_neutral(self, value: &Value) -> bool {
        match self {
            Neutral::Never => false,
            Neutral::Bool(b) => value.as_bool() == Some(b),
            Neutral::Int(i) => value.as_i64() == Some(i),
            Neutral::Str(s) => value.as_str() == Some(s),
            Neutral::Empty => {
                value.as_array().is_some_and(Vec::is_empty) || value.as_object().is_some_and(|m| m.is_empty())
            }
            Neutral::ReportToNone => match value {
                Value::String(s) => s == "none",
                Value::Array(items) => items.iter().all(|v| v.as_str() == Some("none")),
                _ => false,
            },
        }
    }
}

/// A key we accept but do not act on, with the value under which that makes no difference.
#[derive(Debug, Clone, Copy)]
pub struct Ignored {
    /// The dotted key path.
    pub key: &'static str,
    /// The value that needs no warning.
    pub neutral: Neutral,
}

impl Ignored {
    /// An ignored key.
    pub const fn new(key: &'static str, neutral: Neutral) -> Self {
        Ignored { key, neutral }
    }
}

/// The keys of one file that were set but are not acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IgnoredKeys {
    /// The file they were set in.
    pub file: PathBuf,
    /// Their dotted paths, in the order of the ignore list; a whole ignored section reads `name (N keys)`.
    pub keys: Vec<String>,
}

impl IgnoredKeys {
    /// Collects the keys of `list` that `document` sets to something other than their neutral value.
    pub fn collect(file: &Path, document: &Value, list: &[Ignored]) -> Self {
        let mut keys = Vec::new();
        for ignored in list {
            let Some(value) = lookup(document, ignored.key) else { continue };
            if ignored.neutral.is_neutral(value) {
                continue;
            }
            match value.as_object() {
                Some(section) => keys.push(format!("{} ({} keys)", ignored.key, section.len())),
                None => keys.push(ignored.key.to_string()),
            }
        }
        IgnoredKeys { file: file.to_path_buf(), keys }
    }
}

impl fmt::Display for IgnoredKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.keys.join(", "))
    }
}

/// The one warning line listing every ignored key of every file, or `None` when there are none.
pub fn ignored_warning(groups: &[IgnoredKeys]) -> Option<String> {
    let parts: Vec<String> = groups.iter().filter(|g| !g.keys.is_empty()).map(ToString::to_string).collect();
    (!parts.is_empty()).then(|| format!("keys accepted but not acted on: {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_file_names_the_path() {
        let e = read_text(Path::new("configs/does_not_exist.yaml")).unwrap_err();
        assert_eq!(e.to_string(), "config file configs/does_not_exist.yaml not found");
    }

    #[test]
    fn neutral_values_are_not_reported() {
        const LIST: &[Ignored] = &[
            Ignored::new("report_to", Neutral::ReportToNone),
            Ignored::new("a.cache_dir", Neutral::Never),
            Ignored::new("streaming", Neutral::Bool(false)),
            Ignored::new("fsdp_config", Neutral::Empty),
        ];
        let doc = json!({"report_to": ["none"], "a": {"cache_dir": "/x"}, "streaming": false, "fsdp_config": {"x": 1}});
        let got = IgnoredKeys::collect(Path::new("f.yaml"), &doc, LIST);
        assert_eq!(got.keys, vec!["a.cache_dir", "fsdp_config (1 keys)"]);
        let line = ignored_warning(&[got, IgnoredKeys { file: "g.yaml".into(), keys: vec![] }]).unwrap();
        assert_eq!(line, "keys accepted but not acted on: f.yaml: a.cache_dir, fsdp_config (1 keys)");
        assert_eq!(ignored_warning(&[]), None);
    }

    #[test]
    fn set_dotted_creates_sections() {
        let mut doc = json!({"training": {"seed": 1}});
        set_dotted(&mut doc, "training.learning_rate", json!(0.1));
        set_dotted(&mut doc, "peft.use_lora", json!(true));
        assert_eq!(doc, json!({"training": {"seed": 1, "learning_rate": 0.1}, "peft": {"use_lora": true}}));
    }
}
