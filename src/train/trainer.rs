//! The training loop over tokenised examples: HF Trainer's epoch/step structure (seeded shuffle per epoch, micro-
//! batches accumulated into optimiser steps, the last step of an epoch taking what is left, stop at the total step
//! count), the loss normalised by label tokens, clipping, AdamW and the learning-rate schedule.
//!
//! Data parallelism is part of the loop, not a wrapper: an optimiser step takes `gradient_accumulation_steps x
//! ranks` micro-batches, micro-batch j belongs to rank `j % ranks` (accelerate's split) and runs on that rank's
//! worker, every micro-batch's summed token loss is divided by a denominator (below), and the workers sum their
//! gradients before clipping; every worker applies the same update to its replica. One device is one worker whose
//! sum is a no-op. Two normalisations, HF's `average_tokens_across_devices`:
//!
//! - whole-step (true, our default): every micro-batch is divided by the label tokens of the whole step, so the
//!   summed gradient is the single-device gradient of the same micro-batches. A token weighs the same whichever rank
//!   it lands on, so a global batch gives the same loss and gradient however it is split into ranks
//!   (`num_processes`) and accumulation steps, and so on any number of GPUs (what HF changed to later, transformers
//!   issue 34242);
//! - per-rank (false, transformers 4.47.1's default, so the reference's and the paper protocol's): each rank
//!   divides by its own label tokens T_r and DDP/FSDP average the R ranks' gradients, `(1/R) sum_r S_r / T_r` with
//!   S_r the summed token loss of rank r's micro-batches. A micro-batch is divided by `R x T_r`, so the same sum
//!   gives that mean. A token on a rank with few label tokens weighs more, so the result depends on how examples
//!   fall on ranks. R counts the ranks with label tokens in the step, which is all of them except, at the end of
//!   an epoch, ranks left without examples ([`Hyperparameters::loss_denominators`]).
//!
//! The step's reported loss is the sum of the same divided losses, so it is the loss the gradient is of: the step's
//! mean token loss (whole-step) or the mean over ranks of each rank's mean token loss (per-rank, what HF logs). With
//! one rank both are the mean token loss of the step.

use std::time::Instant;

use tch::{Kind, Tensor};

use super::batching::{epoch_batches, MicroBatch, CUDA_PAD_MULTIPLE};
use super::error::TrainError;
use super::graphed::{plan_summing, GraphedPasses, SummingPlan};
use super::log::StepRecord;
use super::lora::LoraAdapters;
use super::optim::{AdamW, AdamWConfig, Shard};
use super::overlap::GradReducer;
use super::packed::{packed_batch, packed_batch_shaped, PassShape};
use super::plan::{plan_passes, PlannedExample};
use super::profile::Profile;
use super::readback::Readback;
use super::schedule::{LrSchedule, StepPlan};
use super::step::{forward_backward, PassOptions};
use super::tokenize::TokenizedExample;
use crate::config::choices::DecayParameters;
use crate::config::{LrSchedulerType, TrainingArgs};
use crate::dist::{Group, Topology, Transport};
use crate::model::CausalLm;

