//! The real [`Backend`]: sampling with `crate::generate` and fine-tuning with `crate::train` on libtorch, over the
//! run's devices. Generation splits the jobs into contiguous shards, one per device, balanced by the token
//! positions their samples fill, runs them on one worker thread each and merges the results in job order (samples
//! depend on the prompt key and sample index only, so where a job runs does not change what is drawn); training is
//! data-parallel (see `crate::train::trainer`). One device is the same path with one shard and one worker. The last
//! generation model stays loaded between phases that use it, and is dropped before training so a GPU holds one
//! model at a time.
//!
//! Memory (stasc_config `bounded_generation: false` turns it off): on CUDA, once a model is loaded, the generation
//! budget (`gpu_memory_utilization` x the card, see `crate::generate::budget`) reserves a KV pool that every
//! generate call's cache views, and allows up to [`GENERATION_ROWS`] sequences at once. The loop hands a call one
//! chunk of `chunk_prompts` prompts per device ([`Backend::chunks_per_call`]), so a device's shard is about one
//! chunk, train and test together whatever their sample counts, and is one engine call, which uses as few rows as
//! its number of waves needs, so it ends without a partly filled wave (512 prompts x 5 samples: five waves of 512
//! rows).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::{Dtype, FineTuneConfig, RunConfig};
use crate::dist::{run_workers, shard, DeviceAsk, Group, Topology, Transport};
use crate::generate::{self, GenerateOptions, PromptInput, PromptOverflow, Sampling, StopRules};
use crate::model::{load_model, LoadOptions, LoadedModel, ModelDevice};
use crate::prompt::ChatMessage;
use crate::train::{fine_tune, TrainOptions};

use super::backend::{parse_key, Backend, BackendError, GeneratedSample, PrefillCounts, SamplingJob, TrainSummary};
use super::spec::SamplingSpec;

/// The libtorch engine behind `stasc run`.
pub struct TchBackend {
    load: LoadOptions,
    fine_tune: FineTuneConfig,
    train: TrainOptions,
    topology: Topology,
    progress: bool,
    mode: GenerationMode,
    /// Share of each GPU that generation may hold (`gpu_memory_utilization`); fine-tuning runs uncapped, as the
    /// reference's trainer ran in its own process after vLLM's had ended.
    gpu_memory_utilization: f64,
    /// What may happen to a prompt longer than the model length, and where its question comes from.
    prompts: PromptLimits,
    /// The generation model on each device (same order as `topology.devices`).
    loaded: Option<(PathBuf, Vec<Mutex<LoadedModel>>)>,
    /// Prefill counts since they were last taken.
    prefill: PrefillCounts,
}

/// How a run generates: fixed shapes (stasc_config `batch_invariant`) and the budgeted KV pool with up to
/// [`GENERATION_ROWS`] rows and shared-prefix prefill (`bounded_generation`, on CUDA: on by default since the H200
/// run in scripts/paper_scale/h200_bounded_2026-11-30.txt, faster and within the memory budget).
#[derive(Debug, Clone, Copy)]
struct GenerationMode {
    batch_invariant: bool,
    bounded: bool,
}

/// Most sequences one GPU decodes at once when a KV pool is reserved (the budget may allow fewer). Calls use as few
/// rows as their number of waves needs, so 640 samples run as two waves of 320, and a half-size shard as one.
pub const GENERATION_ROWS: usize = 512;

/// `STASC_GENERATE_STATS=1` prints one line per generate call (rows, steps, time, host waits, graph capture).
const STATS_ENV: &str = "STASC_GENERATE_STATS";

/// The line `STASC_GENERATE_STATS=1` prints for one generate call of `prompts` prompts and `samples` samples.
fn call_summary(device: tch::Device, prompts: usize, samples: usize, s: &generate::GenerationStats) -> String {
    format!(
        "generate on {device:?}: {prompts} prompts, {samples} samples, {} rows, {} decode steps ({} windows launched \
         ahead), {} tokens in {:.2} s ({:.0} tok/s; host blocked {:.2} s, {} CUDA graphs captured in {:.2} s); prefill \
         {} tokens, shared prefix {}",
        s.rows,
        s.decode_steps,
        s.windows_ahead,
        s.generated_tokens,
        s.elapsed_s,
        s.tokens_per_s(),
        s.host_wait_s,
        s.cuda_graphs,
        s.capture_s,
        s.prefill_tokens,
        s.shared_prefix_tokens
    )
}

