//! What a caller asks the generator for (prompts as token ids, samples per prompt, sampling rule, limits, stop rules,
//! seed) and what it gets back (per prompt, per sample: tokens, text, finish reason, seed), plus engine options.

use super::sampling::Sampling;

/// One prompt: a stable id (seeds derive from it, so use the dataset row's id, not a batch position) and its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptInput {
    /// Stable id of the prompt.
    pub id: u64,
    /// The prompt's token ids (already templated).
    pub token_ids: Vec<u32>,
}

/// When a sequence ends, besides `max_tokens` and the model length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopRules {
    /// Generating any of these ids ends the sample (the id is kept in `token_ids`, dropped from `text`).
    pub eos_token_ids: Vec<u32>,
    /// Generating text that contains one of these ends the sample; the text is cut before it (needs a tokenizer).
    pub stop_strings: Vec<String>,
    /// Never stop at EOS (benchmarks: every sample runs to `max_tokens`, like HF's `min_new_tokens`).
    pub ignore_eos: bool,
}

/// What to do with a prompt that leaves no room for a generated token within the model length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PromptOverflow {
    /// Fail, naming the prompt.
    #[default]
    Error,
    /// Drop tokens from the start of the prompt; the output records how many.
    TruncateLeft,
}

/// A batch of generation work: every prompt gets `n` samples.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    /// The prompts.
    pub prompts: Vec<PromptInput>,
    /// Samples per prompt (>= 1).
    pub n: usize,
    /// Samples of each prompt, in order, when they differ (each >= 1; `n` is then not used). One call with both
    /// 5-sample train and 1-sample test prompts fills its batch better than a call per count.
    pub n_per_prompt: Option<Vec<usize>>,
    /// How tokens are chosen.
    pub sampling: Sampling,
    /// Most tokens generated per sample (>= 1).
    pub max_tokens: usize,
    /// EOS ids and stop strings.
    pub stop: StopRules,
    /// Run seed; each sample's seed derives from it, the prompt id and the sample index.
    pub seed: u64,
    /// What to do with over-long prompts.
    pub prompt_overflow: PromptOverflow,
}

impl GenerationRequest {
    /// Samples of prompt `i`.
    pub fn samples_of(&self, i: usize) -> usize {
        self.n_per_prompt.as_ref().and_then(|v| v.get(i).copied()).unwrap_or(self.n)
    }
}

impl Default for GenerationRequest {
    fn default() -> Self {
        GenerationRequest {
            prompts: Vec::new(),
            n: 1,
            n_per_prompt: None,
            sampling: Sampling::Greedy,
            max_tokens: 256,
            stop: StopRules::default(),
            seed: 0,
            prompt_overflow: PromptOverflow::Error,
        }
    }
}

/// Why a sample ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// It generated an EOS id.
    Eos,
    /// Its text reached this stop string.
    StopString(String),
    /// It generated `max_tokens` tokens.
    MaxTokens,
    /// Prompt plus generated tokens filled the model length.
    MaxModelLen,
}

impl std::fmt::Display for FinishReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FinishReason::Eos => write!(f, "eos"),
            FinishReason::StopString(s) => write!(f, "stop string {s:?}"),
            FinishReason::MaxTokens => write!(f, "max_tokens"),
            FinishReason::MaxModelLen => write!(f, "max_model_len"),
        }
    }
}

/// One generated sample in token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleOutput {
    /// Generated ids (an ending EOS included).
    pub token_ids: Vec<u32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// The sample's own seed (see `sampling::sample_seed`).
    pub seed: u64,
}

/// One generated sample with its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Decoded text, special tokens skipped, cut before a stop string.
    pub text: String,
    /// Generated ids (an ending EOS included).
    pub token_ids: Vec<u32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// The sample's own seed.
    pub seed: u64,
}

/// The samples of one prompt, in sample-index order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptOutput<T> {
    /// The prompt's id.
    pub prompt_id: u64,
    /// Prompt tokens used (after any truncation).
    pub prompt_tokens: usize,
    /// Tokens dropped from the prompt's start by `PromptOverflow::TruncateLeft` (0 otherwise).
    pub truncated_tokens: usize,
    /// The `n` samples.
    pub samples: Vec<T>,
}

