//! `fine_tune.yaml`: the reference's fine-tuning configuration, sections `model`, `data`, `training` and `peft` with
//! the reference's key names (HF `TrainingArguments` names), plus our `data.truncation` policy. Defaults are the
//! reference fine_tune.py's `.get(...)` defaults where it has one, else HF `TrainingArguments` / peft defaults.

use std::path::Path;

use serde_json::Value;

use super::choices::{DecayParameters, Dtype, LrSchedulerType, Truncation};
use super::document::{deserialize, load_yaml, Ignored, IgnoredKeys, Neutral};
use super::error::ConfigError;
use super::raw::{raw_config, StrOrStrList};
use super::report_to::ReportTo;
use super::validate::{at_least, in_interval, non_negative, positive};

mod resolved;

pub use resolved::{DataArgs, FineTuneConfig, ModelArgs, PeftArgs, TrainingArgs};

/// Keys with no effect in stasc: hub download/tokenizer options, HF `datasets` preprocessing, evaluation and
/// intermediate checkpoints (STaSC never evaluates during SFT and saves the final model), and autocast flags
/// (weights already carry the dtype). `report_to` and `project_name` are acted on (`crate::track`).
const IGNORED: &[Ignored] = &[
    Ignored::new("model.tokenizer_name", Neutral::Never),
    Ignored::new("model.cache_dir", Neutral::Never),
    Ignored::new("model.trust_remote_code", Neutral::Bool(false)),
    Ignored::new("model.use_fast_tokenizer", Neutral::Never),
    Ignored::new("model.model_revision", Neutral::Str("main")),
    Ignored::new("model.token", Neutral::Never),
    Ignored::new("data.dataset_config_name", Neutral::Never),
    Ignored::new("data.validation_split_percentage", Neutral::Int(0)),
    Ignored::new("data.dataset_percentage", Neutral::Int(100)),
    Ignored::new("data.seed", Neutral::Never),
    Ignored::new("data.streaming", Neutral::Bool(false)),
    Ignored::new("data.overwrite_cache", Neutral::Never),
    Ignored::new("data.preprocessing_num_workers", Neutral::Never),
    Ignored::new("data.load_from_disk", Neutral::Bool(true)),
    Ignored::new("training.per_device_eval_batch_size", Neutral::Never),
    Ignored::new("training.save_strategy", Neutral::Str("no")),
    Ignored::new("training.save_steps", Neutral::Never),
    Ignored::new("training.evaluation_strategy", Neutral::Str("no")),
    Ignored::new("training.eval_strategy", Neutral::Str("no")),
    Ignored::new("training.eval_steps", Neutral::Never),
    Ignored::new("training.do_train", Neutral::Bool(true)),
    Ignored::new("training.do_eval", Neutral::Bool(false)),
    Ignored::new("training.bf16", Neutral::Bool(false)),
    Ignored::new("training.fp16", Neutral::Bool(false)),
];

/// Keys the STaSC loop sets itself every iteration, as the reference's stasc.py does: the base model (from
/// model_path or M_n), the dataset (this iteration's filtered pairs), the checkpoint directory and the run name.
pub const SET_BY_LOOP: &[Ignored] = &[
    Ignored::new("model.model_name_or_path", Neutral::Never),
    Ignored::new("data.dataset_name", Neutral::Never),
    Ignored::new("training.output_dir", Neutral::Never),
    Ignored::new("training.run_name", Neutral::Never),
];

raw_config! {
    /// The `model` section as written.
    pub struct RawModelArgs, keys MODEL_KEYS {
        model_name_or_path: String,
        tokenizer_name: String,
        cache_dir: String,
        trust_remote_code: bool,
        use_fast_tokenizer: bool,
        torch_dtype: String,
        model_revision: String,
        token: String,
    }
}

raw_config! {
    /// The `data` section as written.
    pub struct RawDataArgs, keys DATA_KEYS {
        dataset_name: String,
        dataset_config_name: String,
        block_size: u64,
        validation_split_percentage: u64,
        dataset_percentage: u64,
        seed: u64,
        streaming: bool,
        overwrite_cache: bool,
        preprocessing_num_workers: u64,
        load_from_disk: bool,
        truncation: String,
    }
}

raw_config! {
    /// The `training` section as written.
    pub struct RawTrainingArgs, keys TRAINING_KEYS {
        output_dir: String,
        learning_rate: f64,
        num_train_epochs: f64,
        per_device_train_batch_size: u64,
        per_device_eval_batch_size: u64,
        gradient_accumulation_steps: u64,
        gradient_checkpointing: bool,
        max_steps: i64,
        save_strategy: String,
        save_steps: u64,
        evaluation_strategy: String,
        eval_strategy: String,
        eval_steps: u64,
        weight_decay: f64,
        warmup_ratio: f64,
        warmup_steps: u64,
        lr_scheduler_type: String,
        logging_steps: u64,
        do_train: bool,
        do_eval: bool,
        report_to: StrOrStrList,
        run_name: String,
        project_name: String,
        seed: u64,
        bf16: bool,
        fp16: bool,
        max_grad_norm: f64,
        adam_beta1: f64,
        adam_beta2: f64,
        adam_epsilon: f64,
        average_tokens_across_devices: bool,
        decay_parameters: String,
        packing: bool,
        max_tokens_per_pass: u64,
        overlap_grad_sums: bool,
        shard_optimizer_state: bool,
    }
}