/// Memory the CUDA runtime holds besides tensors (context, cuBLAS workspaces, graph bookkeeping), as budgeted.
const RUNTIME_BYTES: u64 = 1 << 30;

impl TchBackend {
    /// A backend for the devices, dtype, length limit and fine-tuning settings of `config`; a note about ranks
    /// sharing devices goes to stderr.
    pub fn new(config: &RunConfig, progress: bool) -> Result<Self, BackendError> {
        let ex = &config.execution;
        let source = config
            .sources
            .accelerate_config
            .as_deref()
            .map_or_else(|| "<no accelerate config>".to_string(), |p| p.display().to_string());
        let ask = DeviceAsk {
            devices: ex.device,
            data_parallel_ranks: ex.data_parallel_ranks,
            gpu_ids: ex.gpu_ids.as_deref(),
            source: &source,
        };
        let visible = if tch::Cuda::is_available() { tch::Cuda::device_count().max(0) as usize } else { 0 };
        let (mut topology, note) = crate::dist::topology::resolve(&ask, visible)?;
        if let Some(note) = note {
            eprintln!("note: {note}");
        }
        if let Some(devices) = devices_from_env()? {
            topology = Topology::new(topology.data_parallel_ranks, devices)?;
            eprintln!("note: {DEVICES_ENV} sets the devices: {}", topology.describe());
        }
        if let Some(line) = generation_note(config, &topology) {
            eprintln!("note: {line}");
        }
        Ok(Self::with_topology(config, topology, progress))
    }

    /// A backend for `config` on an explicit topology (tests, benchmarks).
    pub fn with_topology(config: &RunConfig, topology: Topology, progress: bool) -> Self {
        // A process-wide switch: one run is one process (sweep cells run in processes of their own).
        crate::kernels::set_enabled(config.stasc_config.fused_kernels);
        // Every worker loads and trains on its own device of the topology; this is only the first of them.
        let device = ModelDevice::from(topology.devices[0]);
        let mut fine_tune = config.fine_tune.clone();
        // One dtype for the whole run: what the execution settings decided wins over fine_tune's model.torch_dtype.
        if config.execution.dtype != Dtype::Auto {
            fine_tune.model.torch_dtype = config.execution.dtype;
        }
        TchBackend {
            load: LoadOptions {
                device,
                dtype: crate::train::dtype_spec(config.execution.dtype),
                max_model_len: config.stasc_config.max_model_len.map(|n| n as i64),
            },
            fine_tune,
            train: TrainOptions { device, topology: Some(topology.clone()), progress, ..TrainOptions::default() },
            topology,
            progress,
            mode: GenerationMode {
                batch_invariant: config.stasc_config.batch_invariant,
                bounded: config.stasc_config.bounded_generation,
            },
            gpu_memory_utilization: config.stasc_config.gpu_memory_utilization,
            prompts: PromptLimits {
                max_model_len: config.stasc_config.max_model_len,
                truncate: config.stasc_config.truncate_prompts,
                data_path: config.stasc_config.data_path.clone(),
            },
            loaded: None,
            prefill: PrefillCounts::default(),
        }
    }

    /// Caps every CUDA device of the topology at `fraction` of its memory (1.0 lifts the cap).
    fn cap_memory(&self, fraction: f64) -> Result<(), BackendError> {
        for &device in &self.topology.devices {
            if !crate::model::device::cap_cuda_memory(device, fraction) {
                return Err(format!("cannot cap the CUDA memory of {device:?} at {fraction}").into());
            }
        }
        Ok(())
    }

