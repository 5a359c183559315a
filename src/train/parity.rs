//! Parity with HF Trainer: replays a case recorded by scripts/parity/train_parity.py (a tiny random Qwen2, a fixed
//! set of token-id examples, HF hyperparameters, optionally a PEFT LoRA/DoRA initialisation) through stasc's loop,
//! and compares the per-step loss, learning rate and gradient norm and the trained tensors after the last step.
//!
//! The single-process cases put all their examples in each optimiser step (batch x accumulation = examples), so the
//! order HF's sampler draws them in does not change the result, only the floating-point summation order. The
//! data-parallel cases (scripts/parity/train_parity_ddp.py: transformers 4.47.1, 2 DDP processes) have HF read the
//! examples in file order, so which rank sees which example is known; stasc places them where its own shuffle puts
//! them in that order, and runs the ranks on one device (the same arithmetic as one device per rank, see
//! tests/it/data_parallel.rs).
//!
//! Weight-decay groups: a case names the `decay_parameters` rule that forms its transformers' groups
//! (`transformers_4_47_1` for the 4.47.1 cases; the single-process cases, recorded with later transformers, have none
//! and mean `names`), and stasc trains with that rule unless the caller forces another ([`run_case_with`]). A case
//! that records the names transformers decayed (`reference.decay_parameter_names`) also has stasc's decay group
//! compared with them.
//!
//! Tolerances (f32 on either side): losses and gradient norms agree to 1e-5 relative (kernels and reduction order
//! differ: fused RMSNorm, causal SDPA without a mask, the LM head on target rows only; observed ~1e-6); the learning
//! rates to 1e-12 (same formula). Trained tensors: one Adam step moves an element by lr * m/(sqrt(v)+eps), about lr
//! whatever the gradient's size, except where the gradient is near eps; there f32 noise of ~1e-6 relative in the
//! gradient changes the step by a fraction of lr. So every element must agree within 5% of the largest lr, and at
//! most 0.1% of all elements may differ by more than 0.1% of it (observed on the CPU: 2 of 112,704 elements above
//! 1e-6 for lr 1e-3). A real error moves whole tensors: a missing weight decay (lr * wd * |w| ~ 1e-5 here), a wrong
//! clip or loss scale (a different step on every element) fails the second rule.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use super::batching::epoch_batches;
use super::error::TrainError;
use super::lora::{LoraAdapters, LoraSpec};
use super::optim::is_decayed;
use super::tokenize::TokenizedExample;
use super::trainer::{train_examples, Hyperparameters};
use crate::config::choices::DecayParameters;
use crate::config::LrSchedulerType;
use crate::model::{load_weights, DtypeSpec, LoadOptions, ModelDevice};

#[derive(Debug, Deserialize)]
struct CaseHp {
    learning_rate: f64,
    num_train_epochs: f64,
    per_device_train_batch_size: usize,
    gradient_accumulation_steps: usize,
    weight_decay: f64,
    warmup_ratio: f64,
    lr_scheduler_type: String,
    max_grad_norm: f64,
    adam_beta1: f64,
    adam_beta2: f64,
    adam_epsilon: f64,
}

#[derive(Debug, Deserialize)]
struct CaseLora {
    r: usize,
    lora_alpha: usize,
    lora_dropout: f64,
    target_modules: Vec<String>,
    use_dora: bool,
}

#[derive(Debug, Deserialize)]
struct CaseExample {
    input_ids: Vec<i64>,
    labels: Vec<i64>,
}

