//! Dry-run checks: before anything runs, open every file a run will open, the way the run opens it, and say each
//! problem on one line: the model directory (a hub id gets the command that downloads it), the dataset with its
//! splits and columns, the prompt templates and few-shot files, the reward plugin, and every prompt's length in
//! tokens against the model length. A [`Preflight`] keeps what it loaded, so the cells of a sweep that share a model
//! or a dataset load it once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{RunConfig, SftContext, StascConfig};
use crate::data::{detect_format, load_splits, Columns, DatasetFormat, Splits};
use crate::model::{load_tokenizer, ModelConfig, ModelFiles, Tokenizer};
use crate::prompt::{ChatMessage, FewShotKind, PromptBuilder};
use crate::reward::Evaluator;

/// The dataset as a run would use it.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetSummary {
    /// data_path.
    pub path: PathBuf,
    /// Its layout.
    pub format: DatasetFormat,
    /// Rows of the train split.
    pub train_rows: usize,
    /// Rows of the test split.
    pub test_rows: usize,
    /// Train questions the run uses (after max_train_examples).
    pub train_rows_used: usize,
    /// Test questions the run uses (after max_test_examples).
    pub test_rows_used: usize,
}

/// Token counts of the prompts a run will send, measured with the model's tokenizer and chat template. Correction
/// and SFT prompts are measured with empty answers: the answers add at most `max_tokens` each.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PromptTokens {
    /// Initial prompts of the train questions used, summed.
    pub initial_train: u64,
    /// Initial prompts of the test questions used, summed.
    pub initial_test: u64,
    /// Correction prompts (empty initial answer) of the train questions used, summed.
    pub correction_train: u64,
    /// Correction prompts (empty initial answer) of the test questions used, summed.
    pub correction_test: u64,
    /// SFT conversations (empty answers) of the train questions used, summed.
    pub sft_train: u64,
    /// The longest prompt of any kind.
    pub longest: usize,
    /// The model length prompts must fit in (max_model_len, capped by the model's context).
    pub max_model_len: usize,
}

/// What a dry run found for one configuration.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One line per problem; empty when the run can start.
    pub problems: Vec<String>,
    /// The dataset, when it loaded.
    pub dataset: Option<DatasetSummary>,
    /// Prompt lengths, when the model's tokenizer, the dataset and the templates all loaded.
    pub prompt_tokens: Option<PromptTokens>,
}

/// A tokenizer and the model's longest sequence.
type LoadedTokenizer = (Tokenizer, usize);
/// A dataset: its path and the id, question and gold columns.
type DatasetKey = (PathBuf, String, String, String);
/// A loaded dataset, or the problem line that says why it did not load.
type LoadedDataset = Result<(DatasetFormat, Splits), String>;

/// Runs dry-run checks, keeping loaded datasets, tokenizers and reward checks for the next configuration.
#[derive(Default)]
pub struct Preflight {
    datasets: HashMap<DatasetKey, LoadedDataset>,
    tokenizers: HashMap<String, Result<LoadedTokenizer, String>>,
    rewards: HashMap<String, Result<(), String>>,
}

/// Over-long prompts listed one per line before the rest are counted on one.
const LISTED_OVERFLOWS: usize = 5;

impl Preflight {
    /// A checker with nothing loaded yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks everything `config` will open.
    pub fn check(&mut self, config: &RunConfig) -> Report {
        let c = &config.stasc_config;
        let dataset_key = (c.data_path.clone(), c.id_col.clone(), c.question_col.clone(), c.gold_col.clone());
        // Load into the caches first, then read them through shared borrows.
        self.tokenizers.entry(c.model_path.clone()).or_insert_with(|| load_model_files(&c.model_path));
        self.datasets.entry(dataset_key.clone()).or_insert_with(|| load_dataset(c));
        self.rewards.entry(c.evaluator_function.name().to_string()).or_insert_with(|| check_reward(c));
        let mut report = Report::default();
        let tokenizer = self.tokenizers[&c.model_path].as_ref().map_err(|p| report.problems.push(p.clone())).ok();
        let splits = match &self.datasets[&dataset_key] {
            Ok((format, splits)) => {
                let mut used = splits.clone();
                used.cap(c.max_train_examples, c.max_test_examples);
                report.dataset = Some(DatasetSummary {
                    path: c.data_path.clone(),
                    format: *format,
                    train_rows: splits.train.len(),
                    test_rows: splits.test.len(),
                    train_rows_used: used.train.len(),
                    test_rows_used: used.test.len(),
                });
                Some(used)
            }
            Err(problem) => {
                report.problems.push(problem.clone());
                None
            }
        };
        let builder = prompts(c).map_err(|p| report.problems.extend(p)).ok();
        if let Err(problem) = &self.rewards[c.evaluator_function.name()] {
            report.problems.push(problem.clone());
        }
        if let (Some((tokenizer, context)), Some(splits), Some(builder)) = (tokenizer, splits, builder) {
            let max_model_len = c.max_model_len.map_or(*context, |n| n.min(*context));
            match measure(c, tokenizer, &builder, &splits, max_model_len) {
                Ok((tokens, overflows)) => {
                    report.problems.extend(overflows);
                    report.prompt_tokens = Some(tokens);
                }
                Err(problem) => report.problems.push(problem),
            }
        }
        report
    }
}

