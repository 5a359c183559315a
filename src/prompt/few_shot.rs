//! Few-shot files: `<few_shot_dir>/<task>_initial.json` and `<task>_correction.json` (the built-in ones when no
//! `few_shot_dir` is set), each a JSON list of `{"role", "content"}` messages. A missing file means no few-shot
//! messages and is said once per file and process; a malformed one is an error naming the file, the entry and what
//! was expected.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{builtin, ChatMessage, PromptError, ROLES};

/// Which prompt a few-shot file feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FewShotKind {
    /// Examples for the initial-answer prompt (`<task>_initial.json`).
    Initial,
    /// Examples for the correction prompt (`<task>_correction.json`).
    Correction,
}

impl FewShotKind {
    /// The file-name suffix, as in `qa_initial.json`.
    pub fn suffix(self) -> &'static str {
        match self {
            FewShotKind::Initial => "initial",
            FewShotKind::Correction => "correction",
        }
    }

    /// The name of the file of this kind for `task`, as in `qa_initial.json`.
    pub fn file_name(self, task: &str) -> String {
        format!("{task}_{}.json", self.suffix())
    }

    /// The file of this kind for `task` in `dir`.
    pub fn path(self, dir: &Path, task: &str) -> PathBuf {
        dir.join(self.file_name(task))
    }
}

impl fmt::Display for FewShotKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

/// Loads the few-shot messages of `task` and `kind` from `dir`, or from the built-in files when `dir` is `None`; a
/// missing file gives an empty list.
pub fn load_few_shots(dir: Option<&Path>, task: &str, kind: FewShotKind) -> Result<Vec<ChatMessage>, PromptError> {
    let name = kind.file_name(task);
    let (path, text) = match dir {
        Some(dir) => {
            let path = dir.join(&name);
            match std::fs::read_to_string(&path) {
                Ok(text) => (path, Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (path, None),
                Err(source) => return Err(PromptError::Io { path, source }),
            }
        }
        None => (builtin::label(&name), builtin::few_shot(&name).map(str::to_string)),
    };
    let Some(text) = text else {
        if first_time_missing(&path) {
            eprintln!("stasc: no few-shot file {}; the {task} {kind} prompts get no few-shot messages", path.display());
        }
        return Ok(Vec::new());
    };
    parse_few_shots(&text).map_err(|reason| PromptError::FewShot { path, reason })
}

/// Records that `path` was found missing; true only the first time in this process.
fn first_time_missing(path: &Path) -> bool {
    static SEEN: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    let mut seen = SEEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    seen.insert(path.to_path_buf())
}

/// Parses and checks a few-shot list; the error says which entry is wrong and how.
fn parse_few_shots(text: &str) -> Result<Vec<ChatMessage>, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let entries = value.as_array().ok_or_else(|| format!("the top level is {}, not a list", json_kind(&value)))?;
    let mut messages = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let object = entry.as_object().ok_or_else(|| format!("entry {i} is {}, not an object", json_kind(entry)))?;
        let role =
            object.get("role").and_then(|r| r.as_str()).ok_or_else(|| format!("entry {i} has no string \"role\""))?;
        if !ROLES.contains(&role) {
            return Err(format!("entry {i} has role \"{role}\""));
        }
        let content = object
            .get("content")
            .and_then(|c| c.as_str())
            .ok_or_else(|| format!("entry {i} has no string \"content\""))?;
        if let Some(extra) = object.keys().find(|k| *k != "role" && *k != "content") {
            return Err(format!("entry {i} has an unknown key \"{extra}\""));
        }
        messages.push(ChatMessage::new(role, content));
    }
    Ok(messages)
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_message_list() {
        let messages =
            parse_few_shots(r#"[{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]"#).unwrap();
        assert_eq!(messages, vec![ChatMessage::new("user", "Q"), ChatMessage::new("assistant", "A")]);
        assert_eq!(parse_few_shots("[]").unwrap(), vec![]);
    }

    #[test]
    fn rejects_malformed_entries_with_their_position() {
        let cases = [
            ("{\"role\": \"user\"}", "the top level is an object, not a list"),
            ("[\"hello\"]", "entry 0 is a string, not an object"),
            ("[{\"role\": \"user\", \"content\": \"a\"}, {\"content\": \"b\"}]", "entry 1 has no string \"role\""),
            ("[{\"role\": \"user\", \"content\": 3}]", "entry 0 has no string \"content\""),
            ("[{\"role\": \"bot\", \"content\": \"x\"}]", "entry 0 has role \"bot\""),
            ("[{\"role\": \"user\", \"content\": \"x\", \"name\": \"y\"}]", "entry 0 has an unknown key \"name\""),
            ("[{\"role\": \"user\", ", "not valid JSON"),
        ];
        for (text, expected) in cases {
            let err = parse_few_shots(text).unwrap_err();
            assert!(err.contains(expected), "{text}: got {err:?}, expected {expected:?}");
        }
    }

    #[test]
    fn missing_file_is_empty_and_noted_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = FewShotKind::Initial.path(dir.path(), "qa");
        assert!(first_time_missing(&path));
        assert!(!first_time_missing(&path));
        assert_eq!(load_few_shots(Some(dir.path()), "qa", FewShotKind::Initial).unwrap(), vec![]);
        assert!(first_time_missing(&FewShotKind::Correction.path(dir.path(), "qa")));
    }

    #[test]
    fn malformed_file_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qa_correction.json");
        std::fs::write(&path, r#"[{"role": "user"}]"#).unwrap();
        let err = load_few_shots(Some(dir.path()), "qa", FewShotKind::Correction).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("entry 0 has no string \"content\""), "{err}");
        assert!(err.contains("expected a JSON list of"), "{err}");
    }

    #[test]
    fn built_in_files_are_read_without_a_directory() {
        let qa = load_few_shots(None, "qa", FewShotKind::Initial).unwrap();
        assert_eq!(qa, parse_few_shots(include_str!("../../few_shots/qa_initial.json")).unwrap());
        assert!(!qa.is_empty());
        assert_eq!(load_few_shots(None, "math", FewShotKind::Correction).unwrap(), vec![]);
    }
}