#[derive(Debug, Deserialize)]
struct CaseReference {
    losses: Vec<f64>,
    grad_norms: Vec<f64>,
    learning_rates: Vec<f64>,
    /// The trainable parameters transformers put in its weight-decay group (recorded by the 4.47.1 cases).
    #[serde(default)]
    decay_parameter_names: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct Case {
    hyperparameters: CaseHp,
    /// Data-parallel processes of the recording (accelerate's `num_processes`); cases without it ran on one.
    #[serde(default = "one_process")]
    num_processes: usize,
    /// HF's `average_tokens_across_devices`; only multi-process cases record it, and on one it changes nothing.
    #[serde(default = "whole_step")]
    average_tokens_across_devices: bool,
    /// The stasc rule that forms the recording's decay groups; cases without it were recorded with later
    /// transformers, whose groups are `names`.
    #[serde(default)]
    decay_parameters: Option<String>,
    /// `sequential`: HF consumed the examples in file order (a SequentialSampler), so batch j went to rank j % R.
    #[serde(default)]
    sampler: Option<String>,
    lora: Option<CaseLora>,
    examples: Vec<CaseExample>,
    reference: CaseReference,
}

fn one_process() -> usize {
    1
}

fn whole_step() -> bool {
    true
}

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq)]
pub struct ParityReport {
    /// Case name.
    pub case: String,
    /// One line per compared quantity.
    pub lines: Vec<String>,
    /// The comparisons that failed their tolerance.
    pub failures: Vec<String>,
    /// Every compared tensor's largest |stasc - HF| after the last step, by name.
    pub tensor_diffs: Vec<(String, f64)>,
}

fn schedule_kind(name: &str) -> Result<LrSchedulerType, TrainError> {
    LrSchedulerType::SPELLINGS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, k)| *k)
        .ok_or_else(|| TrainError::Invalid(format!("unknown lr_scheduler_type {name:?} in the parity case")))
}

fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>, TrainError> {
    Ok(Tensor::read_safetensors(path)
        .map_err(TrainError::torch(format!("reading {}", path.display())))?
        .into_iter()
        .collect())
}

/// Runs case `name` of the parity directory `dir` (files `name.json`, `name.safetensors`, for adapters
/// `name_init.safetensors`, and the base model in `model/`) on `device` in f32; with `out`, also writes the trained
/// model there as an HF directory, with `logits.safetensors` (its logits on the case's first example) beside it.
pub fn run_case(dir: &Path, name: &str, device: ModelDevice, out: Option<&Path>) -> Result<ParityReport, TrainError> {
    run_case_with(dir, name, device, out, None)
}