/// The hyperparameters the loop uses (HF `TrainingArguments` names), plus length grouping.
#[derive(Debug, Clone, PartialEq)]
pub struct Hyperparameters {
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Passes over the data (when max_steps is none).
    pub num_train_epochs: f64,
    /// Total optimiser steps, overriding epochs.
    pub max_steps: Option<usize>,
    /// Examples per micro-batch.
    pub per_device_train_batch_size: usize,
    /// Micro-batches per optimiser step.
    pub gradient_accumulation_steps: usize,
    /// AdamW decoupled weight decay (decay group only).
    pub weight_decay: f64,
    /// Which parameters form the decay group (fine_tune.yaml `training.decay_parameters`, see [`super::optim`]).
    pub decay_parameters: DecayParameters,
    /// Warm-up as a fraction of the total steps.
    pub warmup_ratio: f64,
    /// Warm-up steps (wins over the ratio when > 0).
    pub warmup_steps: usize,
    /// Decay after warm-up.
    pub lr_scheduler_type: LrSchedulerType,
    /// Global gradient-norm clip (0 = none).
    pub max_grad_norm: f64,
    /// AdamW beta1.
    pub adam_beta1: f64,
    /// AdamW beta2.
    pub adam_beta2: f64,
    /// AdamW eps.
    pub adam_epsilon: f64,
    /// Seed of shuffling, adapter init and dropout.
    pub seed: u64,
    /// Recompute activations in backward.
    pub gradient_checkpointing: bool,
    /// Batch examples of similar length together (HF `group_by_length`).
    pub group_by_length: bool,
    /// Data-parallel ranks (accelerate's `num_processes`): an optimiser step takes `per_device_train_batch_size x
    /// ranks x gradient_accumulation_steps` examples.
    pub data_parallel_ranks: usize,
    /// Whole-step (true) or per-rank (false) loss normalisation across ranks (HF `average_tokens_across_devices`,
    /// see the module docs).
    pub average_tokens_across_devices: bool,
    /// Run each worker's examples of a step packed into as few passes as `max_tokens_per_pass` allows (false: one
    /// padded pass per micro-batch).
    pub packing: bool,
    /// Token budget of one packed pass.
    pub max_tokens_per_pass: usize,
    /// Data-parallel workers sum each layer's gradients while backward goes on ([`super::overlap`]; false: one sum
    /// of every gradient after backward). The sums are the same to the last bit either way.
    pub overlap_grad_sums: bool,
    /// With `overlap_grad_sums` between CUDA devices, the sums are recorded into the CUDA graphs of the passes they
    /// overlap ([`super::graphed`]). Built from `STASC_GRAPHED_SUMS` ([`super::graphed::sums_in_graphs`]).
    pub sums_in_graphs: bool,
    /// Data-parallel workers each keep and update 1/workers of the optimiser state (ZeRO stage 1, see
    /// [`super::overlap`]); the update is the same, the clipping norm is summed over the workers' parts.
    pub shard_optimizer_state: bool,
}

impl Hyperparameters {
    /// The loop's settings from a resolved `training` section; `group_by_length` is stasc's own switch. Keys a run
    /// config fills from the protocol and fine_tune.yaml alone leaves unset take stasc's defaults: whole-step
    /// `average_tokens_across_devices`, `names` decay parameters.
    pub fn from_training_args(t: &TrainingArgs, group_by_length: bool) -> Self {
        Hyperparameters {
            learning_rate: t.learning_rate,
            num_train_epochs: t.num_train_epochs,
            max_steps: t.max_steps,
            per_device_train_batch_size: t.per_device_train_batch_size,
            gradient_accumulation_steps: t.gradient_accumulation_steps,
            weight_decay: t.weight_decay,
            decay_parameters: t.decay_parameters.unwrap_or(DecayParameters::Names),
            warmup_ratio: t.warmup_ratio,
            warmup_steps: t.warmup_steps,
            lr_scheduler_type: t.lr_scheduler_type,
            max_grad_norm: t.max_grad_norm,
            adam_beta1: t.adam_beta1,
            adam_beta2: t.adam_beta2,
            adam_epsilon: t.adam_epsilon,
            seed: t.seed,
            gradient_checkpointing: t.gradient_checkpointing,
            group_by_length,
            data_parallel_ranks: 1,
            average_tokens_across_devices: t.average_tokens_across_devices.unwrap_or(true),
            packing: t.packing,
            max_tokens_per_pass: t.max_tokens_per_pass,
            overlap_grad_sums: t.overlap_grad_sums,
            sums_in_graphs: super::graphed::sums_in_graphs(),
            shard_optimizer_state: t.shard_optimizer_state,
        }
    }

    /// Micro-batches per optimiser step over all ranks.
    pub fn micro_batches_per_step(&self) -> usize {
        self.gradient_accumulation_steps.max(1) * self.data_parallel_ranks.max(1)
    }

    /// What each micro-batch's summed token loss is divided by, for a step whose micro-batches have `targets` label
    /// tokens: the step's label tokens (whole-step), or, per-rank, the label tokens of the micro-batch's rank
    /// (micro-batch j belongs to rank `j % ranks`) times the number of ranks that have label tokens in this step.
    /// Never below 1, so empty micro-batches stay zero.
    ///
    /// Per-rank counts only ranks with label tokens: with all ranks busy (every step but an epoch's last, and
    /// always in HF, whose sampler pads the last step with repeated examples) that is all ranks; a rank left
    /// without examples at the end of an epoch then leaves the mean, instead of halving the step (0/0 in HF).
    pub fn loss_denominators(&self, targets: &[usize]) -> Vec<f64> {
        let ranks = self.data_parallel_ranks.max(1);
        if self.average_tokens_across_devices {
            let step: usize = targets.iter().sum();
            return vec![step.max(1) as f64; targets.len()];
        }
        let mut per_rank = vec![0usize; ranks];
        for (m, &t) in targets.iter().enumerate() {
            per_rank[m % ranks] += t;
        }
        let busy = per_rank.iter().filter(|&&t| t > 0).count().max(1);
        (0..targets.len()).map(|m| (busy * per_rank[m % ranks].max(1)) as f64).collect()
    }

