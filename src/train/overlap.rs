//! Gradient sums overlapped with backward, as DDP's buckets: a data-parallel worker sums each decoder layer's
//! gradients ([`AdamW::gradient_buckets`]) as soon as backward has gone below that layer, while backward goes on
//! through the layers beneath, instead of one sum of the whole buffer after backward.
//!
//! Between CUDA devices (NCCL) each sum runs on a side stream of libtorch's pool that first waits for the work
//! queued so far on the compute stream (the layer's backward), so the compute stream goes on with the next layer;
//! [`GradReducer::finish`] makes the compute stream wait for every sum before clipping reads the gradients. The
//! buffer's ranges are disjoint, so backward never writes a range a sum is using. Host-side sums (CPU workers, or
//! workers sharing a device) run each bucket at once on the calling thread.
//!
//! A sum adds the same elements in the same worker order whichever bucket holds them, so the result is the whole
//! buffer's sum to the last bit; every worker sums the buckets in one fixed order (a layer's bucket sums every
//! earlier one not yet summed), so collectives always pair up.
//!
//! With the optimiser state sharded over the workers (ZeRO stage 1, [`AdamW::is_sharded`]), a bucket's sum is a
//! reduce-scatter: each worker receives the sum of its own part only, updates that part, and the workers then
//! gather every part of the parameters ([`GradReducer::gather`], again on the side stream, so gathering one
//! bucket overlaps the update of the next). Each worker keeps and updates 1/workers of the moments, and a sum
//! moves half the bytes of an all-reduce.
//!
//! With overlapped sums the gathers are also deferred ([`GatherEvents`]): the compute stream does not wait for every
//! gather after the update; the next forward waits for each layer's bucket right before the layer (FSDP's
//! prefetch), the gathers running in forward order beside it. The update of the step after waits for them all.
//!
//! A worker's last pass of a step can also be recorded as a CUDA graph with its sums in it
//! ([`super::graphed::GraphedPasses::run_summing`]): the side stream then joins the capture at each bucket's fork, and
//! [`GradReducer::set_in_graph`] makes the sums skip the host barrier while recording, because recording runs
//! nothing. "The compute stream" is always the calling thread's current stream at the time of the call (the
//! capture stream while recording), never one remembered from before.

use tch::Device;

use super::error::TrainError;
use super::flat::GradBucket;
use super::optim::AdamW;
use crate::dist::{Group, Transport};
use crate::ffi::driver::Event;
use crate::ffi::StascStream;

/// Side stream and ordering event of a worker whose sums go through NCCL.
struct Streams {
    ordinal: usize,
    comm: StascStream,
    event: Event,
}

/// Sums one worker's gradient buckets over its group during backward.
pub struct GradReducer<'a> {
    group: &'a Group,
    worker: usize,
    buckets: Vec<GradBucket>,
    /// How many buckets (a prefix) are summed this step.
    summed: usize,
    /// Reduce-scatter (sharded optimiser state) instead of all-reduce.
    sharded: bool,
    streams: Option<Streams>,
    /// The sums are being recorded into a CUDA graph (no host barrier).
    in_graph: bool,
}

impl std::fmt::Debug for GradReducer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GradReducer")
            .field("worker", &self.worker)
            .field("buckets", &self.buckets.len())
            .field("side_stream", &self.streams.is_some())
            .finish()
    }
}

