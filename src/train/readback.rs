//! A step's loss and gradient norm on their way to the host while the next step is queued. Reading a device scalar
//! at once (`item()`) makes the host wait for everything queued before it, the step's optimiser update included, so
//! the GPU would sit idle while the host queues the next forward; a training loop whose host work per pass is close
//! to the GPU's (packed passes of a few thousand tokens) loses that time every step. Instead the values are copied
//! into pinned host memory without blocking, an event marks the copy, and the loop reads them a step later.

use tch::{Device, Kind, Tensor};

use super::error::TrainError;
use crate::ffi::driver::Event;

/// The loss and norm of one step, copied (or being copied) to the host.
#[derive(Debug)]
pub struct Readback {
    host: Tensor,
    /// Recorded after the copy on CUDA; `None` when the copy was synchronous.
    copied: Option<Event>,
}

impl Readback {
    /// Starts copying the f32 device scalars `loss` and `norm` to the host, queued after the work that produces them.
    pub fn start(loss: &Tensor, norm: &Tensor) -> Result<Readback, TrainError> {
        let err = || TrainError::torch("reading back the step's loss and norm");
        let loss = loss.f_to_kind(Kind::Float).map_err(err())?;
        let norm = norm.f_to_kind(Kind::Float).map_err(err())?;
        let both = Tensor::f_stack(&[loss, norm], 0).map_err(err())?;
        if let Some((host, event)) = crate::model::device::start_host_copy(&both, Kind::Float) {
            return Ok(Readback { host, copied: Some(event) });
        }
        let host = both.f_to_device(Device::Cpu).map_err(err())?;
        Ok(Readback { host, copied: None })
    }

    /// Waits for the copy (long done when read a step later) and returns (loss, norm).
    pub fn finish(self) -> Result<(f64, f64), TrainError> {
        if let Some(event) = &self.copied {
            event.synchronize().map_err(|e| TrainError::Invalid(format!("waiting for the step's loss: {e}")))?;
        }
        Ok((self.host.double_value(&[0]), self.host.double_value(&[1])))
    }
}
