//! The real [`Backend`]: sampling with `crate::generate` and fine-tuning with `crate::train` on libtorch. It keeps
//! the last generation model loaded between phases that use it, and drops it before training so a GPU holds one
//! model at a time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{DeviceRequest, Dtype, FineTuneConfig, RunConfig};
use crate::generate::{self, GenerateOptions, PromptInput, PromptOverflow, Sampling, StopRules};
use crate::model::{load_model, DeviceSpec, DtypeSpec, LoadOptions, LoadedModel};
use crate::prompt::ChatMessage;
use crate::train::{fine_tune, TrainOptions};

use super::backend::{Backend, BackendError, GeneratedSample, GenerationRequest, TrainSummary};
use super::spec::SamplingSpec;

/// The libtorch engine behind `stasc run`.
pub struct TchBackend {
    load: LoadOptions,
    fine_tune: FineTuneConfig,
    train: TrainOptions,
    progress: bool,
    loaded: Option<(PathBuf, LoadedModel)>,
}

/// The model-engine device of a config's device request.
pub fn device_spec(d: DeviceRequest) -> DeviceSpec {
    match d {
        DeviceRequest::Auto => DeviceSpec::Auto,
        DeviceRequest::Cpu => DeviceSpec::Cpu,
        DeviceRequest::Cuda(n) => DeviceSpec::Cuda(n.unwrap_or(0)),
    }
}

/// The model-engine dtype of a config's dtype.
pub fn dtype_spec(d: Dtype) -> DtypeSpec {
    crate::train::dtype_spec(d)
}

impl TchBackend {
    /// A backend for the device, dtype, length limit and fine-tuning settings of `config`.
    pub fn new(config: &RunConfig, progress: bool) -> Self {
        let device = device_spec(config.execution.device);
        let mut fine_tune = config.fine_tune.clone();
        // One dtype for the whole run: what the execution settings decided wins over fine_tune's model.torch_dtype.
        if config.execution.dtype != Dtype::Auto {
            fine_tune.model.torch_dtype = config.execution.dtype;
        }
        TchBackend {
            load: LoadOptions {
                device,
                dtype: dtype_spec(config.execution.dtype),
                max_model_len: config.stasc_config.max_model_len.map(|n| n as i64),
            },
            fine_tune,
            train: TrainOptions { device, progress, ..TrainOptions::default() },
            progress,
            loaded: None,
        }
    }

    fn model(&mut self, dir: &Path) -> Result<&LoadedModel, BackendError> {
        if self.loaded.as_ref().map(|(p, _)| p.as_path()) != Some(dir) {
            self.loaded = None;
            let m = load_model(dir, &self.load)?;
            self.loaded = Some((dir.to_path_buf(), m));
        }
        Ok(&self.loaded.as_ref().expect("just loaded").1)
    }
}

/// A stable 64-bit id of a prompt key (FNV-1a), so sample seeds depend on what is asked, not on batch position.
pub fn prompt_id(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

impl Backend for TchBackend {
    fn generate(
        &mut self,
        model: &Path,
        requests: &[GenerationRequest],
        sampling: &SamplingSpec,
    ) -> Result<Vec<Vec<GeneratedSample>>, BackendError> {
        let progress = self.progress;
        let max_model_len = self.load.max_model_len.map(|n| n as usize);
        let loaded = self.model(model)?;
        let rule = Sampling::from_params(sampling.temperature, Some(sampling.top_p), None)?;
        let device = loaded.model.device();
        let mut options = GenerateOptions::for_device(device);
        options.max_model_len = max_model_len;
        options.progress = progress;
        // The generator takes one `n` per call: group the requests by their sample count.
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, r) in requests.iter().enumerate() {
            groups.entry(r.n).or_default().push(i);
        }
        let mut out: Vec<Vec<GeneratedSample>> = vec![Vec::new(); requests.len()];
        for (n, members) in groups {
            let mut prompts = Vec::with_capacity(members.len());
            for &i in &members {
                let r = &requests[i];
                let token_ids = loaded.tokenizer.encode_chat(&r.messages, true)?;
                prompts.push(PromptInput { id: prompt_id(&r.key), token_ids });
            }
            let request = generate::GenerationRequest {
                prompts,
                n,
                sampling: rule,
                max_tokens: sampling.max_tokens,
                stop: StopRules {
                    eos_token_ids: loaded.tokenizer.eos_token_ids().to_vec(),
                    stop_strings: vec![],
                    ignore_eos: false,
                },
                seed: sampling.seed,
                prompt_overflow: PromptOverflow::Error,
            };
            let generated = generate::generate(&loaded.model, &loaded.tokenizer, &request, &options)?;
            for (&i, p) in members.iter().zip(generated.prompts) {
                out[i] = p
                    .samples
                    .into_iter()
                    .map(|c| GeneratedSample { tokens: c.token_ids.len(), text: c.text, seed: c.seed })
                    .collect();
            }
        }
        Ok(out)
    }

    fn train(&mut self, base: &Path, examples: &[Vec<ChatMessage>], out: &Path) -> Result<TrainSummary, BackendError> {
        self.release();
        let report = fine_tune(base, examples, &self.fine_tune, &self.train, out);
        // The trainer's model, gradients and optimiser state are gone now: give their memory back.
        crate::model::device::release_cuda_cache();
        let report = report?;
        Ok(TrainSummary { losses: report.losses(), tokens_per_s: report.tokens_per_s })
    }

    fn release(&mut self) {
        self.loaded = None;
        crate::model::device::release_cuda_cache();
    }
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
}
