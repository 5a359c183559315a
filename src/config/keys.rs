//! Key checking shared by every configuration format: a static tree of known keys with the type each leaf accepts,
//! walked over a parsed document before typed deserialization. That order is what lets an unknown key or a wrong
//! type be reported with its file, its dotted path and the closest known key, instead of serde's positionless
//! messages. Documents are checked as `serde_json::Value`, so YAML ([`yaml_to_json`]) and TOML ([`toml_to_json`])
//! share one walker.

use std::path::Path;

use serde_json::Value;

use super::error::ConfigError;

/// What a leaf key accepts. `null` is accepted by every leaf and means "not set: use the default".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `true` / `false`.
    Bool,
    /// Any integer, negative included.
    Int,
    /// A non-negative integer.
    UInt,
    /// Any finite number, integer or not.
    Number,
    /// A string.
    Str,
    /// A list of strings.
    StrList,
    /// A string or a list of strings (HF's `report_to`).
    StrOrStrList,
    /// A string or an integer (accelerate's `gpu_ids`: `all`, `0,1` or `0`).
    StrOrInt,
    /// Anything: for sections we accept and pass over whole (e.g. accelerate's `deepspeed_config`).
    Any,
}

impl Kind {
    /// How the expected type is said in an error message.
    pub fn expected(self) -> &'static str {
        match self {
            Kind::Bool => "a boolean (true or false)",
            Kind::Int => "an integer",
            Kind::UInt => "a non-negative integer",
            Kind::Number => "a number",
            Kind::Str => "a string",
            Kind::StrList => "a list of strings",
            Kind::StrOrStrList => "a string or a list of strings",
            Kind::StrOrInt => "a string or an integer",
            Kind::Any => "any value",
        }
    }

    /// Whether `value` (not null) is of this kind.
    pub fn accepts(self, value: &Value) -> bool {
        let is_str_list = |v: &Value| v.as_array().is_some_and(|items| items.iter().all(Value::is_string));
        match self {
            Kind::Bool => value.is_boolean(),
            Kind::Int => value.is_i64() || value.is_u64(),
            Kind::UInt => value.is_u64(),
            Kind::Number => value.is_number(),
            Kind::Str => value.is_string(),
            Kind::StrList => is_str_list(value),
            Kind::StrOrStrList => value.is_string() || is_str_list(value),
            Kind::StrOrInt => value.is_string() || value.is_i64() || value.is_u64(),
            Kind::Any => true,
        }
    }
}

/// What a known key holds: a value of some [`Kind`], or a nested section of further keys.
#[derive(Debug, Clone, Copy)]
pub enum Node {
    /// A value.
    Leaf(Kind),
    /// A mapping of known keys.
    Section(&'static [Key]),
}

/// One known key of a section.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key's name as written in the file.
    pub name: &'static str,
    /// What it holds.
    pub node: Node,
}

impl Key {
    /// A leaf key.
    pub const fn leaf(name: &'static str, kind: Kind) -> Key {
        Key { name, node: Node::Leaf(kind) }
    }

    /// A section key.
    pub const fn section(name: &'static str, keys: &'static [Key]) -> Key {
        Key { name, node: Node::Section(keys) }
    }
}

/// Describes a value for "found ..." in an error message.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) if n.is_f64() => format!("number {n}"),
        Value::Number(n) => format!("integer {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a mapping".to_string(),
    }
}

/// Checks `document` against the known keys `root`: every key must be known and every leaf of the right type.
/// An empty document (`null`) is an empty mapping.
pub fn check(file: &Path, document: &Value, root: &'static [Key]) -> Result<(), ConfigError> {
    check_section(file, document, root, root, "")
}

