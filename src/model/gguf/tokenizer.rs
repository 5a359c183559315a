//! tokenizer.json and tokenizer_config.json from a GGUF vocabulary. Supports byte-level BPE vocabularies
//! (`tokenizer.ggml.model` = "gpt2"): tokens, merges and token types become an HF `BPE` model with added tokens,
//! and `tokenizer.ggml.pre` picks the pre-tokenizer the model was trained with, so encoding matches both the
//! original HF tokenizer and llama.cpp. An unknown pre-tokenizer is an error, never a guess.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Map, Value};

use super::error::GgufError;
use super::metadata::MetadataValue;
use super::parser::GgufFile;

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Llama-3's split regex (llama.cpp pre "llama-bpe"), as in Meta's tokenizer.json.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer families import-gguf knows, by `tokenizer.ggml.pre`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PreTokenizer {
    /// GPT-2's regex inside ByteLevel.
    Gpt2,
    /// Every number code point on its own, then GPT-2's regex (StarCoder, SmolLM).
    DigitsThenGpt2,
    /// Llama-3's split regex, then ByteLevel without its own regex; merges are skipped for whole-vocab words.
    Llama3,
}

impl PreTokenizer {
    const KNOWN: &'static str =
        "gpt-2, smollm, starcoder, refact, codeshell, llama-bpe, llama3, llama-v3, falcon3, dbrx, smaug-bpe";

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "gpt-2" => Self::Gpt2,
            "smollm" | "starcoder" | "refact" | "codeshell" => Self::DigitsThenGpt2,
            "llama-bpe" | "llama3" | "llama-v3" | "falcon3" | "dbrx" | "smaug-bpe" => Self::Llama3,
            _ => return None,
        })
    }

    fn json(self) -> Value {
        let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
        match self {
            Self::Gpt2 => byte_level(true),
            Self::DigitsThenGpt2 => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true),
            ]}),
            Self::Llama3 => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
                byte_level(false),
            ]}),
        }
    }
}

/// The vocabulary facts both tokenizer files are written from.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    /// Tokens by id, spelled as the file spells them (byte-level alphabet for gpt2 vocabularies).
    pub tokens: Vec<String>,
    /// Merges as pairs, in priority order.
    pub merges: Vec<(String, String)>,
    /// llama.cpp token type per id (1 normal when the file gives none).
    pub token_types: Vec<i64>,
    pre: PreTokenizer,
    add_bos: bool,
    add_eos: bool,
}