/// Counters of one generate call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationStats {
    /// Prompt tokens run through prefill (a prompt whose samples did not fit at once is prefilled again; a shared
    /// prefix counts once).
    pub prefill_tokens: usize,
    /// Prompt tokens whose K/V were copied from the shared prefix instead of being prefilled: the tokens saved.
    pub prefill_tokens_reused: usize,
    /// Length of the prefix common to every prompt of the call that was prefilled once (0: none).
    pub shared_prefix_tokens: usize,
    /// Tokens generated and kept, over all samples.
    pub generated_tokens: usize,
    /// Batched decode steps run.
    pub decode_steps: usize,
    /// Windows of decode steps launched before the previous window was read back (CUDA, no work waiting).
    pub windows_ahead: usize,
    /// KV-cache rows decoded together (each decode step runs them all).
    pub rows: usize,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
    /// Seconds the host spent blocked reading sampled tokens back from the device: near zero when the host is the
    /// bottleneck (launching kernels), most of `elapsed_s` when the device is.
    pub host_wait_s: f64,
    /// CUDA graphs captured for decode steps (0 when eager).
    pub cuda_graphs: usize,
    /// Host seconds spent capturing them (part of `elapsed_s`).
    pub capture_s: f64,
    /// Why CUDA graphs were asked for but not (or no longer) used.
    pub cuda_graph_note: Option<String>,
}

impl GenerationStats {
    /// Generated tokens per second of wall-clock time.
    pub fn tokens_per_s(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.generated_tokens as f64 / self.elapsed_s
        } else {
            0.0
        }
    }
}

/// The result of a generate call: per prompt (request order) its samples, plus counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated<T> {
    /// One entry per requested prompt.
    pub prompts: Vec<PromptOutput<T>>,
    /// Counters.
    pub stats: GenerationStats,
}

/// Engine settings independent of the request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Most sequences decoded together (KV cache rows).
    pub max_batch: usize,
    /// Upper bound on the KV cache's bytes; limits the batch further for long sequences.
    pub max_cache_bytes: i64,
    /// Longest prompt + generation; the model's own limit when `None` (never more than it).
    pub max_model_len: Option<usize>,
    /// Decode steps between host synchronisations (stop checks, refills).
    pub sync_every: usize,
    /// Most (padded) prompt tokens per prefill forward pass.
    pub max_prefill_tokens: usize,
    /// Show a progress bar on stderr (drawn only when stderr is a terminal).
    pub progress: bool,
    /// Run separate q/k/v and gate/up projections as one fused matrix product each, from copies made for the call
    /// (fewer kernel launches; costs those weights' memory once more).
    pub fuse_projections: bool,
    /// Replay decode steps as CUDA graphs (CUDA only; falls back to eager steps if capture fails).
    pub cuda_graphs: bool,
    /// Attended cache lengths are rounded up to a multiple of this: one graph per bucket reached (each capture costs
    /// about one eager step), at the price of reading up to this many masked cache positions more per step.
    pub cuda_graph_bucket: usize,
    /// Fixed shapes for every step: all `max_batch` rows decode (not only as many as there are samples), every
    /// step attends to the whole context (`max_model_len`), and each prompt is prefilled alone. A row's arithmetic
    /// then never depends on the other rows, so a sample is the same whatever else is generated with it (on one
    /// GPU or sharded over several); costs speed, most with few samples or short sequences.
    pub batch_invariant: bool,
    /// Prefill the prefix common to every prompt of a call once and copy its K/V into each prompt's row, when it is
    /// at least this many tokens (`None`: every prompt is prefilled whole). Off under `batch_invariant`.
    pub shared_prefix_min_tokens: Option<usize>,
}

impl GenerateOptions {
    /// Defaults for a model on `device`: 256 rows and 24 GiB of cache on CUDA, 32 rows and 2 GiB on the CPU; fused
    /// projections on CUDA only (where kernel launches, not arithmetic, limit small decode steps); shared-prefix
    /// prefill on the CPU only.
    pub fn for_device(device: tch::Device) -> Self {
        let gib = 1i64 << 30;
        let (max_batch, max_cache_bytes) = if device.is_cuda() { (256, 24 * gib) } else { (32, 2 * gib) };
        GenerateOptions {
            max_batch,
            max_cache_bytes,
            max_model_len: None,
            sync_every: 8,
            max_prefill_tokens: if device.is_cuda() { 32768 } else { 8192 },
            progress: false,
            fuse_projections: device.is_cuda(),
            cuda_graphs: device.is_cuda(),
            cuda_graph_bucket: 256,
            batch_invariant: false,
            // Below a few dozen tokens the extra forward pass and copies cost about what they save. On CUDA the run's
            // engine turns it on together with the KV pool (crate::stasc::tch_backend, STASC_BOUNDED_GENERATION).
            shared_prefix_min_tokens: if device.is_cuda() { None } else { Some(32) },
        }
    }
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self::for_device(tch::Device::Cpu)
    }
}
