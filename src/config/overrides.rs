//! Command-line overrides, Hydra's `key=value`: `temperature=0.8` sets a stasc_config key and
//! `ft.training.learning_rate=1e-5` a fine_tune key. Each override is checked against the same known-key tree as the
//! files (an unknown key names the closest known one, a wrong type names the expected type), typed by the key it
//! sets, applied on top of the file's document before it is resolved, and kept as typed so the resolved
//! configuration can record it.

use serde::Serialize;
use serde_json::Value;

use super::document::set_dotted;
use super::error::ConfigError;
use super::fine_tune::FINE_TUNE_KEYS;
use super::keys::{closest, describe, find_elsewhere, yaml_to_json, Key, Kind, Node};
use super::stasc_config::STASC_KEYS;

/// Prefix that sends an override to fine_tune.yaml instead of stasc_config.yaml.
pub const FINE_TUNE_PREFIX: &str = "ft.";

/// Which file's document an override changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// stasc_config.yaml.
    StascConfig,
    /// fine_tune.yaml (keys written `ft.<section>.<key>`).
    FineTune,
}

impl Target {
    fn root(self) -> &'static [Key] {
        match self {
            Target::StascConfig => STASC_KEYS,
            Target::FineTune => FINE_TUNE_KEYS,
        }
    }

    /// How a key of this target is written on the command line.
    fn spell(self, key: &str) -> String {
        match self {
            Target::StascConfig => key.to_string(),
            Target::FineTune => format!("{FINE_TUNE_PREFIX}{key}"),
        }
    }
}

/// One checked, typed override.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Override {
    /// As typed, e.g. `ft.training.learning_rate=1e-5`.
    pub text: String,
    /// The file it changes.
    pub target: Target,
    /// The dotted key inside that file, e.g. `training.learning_rate`.
    pub key: String,
    /// The typed value (`null`: unset, the default applies).
    pub value: Value,
}

/// Parses and checks `key=value` arguments. A key given twice is an error: which one wins would be a guess.
pub fn parse(args: &[String]) -> Result<Vec<Override>, ConfigError> {
    let mut out: Vec<Override> = Vec::with_capacity(args.len());
    for arg in args {
        let parsed = parse_one(arg)?;
        if let Some(first) = out.iter().find(|o| o.target == parsed.target && o.key == parsed.key) {
            return Err(error(arg, format!("sets the same key as '{}'; give each key once", first.text)));
        }
        out.push(parsed);
    }
    Ok(out)
}

fn error(arg: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Override { arg: arg.to_string(), reason: reason.into() }
}

fn parse_one(arg: &str) -> Result<Override, ConfigError> {
    let Some((key, text)) = arg.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
        return Err(error(arg, "expected KEY=VALUE, e.g. temperature=0.8 or ft.training.learning_rate=1e-5"));
    };
    let key = key.trim();
    let (target, inner) = match key.strip_prefix(FINE_TUNE_PREFIX) {
        Some(rest) => (Target::FineTune, rest),
        None => (Target::StascConfig, key),
    };
    let kind = leaf_kind(arg, target, inner)?;
    let value = typed_value(arg, key, kind, text)?;
    Ok(Override { text: arg.to_string(), target, key: inner.to_string(), value })
}

/// The kind of the leaf `key` names in `target`'s key tree, or an error naming the closest known key.
fn leaf_kind(arg: &str, target: Target, key: &str) -> Result<Kind, ConfigError> {
    let root = target.root();
    let mut keys = root;
    let mut walked = String::new();
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let path = if walked.is_empty() { part.to_string() } else { format!("{walked}.{part}") };
        let Some(known) = keys.iter().find(|k| k.name == part) else {
            let suggestion = suggest(target, part, keys, &walked);
            let hint = suggestion.map(|s| format!(" (did you mean '{s}'?)")).unwrap_or_default();
            return Err(error(arg, format!("unknown key '{}'{hint}", target.spell(&path))));
        };
        match known.node {
            Node::Leaf(kind) if parts.peek().is_none() => return Ok(kind),
            Node::Leaf(_) => {
                return Err(error(arg, format!("key '{}' holds a value, not a section of keys", target.spell(&path))))
            }
            Node::Section(inner) if parts.peek().is_none() => {
                let example = inner.first().map(|k| format!(", e.g. {}.{}=...", target.spell(&path), k.name));
                return Err(error(
                    arg,
                    format!(
                        "key '{}' is a section; set one of its keys{}",
                        target.spell(&path),
                        example.unwrap_or_default()
                    ),
                ));
            }
            Node::Section(inner) => keys = inner,
        }
        walked = path;
    }
    unreachable!("split yields at least one part")
}

