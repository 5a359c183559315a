//! A worker's last pass of a step recorded with its overlapped gradient sums in the graph. NCCL's rules (see the
//! parent module) make recording and replaying such passes collective, so the workers first decide together
//! ([`plan_summing`]) and then each runs its pass as decided ([`GraphedPasses::run_summing`]).
//!
//! The step's joint shape is the largest of the workers' pass shapes in each dimension, and every worker pads its
//! last pass to it: the sums make every worker wait for the slowest anyway, so a smaller pass padded to the largest
//! costs no time, and the joint shapes are as few as one worker's shapes (keyed by every worker's own shape instead,
//! the combinations of two workers' ~10 buckets would outnumber the graphs a worker may record).

use std::sync::atomic::Ordering;

use tch::Tensor;

use super::{replay, GraphedPasses, Recorded, MAX_GRAPHS, RECORDINGS, SUMMING_REPLAYS};
use crate::dist::Group;
use crate::generate::cuda_graph::CaptureError;
use crate::model::CausalLm;
use crate::train::batching::MicroBatch;
use crate::train::error::TrainError;
use crate::train::optim::AdamW;
use crate::train::overlap::GradReducer;
use crate::train::packed::PassShape;
use crate::train::packed_attention::varlen_attention_calls;
use crate::train::step::{forward_backward, PassOptions};

/// How every worker runs its last pass of a step, decided together ([`plan_summing`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SummingPlan {
    /// The step's joint shape, which every worker pads its last pass to (`None`: each its own shape, eagerly).
    shape: Option<PassShape>,
    /// Every worker replays its graph of the joint shape.
    replay: bool,
    /// Every worker runs its pass, then records it.
    record: bool,
}

impl SummingPlan {
    /// Every worker runs its pass eagerly, sums overlapped.
    pub fn eager() -> Self {
        SummingPlan::default()
    }

    /// The shape this worker's last pass is padded to, when the workers agreed on one.
    pub fn shape(&self) -> Option<PassShape> {
        self.shape
    }
}

/// Decides with the other workers of `group` how this step's last passes run. `graphs` and `shape`: this worker's
/// recorded passes and its last pass's shape (either `None`: no pass this step, or no graphs); `nccl`: its sums go
/// through NCCL on a side stream; `gradients_bound`: every gradient is its view of the flat buffer (asked only until
/// it holds, and only while a new graph could still be recorded). Every worker calls it once a step,
/// with or without a pass, and all get the same plan: replay when every worker has its graph of the step's joint
/// shape, record when the joint shape comes the second time and every worker has room for a graph, otherwise run
/// eagerly.
pub fn plan_summing(
    mut graphs: Option<&mut GraphedPasses>,
    shape: Option<PassShape>,
    nccl: bool,
    gradients_bound: impl FnOnce() -> bool,
    group: &Group,
    worker: usize,
) -> Result<SummingPlan, TrainError> {
    let mine = match (graphs.as_deref_mut(), shape) {
        (Some(g), Some(s)) if nccl && !g.off => {
            // Once bound, gradients stay bound (the views are the buffer's for the rest of the run).
            g.bound = g.bound || (g.graphs() < MAX_GRAPHS && gradients_bound());
            offer(s, g.bound && g.graphs() < MAX_GRAPHS)
        }
        _ => vec![0],
    };
    let all = group.exchange(worker, &mine)?;
    // Every worker takes this branch alike: a worker without graphs offered nothing.
    let (Some(g), Some((shape, room))) = (graphs, joint_shape(&all)) else {
        return Ok(SummingPlan::eager());
    };
    let seen = g.summing_seen.entry(shape).or_insert(0);
    *seen += 1;
    let seen = *seen;
    let replay = group.all_agree(worker, g.summing.contains_key(&shape))?;
    let record = !replay && room && seen >= 2;
    Ok(SummingPlan { shape: Some(shape), replay, record })
}

/// What a worker that can take part tells the others: its pass's shape and whether it has room for a graph.
fn offer(shape: PassShape, room: bool) -> Vec<u64> {
    vec![1, room as u64, shape.tokens as u64, shape.targets as u64, shape.segments as u64]
}

/// From every worker's offer: the step's joint shape (the largest in each dimension, which holds every worker's
/// pass) and whether every worker has room for a graph, or `None` when some worker cannot take part.
fn joint_shape(offers: &[Vec<u64>]) -> Option<(PassShape, bool)> {
    if !offers.iter().all(|v| v.len() == 5 && v[0] == 1) {
        return None;
    }
    let largest = |k: usize| offers.iter().map(|v| v[k] as usize).max().unwrap_or(0);
    let shape = PassShape { tokens: largest(2), targets: largest(3), segments: largest(4) };
    Some((shape, offers.iter().all(|v| v[1] == 1)))
}