/// Loads the dataset with the configured columns, as the run does.
fn load_dataset(c: &StascConfig) -> LoadedDataset {
    let problem = |e: crate::data::DataError| format!("data_path: {e}");
    let format = detect_format(&c.data_path).map_err(problem)?;
    let splits = load_splits(&c.data_path, &Columns::from_config(c)).map_err(problem)?;
    Ok((format, splits))
}

/// Builds the evaluator (loading a plugin and checking its ABI), as the run does.
fn check_reward(c: &StascConfig) -> Result<(), String> {
    Evaluator::from_choice(
        &c.evaluator_function,
        c.evaluator_mode,
        &c.evaluator_answer_marker,
        &crate::reward::plugin::default_plugin_dirs(),
    )
    .map(drop)
    .map_err(|e| format!("evaluator_function {}: {e}", c.evaluator_function))
}

/// Whether `path` (which does not exist) reads like a Hugging Face hub id, `owner/name`.
fn looks_like_hub_id(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty() && !p.starts_with('.') && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// Resolves the model directory and loads its tokenizer and config, the files a run opens first.
fn load_model_files(model_path: &str) -> Result<LoadedTokenizer, String> {
    let dir = Path::new(model_path);
    if !dir.exists() && looks_like_hub_id(model_path) {
        let name = model_path.rsplit('/').next().unwrap_or(model_path);
        return Err(format!(
            "model_path {model_path} is not a directory but looks like a Hugging Face hub id; stasc reads local \
             checkpoints and does not download: run `hf download {model_path} --local-dir models/{name}` (pip \
             install huggingface_hub; older versions spell it huggingface-cli download), then set model_path: \
             models/{name}"
        ));
    }
    if !dir.exists() {
        return Err(format!("model_path {model_path}: no such directory (expected an HF checkpoint directory)"));
    }
    let problem = |e: crate::model::ModelError| format!("model_path {model_path}: {e}");
    let files = ModelFiles::resolve(dir).map_err(problem)?;
    let config = ModelConfig::from_file(&files.config).map_err(problem)?;
    files.require_tokenizer().map_err(problem)?;
    let tokenizer = load_tokenizer(dir).map_err(problem)?;
    tokenizer.chat_template().map_err(problem)?;
    Ok((tokenizer, config.max_context().max(0) as usize))
}

/// Loads the prompt templates and few-shot files through the prompt module's own loader; with `use_few_shots`,
/// a few-shot file that gives no messages is a problem (the run would silently go zero-shot).
fn prompts(c: &StascConfig) -> Result<PromptBuilder, Vec<String>> {
    let task = c.task_type.name();
    let builder = PromptBuilder::load(c.template_dir.as_deref(), c.few_shot_dir.as_deref(), task).map_err(|e| {
        let key = if matches!(e, crate::prompt::PromptError::FewShot { .. }) { "few_shot_dir" } else { "template_dir" };
        vec![format!("{key}: {e}")]
    })?;
    if !c.use_few_shots {
        return Ok(builder.without_few_shots());
    }
    let mut problems = Vec::new();
    for (kind, messages) in
        [(FewShotKind::Initial, builder.initial_few_shots()), (FewShotKind::Correction, builder.correction_few_shots())]
    {
        // The built-in few-shot files are never empty: only a directory the user names can lack one.
        let Some(dir) = c.few_shot_dir.as_deref() else { continue };
        if messages.is_empty() {
            let path = kind.path(dir, task);
            let state = if path.is_file() { "holds no messages" } else { "does not exist" };
            problems.push(format!(
                "few_shot_dir: {} {state}, so the {task} {kind} prompts would get no few-shot messages although \
                 use_few_shots is true; add the file or set use_few_shots: false",
                path.display()
            ));
        }
    }
    if problems.is_empty() {
        Ok(builder)
    } else {
        Err(problems)
    }
}

/// Measures every prompt of the questions used; prompts that leave no room for a generated token are problems
/// (unless `truncate_prompts`), named by dataset and question id.
fn measure(
    c: &StascConfig,
    tokenizer: &Tokenizer,
    builder: &PromptBuilder,
    splits: &Splits,
    max_model_len: usize,
) -> Result<(PromptTokens, Vec<String>), String> {
    let mut tokens = PromptTokens { max_model_len, ..PromptTokens::default() };
    let mut overflows = Vec::new();
    let room = max_model_len.saturating_sub(1);
    let count = |messages: Vec<ChatMessage>, generation_prompt: bool| -> Result<usize, String> {
        tokenizer
            .encode_chat(&messages, generation_prompt)
            .map(|ids| ids.len())
            .map_err(|e| format!("model_path {}: {e}", c.model_path))
    };
    let prompt_error = |e: crate::prompt::PromptError| format!("template_dir: {e}");
    for (split, questions) in [("train", &splits.train), ("test", &splits.test)] {
        for ex in questions {
            let initial = count(builder.initial_messages(&ex.question).map_err(prompt_error)?, true)?;
            let correction = count(builder.correction_messages(&ex.question, "").map_err(prompt_error)?, true)?;
            for (phase, length) in [("initial", initial), ("correction", correction)] {
                if length > room && !c.truncate_prompts {
                    overflows.push(format!(
                        "{}: question {:?} ({split} split): its {phase} prompt has {length} tokens, but \
                         max_model_len {max_model_len} leaves room for {room}; raise max_model_len, shorten the \
                         question, or set truncate_prompts: true to drop the prompt's first tokens",
                        c.data_path.display(),
                        ex.id
                    ));
                }
            }
            tokens.longest = tokens.longest.max(initial).max(correction);
            if split == "train" {
                let sft = match c.sft_context {
                    SftContext::Template => builder.sft_messages(&ex.question, "", "").map_err(prompt_error)?,
                    SftContext::CorrectionPrompt => {
                        let mut messages = builder.correction_messages(&ex.question, "").map_err(prompt_error)?;
                        messages.push(ChatMessage::new("assistant", ""));
                        messages
                    }
                };
                tokens.sft_train += count(sft, false)? as u64;
                tokens.initial_train += initial as u64;
                tokens.correction_train += correction as u64;
            } else {
                tokens.initial_test += initial as u64;
                tokens.correction_test += correction as u64;
            }
        }
    }
    if overflows.len() > LISTED_OVERFLOWS {
        let more = overflows.len() - LISTED_OVERFLOWS;
        overflows.truncate(LISTED_OVERFLOWS);
        overflows.push(format!(
            "{}: {more} more prompts are longer than max_model_len {max_model_len} allows",
            c.data_path.display()
        ));
    }
    Ok((tokens, overflows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_told_apart_from_paths() {
        assert!(looks_like_hub_id("Qwen/Qwen2.5-1.5B-Instruct"));
        assert!(looks_like_hub_id("HuggingFaceTB/SmolLM2-135M-Instruct"));
        assert!(!looks_like_hub_id("models/qwen/extra"));
        assert!(!looks_like_hub_id("./qwen"));
        assert!(!looks_like_hub_id("/abs/path"));
        assert!(!looks_like_hub_id("qwen"));
    }

    #[test]
    fn a_hub_id_gets_the_download_command() {
        let e = load_model_files("Qwen/Qwen2.5-1.5B-Instruct").unwrap_err();
        assert!(
            e.starts_with(
                "model_path Qwen/Qwen2.5-1.5B-Instruct is not a directory but looks like a Hugging Face hub id"
            ),
            "{e}"
        );
        assert!(e.contains("`hf download Qwen/Qwen2.5-1.5B-Instruct --local-dir models/Qwen2.5-1.5B-Instruct`"), "{e}");
        assert!(e.ends_with("set model_path: models/Qwen2.5-1.5B-Instruct"), "{e}");
    }
}
