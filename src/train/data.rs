//! SFT data files: JSONL with one `{"messages": [{"role": ..., "content": ...}, ...]}` object per line, the format
//! `stasc train` reads and the loop's `train_pairs.jsonl` uses. Blank lines are skipped; any other bad line is an
//! error naming the file, the line and what was expected.

use std::path::Path;

use serde_json::Value;

use super::error::TrainError;
use crate::prompt::{ChatMessage, ROLES};

/// Reads every conversation of a messages JSONL file.
pub fn read_messages_jsonl(path: &Path) -> Result<Vec<Vec<ChatMessage>>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(TrainError::io(path))?;
    let mut chats = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| TrainError::Data { path: path.to_path_buf(), line: i + 1, message };
        let value: Value = serde_json::from_str(line).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        chats.push(parse_messages(&value).map_err(bad)?);
    }
    Ok(chats)
}

/// Parses one line's object into its messages.
fn parse_messages(value: &Value) -> Result<Vec<ChatMessage>, String> {
    let list = value
        .get("messages")
        .ok_or("expected an object with a \"messages\" list")?
        .as_array()
        .ok_or("\"messages\" must be a list of {\"role\", \"content\"} objects")?;
    if list.is_empty() {
        return Err("\"messages\" is empty".into());
    }
    let mut messages = Vec::with_capacity(list.len());
    for (j, m) in list.iter().enumerate() {
        let field = |key: &str| {
            m.get(key).and_then(Value::as_str).ok_or_else(|| format!("messages[{j}] needs a string \"{key}\""))
        };
        let role = field("role")?;
        if !ROLES.contains(&role) {
            return Err(format!("messages[{j}]: role {role:?} is not one of {}", ROLES.join(", ")));
        }
        messages.push(ChatMessage::new(role, field("content")?));
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lines_and_names_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        std::fs::write(
            &path,
            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n\n",
        )
        .unwrap();
        let chats = read_messages_jsonl(&path).unwrap();
        assert_eq!(chats, vec![vec![ChatMessage::new("user", "hi"), ChatMessage::new("assistant", "yo")]]);

        std::fs::write(&path, "{\"messages\": []}\n").unwrap();
        let err = read_messages_jsonl(&path).unwrap_err().to_string();
        assert!(err.ends_with("d.jsonl:1: \"messages\" is empty"), "{err}");
        std::fs::write(&path, "\n{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}\n").unwrap();
        let err = read_messages_jsonl(&path).unwrap_err().to_string();
        assert!(err.ends_with("d.jsonl:2: messages[0]: role \"bot\" is not one of system, user, assistant"), "{err}");
    }
}