    /// The step arithmetic for `examples` examples.
    pub fn plan(&self, examples: usize) -> StepPlan {
        StepPlan::new(
            examples,
            self.per_device_train_batch_size,
            self.micro_batches_per_step(),
            self.num_train_epochs,
            self.max_steps,
        )
    }

    /// The learning-rate schedule for a run of `total_steps`.
    pub fn schedule(&self, total_steps: usize) -> LrSchedule {
        LrSchedule {
            kind: self.lr_scheduler_type,
            base_lr: self.learning_rate,
            warmup_steps: LrSchedule::warmup_steps(total_steps, self.warmup_steps, self.warmup_ratio),
            total_steps,
        }
    }
}

/// Totals of a finished loop.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopSummary {
    /// One record per optimiser step.
    pub steps: Vec<StepRecord>,
    /// Real tokens trained on.
    pub tokens: usize,
    /// Tokens including padding.
    pub padded_tokens: usize,
    /// Wall time of all steps.
    pub seconds: f64,
    /// Trained elements.
    pub trainable_params: i64,
}

impl LoopSummary {
    /// Real tokens per second over the whole run.
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }
}

/// Trains `model` (all weights, or only `lora`'s adapters) on `examples` on its own device, as the only worker of
/// a job with `hp.data_parallel_ranks` ranks; `on_step` sees every step as it ends.
pub fn train_examples(
    model: &mut CausalLm,
    lora: Option<&LoraAdapters>,
    examples: &[TokenizedExample],
    pad_id: i64,
    hp: &Hyperparameters,
    on_step: &mut (dyn FnMut(&StepRecord) -> Result<(), TrainError> + Send),
) -> Result<LoopSummary, TrainError> {
    let topology = Topology::new(hp.data_parallel_ranks.max(1), vec![model.device()])?;
    let group = Group::new(&topology.devices, Transport::Host)?;
    let worker = Worker { group: &group, index: 0, topology: &topology };
    let on_step = std::sync::Mutex::new(on_step);
    train_replica(model, lora, examples, pad_id, hp, &worker, Some(&on_step))
}

/// One worker of a data-parallel job: its group, its index, and the job's topology.
#[derive(Debug, Clone, Copy)]
pub struct Worker<'a> {
    /// The job's workers.
    pub group: &'a Group,
    /// This worker (index into `topology.devices`).
    pub index: usize,
    /// Ranks and devices of the job.
    pub topology: &'a Topology,
}

/// The step callback, shared by the workers; worker 0 calls it.
pub type StepCallback<'a> = std::sync::Mutex<&'a mut (dyn FnMut(&StepRecord) -> Result<(), TrainError> + Send)>;

