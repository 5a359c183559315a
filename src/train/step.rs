//! Forward and backward of one micro-batch, gradients accumulating into the trainable tensors.
//!
//! The loss is HF's: cross-entropy in f32 over the shifted label tokens, summed and divided by a denominator the
//! trainer chooses (HF's `num_items_in_batch`): the label tokens of the whole optimiser step, or, per-rank, the
//! ranks times the label tokens of the micro-batch's rank (see [`super::trainer`]). Accumulated micro-batches then
//! add up to the step's loss, and the value returned is divided the same way as the gradient, so the loss reported
//! is the one trained on. Two savings over HF: the LM head runs only on positions that have a target, and it runs in
//! chunks of rows whose logits are freed before the next chunk (backward through the head happens per chunk, and
//! the decoder's backward is then driven by the gradient of the hidden states).
//!
//! A packed pass ([`super::packed`]) holds examples of several micro-batches, so its targets carry per-token weights
//! (`1 / denominator` of each example's micro-batch) and its denominator is 1: the same sum, grouped differently.
//!
//! Gradient checkpointing is real recomputation: the forward runs every decoder layer under `no_grad`, keeping only
//! each layer's input; the backward recomputes one layer at a time with autograd on, back-propagates the incoming
//! gradient through it (`(y * dy).sum().backward()`, whose gradient w.r.t. y is exactly dy) and moves to the layer
//! below. Adapter dropout is replayed identically by reseeding the device's generator per layer.
//!
//! A pass told when gradients are ready ([`GradsReady`], for data-parallel workers that sum each layer's gradients
//! while backward goes on) runs backward one decoder layer at a time the same way, the forward's graph cut at every
//! layer's input: each cut input has two consumers (the norm and the residual add), whose gradients add in either
//! order to the same value, so the gradients are bit for bit those of one backward call.

use tch::{Kind, Reduction, Tensor};

use super::batching::MicroBatch;
use super::error::TrainError;
use super::overlap::GatherEvents;
use super::packed_attention;
use crate::model::layers::{AttnMode, DecoderLayer, RopeAt};
use crate::model::{CausalLm, Pass};

/// How a micro-batch is run.
#[derive(Debug, Clone, Copy)]
pub struct PassOptions<'a> {
    /// Recompute decoder layers in backward instead of keeping their activations.
    pub gradient_checkpointing: bool,
    /// Most rows of logits alive at once.
    pub head_chunk_rows: i64,
    /// Seed of this micro-batch's dropout masks (replayed under checkpointing).
    pub dropout_seed: Option<u64>,
    /// Deferred parameter gathers of a sharded optimiser: the forward waits for each layer's right before it
    /// ([`GatherEvents`]).
    pub gathers: Option<&'a GatherEvents>,
}

impl PassOptions<'_> {
    /// Waits (on the device) for the gathered parameters of decoder layer `Some(i)`, or of everything outside the
    /// layers (`None`), when gathers are deferred.
    fn wait_for_parameters(&self, layer: Option<usize>) -> Result<(), TrainError> {
        self.gathers.map_or(Ok(()), |g| g.wait(layer))
    }

    /// Rows per LM-head chunk so that one chunk's f32 logits take about 1 GiB.
    pub fn chunk_rows_for(vocab: i64) -> i64 {
        ((1i64 << 28) / vocab.max(1)).max(64)
    }
}

/// Told during a pass's backward that the gradients of decoder layer `Some(i)` are complete (backward has gone
/// below it), layer by layer from the last, and at the end `None`: every gradient is. Every layer is told, also by
/// a pass that has nothing to back-propagate.
pub type GradsReady<'a> = &'a mut dyn FnMut(Option<usize>) -> Result<(), TrainError>;

/// Runs forward and backward on `batch` with its summed token loss divided by `denominator`; returns that divided
/// loss, the micro-batch's share of the step loss (a detached f32 device scalar). With `ready`, backward runs one
/// layer at a time and tells `ready` as each layer's gradients are complete.
pub fn forward_backward(
    model: &CausalLm,
    batch: &MicroBatch,
    denominator: f64,
    opts: &PassOptions,
    ready: Option<GradsReady<'_>>,
) -> Result<Tensor, TrainError> {
    if batch.num_targets == 0 {
        if let Some(ready) = ready {
            (0..model.layers().len()).rev().map(Some).chain([None]).try_for_each(ready)?;
        }
        return Tensor::f_zeros([], (Kind::Float, model.device())).map_err(TrainError::torch("empty micro-batch"));
    }
    let summed = if opts.gradient_checkpointing {
        checkpointed(model, batch, denominator, opts, ready)?
    } else {
        if let Some(seed) = opts.dropout_seed {
            crate::model::device::seed_device(model.device(), seed as i64);
        }
        match ready {
            Some(ready) => layer_by_layer(model, batch, denominator, opts, ready)?,
            None => {
                let hidden = match &batch.segments {
                    None => {
                        opts.gathers.map_or(Ok(()), GatherEvents::wait_all)?;
                        model.forward(&batch.input_ids, &batch.positions, Pass::Full)?
                    }
                    Some(_) => packed_forward(model, batch, opts)?,
                };
                head_and_backward(model, &hidden, batch, denominator, opts.head_chunk_rows)?
            }
        }
    };
    summed.f_div_scalar(denominator).map_err(TrainError::torch("normalising the micro-batch loss"))
}

