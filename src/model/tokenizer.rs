//! The model's tokenizer: tokenizer.json through the tokenizers crate, the special tokens of tokenizer_config.json,
//! the end-of-sequence ids generation stops at, and the chat template (rendered by `prompt::chat_template`).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::ModelError;
use super::files::ModelFiles;
use crate::prompt::chat_template::ChatTemplate;
use crate::prompt::ChatMessage;

/// A checkpoint's tokenizer with its special tokens and chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    eos_token_ids: Vec<u32>,
    bos_token_id: Option<u32>,
    pad_token_id: Option<u32>,
    chat_template: Result<ChatTemplate, String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .field("eos_token_ids", &self.eos_token_ids)
            .field("has_chat_template", &self.chat_template.is_ok())
            .finish()
    }
}

/// A special token in tokenizer_config.json: a string or an AddedToken object with a "content".
fn special_token(config: &Value, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
        _ => None,
    }
}

impl Tokenizer {
    /// Loads tokenizer.json and tokenizer_config.json of `files`. EOS ids are the union, in this order, of
    /// `model_eos_ids` (generation_config.json's, else config.json's) and tokenizer_config.json's `eos_token`, the
    /// way vLLM stops.
    pub fn load(files: &ModelFiles, model_eos_ids: &[u32]) -> Result<Self, ModelError> {
        let path = files.require_tokenizer()?.to_path_buf();
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| ModelError::Tokenizer { path: path.clone(), message: e.to_string() })?;
        let config = match &files.tokenizer_config {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|source| ModelError::Io { path: p.clone(), error: source })?;
                serde_json::from_str(&text).map_err(|source| ModelError::Json { path: p.clone(), error: source })?
            }
            None => Value::Null,
        };
        let id_of = |key: &str| special_token(&config, key).and_then(|t| inner.token_to_id(&t));
        let mut eos_token_ids = model_eos_ids.to_vec();
        if let Some(id) = id_of("eos_token") {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
        let chat_template = match &files.tokenizer_config {
            Some(p) => ChatTemplate::from_tokenizer_config(p).map_err(|e| e.to_string()),
            None => Err(format!("{}: no tokenizer_config.json, so no chat template", files.dir.display())),
        };
        Ok(Tokenizer {
            bos_token_id: id_of("bos_token"),
            pad_token_id: id_of("pad_token"),
            inner,
            path,
            eos_token_ids,
            chat_template,
        })
    }

    /// Wraps an already-built tokenizer (tests, tools); no chat template.
    pub fn from_parts(inner: tokenizers::Tokenizer, path: &Path, eos_token_ids: Vec<u32>) -> Self {
        Tokenizer {
            inner,
            path: path.into(),
            eos_token_ids,
            bos_token_id: None,
            pad_token_id: None,
            chat_template: Err("no chat template was given".into()),
        }
    }

    /// Token ids of `text`; `add_special_tokens` adds what the post-processor adds (e.g. a BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| ModelError::Tokenizer { path: self.path.clone(), message: e.to_string() })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`; ids outside the vocabulary are dropped.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, ModelError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| ModelError::Tokenizer { path: self.path.clone(), message: e.to_string() })
    }

    /// The ids generation stops at.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_token_ids
    }

    /// The beginning-of-sequence id, if tokenizer_config.json names one.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    /// The padding id, if tokenizer_config.json names one.
    pub fn pad_token_id(&self) -> Option<u32> {
        self.pad_token_id
    }

    /// The chat template, or an error saying why there is none.
    pub fn chat_template(&self) -> Result<&ChatTemplate, ModelError> {
        self.chat_template.as_ref().map_err(|why| ModelError::ChatTemplate(why.clone()))
    }

    /// Renders `messages` with the chat template, as HF `apply_chat_template(tokenize=False)` does.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        self.chat_template()?
            .render(messages, add_generation_prompt)
            .map_err(|e| ModelError::ChatTemplate(e.to_string()))
    }

    /// Token ids of a rendered conversation; the template already holds the special tokens, so none are added (as
    /// HF `apply_chat_template(tokenize=True)` does).
    pub fn encode_chat(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<Vec<u32>, ModelError> {
        self.encode(&self.apply_chat_template(messages, add_generation_prompt)?, false)
    }

    /// The underlying tokenizers-crate tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Size of the vocabulary including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
