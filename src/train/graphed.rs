//! CUDA graphs for packed training passes: on for packed full fine-tuning in bf16/f16 on CUDA;
//! `STASC_TRAIN_GRAPHS=0` or [`set_mode`] turns them off.
//!
//! Why: at the reference's settings a packed pass of ~1,600 tokens queues ~2,300 kernels, and queueing them takes the
//! host longer than the GPU takes to run them (H200, README "Where a training step's time goes"), so the host set
//! the pace and two GPUs were little faster than one. A pass recorded once as a CUDA graph replays with one launch.
//! Measured on the fine-tuning phase of a paper-scale `stasc run` (H200s, scripts/train_bench/graphs.sh): two GPUs
//! 56.5k tok/s with graphs, 49.5k without; one GPU, whose one worker runs both ranks' ~3,200 tokens in one pass and
//! keeps the GPU busy anyway, 41.7k and 41.1k.
//!
//! How: a pass is padded to a [`PassShape`] bucket ([`super::packed::packed_batch_shaped`]). The first pass of a
//! bucket runs eagerly; the second is recorded: a worker's first recording after a warm-up run of the pass on the
//! capture stream (lazy initialisation happens outside a capture), later ones by replaying the graph once, so the
//! work is done exactly once either way. Later passes of the bucket copy their inputs into the recorded pass's input
//! tensors and replay it. The graphs share one memory pool (passes never overlap).
//!
//! Gradients: a graph records autograd's in-place accumulation into each parameter's `.grad`, so recording waits
//! until every gradient is a view of the optimiser's flat buffer (bound after the first step); the graph then
//! accumulates into those same addresses forever. Only passes whose attention runs as variable-length flash attention
//! are recorded (its maximum length is the bucket's token count, a bound for every pass of the bucket). LoRA and
//! gradient checkpointing keep eager passes.
//!
//! Overlapped gradient sums (`training.overlap_grad_sums` between CUDA devices) keep eager passes unless
//! [`sums_in_graphs`] (`STASC_GRAPHED_SUMS=1`; off by default until measured on two GPUs): then a worker's last pass
//! of a step can be recorded with its bucketed NCCL sums in the graph (the `summing` module), the side stream forking
//! from the capture stream at every bucket and joining it at the end, so the sums overlap the replayed backward.
//! NCCL treats capturing a collective, and launching a graph that holds one, as collective acts: every worker
//! captures it or none, and the graphs replayed together must come from one capture. So the workers decide
//! together: before each step's last pass they exchange their passes' shapes ([`crate::dist::Group::exchange`]) and
//! pad their passes to the step's joint shape, which keys the recorded passes; all record it together (each after
//! running its pass for real, the warm-up, so no recording waits on a collective) and all replay it together, or
//! all run the pass eagerly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use tch::{Device, Tensor};

use super::batching::MicroBatch;
use super::error::TrainError;
use super::packed::PassShape;
use super::packed_attention::{varlen_attention_applies, varlen_attention_calls};
use super::step::{forward_backward, PassOptions};
use crate::generate::cuda_graph::{CaptureError, CaptureStream, CudaGraph, MempoolId};
use crate::model::CausalLm;

mod summing;

pub use summing::{plan_summing, SummingPlan};

/// How packed passes run on CUDA ([`set_mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphMode {
    /// Eagerly, padded to 64 tokens.
    Off,
    /// Padded to their shape bucket and replayed from CUDA graphs (the default).
    Graphs,
    /// Padded to their shape bucket but run eagerly: what a graph replays, without the graph (for parity checks).
    ShapesOnly,
}

/// 0: as `STASC_TRAIN_GRAPHS` says (graphs unless it is 0); otherwise 1 + the [`GraphMode`] set for the process.
static MODE: AtomicU8 = AtomicU8::new(0);

/// Graph replays of passes whose gradient sums are in the graph (a subset of [`replays`]).
static SUMMING_REPLAYS: AtomicU64 = AtomicU64::new(0);

/// Graph replays of training passes in this process (tests check that graphs ran).
static REPLAYS: AtomicU64 = AtomicU64::new(0);

/// Training passes recorded as CUDA graphs in this process (one per shape bucket and worker).
static RECORDINGS: AtomicU64 = AtomicU64::new(0);

/// Sets how packed training passes run on CUDA for the whole process.
pub fn set_mode(mode: GraphMode) {
    MODE.store(1 + mode as u8, Ordering::Relaxed);
}

/// The mode in force.
pub fn mode() -> GraphMode {
    match MODE.load(Ordering::Relaxed) {
        1 => GraphMode::Off,
        2 => GraphMode::Graphs,
        3 => GraphMode::ShapesOnly,
        _ if crate::switch::env_flag("STASC_TRAIN_GRAPHS", true) => GraphMode::Graphs,
        _ => GraphMode::Off,
    }
}

/// Whether overlapped gradient sums between CUDA devices are to be recorded into the graphs of the passes they
/// overlap (`STASC_GRAPHED_SUMS=1`; off by default: not yet measured on two GPUs). Read where the loop's settings
/// are built ([`crate::train::Hyperparameters::sums_in_graphs`]), once for all workers.
pub fn sums_in_graphs() -> bool {
    crate::switch::env_flag("STASC_GRAPHED_SUMS", false)
}

