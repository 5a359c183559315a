//! Prompts: minijinja rendering of the task prompts (templates/prompts + few_shots/) and of a model's own chat
//! template from tokenizer_config.json, the way HF transformers renders it.

use serde::{Deserialize, Serialize};

/// One chat message, as HF chat templates and few-shot files spell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// "system", "user" or "assistant".
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// Builds a message from a role and its text.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}
