//! A model's own chat template (the `chat_template` of its tokenizer_config.json, or the chat_template.jinja that
//! newer transformers versions save beside it), rendered with minijinja the way HF transformers'
//! `apply_chat_template` renders it with Jinja2: `trim_blocks` and `lstrip_blocks` on, no trailing newline kept,
//! the special tokens (`bos_token`, `eos_token`, ...) as strings, `tools` and `documents` as none, the globals and
//! filters transformers adds (`raise_exception`, `strftime_now`, a Python-exact `tojson`), Python's string and dict
//! methods through minijinja-contrib's pycompat, and values printed as Python prints them (`True`, `None`, `1e-05`).
//! tests/it/chat_templates.rs holds the byte-for-byte comparison with transformers.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::LazyLock;

use minijinja::value::ValueKind;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, Value};
use regex::Regex;
use serde::Serialize;

use super::{pyjson, strftime, ChatMessage, PromptError};

/// The special-token attributes transformers passes to every chat template (its `SPECIAL_TOKENS_ATTRIBUTES`).
const SPECIAL_TOKEN_KEYS: [&str; 7] =
    ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

/// The file newer transformers versions write the chat template to, beside tokenizer_config.json.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// Name of the template inside its minijinja environment; errors show it with a line number.
const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template with the special tokens it is rendered with.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Where the template came from, for error messages.
    origin: String,
    source: String,
    special_tokens: BTreeMap<String, String>,
}

impl ChatTemplate {
    /// Loads the chat template of a HF tokenizer: `path` is its tokenizer_config.json. A chat_template.jinja beside
    /// it takes priority over the `chat_template` key, as in transformers. A list of named templates uses "default".
    pub fn from_tokenizer_config(path: &Path) -> Result<ChatTemplate, PromptError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| PromptError::Io { path: path.to_path_buf(), source })?;
        let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| PromptError::TokenizerConfig {
            path: path.to_path_buf(),
            reason: format!("not valid JSON: {e}"),
        })?;
        let bad = |reason: String| PromptError::TokenizerConfig { path: path.to_path_buf(), reason };
        let config = config.as_object().ok_or_else(|| bad("expected a JSON object at the top level".to_string()))?;

        let mut special_tokens = BTreeMap::new();
        for key in SPECIAL_TOKEN_KEYS {
            if let Some(value) = config.get(key) {
                if let Some(token) = special_token_text(value).map_err(|why| bad(format!("key '{key}' {why}")))? {
                    special_tokens.insert(key.to_string(), token);
                }
            }
        }

        let jinja_path = path.with_file_name(CHAT_TEMPLATE_FILE);
        let (source, origin) = if jinja_path.is_file() {
            let source = std::fs::read_to_string(&jinja_path)
                .map_err(|source| PromptError::Io { path: jinja_path.clone(), source })?;
            (source, jinja_path.display().to_string())
        } else {
            match config.get("chat_template") {
                Some(value) => (template_from_config(value).map_err(bad)?, path.display().to_string()),
                None => {
                    return Err(bad(format!(
                        "no chat template: the file has no 'chat_template' key and there is no {CHAT_TEMPLATE_FILE} beside it"
                    )))
                }
            }
        };
        ChatTemplate::build(source, origin, special_tokens)
    }

    /// Compiles a chat template given as text, with the BOS/EOS tokens it may print.
    #[allow(clippy::should_implement_trait)] // the name callers agreed on; FromStr could not take the tokens.
    pub fn from_str(
        template: &str,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<ChatTemplate, PromptError> {
        let mut special_tokens = BTreeMap::new();
        if let Some(bos) = bos_token {
            special_tokens.insert("bos_token".to_string(), bos);
        }
        if let Some(eos) = eos_token {
            special_tokens.insert("eos_token".to_string(), eos);
        }
        ChatTemplate::build(template.to_string(), "<inline chat template>".to_string(), special_tokens)
    }

    fn build(
        source: String,
        origin: String,
        special_tokens: BTreeMap<String, String>,
    ) -> Result<ChatTemplate, PromptError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python_formatter);
        env.add_filter("tojson", pyjson::tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime::strftime_now);
        env.add_template_owned(TEMPLATE_NAME, without_generation_tags(&source))
            .map_err(|e| PromptError::TemplateSyntax { name: origin.clone(), message: e.to_string() })?;
        Ok(ChatTemplate { env, origin, source, special_tokens })
    }

    /// The template text as loaded.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The BOS token string, if the tokenizer has one.
    pub fn bos_token(&self) -> Option<&str> {
        self.special_tokens.get("bos_token").map(String::as_str)
    }

    /// The EOS token string, if the tokenizer has one.
    pub fn eos_token(&self) -> Option<&str> {
        self.special_tokens.get("eos_token").map(String::as_str)
    }

    /// Any special token the template is rendered with, by its transformers attribute name (e.g. "pad_token").
    pub fn special_token(&self, name: &str) -> Option<&str> {
        self.special_tokens.get(name).map(String::as_str)
    }

    /// Renders a conversation, as `tokenizer.apply_chat_template(messages, tokenize=False,
    /// add_generation_prompt=...)` does.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, PromptError> {
        self.render_with_vars(messages, add_generation_prompt, ())
    }

    /// Renders like [`ChatTemplate::render`], with extra template variables (the `**kwargs` of
    /// `apply_chat_template`, e.g. `date_string` for Llama 3.x or `enable_thinking`): `vars` serialises to a map,
    /// e.g. a `serde_json::Map`, a struct or `minijinja::context!{..}`; its key order is kept for templates that
    /// iterate or `tojson` it. They override the special tokens, `tools` and `documents`, but not `messages` or
    /// `add_generation_prompt`.
    pub fn render_with_vars<V: Serialize>(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        vars: V,
    ) -> Result<String, PromptError> {
        let render_error = |e: Error| PromptError::Render { name: self.origin.clone(), message: e.to_string() };
        let mut ctx: BTreeMap<String, Value> = BTreeMap::new();
        for (key, token) in &self.special_tokens {
            ctx.insert(key.clone(), Value::from(token.as_str()));
        }
        // transformers always passes these two, as None when unused, so `tools is defined` holds.
        ctx.insert("tools".to_string(), Value::from(()));
        ctx.insert("documents".to_string(), Value::from(()));
        let vars = Value::from_serialize(vars);
        match vars.kind() {
            ValueKind::None | ValueKind::Undefined => {}
            ValueKind::Map => {
                for key in vars.try_iter().map_err(render_error)? {
                    let value = vars.get_item(&key).map_err(render_error)?;
                    ctx.insert(key.to_string(), value);
                }
            }
            kind => {
                return Err(render_error(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("extra template variables must be a map, not a {kind}"),
                )))
            }
        }
        ctx.insert("messages".to_string(), Value::from_serialize(messages));
        ctx.insert("add_generation_prompt".to_string(), Value::from(add_generation_prompt));

        let template = self.env.get_template(TEMPLATE_NAME).map_err(render_error)?;
        template.render(ctx).map_err(render_error)
    }
}