/// The final-normed hidden states of a packed pass (the model's own forward has no block-diagonal attention).
fn packed_forward(model: &CausalLm, batch: &MicroBatch, opts: &PassOptions) -> Result<Tensor, TrainError> {
    let err = |what: &str| TrainError::torch(format!("packed forward: {what}"));
    let rope_at = model.rope().at(&batch.positions).map_err(err("rotary"))?;
    opts.wait_for_parameters(None)?;
    let mut x = model.embed(&batch.input_ids)?;
    for (i, layer) in model.layers().iter().enumerate() {
        opts.wait_for_parameters(Some(i))?;
        x = decoder_layer(model, layer, &x, &rope_at, batch).map_err(err("decoder layer"))?;
    }
    model.final_norm().forward(&x).map_err(err("final norm"))
}

/// One decoder layer on `batch`'s layout: causal attention over each padded row, or within each packed segment.
fn decoder_layer(
    model: &CausalLm,
    layer: &DecoderLayer,
    x: &Tensor,
    rope_at: &RopeAt,
    batch: &MicroBatch,
) -> Result<Tensor, tch::TchError> {
    match &batch.segments {
        None => layer.forward(x, model.rope(), rope_at, AttnMode::Full),
        Some(segments) => packed_attention::layer_forward(layer, x, model.rope(), rope_at, segments),
    }
}

/// From final-normed hidden states [B, T, H] (part of an autograd graph): the LM head and loss per chunk, then the
/// backward of everything that produced `hidden`.
fn head_and_backward(
    model: &CausalLm,
    hidden: &Tensor,
    batch: &MicroBatch,
    denominator: f64,
    chunk: i64,
) -> Result<Tensor, TrainError> {
    let err = |what: &str| TrainError::torch(format!("LM head and loss: {what}"));
    let h = hidden.size().last().copied().unwrap_or(0);
    let selected =
        hidden.f_reshape([-1, h]).and_then(|x| x.f_index_select(0, &batch.target_rows)).map_err(err("gather"))?;
    let head_in = selected.detach().set_requires_grad(true);
    let n = batch.num_targets as i64;
    let mut total = Tensor::f_zeros([], (Kind::Float, model.device())).map_err(err("init"))?;
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let x = head_in.f_narrow(0, start, len).map_err(err("chunk"))?;
        let logits = model.logits(&x)?;
        let targets = batch.targets.f_narrow(0, start, len).map_err(err("targets"))?;
        let weights =
            batch.target_weights.as_ref().map(|w| w.f_narrow(0, start, len)).transpose().map_err(err("loss"))?;
        // On CUDA one kernel each way from the logits as they are (crate::kernels' op); otherwise libtorch's loss
        // on the logits upcast to f32. Both compute in f32 and round the gradient to the logits' dtype.
        let loss = match crate::kernels::cross_entropy_autograd(&logits, &targets).map_err(err("loss"))? {
            Some(rows) => match &weights {
                None => rows.f_sum(Kind::Float),
                Some(w) => rows.f_mul(w).and_then(|l| l.f_sum(Kind::Float)),
            },
            None => logits.f_to_kind(Kind::Float).and_then(|logits| match &weights {
                None => logits.f_cross_entropy_loss::<Tensor>(&targets, None, Reduction::Sum, -100, 0.0),
                Some(w) => logits
                    .f_cross_entropy_loss::<Tensor>(&targets, None, Reduction::None, -100, 0.0)
                    .and_then(|l| l.f_mul(w))
                    .and_then(|l| l.f_sum(Kind::Float)),
            }),
        }
        .map_err(err("loss"))?;
        loss.f_div_scalar(denominator).and_then(|l| l.f_backward()).map_err(err("backward"))?;
        total = total.f_add(&loss.detach()).map_err(err("sum"))?;
        start += len;
    }
    if selected.requires_grad() {
        let grad = head_in.grad();
        backward_with_grad(&selected, &grad).map_err(err("decoder backward"))?;
    }
    Ok(total)
}

