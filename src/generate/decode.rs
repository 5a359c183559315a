//! The device side of decoding: the persistent buffers every step reads and writes in place (KV cache, next tokens,
//! positions, this window's uniforms, sampled-token history), the step itself (forward, sample, bookkeeping — all on
//! the device), and its replay through CUDA graphs, one per bucket of attended cache length.

use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use super::cuda_graph::{CaptureError, CaptureStream, CudaGraph, MempoolId};
use super::request::GenerateOptions;
use super::sampling::Sampling;
use super::GenerateError;
use crate::ffi::driver::Event;
use crate::model::{CausalLm, KvCache, ModelError, Pass};

pub(crate) fn torch(context: &'static str) -> impl FnOnce(tch::TchError) -> GenerateError {
    move |source| GenerateError::Model(ModelError::Torch { context: context.into(), error: source })
}

/// Device buffers shared by all rows, at fixed addresses for the whole call (graphs replay against them).
pub(crate) struct DeviceState {
    pub(crate) cache: KvCache,
    /// [rows, 1] the token each row feeds next.
    pub(crate) tokens: Tensor,
    /// [rows, 1] the position it is fed at.
    pub(crate) positions: Tensor,
    /// [rows, window + 1] tokens sampled since the last sync (column 0: first tokens of fresh rows).
    pub(crate) history: Tensor,
    /// [rows, window] uniforms of this window's steps (random sampling only).
    uniforms: Option<Tensor>,
    /// [1] index of the current step within the window.
    step: Tensor,
    rows: i64,
    cache_len: i64,
}

impl DeviceState {
    /// Allocates the buffers for `rows` rows of `cache_len` positions and windows of `window` steps.
    pub(crate) fn new(
        model: &CausalLm,
        rows: i64,
        cache_len: i64,
        window: i64,
        random: bool,
    ) -> Result<Self, GenerateError> {
        let device = model.device();
        let zeros = |shape: &[i64], kind: Kind| Tensor::f_zeros(shape, (kind, device)).map_err(torch("allocating"));
        Ok(DeviceState {
            cache: model.new_cache(rows, cache_len)?,
            tokens: zeros(&[rows, 1], Kind::Int64)?,
            positions: zeros(&[rows, 1], Kind::Int64)?,
            history: zeros(&[rows, window + 1], Kind::Int64)?,
            uniforms: if random { Some(zeros(&[rows, window], Kind::Float)?) } else { None },
            step: zeros(&[1], Kind::Int64)?,
            rows,
            cache_len,
        })
    }

    /// Starts a window: uploads its uniforms ([rows * steps], row-major) and resets the step index. On CUDA the
    /// upload goes through pinned memory without blocking: the previous window may still be running.
    pub(crate) fn begin_window(&mut self, uniforms: Option<Vec<f32>>, steps: i64) -> Result<(), GenerateError> {
        if let (Some(buffer), Some(values)) = (&self.uniforms, uniforms) {
            let upload = || -> Result<(), tch::TchError> {
                let mut host = Tensor::f_from_slice(&values)?.f_view([self.rows, steps])?;
                let device = buffer.device();
                if device.is_cuda() {
                    // libtorch keeps the pinned block until the copy is done, so `host` may go at once. (`_pin_memory`
                    // names the accelerator without pin_memory's deprecated device argument and its warning.)
                    host = host.f_internal_pin_memory(device)?.f_to_device_(device, Kind::Float, true, false)?;
                }
                buffer.f_narrow(1, 0, steps)?.f_copy_(&host)?;
                Ok(())
            };
            upload().map_err(torch("uploading uniforms"))?;
        }
        let _ = self.step.f_zero_().map_err(torch("decode bookkeeping"))?;
        Ok(())
    }

    /// Starts reading back the tokens of a window of `steps` steps ([rows, steps + 1], column 0 the first tokens
    /// of fresh rows): on CUDA into pinned memory, queued after the window, without blocking.
    pub(crate) fn start_read(&self, steps: i64) -> Result<TokenRead, GenerateError> {
        let err = torch("reading tokens");
        let tokens = self.history.f_narrow(1, 0, steps + 1).and_then(|h| h.f_reshape([-1])).map_err(err)?;
        if let Some((host, event)) = crate::model::device::start_host_copy(&tokens, Kind::Int64) {
            return Ok(TokenRead { host, copied: Some(event) });
        }
        let host = tokens.f_to_device(Device::Cpu).map_err(torch("reading tokens"))?;
        Ok(TokenRead { host, copied: None })
    }