/// The text of a special token as tokenizer_config.json writes it: a string, null, or an AddedToken object
/// `{"__type": "AddedToken", "content": "<s>", ...}`.
fn special_token_text(value: &serde_json::Value) -> Result<Option<String>, String> {
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(Some(s.clone())),
        serde_json::Value::Object(map) => match map.get("content") {
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            _ => Err("is an object without a string 'content' (expected a string or an AddedToken object)".to_string()),
        },
        _ => Err("expected a string, null or an AddedToken object {\"content\": ...}".to_string()),
    }
}

/// The `chat_template` value: a string, or a list of `{"name", "template"}` of which "default" is used.
fn template_from_config(value: &serde_json::Value) -> Result<String, String> {
    match value {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Array(entries) => {
            let mut names = Vec::new();
            for (i, entry) in entries.iter().enumerate() {
                let name = entry.get("name").and_then(|n| n.as_str());
                let template = entry.get("template").and_then(|t| t.as_str());
                match (name, template) {
                    (Some("default"), Some(template)) => return Ok(template.to_string()),
                    (Some(name), Some(_)) => names.push(name.to_string()),
                    _ => {
                        return Err(format!(
                            "chat_template[{i}] is not an object with string 'name' and 'template' keys"
                        ))
                    }
                }
            }
            Err(format!("chat_template has no template named 'default' (found: {})", names.join(", ")))
        }
        _ => Err("'chat_template' must be a string or a list of {\"name\", \"template\"} objects".to_string()),
    }
}

/// Prints values as Jinja2 prints Python values: `True`/`False`, `None`, floats as `str(float)` does.
fn python_formatter(out: &mut Output, state: &State, value: &Value) -> Result<(), Error> {
    let text = match value.kind() {
        ValueKind::Bool => if value.is_true() { "True" } else { "False" }.to_string(),
        ValueKind::None => "None".to_string(),
        ValueKind::Number if !value.is_integer() => match f64::try_from(value.clone()) {
            Ok(f) if f.is_nan() => "nan".to_string(),
            Ok(f) if f.is_infinite() => if f > 0.0 { "inf" } else { "-inf" }.to_string(),
            Ok(f) => pyjson::python_float_repr(f),
            Err(_) => return minijinja::escape_formatter(out, state, value),
        },
        _ => return minijinja::escape_formatter(out, state, value),
    };
    out.write_str(&text).map_err(Error::from)
}

/// transformers' `raise_exception(message)`: stops rendering with the template's own message.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// transformers' `{% generation %}...{% endgeneration %}` tag only marks assistant text for masks; rendering is
/// unchanged by it. minijinja has no such tag, so it becomes an always-true `if` block with the same whitespace
/// control markers.
fn without_generation_tags(source: &str) -> String {
    static OPEN: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\{%(-|\+)?\s*generation\s*(-|\+)?%\}").expect("valid regex"));
    static CLOSE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\{%(-|\+)?\s*endgeneration\s*(-|\+)?%\}").expect("valid regex"));
    let opened = OPEN.replace_all(source, "{%${1} if true ${2}%}");
    CLOSE.replace_all(&opened, "{%${1} endif ${2}%}").into_owned()
}

#[cfg(test)]
mod tests;
