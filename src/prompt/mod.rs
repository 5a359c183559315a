//! Prompts: minijinja rendering of the task prompts (templates/prompts + few_shots/, built into the binary and
//! replaceable by directories) and of a model's own chat template from tokenizer_config.json, the way HF
//! transformers renders it.
//!
//! [`PromptBuilder`] turns a question (and answers) into the message lists of the STaSC loop: the initial
//! generation, the correction, and the SFT conversation. [`chat_template::ChatTemplate`] turns a message list into
//! the exact text a model was trained on.

pub mod builder;
pub mod builtin;
pub mod chat_template;
mod error;
mod few_shot;
mod pyjson;
mod strftime;

use serde::{Deserialize, Serialize};

pub use builder::{PromptBuilder, DEFAULT_FEW_SHOT_DIR, DEFAULT_TEMPLATE_DIR};
pub use chat_template::ChatTemplate;
pub use error::PromptError;
pub use few_shot::{load_few_shots, FewShotKind};

/// `2026-11-30 08:31:02 UTC` for `secs` seconds after 1970-01-01T00:00:00Z.
pub fn utc_datetime(secs: i64) -> String {
    strftime::DateTime::from_unix(secs).format("%Y-%m-%d %H:%M:%S UTC").expect("a fixed, supported format")
}

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

/// The roles prompt templates and few-shot files may use.
pub const ROLES: [&str; 3] = ["system", "user", "assistant"];