/// [`run_case`] with stasc's decay rule forced to `decay_parameters` instead of the case's (none = the case's), to
/// show what the other rule would have trained.
pub fn run_case_with(
    dir: &Path,
    name: &str,
    device: ModelDevice,
    out: Option<&Path>,
    decay_parameters: Option<DecayParameters>,
) -> Result<ParityReport, TrainError> {
    let case_path = dir.join(format!("{name}.json"));
    let text = std::fs::read_to_string(&case_path).map_err(TrainError::io(&case_path))?;
    let case: Case = serde_json::from_str(&text).map_err(|source| TrainError::Json { path: case_path, source })?;
    let recorded = match case.decay_parameters.as_deref() {
        None => DecayParameters::Names,
        Some(rule) => DecayParameters::SPELLINGS
            .iter()
            .find(|(n, _)| *n == rule)
            .map(|(_, r)| *r)
            .ok_or_else(|| TrainError::Invalid(format!("unknown decay_parameters {rule:?} in the parity case")))?,
    };
    let decay_parameters = decay_parameters.unwrap_or(recorded);
    let h = &case.hyperparameters;
    let hp = Hyperparameters {
        learning_rate: h.learning_rate,
        num_train_epochs: h.num_train_epochs,
        max_steps: None,
        per_device_train_batch_size: h.per_device_train_batch_size,
        gradient_accumulation_steps: h.gradient_accumulation_steps,
        weight_decay: h.weight_decay,
        decay_parameters,
        warmup_ratio: h.warmup_ratio,
        warmup_steps: 0,
        lr_scheduler_type: schedule_kind(&h.lr_scheduler_type)?,
        max_grad_norm: h.max_grad_norm,
        adam_beta1: h.adam_beta1,
        adam_beta2: h.adam_beta2,
        adam_epsilon: h.adam_epsilon,
        seed: 0,
        gradient_checkpointing: false,
        group_by_length: false,
        data_parallel_ranks: case.num_processes.max(1),
        average_tokens_across_devices: case.average_tokens_across_devices,
        packing: true,
        max_tokens_per_pass: 8192,
        overlap_grad_sums: false,
        sums_in_graphs: super::graphed::sums_in_graphs(),
        shard_optimizer_state: true,
    };
    let model_dir = dir.join("model");
    let opts = LoadOptions { device, dtype: DtypeSpec::F32, max_model_len: None };
    let mut model = load_weights(&model_dir, &opts)?;
    let lora = match &case.lora {
        None => None,
        Some(l) => {
            let spec = LoraSpec {
                rank: l.r,
                alpha: l.lora_alpha,
                dropout: l.lora_dropout,
                target_modules: l.target_modules.clone(),
                dora: l.use_dora,
            };
            let adapters = LoraAdapters::attach(&mut model, &spec)?;
            adapters.load_peft_tensors(&read_safetensors(&dir.join(format!("{name}_init.safetensors")))?)?;
            Some(adapters)
        }
    };
    let examples: Vec<TokenizedExample> = case
        .examples
        .iter()
        .map(|e| TokenizedExample { input_ids: e.input_ids.clone(), labels: e.labels.clone() })
        .collect();
    let examples = match case.sampler.as_deref() {
        None => examples,
        Some("sequential") => in_file_order(examples, &hp)?,
        Some(other) => return Err(TrainError::Invalid(format!("unknown sampler {other:?} in the parity case"))),
    };
    let mut report =
        ParityReport { case: name.to_string(), lines: Vec::new(), failures: Vec::new(), tensor_diffs: Vec::new() };
    if let Some(theirs) = &case.reference.decay_parameter_names {
        let trainable: Vec<String> = match &lora {
            None => model.named_weights().into_keys().collect(),
            Some(a) => a.named_parameters().into_iter().map(|(n, _)| n).collect(),
        };
        let architecture = model.config().architecture;
        let mut ours: Vec<&String> =
            trainable.iter().filter(|n| is_decayed(decay_parameters, architecture, n)).collect();
        let mut theirs: Vec<&String> = theirs.iter().collect();
        ours.sort();
        theirs.sort();
        report.lines.push(format!(
            "decay group ({decay_parameters}): {} of {} parameters",
            ours.len(),
            trainable.len()
        ));
        if ours != theirs {
            let only = |a: &[&String], b: &[&String]| {
                a.iter().filter(|n| !b.contains(n)).map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
            };
            report.failures.push(format!(
                "decay group ({decay_parameters}) differs from transformers': only stasc decays [{}], only \
                 transformers decays [{}]",
                only(&ours, &theirs),
                only(&theirs, &ours)
            ));
        }
    }
    let summary = train_examples(&mut model, lora.as_ref(), &examples, 0, &hp, &mut |_| Ok(()))?;

    let r = &case.reference;
    let steps = &summary.steps;
    if steps.len() != r.losses.len() {
        report.failures.push(format!("{} steps ran, the reference has {}", steps.len(), r.losses.len()));
    }
    for (i, s) in steps.iter().enumerate().take(r.losses.len()) {
        check(&mut report, &format!("step {} loss", i + 1), s.loss, r.losses[i], 1e-5);
        check(&mut report, &format!("step {} lr", i + 1), s.lr, r.learning_rates[i], 1e-12);
        check(&mut report, &format!("step {} grad_norm", i + 1), s.grad_norm, r.grad_norms[i], 1e-5);
    }
    let expected = read_safetensors(&dir.join(format!("{name}.safetensors")))?;
    let trained: HashMap<String, Tensor> = match &lora {
        None => model.named_weights(),
        Some(a) => a.peft_state_dict().into_iter().collect(),
    };
    let mut names: Vec<&String> = expected.keys().collect();
    names.sort();
    let max_lr = r.learning_rates.iter().copied().fold(0.0f64, f64::max);
    let (tol_max, tol_bulk) = (0.05 * max_lr, 1e-3 * max_lr);
    let (mut worst, mut above, mut elements) = ((0.0f64, String::new()), 0i64, 0i64);
    for key in names {
        let Some(ours) = trained.get(key) else {
            report.failures.push(format!("{key}: not trained by stasc"));
            continue;
        };
        let abs = ours
            .f_to_device(Device::Cpu)
            .and_then(|o| o.f_to_kind(Kind::Double))
            .and_then(|o| o.f_sub(&expected[key].to_kind(Kind::Double)))
            .and_then(|d| d.f_abs())
            .map_err(TrainError::torch(format!("comparing {key}")))?;
        let diff = abs.max().double_value(&[]);
        report.tensor_diffs.push((key.clone(), diff));
        above += abs.gt(tol_bulk).sum(Kind::Int64).int64_value(&[]);
        elements += abs.numel() as i64;
        if diff > worst.0 {
            worst = (diff, key.clone());
        }
        if diff > tol_max {
            report.failures.push(format!("{key}: max |diff| {diff:.3e} > {tol_max:.1e}"));
        }
    }
    report.lines.push(format!(
        "{} tensors after {} steps: max |diff| {:.3e} ({}, tolerance {tol_max:.1e}); {above} of {elements} elements \
         differ by more than {tol_bulk:.1e}",
        expected.len(),
        steps.len(),
        worst.0,
        worst.1,
    ));
    if above as f64 > 1e-3 * elements as f64 {
        report
            .failures
            .push(format!("{above} of {elements} elements differ by more than {tol_bulk:.1e} (at most 0.1%)"));
    }
    if expected.len() != trained.len() {
        report.failures.push(format!("stasc trained {} tensors, the reference has {}", trained.len(), expected.len()));
    }
    if let Some(out) = out {
        write_trained(&model_dir, &model, lora.as_ref(), &examples[0], out)?;
    }
    Ok(report)
}