/// Back-propagates `grad` (dL/dy) through the graph that produced `y`, accumulating parameter gradients.
fn backward_with_grad(y: &Tensor, grad: &Tensor) -> Result<(), tch::TchError> {
    y.f_mul(grad)?.f_sum(y.kind())?.f_backward()
}

fn layer_seed(seed: Option<u64>, layer: usize) -> Option<i64> {
    seed.map(|s| (s ^ ((layer as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))) as i64 >> 1)
}

/// Forward with the graph cut at every decoder layer's input, then backward one layer at a time, telling `ready`.
fn layer_by_layer(
    model: &CausalLm,
    batch: &MicroBatch,
    denominator: f64,
    opts: &PassOptions,
    ready: GradsReady<'_>,
) -> Result<Tensor, TrainError> {
    let err = |what: &str| TrainError::torch(format!("layer-by-layer backward: {what}"));
    let rope_at = model.rope().at(&batch.positions).map_err(err("rotary"))?;
    opts.wait_for_parameters(None)?;
    let embedded = model.embed(&batch.input_ids)?;
    // (cut input, output) of every layer. The first input needs a gradient only when the embeddings train.
    let mut cuts: Vec<(Tensor, Tensor)> = Vec::with_capacity(model.layers().len());
    let mut x = embedded.shallow_clone();
    for (i, layer) in model.layers().iter().enumerate() {
        opts.wait_for_parameters(Some(i))?;
        let cut = x.detach().set_requires_grad(i > 0 || embedded.requires_grad());
        let y = decoder_layer(model, layer, &cut, &rope_at, batch).map_err(err("forward"))?;
        cuts.push((cut, y.shallow_clone()));
        x = y;
    }
    let top = x.detach().set_requires_grad(true);
    let hidden = model.final_norm().forward(&top).map_err(err("final norm"))?;
    let total = head_and_backward(model, &hidden, batch, denominator, opts.head_chunk_rows)?;
    let mut grad = top.grad();
    for (i, (cut, y)) in cuts.into_iter().enumerate().rev() {
        // Only the first layer's output can lack a graph: frozen embeddings and no adapter in that layer.
        if y.requires_grad() {
            backward_with_grad(&y, &grad).map_err(err("layer backward"))?;
        }
        drop(y);
        grad = cut.grad();
        ready(Some(i))?;
    }
    if embedded.requires_grad() {
        backward_with_grad(&embedded, &grad).map_err(err("embedding backward"))?;
    }
    ready(None)?;
    Ok(total)
}

fn checkpointed(
    model: &CausalLm,
    batch: &MicroBatch,
    denominator: f64,
    opts: &PassOptions,
    mut ready: Option<GradsReady<'_>>,
) -> Result<Tensor, TrainError> {
    let err = |what: &str| TrainError::torch(format!("gradient checkpointing: {what}"));
    let rope_at = model.rope().at(&batch.positions).map_err(err("rotary"))?;
    let layers = model.layers();
    // Forward without a graph, keeping the input of every layer.
    let mut inputs = Vec::with_capacity(layers.len());
    let last = tch::no_grad(|| -> Result<Tensor, TrainError> {
        opts.wait_for_parameters(None)?;
        let mut x = model.embed(&batch.input_ids)?;
        for (i, layer) in layers.iter().enumerate() {
            opts.wait_for_parameters(Some(i))?;
            if let Some(s) = layer_seed(opts.dropout_seed, i) {
                crate::model::device::seed_device(model.device(), s);
            }
            let y = decoder_layer(model, layer, &x, &rope_at, batch).map_err(err("forward"))?;
            inputs.push(x);
            x = y;
        }
        Ok(x)
    })?;
    let top = last.detach().set_requires_grad(true);
    let hidden = model.final_norm().forward(&top).map_err(err("final norm"))?;
    let total = head_and_backward(model, &hidden, batch, denominator, opts.head_chunk_rows)?;
    let mut grad = top.grad();
    for (i, layer) in layers.iter().enumerate().rev() {
        let x = inputs.pop().ok_or_else(|| TrainError::Invalid("layer inputs out of step".into()))?;
        let x = x.detach().set_requires_grad(true);
        if let Some(s) = layer_seed(opts.dropout_seed, i) {
            crate::model::device::seed_device(model.device(), s);
        }
        let y = decoder_layer(model, layer, &x, &rope_at, batch).map_err(err("recompute"))?;
        backward_with_grad(&y, &grad).map_err(err("layer backward"))?;
        grad = x.grad();
        if let Some(ready) = ready.as_mut() {
            ready(Some(i))?;
        }
    }
    let embedded = model.embed(&batch.input_ids)?;
    if embedded.requires_grad() {
        backward_with_grad(&embedded, &grad).map_err(err("embedding backward"))?;
    }
    if let Some(ready) = ready {
        ready(None)?;
    }
    Ok(total)
}