    /// The devices and ranks this backend uses.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Caps every device's memory at the generation budget and loads `dir` on each: the workers' group and models
    /// of a generate call.
    fn generation_models(&mut self, dir: &Path) -> Result<(Group, &[Mutex<LoadedModel>]), BackendError> {
        self.cap_memory(self.gpu_memory_utilization)?;
        let group = Group::new(&self.topology.devices, Transport::Host)?;
        let models = self.models(dir, &group)?;
        Ok((group, models))
    }

    /// Loads `dir` on every device (in parallel), unless it is already loaded.
    fn models(&mut self, dir: &Path, group: &Group) -> Result<&[Mutex<LoadedModel>], BackendError> {
        if self.loaded.as_ref().map(|(p, _)| p.as_path()) != Some(dir) {
            self.loaded = None;
            let devices = &self.topology.devices;
            let load = &self.load;
            let (limits, mode) = (&self.prompts, self.mode);
            let utilization = self.gpu_memory_utilization;
            let models = run_workers(group, |w| -> Result<Mutex<LoadedModel>, BackendError> {
                let opts = LoadOptions { device: ModelDevice::from(devices[w]), ..load.clone() };
                let loaded = load_model(dir, &opts)?;
                if devices[w].is_cuda() {
                    // A throw-away sample first: libtorch and cuBLAS initialise lazily on a thread's first calls, and
                    // those first calls must not be a real prompt's (it drew differently from a one-GPU run).
                    let warm =
                        SamplingJob { key: "warm-up".into(), messages: vec![ChatMessage::new("user", "Hello.")], n: 1 };
                    let sampling = SamplingSpec { temperature: 0.6, top_p: 0.9, max_tokens: 2, seed: 0 };
                    let ids = loaded.tokenizer.encode_chat(&warm.messages, true)?;
                    generate_shard(&loaded, &[warm], &[ids], &sampling, limits, mode, false)?;
                    if mode.bounded {
                        reserve_kv_pool(&loaded, utilization)?;
                    }
                }
                Ok(Mutex::new(loaded))
            })?;
            self.loaded = Some((dir.to_path_buf(), models));
        }
        Ok(&self.loaded.as_ref().expect("just loaded").1)
    }
}