/// How many replayed passes had their gradient sums in the graph so far in this process.
pub fn summing_replays() -> u64 {
    SUMMING_REPLAYS.load(Ordering::Relaxed)
}

/// How many training passes replayed a CUDA graph so far in this process.
pub fn replays() -> u64 {
    REPLAYS.load(Ordering::Relaxed)
}

/// How many training passes were recorded as CUDA graphs so far in this process.
pub fn recordings() -> u64 {
    RECORDINGS.load(Ordering::Relaxed)
}

/// With graphs on and a GPU present, a line saying how many passes were recorded and replayed so far (for
/// benchmarks).
pub fn report() -> Option<String> {
    (mode() == GraphMode::Graphs && tch::Cuda::is_available())
        .then(|| format!("CUDA-graph training passes so far: {} recorded, {} replayed", recordings(), replays()))
}

/// The most shapes one worker records. The graphs share one memory pool, but passes of many different sizes
/// leave it holding blocks of many sizes: `bench train-parallel --realistic` on one H200 peaked at 42.9 GiB with 19
/// graphs of 128-token buckets, 28.0 GiB with 8 graphs of 512-token buckets and 27.6 GiB eagerly (different calls).
/// Passes of shapes beyond the cap run eagerly; recording a shape the second time it comes picks frequent ones first.
/// (The cap itself has not yet been measured on a GPU.)
const MAX_GRAPHS: usize = 16;

/// One recorded pass: its graph, the input tensors it reads and the loss tensor it writes.
struct Recorded {
    graph: CudaGraph,
    inputs: MicroBatch,
    loss: Tensor,
}

/// The recorded passes of one worker, by shape.
pub struct GraphedPasses {
    stream: CaptureStream,
    pool: Option<MempoolId>,
    recorded: HashMap<PassShape, Recorded>,
    /// Passes seen per shape not yet recorded: a shape is recorded the second time it comes, so a shape that
    /// comes once (a short run, a rare length) never pays for a recording.
    seen: HashMap<PassShape, u32>,
    /// Last passes with their gradient sums in the graph, by the step's joint shape (see `summing`).
    summing: HashMap<PassShape, Recorded>,
    /// Steps seen per joint shape, as `seen`.
    summing_seen: HashMap<PassShape, u32>,
    /// The optimiser's gradients were seen bound to its flat buffer (see `summing`).
    bound: bool,
    off: bool,
    /// Whether a pass already ran on the capture stream (the first recording's warm-up).
    warmed: bool,
}

impl std::fmt::Debug for GraphedPasses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphedPasses").field("shapes", &self.recorded.len()).field("off", &self.off).finish()
    }
}

impl GraphedPasses {
    /// Graphs for the passes of `model`, unless [`mode`] rules them out or its packed passes cannot run
    /// variable-length flash attention (the CPU, f32, no shim).
    pub fn new(model: &CausalLm) -> Option<GraphedPasses> {
        let mode = mode();
        let flash = varlen_attention_applies(model.device(), model.kind(), model.config().head_dim);
        match model.device() {
            Device::Cuda(ordinal) if mode != GraphMode::Off && flash => {
                let stream = CaptureStream::new(ordinal)
                    .map_err(|e| eprintln!("note: training passes run without CUDA graphs ({e})"))
                    .ok()?;
                let off = mode == GraphMode::ShapesOnly;
                let (recorded, seen, summing, summing_seen) =
                    (HashMap::new(), HashMap::new(), HashMap::new(), HashMap::new());
                Some(GraphedPasses {
                    stream,
                    pool: None,
                    recorded,
                    seen,
                    summing,
                    summing_seen,
                    bound: false,
                    off,
                    warmed: false,
                })
            }
            _ => None,
        }
    }