impl Vocabulary {
    /// Reads and checks the `tokenizer.ggml.*` keys.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, GgufError> {
        let path = file.path();
        let err = |message: String| GgufError::Tokenizer { path: path.to_path_buf(), message };
        let model = file.get("tokenizer.ggml.model").and_then(MetadataValue::as_str);
        match model {
            Some("gpt2") => {}
            Some(other) => {
                return Err(err(format!(
                "tokenizer.ggml.model is \"{other}\"; import-gguf builds byte-level BPE (\"gpt2\") vocabularies only"
            )))
            }
            None => return Err(err("tokenizer.ggml.model is missing or not a string".into())),
        }
        let pre_name = file.get("tokenizer.ggml.pre").and_then(MetadataValue::as_str).ok_or_else(|| {
            err("tokenizer.ggml.pre is missing, so the pre-tokenizer the vocabulary needs is unknown".into())
        })?;
        let pre = PreTokenizer::from_name(pre_name).ok_or_else(|| {
            err(format!("tokenizer.ggml.pre \"{pre_name}\" is not supported (supported: {})", PreTokenizer::KNOWN))
        })?;
        let tokens = string_array(file, "tokenizer.ggml.tokens").map_err(err)?;
        let merges = string_array(file, "tokenizer.ggml.merges")
            .map_err(err)?
            .into_iter()
            .enumerate()
            .map(|(index, merge)| match merge.split_once(' ') {
                Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                    Ok((a.to_string(), b.to_string()))
                }
                _ => {
                    Err(err(format!("tokenizer.ggml.merges[{index}] is {merge:?}, expected two tokens and one space")))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let token_types = match file.get("tokenizer.ggml.token_type") {
            None => vec![1; tokens.len()],
            Some(value) => {
                let items = value
                    .as_array()
                    .ok_or_else(|| err(format!("tokenizer.ggml.token_type is {}", value.describe())))?;
                let types: Option<Vec<i64>> = items.iter().map(MetadataValue::as_i64).collect();
                match types {
                    Some(t) if t.len() == tokens.len() => t,
                    _ => {
                        return Err(err(format!(
                            "tokenizer.ggml.token_type must be {} integers, one per token",
                            tokens.len()
                        )))
                    }
                }
            }
        };
        let mut seen = HashMap::with_capacity(tokens.len());
        for (id, token) in tokens.iter().enumerate() {
            if let Some(first) = seen.insert(token.as_str(), id) {
                return Err(err(format!(
                    "tokens {first} and {id} are both {token:?}; a tokenizer.json vocab needs unique tokens"
                )));
            }
        }
        for (a, b) in &merges {
            let merged = format!("{a}{b}");
            if !seen.contains_key(a.as_str()) || !seen.contains_key(b.as_str()) || !seen.contains_key(merged.as_str()) {
                return Err(err(format!(
                    "merge \"{a} {b}\" uses or makes a token that is not in tokenizer.ggml.tokens"
                )));
            }
        }
        for key in ["bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id", "eot_token_id"] {
            let key = format!("tokenizer.ggml.{key}");
            if let Some(id) = file.get(&key).and_then(MetadataValue::as_u64) {
                if id as usize >= tokens.len() {
                    return Err(err(format!("{key} is {id}, past the {} tokens", tokens.len())));
                }
            }
        }
        let flag = |key: &str| file.get(key).and_then(MetadataValue::as_bool).unwrap_or(false);
        Ok(Self {
            tokens,
            merges,
            token_types,
            pre,
            add_bos: flag("tokenizer.ggml.add_bos_token"),
            add_eos: flag("tokenizer.ggml.add_eos_token"),
        })
    }

    /// Ids of tokens matched whole in text before BPE: control tokens (special) and user-defined ones (not special).
    fn added_tokens(&self) -> Vec<(usize, &str, bool)> {
        self.tokens
            .iter()
            .zip(&self.token_types)
            .enumerate()
            .filter_map(|(id, (token, &kind))| match kind {
                TOKEN_TYPE_CONTROL => Some((id, token.as_str(), true)),
                TOKEN_TYPE_USER_DEFINED => Some((id, token.as_str(), false)),
                _ => None,
            })
            .collect()
    }

    /// The token spelled at `key`'s id, if the key is present.
    fn token_at(&self, file: &GgufFile, key: &str) -> Option<String> {
        let id = file.get(key).and_then(MetadataValue::as_u64)?;
        self.tokens.get(id as usize).cloned()
    }

    /// tokenizer.json in the HF `tokenizers` format.
    pub fn tokenizer_json(&self, file: &GgufFile) -> Value {
        let added: Vec<Value> = self
            .added_tokens()
            .into_iter()
            .map(|(id, content, special)| {
                json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                       "normalized": false, "special": special})
            })
            .collect();
        let mut vocab = Map::with_capacity(self.tokens.len());
        for (id, token) in self.tokens.iter().enumerate() {
            vocab.insert(token.clone(), json!(id));
        }
        let merges: Vec<Value> = self.merges.iter().map(|(a, b)| json!([a, b])).collect();
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": self.pre.json(),
            "post_processor": self.post_processor(file),
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE",
                "dropout": null,
                "unk_token": null,
                "continuing_subword_prefix": null,
                "end_of_word_suffix": null,
                "fuse_unk": false,
                "byte_fallback": false,
                "ignore_merges": self.pre == PreTokenizer::Llama3,
                "vocab": Value::Object(vocab),
                "merges": merges,
            },
        })
    }

    /// ByteLevel offsets only, unless the file asks for BOS/EOS around every encoding.
    fn post_processor(&self, file: &GgufFile) -> Value {
        let bos = self.add_bos.then(|| self.special_piece(file, "tokenizer.ggml.bos_token_id")).flatten();
        let eos = self.add_eos.then(|| self.special_piece(file, "tokenizer.ggml.eos_token_id")).flatten();
        if bos.is_none() && eos.is_none() {
            return json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true});
        }
        let seq = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
        let special =
            |piece: &(String, u64), type_id: u32| json!({"SpecialToken": {"id": piece.0, "type_id": type_id}});
        let wrap = |segment: &str, type_id: u32| {
            let mut out = Vec::new();
            if let Some(b) = &bos {
                out.push(special(b, type_id));
            }
            out.push(seq(segment, type_id));
            if let Some(e) = &eos {
                out.push(special(e, type_id));
            }
            out
        };
        let single = wrap("A", 0);
        let pair: Vec<Value> = wrap("A", 0).into_iter().chain(wrap("B", 1)).collect();
        let mut specials = Map::new();
        for (token, id) in bos.iter().chain(eos.iter()) {
            specials.insert(token.clone(), json!({"id": token, "ids": [id], "tokens": [token]}));
        }
        json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
    }

    fn special_piece(&self, file: &GgufFile, key: &str) -> Option<(String, u64)> {
        let id = file.get(key).and_then(MetadataValue::as_u64)?;
        Some((self.tokens.get(id as usize)?.clone(), id))
    }

    /// tokenizer_config.json: special tokens, added tokens, chat template, max length.
    pub fn tokenizer_config_json(&self, file: &GgufFile, model_max_length: u64) -> Value {
        let mut added = Map::new();
        for (id, content, special) in self.added_tokens() {
            added.insert(
                id.to_string(),
                json!({"content": content, "lstrip": false, "normalized": false, "rstrip": false,
                       "single_word": false, "special": special}),
            );
        }
        let token = |key: &str| self.token_at(file, key).map_or(Value::Null, Value::from);
        let mut config = json!({
            "add_bos_token": self.add_bos,
            "add_eos_token": self.add_eos,
            "add_prefix_space": false,
            "added_tokens_decoder": added,
            "bos_token": token("tokenizer.ggml.bos_token_id"),
            "clean_up_tokenization_spaces": false,
            "eos_token": token("tokenizer.ggml.eos_token_id"),
            "model_max_length": model_max_length,
            "pad_token": token("tokenizer.ggml.padding_token_id"),
            "tokenizer_class": "PreTrainedTokenizerFast",
            "unk_token": token("tokenizer.ggml.unknown_token_id"),
        });
        if let Some(template) = file.get("tokenizer.chat_template").and_then(MetadataValue::as_str) {
            config["chat_template"] = json!(template);
        }
        config
    }
}

fn string_array(file: &GgufFile, key: &str) -> Result<Vec<String>, String> {
    let value = file.get(key).ok_or_else(|| format!("{key} is missing"))?;
    let items =
        value.as_array().ok_or_else(|| format!("{key} is {}, expected an array of strings", value.describe()))?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str().map(str::to_string).ok_or_else(|| format!("{key}[{i}] is {}, expected a string", v.describe()))
        })
        .collect()
}

/// Checks that the written tokenizer.json loads in the `tokenizers` crate, so a bad file fails the import.
pub fn check_loads(path: &Path, tokenizer_json: &Path) -> Result<(), GgufError> {
    tokenizers::Tokenizer::from_file(tokenizer_json).map(|_| ()).map_err(|e| GgufError::Tokenizer {
        path: path.to_path_buf(),
        message: format!("the tokenizers crate rejects the generated {}: {e}", tokenizer_json.display()),
    })
}