/// Plans the generation budget of a model just loaded on a CUDA device and reserves its KV pool.
fn reserve_kv_pool(loaded: &LoadedModel, utilization: f64) -> Result<(), BackendError> {
    let model = &loaded.model;
    let device = model.device();
    let Some((_, total)) = crate::model::device::cuda_memory_info(device) else {
        return Err(format!("cannot read the memory of {device:?} to budget generation").into());
    };
    let c = model.config();
    let elt = model.kind().elt_size_in_bytes() as u64;
    let options = GenerateOptions::for_device(device);
    let qkv_width = ((c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim) as u64;
    let (hidden, intermediate) = (c.hidden_size as u64, c.intermediate_size as u64);
    let weights: u64 = model.named_weights().values().map(|t| t.numel() as u64 * elt).sum();
    // Fused q/k/v and gate/up copies live for the whole generate call.
    let fused = if options.fuse_projections {
        c.num_hidden_layers as u64 * (qkv_width + 2 * intermediate) * (hidden + 1) * elt
    } else {
        0
    };
    let inputs = crate::generate::budget::BudgetInputs {
        device_bytes: total,
        utilization,
        weight_bytes: weights + fused,
        runtime_bytes: RUNTIME_BYTES,
        kv_bytes_per_position: model.kv_bytes_per_position() as u64,
        hidden_size: hidden,
        intermediate_size: intermediate,
        qkv_width,
        vocab_size: c.vocab_size as u64,
        elt_bytes: elt,
        prefill_tokens: options.max_prefill_tokens as u64,
        max_rows: GENERATION_ROWS as u64,
        max_model_len: model.max_model_len() as u64,
    };
    let plan = crate::generate::budget::plan(&inputs)?;
    model.reserve_kv_pool(plan.kv_positions as i64)?;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    eprintln!(
        "note: generation on {device:?} budgets {:.1} GiB ({utilization} of {:.1} GiB): weights {:.1}, activations \
         {:.1}, runtime {:.1}, KV pool {:.1} GiB ({} token positions)",
        gib(plan.budget_bytes),
        gib(total),
        gib(inputs.weight_bytes),
        gib(plan.prefill_activation_bytes.max(plan.decode_activation_bytes)),
        gib(RUNTIME_BYTES),
        gib(plan.kv_pool_bytes),
        plan.kv_positions
    );
    Ok(())
}

/// What a user should know about sharded or batch-invariant generation with this config, on one line.
pub fn generation_note(config: &RunConfig, topology: &Topology) -> Option<String> {
    let file = config.sources.config.display();
    let cuda_workers = topology.devices.iter().filter(|d| d.is_cuda()).count();
    if config.stasc_config.batch_invariant && config.stasc_config.max_model_len.is_none() {
        return Some(format!(
            "{file}: batch_invariant attends to the model's whole context every step; set max_model_len to what \
             prompts and answers need"
        ));
    }
    (cuda_workers > 1 && !config.stasc_config.batch_invariant).then(|| {
        format!(
            "{file}: generation is sharded over {cuda_workers} GPUs; its samples equal a one-GPU run's bit for bit \
             only with batch_invariant: true (otherwise rounding can flip tokens)"
        )
    })
}

/// Environment variable that replaces the automatic device choice with an explicit list (`cuda:0,cuda:1`); a
/// device may repeat, which runs two workers on one GPU (the multi-device code path on a one-GPU machine).
pub const DEVICES_ENV: &str = "STASC_DEVICES";

fn devices_from_env() -> Result<Option<Vec<tch::Device>>, BackendError> {
    let Ok(text) = std::env::var(DEVICES_ENV) else { return Ok(None) };
    let devices = text
        .split(',')
        .map(|d| {
            d.trim()
                .parse::<ModelDevice>()
                .and_then(ModelDevice::resolve)
                .map_err(|e| format!("{DEVICES_ENV}={text}: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Some(devices))
}

/// A stable 64-bit id of a prompt key (FNV-1a), so sample seeds depend on what is asked, not on batch position.
pub fn prompt_id(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

impl Backend for TchBackend {
    fn prepare(&mut self, model: &Path) -> Result<(), BackendError> {
        self.generation_models(model).map(|_| ())
    }

    fn generate(
        &mut self,
        model: &Path,
        jobs: &[SamplingJob],
        sampling: &SamplingSpec,
    ) -> Result<Vec<Vec<GeneratedSample>>, BackendError> {
        let (progress, mode) = (self.progress, self.mode);
        let limits = self.prompts.clone();
        let (group, models) = self.generation_models(model)?;
        // Every prompt is tokenised once, here (every device loads the same tokenizer files).
        let prompt_ids: Vec<Vec<u32>> = {
            let loaded = models[0].lock().unwrap_or_else(|p| p.into_inner());
            encode_prompts(&loaded.tokenizer, jobs)?
        };
        // Balance the shards by the token positions their samples fill (prompt + max_tokens each), the work of
        // decoding them; a sample count alone ignores how long prompts are.
        let weights: Vec<u64> =
            jobs.iter().zip(&prompt_ids).map(|(r, ids)| (r.n * (ids.len() + sampling.max_tokens)) as u64).collect();
        let ranges = shard::balanced_ranges(&weights, models.len());
        let (shards, id_shards) = (shard::split(jobs, &ranges), shard::split(&prompt_ids, &ranges));
        let results = run_workers(&group, |w| -> Result<(Vec<Vec<GeneratedSample>>, PrefillCounts), BackendError> {
            let loaded = models[w].lock().unwrap_or_else(|p| p.into_inner());
            // Every worker counts its shard into the loop's phase (crate::progress).
            generate_shard(&loaded, shards[w], id_shards[w], sampling, &limits, mode, progress)
        })?;
        let mut samples = Vec::with_capacity(results.len());
        for (shard_samples, counts) in results {
            self.prefill.run += counts.run;
            self.prefill.saved += counts.saved;
            samples.push(shard_samples);
        }
        Ok(shard::merge(&ranges, samples)?)
    }

    fn take_prefill_counts(&mut self) -> PrefillCounts {
        std::mem::take(&mut self.prefill)
    }

    /// One chunk per device: each device then decodes a whole chunk's rows at once, as one device does (two H200s
    /// each given half of every 512-prompt chunk decoded 427-row waves, 1.81x one GPU on the paper-scale iteration).
    fn chunks_per_call(&self) -> usize {
        self.topology.devices.len()
    }

    fn train(&mut self, base: &Path, examples: &[Vec<ChatMessage>], out: &Path) -> Result<TrainSummary, BackendError> {
        self.release();
        self.cap_memory(1.0)?;
        let report = fine_tune(base, examples, &self.fine_tune, &self.train, out);
        // The trainer's model, gradients and optimiser state are gone now: give their memory back.
        crate::model::device::release_cuda_cache();
        let report = report?;
        let stage_seconds = Some(report.stage_seconds);
        Ok(TrainSummary { losses: report.losses(), tokens_per_s: report.tokens_per_s, stage_seconds })
    }

    fn release(&mut self) {
        self.loaded = None;
        crate::model::device::release_cuda_cache();
    }
}

/// The prompt-length settings of a run: `max_model_len`, `truncate_prompts`, and the dataset its questions come
/// from (to name an over-long prompt by its question).
#[derive(Debug, Clone)]
struct PromptLimits {
    max_model_len: Option<usize>,
    truncate: bool,
    data_path: PathBuf,
}

impl PromptLimits {
    /// Names an over-long prompt by its dataset and question (the engine knows only a hash of its key) and says
    /// which key allows truncation.
    fn explain(&self, error: generate::GenerateError, jobs: &[&SamplingJob]) -> BackendError {
        let generate::GenerateError::PromptTooLong { prompt_id: id, tokens, max_model_len } = error else {
            return error.into();
        };
        let Some(job) = jobs.iter().find(|r| prompt_id(&r.key) == id) else { return error.into() };
        let what = match parse_key(&job.key) {
            Some((phase, split, question)) => {
                format!("{}: question {question:?} ({split} split): its {phase} prompt", self.data_path.display())
            }
            None => format!("prompt {}", job.key),
        };
        format!(
            "{what} has {tokens} tokens, but max_model_len {max_model_len} leaves room for {}; raise max_model_len, \
             shorten the question, or set truncate_prompts: true to drop the prompt's first tokens",
            max_model_len - 1
        )
        .into()
    }
}

/// Every job's prompt, templated and tokenised, in job order, on all CPU cores: a paper-scale correction phase
/// has 3,000 prompts of ~800 tokens, ~1.5 ms each on one core (seconds of the phase with the GPU idle).
fn encode_prompts(tokenizer: &crate::model::Tokenizer, jobs: &[SamplingJob]) -> Result<Vec<Vec<u32>>, BackendError> {
    Ok(crate::parallel::map_in_order(jobs, 16, |_, job| tokenizer.encode_chat(&job.messages, true))?)
}

/// Samples every job of one shard (`prompt_ids[i]`: job i's prompt, tokenised) on one loaded model, in job order;
/// also returns its prefill counts.
fn generate_shard(
    loaded: &LoadedModel,
    jobs: &[SamplingJob],
    prompt_ids: &[Vec<u32>],
    sampling: &SamplingSpec,
    limits: &PromptLimits,
    mode: GenerationMode,
    progress: bool,
) -> Result<(Vec<Vec<GeneratedSample>>, PrefillCounts), BackendError> {
    let rule = Sampling::from_params(sampling.temperature, Some(sampling.top_p), None)?;
    let mut options = GenerateOptions::for_device(loaded.model.device());
    options.max_model_len = limits.max_model_len;
    options.batch_invariant = mode.batch_invariant;
    options.progress = progress;
    // With a reserved pool the budget has room for this many rows (batch-invariant runs keep their fixed batch).
    if loaded.model.kv_pool_positions().is_some() && !mode.batch_invariant {
        options.max_batch = GENERATION_ROWS;
    }
    if mode.bounded && options.shared_prefix_min_tokens.is_none() {
        options.shared_prefix_min_tokens = GenerateOptions::for_device(tch::Device::Cpu).shared_prefix_min_tokens;
    }
    let mut counts = PrefillCounts::default();
    // One call for every job, whatever its sample count: a chunk's 5-sample train and 1-sample test prompts fill
    // one batch (a call per count left a call of a few test prompts decoding a nearly empty batch).
    let mut out: Vec<Vec<GeneratedSample>> = vec![Vec::new(); jobs.len()];
    if !jobs.is_empty() {
        let prompts = jobs
            .iter()
            .zip(prompt_ids)
            .map(|(job, ids)| PromptInput { id: prompt_id(&job.key), token_ids: ids.clone() })
            .collect();
        let request = generate::GenerationRequest {
            prompts,
            n: 1,
            n_per_prompt: Some(jobs.iter().map(|j| j.n).collect()),
            sampling: rule,
            max_tokens: sampling.max_tokens,
            stop: StopRules {
                eos_token_ids: loaded.tokenizer.eos_token_ids().to_vec(),
                stop_strings: vec![],
                ignore_eos: false,
            },
            seed: sampling.seed,
            prompt_overflow: if limits.truncate { PromptOverflow::TruncateLeft } else { PromptOverflow::Error },
        };
        let generated = generate::generate(&loaded.model, &loaded.tokenizer, &request, &options).map_err(|e| {
            let group: Vec<&SamplingJob> = jobs.iter().collect();
            limits.explain(e, &group)
        })?;
        if let Some(note) = &generated.stats.cuda_graph_note {
            eprintln!("note: {:?}: {note}", loaded.model.device());
        }
        if crate::switch::env_flag(STATS_ENV, false) {
            let samples = jobs.iter().map(|j| j.n).sum::<usize>();
            eprintln!("{}", call_summary(loaded.model.device(), jobs.len(), samples, &generated.stats));
        }
        counts.run += generated.stats.prefill_tokens;
        counts.saved += generated.stats.prefill_tokens_reused;
        for (i, p) in generated.prompts.into_iter().enumerate() {
            if p.truncated_tokens > 0 {
                eprintln!(
                    "note: prompt {}: dropped its first {} tokens to fit max_model_len (truncate_prompts)",
                    jobs[i].key, p.truncated_tokens
                );
            }
            out[i] = p
                .samples
                .into_iter()
                .map(|c| GeneratedSample {
                    tokens: c.token_ids.len(),
                    finish_reason: Some(c.finish_reason.to_string()),
                    text: c.text,
                    seed: c.seed,
                })
                .collect();
        }
    }
    Ok((out, counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_ids_are_stable_and_distinct() {
        assert_eq!(prompt_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(prompt_id("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(prompt_id("iter0/initial/train/1"), prompt_id("iter0/initial/train/2"));
    }

    #[test]
    fn an_over_long_prompt_is_named_by_its_dataset_and_question() {
        let limits = PromptLimits { max_model_len: Some(512), truncate: false, data_path: "data/nq".into() };
        let job = |key: &str| SamplingJob { key: key.into(), messages: vec![], n: 1 };
        let (a, b) = (job("iter1/correction/train/q 7/2"), job("iter1/correction/train/q8/0"));
        let error =
            generate::GenerateError::PromptTooLong { prompt_id: prompt_id(&a.key), tokens: 600, max_model_len: 512 };
        assert_eq!(
            limits.explain(error, &[&b, &a]).to_string(),
            "data/nq: question \"q 7\" (train split): its correction prompt has 600 tokens, but max_model_len 512 \
             leaves room for 511; raise max_model_len, shorten the question, or set truncate_prompts: true to drop \
             the prompt's first tokens"
        );
    }
}
