//! GGUF import: read a llama-architecture GGUF file and write an HF model directory (safetensors, config.json,
//! tokenizer.json, tokenizer_config.json, generation_config.json). `parser` reads the container, `dequant` turns
//! ggml blocks into f32, `llama` maps names/shapes/config and undoes llama.cpp's Q/K row permutation, `tokenizer`
//! rebuilds the HF tokenizer from the vocabulary, and `writer` writes the files all-or-nothing.

pub mod dequant;
pub mod error;
pub mod llama;
pub mod metadata;
pub mod parser;
pub mod tokenizer;
pub mod writer;

#[cfg(test)]
mod test_gguf;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use dequant::GgmlType;
pub use error::GgufError;
pub use metadata::MetadataValue;
pub use parser::{GgufFile, TensorInfo};
pub use writer::OutputDtype;

use llama::{BiasFlags, LlamaHyper};
use tokenizer::Vocabulary;
use writer::{SafetensorsWriter, StagingDir};

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Element type of model.safetensors.
    pub dtype: OutputDtype,
    /// Replace an existing output directory.
    pub force: bool,
}

/// What an import wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportSummary {
    /// The finished HF directory.
    pub out_dir: PathBuf,
    /// `general.architecture`.
    pub architecture: String,
    /// `general.name`, when the file has one.
    pub model_name: Option<String>,
    /// Tensors written.
    pub tensor_count: usize,
    /// Parameters written.
    pub parameter_count: u64,
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Whether lm_head reuses the embedding (no `output.weight` in the file).
    pub tie_word_embeddings: bool,
    /// Count of tensors per source ggml type name.
    pub source_types: BTreeMap<String, usize>,
}

/// Converts the llama-architecture GGUF at `gguf_path` into an HF `LlamaForCausalLM` directory at `out_dir`.
/// Nothing is left at `out_dir` unless the whole import succeeds.
pub fn import_gguf(gguf_path: &Path, out_dir: &Path, options: &ImportOptions) -> Result<ImportSummary, GgufError> {
    if out_dir.exists() && !options.force {
        return Err(GgufError::OutputExists { path: out_dir.to_path_buf() });
    }
    let file = GgufFile::open(gguf_path)?;
    let architecture = file
        .get("general.architecture")
        .ok_or_else(|| GgufError::MissingKey {
            path: gguf_path.to_path_buf(),
            key: "general.architecture".into(),
            expected: "a string such as \"llama\"",
        })?
        .as_str()
        .unwrap_or_default()
        .to_string();
    if architecture != "llama" {
        return Err(GgufError::UnsupportedArchitecture { path: gguf_path.to_path_buf(), found: architecture });
    }
    let hyper = LlamaHyper::from_gguf(&file)?;
    let vocab = Vocabulary::from_gguf(&file)?;
    let mut mapped = hyper.map_tensors(&file)?;
    mapped.sort_by(|a, b| a.1.hf_name.cmp(&b.1.hf_name));

    let mut source_types = BTreeMap::new();
    for (tensor, _) in &mapped {
        if tensor.ggml_type.block_size().is_none() {
            return Err(GgufError::UnsupportedTensorType {
                path: gguf_path.to_path_buf(),
                tensor: tensor.name.clone(),
                type_name: tensor.ggml_type.name(),
            });
        }
        *source_types.entry(tensor.ggml_type.name()).or_insert(0) += 1;
    }
    let embedding_rows = mapped
        .iter()
        .find(|(_, m)| m.hf_name == "model.embed_tokens.weight")
        .map(|(t, _)| t.shape()[0])
        .expect("map_tensors requires token_embd.weight");
    if vocab.tokens.len() > embedding_rows {
        return Err(GgufError::Tokenizer {
            path: gguf_path.to_path_buf(),
            message: format!(
                "tokenizer.ggml.tokens has {} tokens but token_embd.weight has only {embedding_rows} rows",
                vocab.tokens.len()
            ),
        });
    }
    let tied = !mapped.iter().any(|(_, m)| m.hf_name == "lm_head.weight");
    let bias = BiasFlags::from_names(mapped.iter().map(|(_, m)| m.hf_name.as_str()));

    let staging = StagingDir::new(out_dir, options.force)?;
    let dir = staging.path();
    let parameter_count = write_weights(&file, &mapped, &dir.join("model.safetensors"), options.dtype)?;

    let config = hyper.config_json(&file, embedding_rows, tied, bias, options.dtype.torch_name());
    writer::write_json(&dir.join("config.json"), &config)?;
    writer::write_json(&dir.join("generation_config.json"), &llama::generation_config_json(&file))?;
    let tokenizer_path = dir.join("tokenizer.json");
    writer::write_json(&tokenizer_path, &vocab.tokenizer_json(&file))?;
    tokenizer::check_loads(gguf_path, &tokenizer_path)?;
    writer::write_json(&dir.join("tokenizer_config.json"), &vocab.tokenizer_config_json(&file, hyper.context_length))?;
    let out_dir = staging.commit()?;
    Ok(ImportSummary {
        out_dir,
        architecture,
        model_name: file.get("general.name").and_then(MetadataValue::as_str).map(str::to_string),
        tensor_count: mapped.len(),
        parameter_count,
        vocab_size: vocab.tokens.len(),
        tie_word_embeddings: tied,
        source_types,
    })
}

/// Dequantises each tensor in turn (undoing the Q/K permutation) and streams it into `path`; returns the
/// parameter count.
fn write_weights(
    file: &GgufFile,
    mapped: &[(TensorInfo, llama::MappedTensor)],
    path: &Path,
    dtype: OutputDtype,
) -> Result<u64, GgufError> {
    let declared: Vec<(String, Vec<usize>)> = mapped.iter().map(|(t, m)| (m.hf_name.clone(), t.shape())).collect();
    let mut metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    metadata.insert("source".into(), format!("stasc import-gguf {}", file.path().display()));
    let mut out = SafetensorsWriter::create(path, dtype, &declared, &metadata)?;
    let mut parameters = 0u64;
    for (tensor, target) in mapped {
        let mut values = file.dequantize(tensor)?;
        if let Some(heads) = target.unpermute_heads {
            let rows = tensor.shape()[0];
            llama::check_permutable(file.path(), &tensor.name, rows, heads)?;
            values = llama::unpermute_rows(&values, rows, heads);
        }
        out.write_next(&target.hf_name, &values)?;
        parameters += values.len() as u64;
    }
    out.finish()?;
    Ok(parameters)
}