/// The closest known key to `part` as the command line spells it: a sibling with a close spelling, the same name
/// in another section of the same file, or the same name in the other file (`learning_rate` ->
/// `ft.training.learning_rate`).
fn suggest(target: Target, part: &str, siblings: &'static [Key], walked: &str) -> Option<String> {
    if let Some(near) = closest(part, siblings.iter().map(|k| k.name)) {
        let path = if walked.is_empty() { near.to_string() } else { format!("{walked}.{near}") };
        return Some(target.spell(&path));
    }
    if let Some(found) = find_elsewhere(part, target.root(), "") {
        return Some(target.spell(&found));
    }
    let other = match target {
        Target::StascConfig => Target::FineTune,
        Target::FineTune => Target::StascConfig,
    };
    let in_other = other.root().iter().find(|k| k.name == part && matches!(k.node, Node::Leaf(_)));
    in_other.map(|k| other.spell(k.name)).or_else(|| find_elsewhere(part, other.root(), "").map(|p| other.spell(&p)))
}

/// Reads `text` as the value of a key of `kind`, the way the same text after `key: ` in a YAML file reads, except
/// that a string key takes the text as it is (`run_name=2024`, `evaluator_answer_marker=Final Answer:`), since a
/// shell leaves no easy way to quote. `null`, `~` or nothing unsets the key.
fn typed_value(arg: &str, key: &str, kind: Kind, text: &str) -> Result<Value, ConfigError> {
    let parsed = serde_yaml::from_str::<serde_yaml::Value>(text)
        .map_err(|e| e.to_string())
        .and_then(|yaml| yaml_to_json(std::path::Path::new("<command line>"), yaml).map_err(|e| e.to_string()));
    let raw = Value::String(text.to_string());
    let value = match parsed {
        Ok(Value::Null) => return Ok(Value::Null),
        Ok(v) if kind == Kind::Str => match v {
            Value::String(s) => Value::String(s),
            _ => raw,
        },
        Ok(v) if kind.accepts(&v) => v,
        Ok(v) if !v.is_array() && !v.is_object() && kind.accepts(&raw) => raw,
        Ok(v) => v,
        Err(_) if kind.accepts(&raw) => raw,
        Err(message) => return Err(error(arg, format!("the value is not valid YAML: {message}"))),
    };
    if !kind.accepts(&value) {
        return Err(error(arg, format!("key '{key}' expects {}, found {}", kind.expected(), describe(&value))));
    }
    Ok(value)
}

/// Sets the overrides of `target` in `document` (a file's checked document; `null` for an empty file).
pub fn apply(overrides: &[Override], target: Target, document: &mut Value) {
    for o in overrides.iter().filter(|o| o.target == target) {
        if document.is_null() {
            *document = Value::Object(Default::default());
        }
        set_dotted(document, &o.key, o.value.clone());
    }
}