raw_config! {
    /// The `peft` section as written.
    pub struct RawPeftArgs, keys PEFT_KEYS {
        use_lora: bool,
        lora_rank: u64,
        lora_alpha: u64,
        lora_dropout: f64,
        lora_target_modules: Vec<String>,
        dora: bool,
    }
}

raw_config! {
    /// fine_tune.yaml as written. Its key table is [`FINE_TUNE_KEYS`].
    pub struct RawFineTuneConfig, keys FINE_TUNE_KEYS {
        model: RawModelArgs,
        data: RawDataArgs,
        training: RawTrainingArgs,
        peft: RawPeftArgs,
    }
}

impl FineTuneConfig {
    /// Loads and resolves the fine_tune YAML at `path`, with the keys it sets that we do not act on (not counting
    /// [`SET_BY_LOOP`], which only `stasc run` overrides).
    pub fn load(path: &Path) -> Result<(FineTuneConfig, IgnoredKeys), ConfigError> {
        let document = load_yaml(path, FINE_TUNE_KEYS)?;
        Self::from_document(path, &document)
    }

    /// Resolves a document already checked against [`FINE_TUNE_KEYS`].
    pub fn from_document(file: &Path, document: &Value) -> Result<(FineTuneConfig, IgnoredKeys), ConfigError> {
        let raw: RawFineTuneConfig = deserialize(file, document)?;
        let config = FineTuneConfig {
            model: resolve_model(file, raw.model.unwrap_or_default())?,
            data: resolve_data(file, raw.data.unwrap_or_default())?,
            training: resolve_training(file, raw.training.unwrap_or_default())?,
            peft: resolve_peft(file, raw.peft.unwrap_or_default())?,
        };
        Ok((config, IgnoredKeys::collect(file, document, IGNORED)))
    }
}

fn resolve_model(file: &Path, raw: RawModelArgs) -> Result<ModelArgs, ConfigError> {
    Ok(ModelArgs {
        model_name_or_path: raw.model_name_or_path,
        tokenizer_name: raw.tokenizer_name,
        cache_dir: raw.cache_dir,
        trust_remote_code: raw.trust_remote_code.unwrap_or(false),
        use_fast_tokenizer: raw.use_fast_tokenizer.unwrap_or(false),
        torch_dtype: raw
            .torch_dtype
            .as_deref()
            .map_or(Ok(Dtype::Auto), |v| Dtype::parse(file, "model.torch_dtype", v))?,
        model_revision: raw.model_revision.unwrap_or_else(|| "main".to_string()),
        token: raw.token,
    })
}

fn resolve_data(file: &Path, raw: RawDataArgs) -> Result<DataArgs, ConfigError> {
    let percentage = |key: &str, value: u64, min: u64| {
        if (min..=100).contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::invalid(file, key, format!("must be in [{min}, 100], found {value}")))
        }
    };
    Ok(DataArgs {
        dataset_name: raw.dataset_name,
        dataset_config_name: raw.dataset_config_name,
        block_size: at_least(file, "data.block_size", raw.block_size.unwrap_or(1024), 1)?,
        validation_split_percentage: percentage(
            "data.validation_split_percentage",
            raw.validation_split_percentage.unwrap_or(5),
            0,
        )?,
        dataset_percentage: percentage("data.dataset_percentage", raw.dataset_percentage.unwrap_or(100), 1)?,
        seed: raw.seed.unwrap_or(42),
        streaming: raw.streaming.unwrap_or(false),
        overwrite_cache: raw.overwrite_cache.unwrap_or(false),
        preprocessing_num_workers: raw
            .preprocessing_num_workers
            .map(|n| at_least(file, "data.preprocessing_num_workers", n, 0))
            .transpose()?,
        load_from_disk: raw.load_from_disk.unwrap_or(false),
        truncation: raw
            .truncation
            .as_deref()
            .map_or(Ok(Truncation::Drop), |v| Truncation::parse(file, "data.truncation", v))?,
    })
}

