//! Sampling shared between runs: the cells of a sweep that sample the same prompts from the same model with the
//! same settings (all eight variants of the paper's grid at iteration 0, initial answers and corrections alike)
//! sample them once. [`SharedSampling`] wraps the engine: every batch the loop asks for is keyed by everything that
//! decides what is drawn — the model's files (SHA-256), each prompt's key (which the sample seeds derive from), its
//! messages and sample count, the sampling settings and seed, and the engine settings that change arithmetic —
//! and the samples of a key are stored once in the sweep's shared directory. Another run reads them instead of
//! sampling; it still writes its own initial.jsonl and corrections.jsonl (scored with its own reward), so each run
//! directory stays complete and resumable on its own and nothing larger than the samples' text is stored twice.
//! A lock per key makes a run that needs a batch another run is sampling wait for it instead of sampling it again.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::prompt::ChatMessage;

use super::backend::{Backend, BackendError, GeneratedSample, PrefillCounts, SamplingJob, TrainSummary};
use super::rundir::write_json;
use super::spec::SamplingSpec;

/// Environment variable naming the shared directory; `off` turns sharing off. Unset: `<sweep dir>/.shared` for a
/// run directory inside a sweep directory (one holding sweep.json), no sharing otherwise.
pub const SHARED_ENV: &str = "STASC_SHARED_DIR";
/// The shared directory's name inside a sweep directory.
pub const SHARED_DIR: &str = ".shared";

/// The shared directory a run in `run_dir` uses, if any (see [`SHARED_ENV`]).
pub fn shared_dir_for(run_dir: &Path) -> Option<PathBuf> {
    match std::env::var(SHARED_ENV) {
        Ok(v) if v == "off" => None,
        Ok(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => {
            let sweep = run_dir.parent()?;
            sweep.join("sweep.json").is_file().then(|| sweep.join(SHARED_DIR))
        }
    }
}

/// One stored batch: who sampled it and the samples, per request in request order.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    /// The run directory that sampled it.
    producer: PathBuf,
    /// The model it was sampled from, as that run named it.
    model: PathBuf,
    /// Per request: (key, samples).
    requests: Vec<(String, Vec<StoredSample>)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSample {
    text: String,
    seed: u64,
    tokens: usize,
    /// Why generation stopped (samples.jsonl shows it); absent in caches written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    finish_reason: Option<String>,
}

/// Counts of what a [`SharedSampling`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharingCounts {
    /// Batches sampled here and stored for others.
    pub sampled: usize,
    /// Batches read from the shared directory.
    pub reused: usize,
}

/// A [`Backend`] that samples each distinct batch once per shared directory (see the module documentation).
pub struct SharedSampling<'a> {
    inner: &'a mut dyn Backend,
    dir: PathBuf,
    run_dir: PathBuf,
    engine: serde_json::Value,
    model_hashes: HashMap<PathBuf, String>,
    /// What was sampled and what was reused so far.
    pub counts: SharingCounts,
}

impl<'a> SharedSampling<'a> {
    /// Wraps `inner` for the run in `run_dir`, storing batches in `dir`; `engine` holds the engine settings that
    /// change what is drawn (dtype, device kind and count, length limits, batch invariance).
    pub fn new(inner: &'a mut dyn Backend, dir: &Path, run_dir: &Path, engine: serde_json::Value) -> Self {
        SharedSampling {
            inner,
            dir: dir.to_path_buf(),
            run_dir: run_dir.to_path_buf(),
            engine,
            model_hashes: HashMap::new(),
            counts: SharingCounts::default(),
        }
    }

    /// The key of a batch: SHA-256 over everything that decides its samples.
    fn key(&mut self, model: &Path, requests: &[SamplingJob], sampling: &SamplingSpec) -> Result<String, BackendError> {
        let model_hash = match self.model_hashes.get(model) {
            Some(h) => h.clone(),
            None => {
                let h = model_files_hash(model)?;
                self.model_hashes.insert(model.to_path_buf(), h.clone());
                h
            }
        };
        let requests: Vec<(&str, &[ChatMessage], usize)> =
            requests.iter().map(|r| (r.key.as_str(), r.messages.as_slice(), r.n)).collect();
        let identity = serde_json::json!({
            "stasc_version": env!("CARGO_PKG_VERSION"),
            "model_files_sha256": model_hash,
            "requests": requests,
            "sampling": sampling,
            "engine": self.engine,
        });
        Ok(hex(&Sha256::digest(identity.to_string().as_bytes())))
    }