/// Turns an error about a key that an override set into an error about that override, so the message points at
/// the command line rather than at a file that does not hold the bad value.
pub fn blame(error: ConfigError, overrides: &[Override], target: Target) -> ConfigError {
    let culprit = error
        .key_and_reason()
        .and_then(|(key, reason)| overrides.iter().find(|o| o.target == target && o.key == key).map(|o| (o, reason)));
    match culprit {
        Some((o, reason)) => ConfigError::Override { arg: o.text.clone(), reason },
        None => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(arg: &str) -> Override {
        parse(&[arg.to_string()]).unwrap().remove(0)
    }

    fn err(args: &[&str]) -> String {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&args).unwrap_err().to_string()
    }

    #[test]
    fn values_are_typed_by_their_key() {
        assert_eq!(one("temperature=0.8").value, json!(0.8));
        assert_eq!(one("num_star_iterations=2").value, json!(2));
        assert_eq!(one("use_few_shots=false").value, json!(false));
        assert_eq!(one("ft.training.learning_rate=1e-5").value, json!(1e-5));
        assert_eq!(one("ft.training.learning_rate=1e-5").target, Target::FineTune);
        assert_eq!(one("ft.training.learning_rate=1e-5").key, "training.learning_rate");
        assert_eq!(one("ft.peft.lora_target_modules=[q_proj, v_proj]").value, json!(["q_proj", "v_proj"]));
        assert_eq!(one("ft.training.report_to=none").value, json!("none"));
        // String keys take the text as written, even where YAML would read a number or a mapping.
        assert_eq!(one("run_name=2024").value, json!("2024"));
        assert_eq!(one("evaluator_answer_marker=Final Answer:").value, json!("Final Answer:"));
        assert_eq!(one("model_path=Qwen/Qwen2.5-1.5B-Instruct").value, json!("Qwen/Qwen2.5-1.5B-Instruct"));
        assert_eq!(one("max_model_len=null").value, Value::Null);
        assert_eq!(one("max_model_len=").value, Value::Null);
    }

    #[test]
    fn unknown_keys_name_the_closest_known_key() {
        assert_eq!(
            err(&["temprature=0.8"]),
            "command-line override 'temprature=0.8': unknown key 'temprature' (did you mean 'temperature'?)"
        );
        assert_eq!(
            err(&["ft.training.learnig_rate=1e-5"]),
            "command-line override 'ft.training.learnig_rate=1e-5': unknown key 'ft.training.learnig_rate' (did you \
             mean 'ft.training.learning_rate'?)"
        );
        assert_eq!(
            err(&["learning_rate=1e-5"]),
            "command-line override 'learning_rate=1e-5': unknown key 'learning_rate' (did you mean \
             'ft.training.learning_rate'?)"
        );
        assert_eq!(
            err(&["ft.lora_rank=8"]),
            "command-line override 'ft.lora_rank=8': unknown key 'ft.lora_rank' (did you mean 'ft.peft.lora_rank'?)"
        );
        assert_eq!(
            err(&["ft.temperature=0.8"]),
            "command-line override 'ft.temperature=0.8': unknown key 'ft.temperature' (did you mean 'temperature'?)"
        );
        assert_eq!(err(&["zzzzzz=1"]), "command-line override 'zzzzzz=1': unknown key 'zzzzzz'");
    }

    #[test]
    fn wrong_types_and_shapes_are_named() {
        assert_eq!(
            err(&["temperature=hot"]),
            "command-line override 'temperature=hot': key 'temperature' expects a number, found string \"hot\""
        );
        assert_eq!(
            err(&["num_star_iterations=-1"]),
            "command-line override 'num_star_iterations=-1': key 'num_star_iterations' expects a non-negative \
             integer, found integer -1"
        );
        assert_eq!(
            err(&["ft.training=1"]),
            "command-line override 'ft.training=1': key 'ft.training' is a section; set one of its keys, e.g. \
             ft.training.output_dir=..."
        );
        assert_eq!(
            err(&["temperature.x=1"]),
            "command-line override 'temperature.x=1': key 'temperature' holds a value, not a section of keys"
        );
        assert_eq!(
            err(&["temperature"]),
            "command-line override 'temperature': expected KEY=VALUE, e.g. temperature=0.8 or \
             ft.training.learning_rate=1e-5"
        );
        assert_eq!(
            err(&["temperature=0.8", "temperature=0.9"]),
            "command-line override 'temperature=0.9': sets the same key as 'temperature=0.8'; give each key once"
        );
    }

    #[test]
    fn apply_sets_only_its_target_and_blame_names_the_override() {
        let overrides = parse(&["top_p=1.5".to_string(), "ft.training.seed=3".to_string()]).unwrap();
        let mut stasc = json!({"top_p": 0.9, "temperature": 0.6});
        let mut ft = Value::Null;
        apply(&overrides, Target::StascConfig, &mut stasc);
        apply(&overrides, Target::FineTune, &mut ft);
        assert_eq!(stasc, json!({"top_p": 1.5, "temperature": 0.6}));
        assert_eq!(ft, json!({"training": {"seed": 3}}));
        let bad = ConfigError::invalid(std::path::Path::new("s.yaml"), "top_p", "must be in (0, 1], found 1.5");
        assert_eq!(
            blame(bad, &overrides, Target::StascConfig).to_string(),
            "command-line override 'top_p=1.5': must be in (0, 1], found 1.5"
        );
        let other = ConfigError::invalid(std::path::Path::new("s.yaml"), "temperature", "must be ≥ 0");
        assert_eq!(blame(other, &overrides, Target::StascConfig).to_string(), "s.yaml: key 'temperature' must be ≥ 0");
    }
}