    /// Runs the packed pass `batch` (padded to `shape`) through its shape's graph, recording it first if it is
    /// due; returns its loss, or gives `batch` back when it must run eagerly (graphs off, the shape's first pass or
    /// one over [`MAX_GRAPHS`], or `gradients_bound()` false: gradients are not yet views of the flat buffer; asked
    /// only when a recording is due).
    pub fn run(
        &mut self,
        model: &CausalLm,
        batch: MicroBatch,
        shape: PassShape,
        opts: &PassOptions,
        gradients_bound: impl FnOnce() -> bool,
    ) -> Result<Result<Tensor, MicroBatch>, TrainError> {
        if self.off {
            return Ok(Err(batch));
        }
        if let Some(r) = self.recorded.get_mut(&shape) {
            return replay(r, &batch).map(Ok);
        }
        let seen = self.seen.entry(shape).or_insert(0);
        *seen += 1;
        if *seen < 2 || self.graphs() >= MAX_GRAPHS || !gradients_bound() {
            return Ok(Err(batch));
        }
        // The first recording runs the pass for real on the capture stream (the warm-up: lazy initialisation on a
        // new stream happens outside a capture), then records it. Later ones only record and replay the graph once
        // to do the work: a warm-up would cost a pass and leave its blocks cached for the capture stream alone.
        let warm_up = !self.warmed;
        let mut losses = Vec::with_capacity(2);
        let flash_before = varlen_attention_calls();
        let captured = self.stream.capture(self.pool, warm_up, || -> Result<(), TrainError> {
            losses.push(forward_backward(model, &batch, 1.0, opts, None)?);
            Ok(())
        });
        match captured {
            Ok(mut graph) => {
                self.share_pool(&mut graph);
                let recorded =
                    losses.pop().ok_or_else(|| TrainError::Invalid("a recorded pass gave no loss".into()))?;
                let flash = self.ran_flash_throughout(model, flash_before, if warm_up { 2 } else { 1 });
                let done = match losses.pop() {
                    Some(done) => done,
                    None if flash => {
                        graph.replay().map_err(|e| TrainError::Invalid(format!("replaying a training pass: {e}")))?;
                        recorded.copy()
                    }
                    // Recorded without a warm-up and not replayable: run the pass eagerly instead.
                    None => return Ok(Err(batch)),
                };
                if warm_up {
                    self.warmed_up();
                }
                if !flash {
                    return Ok(Ok(done));
                }
                RECORDINGS.fetch_add(1, Ordering::Relaxed);
                self.recorded.insert(shape, Recorded { graph, inputs: batch, loss: recorded });
                Ok(Ok(done))
            }
            Err(CaptureError::Work(e)) => Err(e),
            Err(CaptureError::Recording(_, why)) => {
                eprintln!("note: recording a training pass as a CUDA graph failed ({why}); passes run eagerly");
                self.off = true;
                // With a warm-up the pass ran; without one nothing did, and it runs eagerly now.
                match warm_up {
                    true => losses.into_iter().next().map(Ok).ok_or_else(|| TrainError::Invalid("no loss".into())),
                    false => Ok(Err(batch)),
                }
            }
            Err(CaptureError::Unavailable(why)) => {
                eprintln!("note: training passes run without CUDA graphs ({why})");
                self.off = true;
                Ok(Err(batch))
            }
        }
    }
}

impl GraphedPasses {
    /// How many passes this worker has recorded, of both kinds.
    fn graphs(&self) -> usize {
        self.recorded.len() + self.summing.len()
    }

    /// Makes the first recorded graph's memory pool the one every later recording shares.
    fn share_pool(&mut self, graph: &mut CudaGraph) {
        if self.pool.is_none() {
            self.pool = graph.pool().ok();
        }
    }

    /// Whether every layer ran variable-length flash attention in the `runs` runs of a pass since the count was
    /// `flash_before`; if not, graphs are off from now on (said once). The padded attention layout depends on the
    /// pass's lengths, not only on its shape: a graph of it would replay the recorded pass's layout.
    fn ran_flash_throughout(&mut self, model: &CausalLm, flash_before: u64, runs: u64) -> bool {
        let flash = varlen_attention_calls() - flash_before >= runs * model.layers().len() as u64;
        if !flash {
            eprintln!("note: training passes run eagerly (CUDA graphs need variable-length flash attention)");
            self.off = true;
        }
        flash
    }

    /// After a pass ran for real on the capture stream: its blocks stay cached for that stream, where no eager
    /// pass can use them, so they go back to the driver.
    fn warmed_up(&mut self) {
        self.warmed = true;
        crate::model::device::release_cuda_cache();
    }
}

/// Copies `batch` into the recorded pass `r`'s inputs and replays it; returns its loss.
fn replay(r: &mut Recorded, batch: &MicroBatch) -> Result<Tensor, TrainError> {
    copy_inputs(&r.inputs, batch)?;
    r.graph.replay().map_err(|e| TrainError::Invalid(format!("replaying a training pass: {e}")))?;
    REPLAYS.fetch_add(1, Ordering::Relaxed);
    Ok(r.loss.shallow_clone())
}

/// Copies a pass's inputs into a recorded pass's input tensors (same shapes: same [`PassShape`]).
fn copy_inputs(to: &MicroBatch, from: &MicroBatch) -> Result<(), TrainError> {
    let err = TrainError::torch("copying a pass into its graph's inputs");
    let (Some(ts), Some(fs)) = (&to.segments, &from.segments) else {
        return Err(TrainError::Invalid("recorded passes are packed".into()));
    };
    let pairs = [
        (&to.input_ids, &from.input_ids),
        (&to.positions, &from.positions),
        (&to.target_rows, &from.target_rows),
        (&to.targets, &from.targets),
        (&ts.cu_seqlens, &fs.cu_seqlens),
    ];
    tch::no_grad(|| -> Result<(), tch::TchError> {
        for (t, f) in pairs {
            t.shallow_clone().f_copy_(f)?;
        }
        if let (Some(t), Some(f)) = (&to.target_weights, &from.target_weights) {
            t.shallow_clone().f_copy_(f)?;
        }
        Ok(())
    })
    .map_err(err)
}