    /// The stored samples of `path`, if it holds exactly one sample list per request with the requested counts.
    fn read(path: &Path, requests: &[SamplingJob]) -> Option<(Entry, Vec<Vec<GeneratedSample>>)> {
        let entry: Entry = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
        let fits = entry.requests.len() == requests.len()
            && entry.requests.iter().zip(requests).all(|((k, s), r)| k == &r.key && s.len() == r.n);
        let samples = entry
            .requests
            .iter()
            .map(|(_, s)| {
                s.iter()
                    .map(|x| GeneratedSample {
                        text: x.text.clone(),
                        seed: x.seed,
                        tokens: x.tokens,
                        finish_reason: x.finish_reason.clone(),
                    })
                    .collect()
            })
            .collect();
        fits.then_some((entry, samples))
    }

    fn reused(&mut self, entry: &Entry, path: &Path, prompts: usize) {
        self.counts.reused += 1;
        crate::progress::line(&format!(
            "[stasc] shared work: read {prompts} prompts' samples from {} (sampled by {})",
            path.display(),
            entry.producer.display()
        ));
    }
}

impl Backend for SharedSampling<'_> {
    fn chunks_per_call(&self) -> usize {
        self.inner.chunks_per_call()
    }

    fn generate(
        &mut self,
        model: &Path,
        requests: &[SamplingJob],
        sampling: &SamplingSpec,
    ) -> Result<Vec<Vec<GeneratedSample>>, BackendError> {
        let key = self.key(model, requests, sampling)?;
        let path = self.dir.join(format!("{key}.json"));
        if let Some((entry, samples)) = Self::read(&path, requests) {
            self.reused(&entry, &path, requests.len());
            return Ok(samples);
        }
        fs::create_dir_all(&self.dir).map_err(|e| format!("{}: {e}", self.dir.display()))?;
        let lock_path = self.dir.join(format!("{key}.lock"));
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("{}: {e}", lock_path.display()))?;
        // Released when `lock` is dropped, or by the kernel if this process dies.
        crate::rundir_lock::flock_exclusive(&lock).map_err(|e| format!("{}: cannot lock: {e}", lock_path.display()))?;
        if let Some((entry, samples)) = Self::read(&path, requests) {
            self.reused(&entry, &path, requests.len());
            return Ok(samples);
        }
        let samples = self.inner.generate(model, requests, sampling)?;
        let entry = Entry {
            producer: self.run_dir.clone(),
            model: model.to_path_buf(),
            requests: requests
                .iter()
                .zip(&samples)
                .map(|(r, s)| {
                    let stored = s
                        .iter()
                        .map(|x| StoredSample {
                            text: x.text.clone(),
                            seed: x.seed,
                            tokens: x.tokens,
                            finish_reason: x.finish_reason.clone(),
                        })
                        .collect();
                    (r.key.clone(), stored)
                })
                .collect(),
        };
        write_json(&path, &entry)?;
        self.counts.sampled += 1;
        crate::progress::line(&format!(
            "[stasc] shared work: sampled {} prompts into {}",
            requests.len(),
            path.display()
        ));
        drop(lock);
        Ok(samples)
    }

    fn train(&mut self, base: &Path, examples: &[Vec<ChatMessage>], out: &Path) -> Result<TrainSummary, BackendError> {
        self.inner.train(base, examples, out)
    }

    fn release(&mut self) {
        self.inner.release()
    }

    /// The inner backend's counts: batches read from the store prefilled nothing.
    fn take_prefill_counts(&mut self) -> PrefillCounts {
        self.inner.take_prefill_counts()
    }
}

/// SHA-256 over the files a model is loaded from (config, weights, tokenizer, generation config, chat template),
/// each named by its file name. Run-specific files beside them (train_log.jsonl) do not count.
pub fn model_files_hash(dir: &Path) -> Result<String, BackendError> {
    let files = crate::model::ModelFiles::resolve(dir)?;
    let mut paths: Vec<PathBuf> = vec![files.config.clone()];
    match &files.weights {
        crate::model::files::WeightFiles::Single(p) => paths.push(p.clone()),
        crate::model::files::WeightFiles::Sharded { index, shards } => {
            paths.push(index.clone());
            paths.extend(shards.iter().cloned());
        }
    }
    paths.extend([files.tokenizer, files.tokenizer_config, files.generation_config].into_iter().flatten());
    let template = dir.join("chat_template.jinja");
    if template.is_file() {
        paths.push(template);
    }
    let mut all = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for p in &paths {
        let mut f = fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let mut one = Sha256::new();
        loop {
            let n = f.read(&mut buf).map_err(|e| format!("{}: {e}", p.display()))?;
            if n == 0 {
                break;
            }
            one.update(&buf[..n]);
        }
        all.update(p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().as_bytes());
        all.update(one.finalize());
    }
    Ok(hex(&all.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