    /// One decode step over every row, device-side only: forward at `attend_len` (reading `shared`, a prefix every
    /// row holds a copy of, once for all rows), sample with this step's uniforms, record the tokens in the history,
    /// advance tokens, positions and the step index.
    fn step(
        &mut self,
        model: &CausalLm,
        sampling: &Sampling,
        attend_len: i64,
        shared: Option<&KvCache>,
    ) -> Result<(), GenerateError> {
        let rows = self.rows;
        let pass = Pass::Decode { cache: &mut self.cache, attend_len, shared };
        let hidden = model.forward(&self.tokens, &self.positions, pass)?;
        let logits = model.logits(&hidden.f_view([rows, -1]).map_err(torch("decode"))?)?;
        let u = match &self.uniforms {
            Some(u) => Some(u.f_index_select(1, &self.step).and_then(|u| u.f_view([rows])).map_err(torch("sampling"))?),
            None => None,
        };
        let next = sampling.sample(&logits, u.as_ref()).and_then(|n| n.f_view([rows, 1])).map_err(torch("sampling"))?;
        let err = torch("decode bookkeeping");
        (|| -> Result<(), tch::TchError> {
            let column = self.step.f_add_scalar(1)?;
            let _ = self.history.f_index_copy_(1, &column, &next)?;
            self.tokens.f_copy_(&next)?;
            let _ = self.positions.f_add_scalar_(1)?.f_clamp_max_(self.cache_len - 1)?;
            let _ = self.step.f_add_scalar_(1)?;
            Ok(())
        })()
        .map_err(err)
    }
}

/// A window's tokens on their way to the host.
pub(crate) struct TokenRead {
    host: Tensor,
    /// Recorded after the copy on CUDA; `None` when the copy was synchronous.
    copied: Option<Event>,
}

impl TokenRead {
    /// Waits for the copy and returns the tokens, row-major.
    pub(crate) fn finish(self) -> Result<Vec<i64>, GenerateError> {
        if let Some(event) = &self.copied {
            event
                .synchronize()
                .map_err(|e| GenerateError::Model(ModelError::Device(format!("waiting for a window's tokens: {e}"))))?;
        }
        Vec::<i64>::try_from(&self.host).map_err(torch("reading tokens"))
    }
}

fn replay_failed(error: crate::ffi::FfiError) -> GenerateError {
    GenerateError::Model(ModelError::Device(format!("replaying a CUDA graph of the decode step: {error}")))
}

/// Runs decode steps eagerly or through CUDA graphs.
pub(crate) struct Decoder {
    graphs: BTreeMap<i64, CudaGraph>,
    pool: Option<MempoolId>,
    stream: Option<CaptureStream>,
    /// Why graphs are not used, when they were asked for but could not be.
    pub(crate) graph_note: Option<String>,
    /// Host seconds spent recording graphs (warm-up steps included).
    pub(crate) capture_s: f64,
    /// Attended lengths are rounded up to a multiple of this, so a few graphs cover every step.
    bucket: i64,
}

impl Decoder {
    /// A decoder for `model`; graphs when the options ask for them and the model is on CUDA.
    pub(crate) fn new(model: &CausalLm, options: &GenerateOptions) -> Self {
        let mut decoder = Decoder {
            graphs: BTreeMap::new(),
            pool: None,
            stream: None,
            graph_note: None,
            capture_s: 0.0,
            bucket: options.cuda_graph_bucket.max(1) as i64,
        };
        if let (true, Device::Cuda(index)) = (options.cuda_graphs, model.device()) {
            match CaptureStream::new(index) {
                Ok(stream) => decoder.stream = Some(stream),
                Err(why) => decoder.graph_note = Some(format!("CUDA graphs unavailable: {why}")),
            }
        }
        decoder
    }

    /// Graphs captured so far.
    pub(crate) fn graphs(&self) -> usize {
        self.graphs.len()
    }

    /// Runs one step attending to `attend_len` cache positions (rounded up to a graph bucket when graphs are on);
    /// `shared`, when given, holds positions every row holds a copy of, for the whole call.
    pub(crate) fn step(
        &mut self,
        model: &CausalLm,
        state: &mut DeviceState,
        sampling: &Sampling,
        attend_len: i64,
        shared: Option<&KvCache>,
    ) -> Result<(), GenerateError> {
        let Some(stream) = &self.stream else {
            return state.step(model, sampling, attend_len, shared);
        };
        let bucket = ((attend_len + self.bucket - 1) / self.bucket * self.bucket).min(state.cache_len);
        if let Some(graph) = self.graphs.get_mut(&bucket) {
            return graph.replay().map_err(replay_failed);
        }
        // The first graph of the call warms the stream up with a real step; later ones are replayed once instead.
        let warm_up = self.graphs.is_empty();
        let started = std::time::Instant::now();
        let captured = stream.capture(self.pool, warm_up, || state.step(model, sampling, bucket, shared));
        let result = match captured {
            Ok(mut graph) => (|| -> Result<(), crate::ffi::FfiError> {
                if !warm_up {
                    graph.replay()?;
                }
                if self.pool.is_none() {
                    self.pool = Some(graph.pool()?);
                }
                self.graphs.insert(bucket, graph);
                Ok(())
            })()
            .map_err(replay_failed),
            Err(CaptureError::Work(e)) => Err(e),
            Err(CaptureError::Unavailable(why)) => {
                self.stream = None;
                self.graph_note = Some(format!("CUDA graphs disabled: {why}"));
                state.step(model, sampling, attend_len, shared)
            }
            Err(CaptureError::Recording(error, why)) => {
                self.stream = None;
                self.graph_note = Some(match error {
                    Some(e) => format!("CUDA graphs disabled: {why}: {e}"),
                    None => format!("CUDA graphs disabled: {why}"),
                });
                if warm_up {
                    Ok(())
                } else {
                    state.step(model, sampling, attend_len, shared)
                }
            }
        };
        self.capture_s += started.elapsed().as_secs_f64();
        result
    }
}