fn check_section(
    file: &Path,
    value: &Value,
    keys: &'static [Key],
    root: &'static [Key],
    prefix: &str,
) -> Result<(), ConfigError> {
    let map = match value {
        Value::Null => return Ok(()),
        Value::Object(map) => map,
        other => {
            let key = if prefix.is_empty() { "<top level>".to_string() } else { prefix.to_string() };
            return Err(ConfigError::WrongType {
                file: file.to_path_buf(),
                key,
                expected: "a mapping of keys to values",
                found: describe(other),
            });
        }
    };
    for (name, child) in map {
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        let Some(known) = keys.iter().find(|k| k.name == name) else {
            return Err(ConfigError::UnknownKey {
                file: file.to_path_buf(),
                suggestion: suggest(name, keys, root),
                key: path,
            });
        };
        match known.node {
            Node::Section(inner) => check_section(file, child, inner, root, &path)?,
            Node::Leaf(kind) => {
                if !child.is_null() && !kind.accepts(child) {
                    return Err(ConfigError::WrongType {
                        file: file.to_path_buf(),
                        key: path,
                        expected: kind.expected(),
                        found: describe(child),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The closest known key to `name`: a sibling whose spelling is close, or else the dotted path of a key with exactly
/// that name in another section (a key put in the wrong section).
pub fn suggest(name: &str, siblings: &'static [Key], root: &'static [Key]) -> Option<String> {
    closest(name, siblings.iter().map(|k| k.name)).map(str::to_string).or_else(|| find_elsewhere(name, root, ""))
}

/// The candidate closest to `name` by edit distance, if it is close enough to be a plausible typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lowered = name.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (c, strsim::damerau_levenshtein(&lowered, &c.to_lowercase())))
        // A third of the length (at least 2 edits) separates typos from different words.
        .filter(|(c, d)| *d <= (c.chars().count() / 3).max(2))
        .min_by_key(|(_, d)| *d)
        .map(|(c, _)| c)
}

/// The dotted path of a key named `name` inside some section of `keys` (not at its top level), if any.
pub fn find_elsewhere(name: &str, keys: &'static [Key], prefix: &str) -> Option<String> {
    for key in keys {
        let path = if prefix.is_empty() { key.name.to_string() } else { format!("{prefix}.{}", key.name) };
        if key.name == name && !prefix.is_empty() {
            return Some(path);
        }
        if let Node::Section(inner) = key.node {
            if let Some(found) = find_elsewhere(name, inner, &path) {
                return Some(found);
            }
        }
    }
    None
}

/// The value at a dotted path of a checked document, if present and not null.
pub fn lookup<'a>(document: &'a Value, dotted: &str) -> Option<&'a Value> {
    let mut value = document;
    for part in dotted.split('.') {
        value = value.as_object()?.get(part)?;
    }
    (!value.is_null()).then_some(value)
}

/// Converts a parsed YAML document to JSON values. Non-string mapping keys become their text (so they surface as
/// unknown keys); tagged values and non-finite numbers are errors naming their key.
pub fn yaml_to_json(file: &Path, value: serde_yaml::Value) -> Result<Value, ConfigError> {
    convert_yaml(file, value, "")
}

fn convert_yaml(file: &Path, value: serde_yaml::Value, path: &str) -> Result<Value, ConfigError> {
    use serde_yaml::Value as Y;
    let key_name = || if path.is_empty() { "<top level>".to_string() } else { path.to_string() };
    Ok(match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                match serde_json::Number::from_f64(f) {
                    Some(number) => Value::Number(number),
                    None => return Err(ConfigError::invalid(file, &key_name(), format!("must be finite, found {n}"))),
                }
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| convert_yaml(file, item, &format!("{}[{i}]", key_name())))
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(map) => {
            let mut object = serde_json::Map::new();
            for (k, v) in map {
                let name = match k {
                    Y::String(s) => s,
                    Y::Bool(b) => b.to_string(),
                    Y::Number(n) => n.to_string(),
                    Y::Null => "null".to_string(),
                    other => format!("{other:?}"),
                };
                let child = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                object.insert(name, convert_yaml(file, v, &child)?);
            }
            Value::Object(object)
        }
        Y::Tagged(tagged) => {
            return Err(ConfigError::invalid(
                file,
                &key_name(),
                format!("has a YAML tag {} we do not read", tagged.tag),
            ))
        }
    })
}

/// Converts a parsed TOML document to JSON values (datetimes become their text), for checking with [`check`].
pub fn toml_to_json(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Value::Object(table.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const INNER: &[Key] = &[Key::leaf("learning_rate", Kind::Number), Key::leaf("lora_rank", Kind::UInt)];
    const ROOT: &[Key] = &[
        Key::leaf("temperature", Kind::Number),
        Key::leaf("name", Kind::Str),
        Key::leaf("report_to", Kind::StrOrStrList),
        Key::section("training", INNER),
    ];

    fn err(doc: Value) -> String {
        check(Path::new("x.yaml"), &doc, ROOT).unwrap_err().to_string()
    }

    #[test]
    fn accepts_known_keys_and_nulls() {
        let doc = json!({"temperature": 1, "name": null, "report_to": ["wandb"], "training": {"learning_rate": 1e-4}});
        check(Path::new("x.yaml"), &doc, ROOT).unwrap();
        check(Path::new("x.yaml"), &Value::Null, ROOT).unwrap();
    }

    #[test]
    fn unknown_nested_key_names_path_and_suggestion() {
        assert_eq!(
            err(json!({"training": {"learnig_rate": 1}})),
            "x.yaml: unknown key 'training.learnig_rate' (did you mean 'learning_rate'?)"
        );
    }

    #[test]
    fn key_in_wrong_section_suggests_its_dotted_path() {
        assert_eq!(
            err(json!({"lora_rank": 8})),
            "x.yaml: unknown key 'lora_rank' (did you mean 'training.lora_rank'?)"
        );
    }

    #[test]
    fn far_key_has_no_suggestion() {
        assert_eq!(err(json!({"completely_different": 1})), "x.yaml: unknown key 'completely_different'");
    }

    #[test]
    fn wrong_types_name_expected_and_found() {
        assert_eq!(
            err(json!({"temperature": "hot"})),
            "x.yaml: key 'temperature' expects a number, found string \"hot\""
        );
        assert_eq!(
            err(json!({"training": {"lora_rank": -3}})),
            "x.yaml: key 'training.lora_rank' expects a non-negative integer, found integer -3"
        );
        assert_eq!(
            err(json!({"training": 5})),
            "x.yaml: key 'training' expects a mapping of keys to values, found integer 5"
        );
        assert_eq!(
            err(json!({"report_to": [1]})),
            "x.yaml: key 'report_to' expects a string or a list of strings, found a list"
        );
    }

    #[test]
    fn yaml_conversion_keeps_types_and_rejects_non_finite() {
        let text = "a: 1\nb: 1.0e-4\nc: True\nd: [x]\ne: 1e-4\nf: yes\n";
        let v = yaml_to_json(Path::new("x.yaml"), serde_yaml::from_str(text).unwrap()).unwrap();
        assert_eq!(v, json!({"a": 1, "b": 1.0e-4, "c": true, "d": ["x"], "e": 1.0e-4, "f": "yes"}));
        let yaml: serde_yaml::Value = serde_yaml::from_str("t:\n  u: .inf\n").unwrap();
        let e = yaml_to_json(Path::new("x.yaml"), yaml).unwrap_err().to_string();
        assert_eq!(e, "x.yaml: key 't.u' must be finite, found .inf");
    }

    #[test]
    fn toml_documents_check_the_same_way() {
        let doc: toml::Value = toml::from_str("temperature = \"hot\"").unwrap();
        let e = check(Path::new("s.toml"), &toml_to_json(doc), ROOT).unwrap_err().to_string();
        assert_eq!(e, "s.toml: key 'temperature' expects a number, found string \"hot\"");
    }

    #[test]
    fn lookup_follows_dotted_paths() {
        let doc = json!({"training": {"learning_rate": 0.1, "x": null}});
        assert_eq!(lookup(&doc, "training.learning_rate"), Some(&json!(0.1)));
        assert_eq!(lookup(&doc, "training.x"), None);
        assert_eq!(lookup(&doc, "nope.x"), None);
    }
}
