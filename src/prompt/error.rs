//! Typed errors of prompt building and chat-template rendering. Every message is one line naming the file (or the
//! template) at fault and what was expected there.

use std::path::PathBuf;

/// Why a prompt or chat template could not be loaded or rendered.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A tokenizer_config.json (or a chat_template.jinja beside it) is not what HF transformers writes.
    #[error("{}: {reason}", path.display())]
    TokenizerConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// A template does not parse (minijinja's message names the line).
    #[error("template {name} does not parse: {message}")]
    TemplateSyntax {
        /// The template's file (or `<inline chat template>`).
        name: String,
        /// The parser's message.
        message: String,
    },
    /// A template failed while rendering, e.g. through the template's own `raise_exception`.
    #[error("template {name} failed to render: {message}")]
    Render {
        /// The template's file (or `<inline chat template>`).
        name: String,
        /// The renderer's message.
        message: String,
    },
    /// A few-shot file exists but is not a JSON list of messages.
    #[error("few-shot file {}: {reason} (expected a JSON list of {{\"role\": \"system\"|\"user\"|\"assistant\", \"content\": \"...\"}} objects)", path.display())]
    FewShot {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the position of the bad entry.
        reason: String,
    },
    /// No template directory for the task.
    #[error("no prompt templates for task '{task}' in {} ({available})", dir.display())]
    UnknownTask {
        /// The `prompts` directory searched.
        dir: PathBuf,
        /// The task asked for.
        task: String,
        /// The tasks that do have templates there, as a sentence.
        available: String,
    },
    /// A task's prompt template is missing.
    #[error("prompt template {} is missing{hint}", path.display())]
    MissingTemplate {
        /// The file that was expected.
        path: PathBuf,
        /// A hint such as the tasks that do have templates.
        hint: String,
    },
    /// A prompt template rendered, but its `messages` is not a usable message list.
    #[error("prompt template {}: {reason}", path.display())]
    BadMessages {
        /// The template's file.
        path: PathBuf,
        /// What is wrong and what was expected.
        reason: String,
    },
}