/// Places `examples` so that stasc's first-epoch shuffle draws them in file order, as HF's SequentialSampler did:
/// the ranks then see the same examples on both sides. Only one epoch can be matched (each epoch reshuffles).
fn in_file_order(examples: Vec<TokenizedExample>, hp: &Hyperparameters) -> Result<Vec<TokenizedExample>, TrainError> {
    if hp.num_train_epochs > 1.0 {
        return Err(TrainError::Invalid("a sequential parity case must be one epoch".into()));
    }
    let lengths: Vec<usize> = examples.iter().map(TokenizedExample::len).collect();
    let order = epoch_batches(&lengths, hp.per_device_train_batch_size, hp.seed, 0, hp.group_by_length).concat();
    let mut placed: Vec<Option<TokenizedExample>> = vec![None; examples.len()];
    for (example, &slot) in examples.into_iter().zip(&order) {
        placed[slot] = Some(example);
    }
    placed
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| TrainError::Invalid("shuffle is not a permutation".into()))
}

fn check(report: &mut ParityReport, what: &str, ours: f64, theirs: f64, rel: f64) {
    let diff = (ours - theirs).abs();
    report.lines.push(format!("{what}: stasc {ours:.9e} HF {theirs:.9e} |diff| {diff:.2e}"));
    if diff > rel * theirs.abs().max(1e-30) && diff > 1e-30 {
        report.failures.push(format!("{what}: stasc {ours} vs HF {theirs} (relative tolerance {rel:.0e})"));
    }
}

/// Writes the trained model (adapters merged) as an HF directory and its logits on `example`.
fn write_trained(
    base: &Path,
    model: &crate::model::CausalLm,
    lora: Option<&LoraAdapters>,
    example: &TokenizedExample,
    out: &Path,
) -> Result<(), TrainError> {
    let model_dir: PathBuf = out.join("model");
    std::fs::create_dir_all(&model_dir).map_err(TrainError::io(&model_dir))?;
    let mut weights = model.named_weights();
    if let Some(a) = lora {
        for (name, merged) in a.merged_weights(model)? {
            weights.insert(name, merged);
        }
    }
    let mut weights: Vec<_> = weights.into_iter().collect();
    weights.sort_by(|a, b| a.0.cmp(&b.0));
    super::checkpoint::write_model_dir(base, &model_dir, &weights)?;
    let ids = Tensor::from_slice(&example.input_ids).view([1, -1]).to_device(model.device());
    let logits = tch::no_grad(|| model.forward_logits(&ids))?;
    super::checkpoint::write_safetensors(
        &out.join("logits.safetensors"),
        &[("input_ids".into(), ids), ("logits".into(), logits)],
    )
}