fn resolve_training(file: &Path, raw: RawTrainingArgs) -> Result<TrainingArgs, ConfigError> {
    let evaluation_strategy = match (raw.evaluation_strategy, raw.eval_strategy) {
        (Some(old), Some(new)) if old != new => {
            return Err(ConfigError::invalid(
                file,
                "training.eval_strategy",
                format!("{new:?} contradicts training.evaluation_strategy {old:?} (set one of them)"),
            ))
        }
        (old, new) => new.or(old).unwrap_or_else(|| "steps".to_string()),
    };
    let max_steps = match raw.max_steps {
        None => None,
        Some(n) if n < 0 => None,
        Some(n) => Some(at_least(file, "training.max_steps", n as u64, 1)?),
    };
    let num_train_epochs = raw.num_train_epochs.unwrap_or(3.0);
    if max_steps.is_none() {
        positive(file, "training.num_train_epochs", num_train_epochs)?;
    }
    let unit = |key: &str, value: f64, open_high: bool| in_interval(file, key, value, (0.0, false), (1.0, open_high));
    Ok(TrainingArgs {
        output_dir: raw.output_dir,
        learning_rate: positive(file, "training.learning_rate", raw.learning_rate.unwrap_or(5e-5))?,
        num_train_epochs,
        per_device_train_batch_size: at_least(
            file,
            "training.per_device_train_batch_size",
            raw.per_device_train_batch_size.unwrap_or(8),
            1,
        )?,
        per_device_eval_batch_size: at_least(
            file,
            "training.per_device_eval_batch_size",
            raw.per_device_eval_batch_size.unwrap_or(8),
            1,
        )?,
        gradient_accumulation_steps: at_least(
            file,
            "training.gradient_accumulation_steps",
            raw.gradient_accumulation_steps.unwrap_or(1),
            1,
        )?,
        gradient_checkpointing: raw.gradient_checkpointing.unwrap_or(false),
        max_steps,
        save_strategy: raw.save_strategy.unwrap_or_else(|| "steps".to_string()),
        save_steps: raw.save_steps.unwrap_or(500),
        evaluation_strategy,
        eval_steps: raw.eval_steps.unwrap_or(500),
        weight_decay: non_negative(file, "training.weight_decay", raw.weight_decay.unwrap_or(0.01))?,
        warmup_ratio: unit("training.warmup_ratio", raw.warmup_ratio.unwrap_or(0.0), false)?,
        warmup_steps: at_least(file, "training.warmup_steps", raw.warmup_steps.unwrap_or(0), 0)?,
        lr_scheduler_type: raw
            .lr_scheduler_type
            .as_deref()
            .map_or(Ok(LrSchedulerType::Linear), |v| LrSchedulerType::parse(file, "training.lr_scheduler_type", v))?,
        logging_steps: at_least(file, "training.logging_steps", raw.logging_steps.unwrap_or(10), 1)?,
        do_train: raw.do_train.unwrap_or(true),
        do_eval: raw.do_eval.unwrap_or(true),
        report_to: {
            let names = raw.report_to.map_or_else(|| vec!["none".to_string()], StrOrStrList::into_vec);
            ReportTo::parse_all(file, "training.report_to", &names)?;
            names
        },
        run_name: raw.run_name.unwrap_or_else(|| "experiment".to_string()),
        project_name: raw.project_name,
        seed: raw.seed.unwrap_or(42),
        bf16: raw.bf16.unwrap_or(false),
        fp16: raw.fp16.unwrap_or(false),
        max_grad_norm: non_negative(file, "training.max_grad_norm", raw.max_grad_norm.unwrap_or(1.0))?,
        adam_beta1: unit("training.adam_beta1", raw.adam_beta1.unwrap_or(0.9), true)?,
        adam_beta2: unit("training.adam_beta2", raw.adam_beta2.unwrap_or(0.999), true)?,
        adam_epsilon: positive(file, "training.adam_epsilon", raw.adam_epsilon.unwrap_or(1e-8))?,
        average_tokens_across_devices: raw.average_tokens_across_devices,
        decay_parameters: raw
            .decay_parameters
            .as_deref()
            .map(|v| DecayParameters::parse(file, "training.decay_parameters", v))
            .transpose()?,
        packing: raw.packing.unwrap_or(true),
        max_tokens_per_pass: at_least(
            file,
            "training.max_tokens_per_pass",
            raw.max_tokens_per_pass.unwrap_or(8192),
            1,
        )?,
        overlap_grad_sums: raw.overlap_grad_sums.unwrap_or(false),
        shard_optimizer_state: raw.shard_optimizer_state.unwrap_or(true),
    })
}

fn resolve_peft(file: &Path, raw: RawPeftArgs) -> Result<PeftArgs, ConfigError> {
    let peft = PeftArgs {
        use_lora: raw.use_lora.unwrap_or(false),
        lora_rank: at_least(file, "peft.lora_rank", raw.lora_rank.unwrap_or(8), 1)?,
        lora_alpha: at_least(file, "peft.lora_alpha", raw.lora_alpha.unwrap_or(16), 1)?,
        lora_dropout: in_interval(
            file,
            "peft.lora_dropout",
            raw.lora_dropout.unwrap_or(0.1),
            (0.0, false),
            (1.0, true),
        )?,
        lora_target_modules: raw.lora_target_modules.unwrap_or_default(),
        dora: raw.dora.unwrap_or(false),
    };
    if peft.use_lora && peft.lora_target_modules.is_empty() {
        return Err(ConfigError::invalid(
            file,
            "peft.lora_target_modules",
            "must list module names when peft.use_lora is true",
        ));
    }
    if peft.dora && !peft.use_lora {
        return Err(ConfigError::invalid(file, "peft.dora", "needs peft.use_lora: true (DoRA is a kind of LoRA)"));
    }
    Ok(peft)
}

#[cfg(test)]
mod tests;