impl GraphedPasses {
    /// Runs this worker's last pass of a step (`batch`, padded to the plan's joint shape) as `plan` says, with its gradient
    /// sums overlapping its backward through `reducer`, and ends the sums (the current stream waits for them):
    /// replaying its graph, or eagerly, or eagerly and then recording it (the eager run is the recording's warm-up;
    /// the recording itself runs nothing). Returns its loss.
    pub fn run_summing(
        &mut self,
        model: &CausalLm,
        batch: MicroBatch,
        plan: &SummingPlan,
        opts: &PassOptions,
        reducer: &mut GradReducer<'_>,
        opt: &mut AdamW,
    ) -> Result<Tensor, TrainError> {
        if plan.replay {
            let r = plan
                .shape
                .and_then(|shape| self.summing.get_mut(&shape))
                .ok_or_else(|| TrainError::Invalid("no recorded pass of the step's joint shape to replay".into()))?;
            let loss = replay(r, &batch)?;
            SUMMING_REPLAYS.fetch_add(1, Ordering::Relaxed);
            return Ok(loss);
        }
        let Some(shape) = plan.shape.filter(|_| plan.record && !self.off) else {
            return summing_pass(model, &batch, opts, reducer, opt);
        };
        let mut losses = Vec::with_capacity(2);
        let flash_before = varlen_attention_calls();
        let captured = self.stream.capture(self.pool, true, || -> Result<(), TrainError> {
            // The first run is the warm-up, for real; the second is recorded.
            reducer.set_in_graph(!losses.is_empty());
            losses.push(summing_pass(model, &batch, opts, reducer, opt)?);
            Ok(())
        });
        reducer.set_in_graph(false);
        let mut losses = losses.into_iter();
        let done = losses.next();
        match captured {
            Ok(mut graph) => {
                self.share_pool(&mut graph);
                self.warmed_up();
                let (Some(done), Some(recorded)) = (done, losses.next()) else {
                    return Err(TrainError::Invalid("a recorded pass gave no loss".into()));
                };
                if self.ran_flash_throughout(model, flash_before, 2) {
                    RECORDINGS.fetch_add(1, Ordering::Relaxed);
                    self.summing.insert(shape, Recorded { graph, inputs: batch, loss: recorded });
                }
                Ok(done)
            }
            Err(CaptureError::Work(e)) => Err(e),
            // The warm-up ran, sums and all, but a half-recorded collective may leave NCCL's queues unlike the other
            // workers': stop rather than risk workers waiting on each other until the collective timeout.
            Err(CaptureError::Recording(_, why)) => Err(TrainError::Invalid(format!(
                "recording a training pass with its gradient sums as a CUDA graph failed ({why}); \
                 STASC_GRAPHED_SUMS=0 runs these passes eagerly"
            ))),
            // Nothing ran. This worker runs its passes eagerly from now on, and says so in every later plan.
            Err(CaptureError::Unavailable(why)) => {
                eprintln!("note: training passes run without CUDA graphs ({why})");
                self.off = true;
                summing_pass(model, &batch, opts, reducer, opt)
            }
        }
    }
}

/// A pass whose gradient sums overlap its backward, ended: every bucket summed and the current stream waiting for
/// the sums.
fn summing_pass(
    model: &CausalLm,
    batch: &MicroBatch,
    opts: &PassOptions,
    reducer: &mut GradReducer<'_>,
    opt: &mut AdamW,
) -> Result<Tensor, TrainError> {
    let loss = forward_backward(model, batch, 1.0, opts, Some(&mut |layer| reducer.ready(opt, layer)))?;
    reducer.finish(opt)?;
    Ok(loss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_joint_shape_holds_every_workers_pass_and_needs_every_worker() {
        let a = PassShape { tokens: 1664, targets: 256, segments: 16 };
        let b = PassShape { tokens: 1536, targets: 512, segments: 16 };
        let joint = PassShape { tokens: 1664, targets: 512, segments: 16 };
        assert_eq!(joint_shape(&[offer(a, true), offer(b, true)]), Some((joint, true)));
        assert_eq!(joint_shape(&[offer(b, true), offer(a, true)]), Some((joint, true)));
        // Every worker's pass fits the joint shape, so each can be padded to it (PassShape::bucket's rounding kept).
        for s in [a, b] {
            assert!(s.tokens <= joint.tokens && s.targets <= joint.targets && s.segments <= joint.segments);
        }
        assert_eq!(joint.tokens % 128 + joint.targets % 256 + joint.segments % 16, 0);
        assert_eq!(joint_shape(&[offer(a, true), offer(b, false)]).map(|j| j.1), Some(false));
        // A worker without a pass, graphs or NCCL sums offers nothing, and nobody records or replays.
        assert_eq!(joint_shape(&[offer(a, true), vec![0]]), None);
        assert_eq!(joint_shape(&[vec![0], vec![0]]), None);
        assert_eq!(SummingPlan::eager().shape(), None);
    }
}