impl<'a> GradReducer<'a> {
    /// The reducer of `worker` (on `device`) in `group` for `opt`'s buckets.
    pub fn new(group: &'a Group, worker: usize, opt: &AdamW, device: Device) -> GradReducer<'a> {
        let streams = match (group.transport(), device) {
            (Transport::Nccl, Device::Cuda(ordinal)) => {
                let made = (|| {
                    Ok::<_, crate::ffi::FfiError>(Streams {
                        ordinal,
                        comm: StascStream::from_pool(ordinal)?,
                        event: Event::new(ordinal)?,
                    })
                })();
                // Without a side stream the sums queue behind backward on the compute stream: the same sums, later.
                made.map_err(|e| eprintln!("note: gradient sums on cuda:{ordinal} cannot overlap backward ({e})")).ok()
            }
            _ => None,
        };
        let buckets = opt.gradient_buckets();
        GradReducer { group, worker, buckets, summed: 0, sharded: opt.is_sharded(), streams, in_graph: false }
    }

    /// Whether this worker's sums can be recorded into a CUDA graph: they go through NCCL on a side stream.
    pub fn records_in_graphs(&self) -> bool {
        self.streams.is_some()
    }

    /// Marks the sums queued from now on as recorded into a CUDA graph (true) or run (false).
    pub fn set_in_graph(&mut self, in_graph: bool) {
        self.in_graph = in_graph;
    }

    /// Backward has finished decoder layer `Some(i)` (or everything: `None`): sums its bucket and every earlier one
    /// not yet summed. A layer without a bucket of its own sums nothing.
    pub fn ready(&mut self, opt: &mut AdamW, layer: Option<usize>) -> Result<(), TrainError> {
        let upto = match layer {
            None => self.buckets.len(),
            Some(l) => match self.buckets.iter().position(|b| b.layer == Some(l)) {
                Some(k) => k + 1,
                None => self.summed,
            },
        };
        while self.summed < upto {
            let bucket = self.buckets[self.summed];
            self.sum(opt, &bucket)?;
            self.summed += 1;
        }
        Ok(())
    }

    fn sum(&self, opt: &mut AdamW, bucket: &GradBucket) -> Result<(), TrainError> {
        let grads = tch::no_grad(|| opt.bucket_gradients(bucket))?;
        let (group, worker) = (self.group, self.worker);
        self.on_side_stream(|| {
            tch::no_grad(|| match (self.sharded, self.in_graph) {
                (true, false) => group.reduce_scatter_sum(worker, &grads),
                (true, true) => group.reduce_scatter_sum_in_graph(worker, &grads),
                (false, false) => group.all_reduce_sum(worker, &grads),
                (false, true) => group.all_reduce_sum_in_graph(worker, &grads),
            })
        })
    }

    /// Gathers every worker's updated part of bucket `k` (an index into the buckets) of a sharded optimiser's
    /// parameters, after the work queued so far (its update), and marks it gathered in `events` when given.
    /// [`GradReducer::finish_gather`] ends the step, or, with `events`, the next forward's waits do.
    pub fn gather(&self, opt: &AdamW, k: usize, events: Option<&GatherEvents>) -> Result<(), TrainError> {
        let params = opt.bucket_parameters(&self.buckets[k])?;
        self.on_side_stream(|| tch::no_grad(|| self.group.all_gather(self.worker, &params)))?;
        if let (Some(e), Some(s)) = (events, &self.streams) {
            // SAFETY: the side stream is a libtorch stream of this worker's device, alive for the process.
            unsafe { e.events[k].record(s.comm.raw().map_err(ffi)?) }.map_err(ffi)?;
        }
        Ok(())
    }

    /// Events for deferred gathers, one per bucket: only between CUDA devices, with a side stream.
    pub fn gather_events(&self) -> Option<GatherEvents> {
        let s = self.streams.as_ref()?;
        let events: Result<Vec<Event>, _> = self.buckets.iter().map(|_| Event::new(s.ordinal)).collect();
        let layers = self.buckets.iter().map(|b| b.layer).collect();
        events
            .map_err(|e| eprintln!("note: parameter gathers on cuda:{} are not deferred ({e})", s.ordinal))
            .ok()
            .map(|events| GatherEvents { ordinal: s.ordinal, events, layers })
    }

    /// Bucket indices in the order a forward needs them: everything outside the decoder layers (the embedding,
    /// norms, biases) first, then the layers from the first.
    pub fn forward_order(&self) -> Vec<usize> {
        forward_order(&self.buckets)
    }

    /// Makes the compute stream wait for every gather (the next forward reads the parameters).
    pub fn finish_gather(&self) -> Result<(), TrainError> {
        self.side_stream_done()
    }

    /// Runs `collective` on the side stream after the work queued so far on the compute stream (at once on the
    /// calling thread without a side stream).
    fn on_side_stream(
        &self,
        collective: impl FnOnce() -> Result<(), crate::dist::DistError>,
    ) -> Result<(), TrainError> {
        let Some(s) = &self.streams else { return collective().map_err(TrainError::from) };
        let compute = StascStream::current(s.ordinal).map_err(ffi)?;
        // SAFETY: both streams are libtorch streams of this worker's device, alive for the process.
        unsafe { s.event.order(compute.raw().map_err(ffi)?, s.comm.raw().map_err(ffi)?) }.map_err(ffi)?;
        s.comm.make_current().map_err(ffi)?;
        let done = collective();
        compute.make_current().map_err(ffi)?;
        done.map_err(TrainError::from)
    }

    /// Makes the compute stream wait for the work queued so far on the side stream.
    fn side_stream_done(&self) -> Result<(), TrainError> {
        if let Some(s) = &self.streams {
            let compute = StascStream::current(s.ordinal).map_err(ffi)?;
            // SAFETY: as in `on_side_stream`.
            unsafe { s.event.order(s.comm.raw().map_err(ffi)?, compute.raw().map_err(ffi)?) }.map_err(ffi)?;
        }
        Ok(())
    }

    /// Ends the step's sums: sums the buckets not yet summed, and (between CUDA devices) makes the compute stream
    /// wait for all of them. The next step starts from the first bucket.
    pub fn finish(&mut self, opt: &mut AdamW) -> Result<(), TrainError> {
        self.ready(opt, None)?;
        self.summed = 0;
        self.side_stream_done()
    }
}

/// One event per gradient bucket that marks the bucket's parameters gathered on the side stream
/// ([`GradReducer::gather`]), for a forward that waits for each layer's parameters right before the layer.
pub struct GatherEvents {
    ordinal: usize,
    events: Vec<Event>,
    /// Each bucket's decoder layer (`None`: everything else).
    layers: Vec<Option<usize>>,
}

impl std::fmt::Debug for GatherEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatherEvents").field("buckets", &self.events.len()).finish()
    }
}