/// Trains this worker's replica `model` (on `worker`'s device) on its share of every step of `examples`. Every
/// worker calls it with the same examples and hyperparameters; worker 0 reports steps to `on_step`.
pub fn train_replica(
    model: &mut CausalLm,
    lora: Option<&LoraAdapters>,
    examples: &[TokenizedExample],
    pad_id: i64,
    hp: &Hyperparameters,
    worker: &Worker<'_>,
    on_step: Option<&StepCallback<'_>>,
) -> Result<LoopSummary, TrainError> {
    if worker.topology.data_parallel_ranks != hp.data_parallel_ranks.max(1) {
        return Err(TrainError::Invalid(format!(
            "the job has {} ranks but the hyperparameters ask for {}",
            worker.topology.data_parallel_ranks, hp.data_parallel_ranks
        )));
    }
    crate::model::device::set_current_device(model.device());
    let mut params = match lora {
        Some(l) => l.named_parameters(),
        None => {
            model.var_store_mut().unfreeze();
            model.named_weights().into_iter().collect()
        }
    };
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let adam =
        AdamWConfig { beta1: hp.adam_beta1, beta2: hp.adam_beta2, eps: hp.adam_epsilon, weight_decay: hp.weight_decay };
    let group = worker.group;
    let shard = (group.workers() > 1 && hp.shard_optimizer_state)
        .then_some(Shard { rank: worker.index, workers: group.workers() });
    let mut opt = AdamW::new(params, adam, hp.decay_parameters, model.config().architecture, shard)?;
    // Replicas start from worker 0's weights (adapter initialisation draws random numbers per device).
    tch::no_grad(|| group.broadcast(worker.index, opt.parameter_buffer(), 0))?;
    if let Some(l) = lora {
        l.set_training(true);
    }
    let plan = hp.plan(examples.len());
    let schedule = hp.schedule(plan.total_steps);
    let lengths: Vec<usize> = examples.iter().map(TokenizedExample::len).collect();
    let chunk = PassOptions::chunk_rows_for(model.config().vocab_size);
    let uses_dropout = lora.is_some_and(|l| l.spec.dropout > 0.0);
    let device = model.device();
    let pad_multiple = if device.is_cuda() { CUDA_PAD_MULTIPLE } else { 1 };
    let max_len = model.max_model_len() as usize;
    let mut summary =
        LoopSummary { steps: Vec::new(), tokens: 0, padded_tokens: 0, seconds: 0.0, trainable_params: opt.numel() };
    let per_step = hp.micro_batches_per_step();
    // Between workers, gradients are summed bucket by bucket: during backward, or all after it when not
    // overlapped (a sharded optimiser needs the buckets either way).
    let mut reducer = if group.workers() > 1 && (hp.overlap_grad_sums || opt.is_sharded()) {
        Some(GradReducer::new(group, worker.index, &opt, device))
    } else {
        None
    };
    // With overlapped sums, a sharded optimiser's gathers are deferred into the next forward (overlap.rs).
    let gathers = match &reducer {
        Some(r) if hp.overlap_grad_sums && opt.is_sharded() => r.gather_events(),
        _ => None,
    };
    let mut profile = Profile::from_env(device, worker.index == 0);
    // CUDA graphs of packed passes (graphed.rs), where every pass of a step is a plain packed full-model pass;
    // with overlapped sums only when the sums go into the graphs too.
    let sums_in_graphs = hp.overlap_grad_sums && hp.sums_in_graphs;
    let mut graphs = (hp.packing && lora.is_none() && !hp.gradient_checkpointing)
        .then(|| (!hp.overlap_grad_sums || sums_in_graphs).then(|| GraphedPasses::new(model)).flatten())
        .flatten();
    let torch = |what: &'static str| TrainError::torch(what);
    // The last queued step, whose loss and norm are read back once the next step is queued (see readback.rs).
    let mut in_flight: Option<QueuedStep> = None;
    let mut queued_steps = 0usize;
    'epochs: for epoch in 0..plan.epochs {
        let batches = epoch_batches(&lengths, hp.per_device_train_batch_size, hp.seed, epoch, hp.group_by_length);
        for group_batches in batches.chunks(per_step) {
            if queued_steps >= plan.total_steps {
                break 'epochs;
            }
            let started = Instant::now();
            let step = queued_steps;
            profile.begin(step);
            // Every worker knows the whole step: the denominators and token count cover all ranks.
            let targets: Vec<usize> =
                group_batches.iter().map(|b| b.iter().map(|&i| examples[i].num_targets()).sum()).collect();
            let denominators = hp.loss_denominators(&targets);
            let tokens: usize = group_batches.iter().flatten().map(|&i| lengths[i]).sum();
            let mine = &worker.topology.step_assignment(group_batches.len())[worker.index];
            let mut loss_sum = Tensor::f_zeros([], (Kind::Float, device)).map_err(torch("loss accumulator"))?;
            // The worker's packed passes: its examples of the step, each with its micro-batch's denominator, in step
            // order; with graphs, each pass's shape bucket (one graph per bucket).
            let packed: Vec<Vec<PlannedExample>> = if hp.packing {
                let items: Vec<PlannedExample> = mine
                    .iter()
                    .flat_map(|&m| {
                        let (denominator, lengths) = (denominators[m], &lengths);
                        group_batches[m].iter().map(move |&i| PlannedExample {
                            example: i,
                            len: lengths[i],
                            denominator,
                        })
                    })
                    .collect();
                plan_passes(&items, hp.max_tokens_per_pass.max(1))
            } else {
                Vec::new()
            };
            let mut shapes: Vec<PassShape> = match graphs {
                Some(_) => packed.iter().map(|pass| PassShape::of(pass, examples)).collect(),
                None => Vec::new(),
            };
            // How the workers run their last passes with the sums in the graphs, decided by every worker every step
            // (also one without a pass), the same everywhere (see graphed.rs); the last pass is then padded to the
            // step's joint shape.
            let summing_step = sums_in_graphs && reducer.is_some();
            let plan = if summing_step {
                let nccl = reducer.as_ref().is_some_and(GradReducer::records_in_graphs);
                let bound = || opt.gradients_bound();
                plan_summing(graphs.as_mut(), shapes.last().copied(), nccl, bound, group, worker.index)?
            } else {
                SummingPlan::eager()
            };
            if let (Some(last), Some(joint)) = (shapes.last_mut(), plan.shape()) {
                *last = joint;
            }
            let passes = if hp.packing {
                packed
                    .iter()
                    .enumerate()
                    .map(|(k, pass)| match shapes.get(k) {
                        Some(&shape) => {
                            Ok((packed_batch_shaped(pass, examples, pad_id, shape, device)?, 1.0, Some(shape)))
                        }
                        None => Ok((packed_batch(pass, examples, pad_id, pad_multiple, device)?, 1.0, None)),
                    })
                    .collect::<Result<Vec<_>, TrainError>>()?
            } else {
                mine.iter()
                    .map(|&m| {
                        let rows: Vec<&TokenizedExample> = group_batches[m].iter().map(|&i| &examples[i]).collect();
                        Ok((MicroBatch::new(&rows, pad_id, pad_multiple, max_len, device)?, denominators[m], None))
                    })
                    .collect::<Result<Vec<_>, TrainError>>()?
            };
            let pass_count = passes.len();
            let mut sums_done = false;
            for (p, (batch, denominator, shape)) in passes.into_iter().enumerate() {
                // The step's gradients are complete layer by layer only during its last pass.
                let overlapped = reducer.as_mut().filter(|_| hp.overlap_grad_sums && p + 1 == pass_count);
                // Unpacked, pass p is micro-batch mine[p], whose dropout seed is the one it always had.
                let index = if hp.packing { p } else { mine[p] };
                let opts = PassOptions {
                    gathers: gathers.as_ref(),
                    gradient_checkpointing: hp.gradient_checkpointing,
                    head_chunk_rows: chunk,
                    dropout_seed: uses_dropout
                        .then(|| hp.seed.wrapping_mul(1_000_003).wrapping_add((step * per_step + index) as u64)),
                };
                summary.padded_tokens += batch.padded_tokens;
                let loss = match (overlapped, graphs.as_mut(), shape) {
                    (Some(r), Some(g), Some(_)) if summing_step => {
                        sums_done = true;
                        g.run_summing(model, batch, &plan, &opts, r, &mut opt)?
                    }
                    (Some(r), _, _) => {
                        let opt = &mut opt;
                        forward_backward(model, &batch, denominator, &opts, Some(&mut |layer| r.ready(opt, layer)))?
                    }
                    (None, Some(g), Some(shape)) => {
                        match g.run(model, batch, shape, &opts, || opt.gradients_bound())? {
                            Ok(loss) => loss,
                            Err(batch) => forward_backward(model, &batch, denominator, &opts, None)?,
                        }
                    }
                    (None, _, _) => forward_backward(model, &batch, denominator, &opts, None)?,
                };
                loss_sum = loss_sum.f_add(&loss).map_err(torch("summing losses"))?;
            }
            profile.mark(0);
            tch::no_grad(|| -> Result<(), TrainError> {
                match reducer.as_mut() {
                    // A summing pass with its graph ended its own sums.
                    Some(_) if sums_done => {}
                    Some(r) => r.finish(&mut opt)?,
                    None => group.all_reduce_sum(worker.index, opt.gradient_buffer()?)?,
                }
                group.all_reduce_sum(worker.index, &loss_sum)?;
                Ok(())
            })?;
            profile.mark(1);
            let norm = match &reducer {
                Some(_) if opt.is_sharded() => {
                    let mut sum = |t: &Tensor| group.all_reduce_sum(worker.index, t).map_err(TrainError::from);
                    opt.clip_grad_norm_sharded(hp.max_grad_norm, &mut sum)?
                }
                _ => opt.clip_grad_norm(hp.max_grad_norm)?,
            };
            profile.mark(2);
            let lr = schedule.lr(step);
            match &reducer {
                Some(r) if opt.is_sharded() => {
                    // The update writes this worker's parts, which the last step's deferred gathers read.
                    if gathers.is_some() {
                        r.finish_gather()?;
                    }
                    // Each bucket's gather overlaps the next bucket's update (and, deferred, the next forward),
                    // in the order the forward needs them.
                    let scalars = opt.begin_step(lr)?;
                    for k in r.forward_order() {
                        opt.update_bucket(&scalars, k)?;
                        r.gather(&opt, k, gathers.as_ref())?;
                    }
                    opt.end_step()?;
                    if gathers.is_none() {
                        r.finish_gather()?;
                    }
                }
                _ => opt.step(lr)?,
            }
            profile.mark(3);
            // The loss (already normalised like the gradient) and the norm reach the host while the next step is
            // queued; the previous step's are read now, its time running until this step began.
            let values = Readback::start(&loss_sum, &norm)?;
            let queued = QueuedStep { meta: StepMeta { step, lr, tokens }, started, values };
            if let Some(previous) = in_flight.replace(queued) {
                let values = previous.values.finish()?;
                let seconds = started.duration_since(previous.started).as_secs_f64();
                previous.meta.report(values, seconds, &mut summary, worker, on_step)?;
            }
            queued_steps += 1;
        }
    }
    // The trained parameters are whole once the last step's deferred gathers are done.
    if let (Some(r), Some(_)) = (&reducer, &gathers) {
        r.finish_gather()?;
    }
    if let Some(last) = in_flight.take() {
        // Reading the last step's values waits for its update, so its time ends after that.
        let values = last.values.finish()?;
        let seconds = last.started.elapsed().as_secs_f64();
        last.meta.report(values, seconds, &mut summary, worker, on_step)?;
    }
    if let Some(l) = lora {
        l.set_training(false);
    }
    profile.report(summary.steps.len());
    Ok(summary)
}

/// A step whose work is queued and whose loss and norm are on their way to the host.
struct QueuedStep {
    meta: StepMeta,
    started: Instant,
    values: Readback,
}

/// What the loop knows of a step before its values come back.
struct StepMeta {
    step: usize,
    lr: f64,
    tokens: usize,
}

impl StepMeta {
    /// Reports the step with its (loss, norm) and `seconds` (from its start to the next step's, or to its end).
    fn report(
        self,
        (loss, grad_norm): (f64, f64),
        seconds: f64,
        summary: &mut LoopSummary,
        worker: &Worker<'_>,
        on_step: Option<&StepCallback<'_>>,
    ) -> Result<(), TrainError> {
        let record = StepRecord {
            step: self.step + 1,
            loss,
            lr: self.lr,
            grad_norm,
            tokens_per_s: self.tokens as f64 / seconds.max(1e-9),
            tokens: self.tokens,
            seconds,
        };
        summary.tokens += self.tokens;
        summary.seconds += seconds;
        if let Some(callback) = on_step.filter(|_| worker.index == 0) {
            let mut callback = callback.lock().unwrap_or_else(|p| p.into_inner());
            (*callback)(&record)?;
        }
        summary.steps.push(record);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(ranks: usize, whole_step: bool) -> Hyperparameters {
        Hyperparameters {
            data_parallel_ranks: ranks,
            average_tokens_across_devices: whole_step,
            ..super::super::bench::fixed_shape_hyperparameters(1, 1, false)
        }
    }

    #[test]
    fn whole_step_divides_by_the_steps_label_tokens() {
        assert_eq!(hp(2, true).loss_denominators(&[3, 5, 2, 6]), vec![16.0; 4]);
        assert_eq!(hp(2, true).loss_denominators(&[0, 0]), vec![1.0; 2]);
    }

    #[test]
    fn per_rank_divides_by_ranks_times_the_ranks_label_tokens() {
        // Rank 0 has micro-batches 0 and 2 (3 + 2 tokens), rank 1 has 1 and 3 (5 + 6).
        assert_eq!(hp(2, false).loss_denominators(&[3, 5, 2, 6]), vec![10.0, 22.0, 10.0, 22.0]);
        // The last step of an epoch: rank 1 has only an empty micro-batch, rank 2 none; rank 0's mean is the step's.
        assert_eq!(hp(3, false).loss_denominators(&[4, 0]), vec![4.0, 1.0]);
        // Three busy ranks: rank 0 has micro-batches 0 and 3 (4 + 1 tokens), rank 1 has 2, rank 2 has 3.
        assert_eq!(hp(3, false).loss_denominators(&[4, 2, 3, 1]), vec![15.0, 6.0, 9.0, 15.0]);
    }

    #[test]
    fn one_rank_normalises_the_same_either_way() {
        for targets in [vec![7], vec![3, 5, 2, 6], vec![0, 9, 1]] {
            assert_eq!(hp(1, false).loss_denominators(&targets), hp(1, true).loss_denominators(&targets));
        }
    }
}