impl GatherEvents {
    /// Makes the calling thread's current stream wait for the gathers of decoder layer `Some(i)`'s bucket, or of
    /// the bucket outside the layers (`None`: before the embedding). Recorded into a CUDA graph, the wait is an
    /// external one: every replay waits for that step's gathers.
    pub fn wait(&self, layer: Option<usize>) -> Result<(), TrainError> {
        let current = StascStream::current(self.ordinal).map_err(ffi)?.raw().map_err(ffi)?;
        for (event, _) in self.events.iter().zip(&self.layers).filter(|(_, l)| **l == layer) {
            // SAFETY: the current stream is a libtorch stream of this device, alive for the call.
            unsafe { event.wait_on(current) }.map_err(ffi)?;
        }
        Ok(())
    }

    /// Makes the current stream wait for every bucket's gathers (a forward without per-layer waits).
    pub fn wait_all(&self) -> Result<(), TrainError> {
        let current = StascStream::current(self.ordinal).map_err(ffi)?.raw().map_err(ffi)?;
        for event in &self.events {
            // SAFETY: as in `wait`.
            unsafe { event.wait_on(current) }.map_err(ffi)?;
        }
        Ok(())
    }
}

/// Indices of `buckets` in the order a forward needs them ([`GradReducer::forward_order`]).
fn forward_order(buckets: &[GradBucket]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..buckets.len()).collect();
    order.sort_by_key(|&k| buckets[k].layer.map_or(0, |l| l + 1));
    order
}

fn ffi(e: crate::ffi::FfiError) -> TrainError {
    TrainError::Invalid(format!("overlapped gradient sums: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_needs_the_buckets_outside_the_layers_first_then_the_layers_from_the_first() {
        // Backward completes the last layer first; everything outside the layers comes last.
        let bucket = |layer: Option<usize>| GradBucket { layer, offset: 0, numel: 1 };
        let buckets = [bucket(Some(2)), bucket(Some(1)), bucket(Some(0)), bucket(None)];
        assert_eq!(forward_order(&buckets), vec![3, 2, 1, 0]);
        assert_eq!(forward_order(&[]), Vec::<usize>::new());
    }
}
