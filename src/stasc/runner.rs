//! The STaSC loop (docs/stasc.md "The loop"): sample initial answers, sample corrections, score, filter, fine-tune,
//! repeat; with every phase saved in the run directory so a killed run resumes where it stopped.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::{Example, Splits};
use crate::prompt::ChatMessage;

use super::backend::{
    correction_key, initial_key, iteration_model_dir, model_label, Backend, GeneratedSample, PrefillCounts, SamplingJob,
};
use super::error::StascError;
use super::filter::Transitions;
use super::lineage;
use super::metrics::{
    correction_accuracy, initial_accuracy, iteration_intervals, question_counts, test_rewards, IterationMetrics,
    PhaseTiming,
};
use super::pairing::candidate_pairs;
use super::records::{CorrectionRecord, InitialRecord, Split, TrainPair};
use super::rundir::{config_changes, read_json, read_jsonl, write_atomic, write_json, write_jsonl, ChunkStore};
use super::spec::{FineTuning, Initialization, RunSpec};

/// Builds the chats of the three prompt kinds (implemented over the prompt templates).
pub trait Prompts {
    /// The chat asking for an initial answer.
    fn initial(&self, question: &str) -> Result<Vec<ChatMessage>, String>;
    /// The chat asking to correct `initial`.
    fn correction(&self, question: &str, initial: &str) -> Result<Vec<ChatMessage>, String>;
    /// The fine-tuning conversation ending with the correction as the last assistant message.
    fn sft(&self, question: &str, initial: &str, correction: &str) -> Result<Vec<ChatMessage>, String>;
}

/// Scores a generation against the gold answers (implemented over the reward evaluator).
pub trait Scorer {
    /// The reward, a finite number.
    fn score(&self, gold: &[String], text: &str) -> Result<f64, String>;

    /// The part of `text` the reward reads, when it is not the whole text (see `Evaluator::scored_answer`).
    fn scored_answer(&self, _text: &str) -> Option<String> {
        None
    }
}

/// Sees every iteration's results as the loop records them, and those found complete when a run resumes (experiment
/// trackers implement it; they decide themselves what they have logged already).
pub trait RunObserver {
    /// Iteration `metrics.iteration` is complete; `train` is its fine-tuning record, when it has one.
    fn iteration(&mut self, metrics: &IterationMetrics, train: Option<&TrainRecord>);
}

/// An observer that looks at nothing.
pub struct NoObserver;

impl RunObserver for NoObserver {
    fn iteration(&mut self, _metrics: &IterationMetrics, _train: Option<&TrainRecord>) {}
}

/// How a run is started.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue even if the configuration fingerprint differs from the saved one.
    pub force: bool,
    /// Stop after this many iterations' metrics (for `stasc eval`: Some(0) evaluates iteration 0 only).
    pub stop_after: Option<usize>,
    /// Print progress lines to stderr.
    pub verbose: bool,
}

/// The training phase's record (`iter_<n>/train.json`); its existence marks the phase complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    /// Whether a new checkpoint was trained.
    pub trained: bool,
    /// Model fine-tuned from.
    pub base: PathBuf,
    /// Model to use from the next iteration on.
    pub model_after: PathBuf,
    /// Number of training examples.
    pub examples: usize,
    /// Loss per optimiser step.
    pub losses: Vec<f64>,
    /// Tokens per second.
    pub tokens_per_s: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Why no training happened, when it did not.
    pub reason: Option<String>,
    /// Wall seconds of the fine-tuning's stages (absent when nothing was trained, and in records written before
    /// stasc kept them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_seconds: Option<crate::train::StageSeconds>,
}

/// Runs (or resumes) the loop in `run_dir` and returns the metrics of every iteration.
///
/// `fingerprint` is everything that decided the run (resolved configs, plugin hashes, version); it is saved as
/// config.resolved.yaml and compared on resume.
#[allow(clippy::too_many_arguments)]
pub fn run_stasc(
    spec: &RunSpec,
    splits: &Splits,
    backend: &mut dyn Backend,
    prompts: &dyn Prompts,
    scorer: &dyn Scorer,
    run_dir: &Path,
    fingerprint: &serde_json::Value,
    options: &RunOptions,
) -> Result<Vec<IterationMetrics>, StascError> {
    run_stasc_observed(spec, splits, backend, prompts, scorer, run_dir, fingerprint, options, &mut NoObserver)
}

/// [`run_stasc`] with an observer that sees every iteration's results.
#[allow(clippy::too_many_arguments)]
pub fn run_stasc_observed(
    spec: &RunSpec,
    splits: &Splits,
    backend: &mut dyn Backend,
    prompts: &dyn Prompts,
    scorer: &dyn Scorer,
    run_dir: &Path,
    fingerprint: &serde_json::Value,
    options: &RunOptions,
    observer: &mut dyn RunObserver,
) -> Result<Vec<IterationMetrics>, StascError> {
    check_fingerprint(run_dir, fingerprint, options.force)?;
    let loop_ = Loop { spec, splits, backend, prompts, scorer, run_dir, verbose: options.verbose, observer };
    loop_.run(options.stop_after)
}

fn check_fingerprint(run_dir: &Path, fingerprint: &serde_json::Value, force: bool) -> Result<(), StascError> {
    let path = run_dir.join("config.resolved.yaml");
    if path.exists() {
        let text = fs::read_to_string(&path).map_err(|e| StascError::io(&path, e))?;
        let old: serde_json::Value = serde_yaml::from_str(&text)
            .map_err(|e| StascError::State { path: path.clone(), message: format!("not valid YAML: {e}") })?;
        let changes = config_changes(&old, fingerprint);
        if !changes.is_empty() && !force {
            return Err(StascError::ConfigChanged { dir: run_dir.to_path_buf(), changes: changes.join(", ") });
        }
        if changes.is_empty() {
            return Ok(());
        }
    }
    let yaml = serde_yaml::to_string(fingerprint)
        .map_err(|e| StascError::State { path: path.clone(), message: format!("cannot serialise: {e}") })?;
    write_atomic(&path, yaml.as_bytes())
}

struct Loop<'a> {
    spec: &'a RunSpec,
    splits: &'a Splits,
    backend: &'a mut dyn Backend,
    prompts: &'a dyn Prompts,
    scorer: &'a dyn Scorer,
    run_dir: &'a Path,
    verbose: bool,
    observer: &'a mut dyn RunObserver,
}

impl<'a> Loop<'a> {
    fn log(&self, msg: impl AsRef<str>) {
        if self.verbose {
            crate::progress::line(&format!("[stasc] {}", msg.as_ref()));
        }
    }

    fn iter_dir(&self, n: usize) -> PathBuf {
        self.run_dir.join(format!("iter_{n}"))
    }

    fn run(mut self, stop_after: Option<usize>) -> Result<Vec<IterationMetrics>, StascError> {
        let m0 = self.spec.model_path.clone();
        let last = stop_after.map_or(self.spec.iterations, |s| s.min(self.spec.iterations));
        let mut model = m0.clone();
        let mut all = Vec::new();
        for n in 0..=last {
            let metrics_path = self.iter_dir(n).join("metrics.json");
            if metrics_path.exists() {
                let m: IterationMetrics = read_json(&metrics_path)?;
                model = self.model_after(n, &model)?;
                self.log(format!("iteration {n}: already complete, skipped"));
                self.observe(n, &m)?;
                all.push(m);
                continue;
            }
            let m = self.iteration(n, n == last, &model, &m0)?;
            model = self.model_after(n, &model)?;
            write_json(&metrics_path, &m)?;
            self.log(format!(
                "iteration {n}: test initial {:.3}, test correction {:.3}, train pairs {}{}",
                m.test_initial_accuracy,
                m.test_correction_accuracy,
                m.filtered_pairs,
                m.train_loss.map(|l| format!(", train loss {l:.4}")).unwrap_or_default()
            ));
            self.observe(n, &m)?;
            all.push(m);
        }
        if last == self.spec.iterations {
            let summary = serde_json::json!({
                "iterations": all.len(),
                "best_test_correction_accuracy": all.iter().map(|m| m.test_correction_accuracy).fold(0.0, f64::max),
            });
            write_json(&self.run_dir.join("DONE"), &summary)?;
        }
        Ok(all)
    }

    /// Shows iteration `n`'s metrics and fine-tuning record to the observer.
    fn observe(&mut self, n: usize, metrics: &IterationMetrics) -> Result<(), StascError> {
        let p = self.iter_dir(n).join("train.json");
        let train = if p.exists() { Some(read_json::<TrainRecord>(&p)?) } else { None };
        self.observer.iteration(metrics, train.as_ref());
        Ok(())
    }

    /// The model in use after iteration `n` (the one it trained, or the same as before).
    fn model_after(&self, n: usize, before: &Path) -> Result<PathBuf, StascError> {
        let p = self.iter_dir(n).join("train.json");
        if p.exists() {
            Ok(read_json::<TrainRecord>(&p)?.model_after)
        } else {
            Ok(before.to_path_buf())
        }
    }

    fn iteration(&mut self, n: usize, is_last: bool, model: &Path, m0: &Path) -> Result<IterationMetrics, StascError> {
        let dir = self.iter_dir(n);
        let mut timings: BTreeMap<String, PhaseTiming> = {
            let p = dir.join("timings.json");
            if p.exists() {
                read_json(&p)?
            } else {
                BTreeMap::new()
            }
        };

        // Initial answers: from the current model (E) or once from M0 at iteration 0 (F).
        let initial_from = match self.spec.initialization {
            Initialization::Evolving => n,
            Initialization::Fixed => 0,
        };
        let initial_path = self.iter_dir(initial_from).join("initial.jsonl");
        if !initial_path.exists() {
            // With fixed initialization iteration 0 samples from M0, which is also the current model there.
            self.timed_load(n, model, &mut timings)?;
            write_json(&dir.join("timings.json"), &timings)?;
            let t = Instant::now();
            self.backend.take_prefill_counts();
            let records = self.sample_initial(n, model, self.samples_train(initial_from))?;
            let tokens = records.iter().map(|r| r.tokens).sum();
            let prefill = self.backend.take_prefill_counts();
            write_jsonl(&initial_path, &records)?;
            ChunkStore::new(&dir, "initial").clear()?;
            let seconds = t.elapsed().as_secs_f64();
            timings.insert("initial".into(), phase_timing(seconds, tokens, prefill));
            write_json(&dir.join("timings.json"), &timings)?;
        }
        let initial: Vec<InitialRecord> = read_jsonl(&initial_path)?;

        let corrections_path = dir.join("corrections.jsonl");
        if !corrections_path.exists() {
            self.timed_load(n, model, &mut timings)?;
            let t = Instant::now();
            let train = self.samples_train(n);
            let to_correct: Vec<InitialRecord> =
                initial.iter().filter(|r| train || r.split == Split::Test).cloned().collect();
            self.backend.take_prefill_counts();
            let records = self.sample_corrections(n, model, &to_correct)?;
            let tokens = records.iter().map(|r| r.tokens).sum();
            let prefill = self.backend.take_prefill_counts();
            write_jsonl(&corrections_path, &records)?;
            ChunkStore::new(&dir, "corrections").clear()?;
            let seconds = t.elapsed().as_secs_f64();
            timings.insert("corrections".into(), phase_timing(seconds, tokens, prefill));
            write_json(&dir.join("timings.json"), &timings)?;
        }
        let corrections: Vec<CorrectionRecord> = read_jsonl(&corrections_path)?;

        let pairs_path = dir.join("train_pairs.jsonl");
        if !pairs_path.exists() {
            let pairs = self.filter_pairs(n, &initial, &corrections)?;
            write_jsonl(&pairs_path, &pairs)?;
        }
        let pairs: Vec<TrainPair> = read_jsonl(&pairs_path)?;
        let samples_path = dir.join("samples.jsonl");
        if !samples_path.exists() {
            write_jsonl(
                &samples_path,
                &lineage::joined_samples(self.spec, self.scorer, &initial, &corrections, &pairs),
            )?;
        }

        let train = if is_last || n == self.spec.iterations {
            None
        } else {
            let p = dir.join("train.json");
            if !p.exists() {
                self.backend.release();
                let rec = self.train(n, model, m0, &pairs)?;
                write_json(&p, &rec)?;
                self.retain_checkpoints(&rec.model_after)?;
            }
            Some(read_json::<TrainRecord>(&p)?)
        };
        if let Some(t) = &train {
            let tokens = (t.tokens_per_s * t.seconds).round() as usize;
            timings.insert("train".into(), PhaseTiming { seconds: t.seconds, tokens, ..PhaseTiming::default() });
        }

        let correctness = self.spec.correctness;
        let test_pairs: Vec<(&str, f64, f64)> = corrections
            .iter()
            .filter(|c| c.split == Split::Test)
            .map(|c| (c.id.as_str(), c.initial_reward, c.reward))
            .collect();
        let train_pairs: Vec<(&str, f64, f64)> = candidate_pairs(self.spec.pairing, &initial, &corrections)
            .map_err(|message| StascError::State { path: corrections_path.clone(), message })?
            .iter()
            .map(|(i, c)| (i.id.as_str(), i.reward, c.reward))
            .collect();
        let sampled_train = corrections.iter().any(|c| c.split == Split::Train);
        let transitions_of =
            |pairs: &[(&str, f64, f64)]| Transitions::from_pairs(pairs.iter().map(|p| (p.1, p.2)), correctness);
        let trained = train.as_ref().is_some_and(|t| t.trained);
        Ok(IterationMetrics {
            iteration: n,
            variant: self.spec.variant(),
            model: model_label(model, m0),
            initial_answers_from: initial_from,
            train_initial_accuracy: sampled_train.then(|| initial_accuracy(&initial, Split::Train)),
            train_correction_accuracy: sampled_train.then(|| correction_accuracy(&corrections, Split::Train)),
            test_initial_accuracy: initial_accuracy(&initial, Split::Test),
            test_correction_accuracy: correction_accuracy(&corrections, Split::Test),
            transitions: transitions_of(&test_pairs),
            train_transitions: transitions_of(&train_pairs),
            filtered_pairs: pairs.len(),
            trained,
            no_training_reason: match &train {
                None => Some("last iteration: evaluation only".into()),
                Some(t) => t.reason.clone(),
            },
            train_loss: train
                .as_ref()
                .filter(|t| t.trained && !t.losses.is_empty())
                .map(|t| t.losses.iter().sum::<f64>() / t.losses.len() as f64),
            loss_curve: train.as_ref().map(|t| t.losses.clone()).unwrap_or_default(),
            phase_seconds: timings.iter().map(|(k, v)| (k.clone(), v.seconds)).collect(),
            // Loading produces no tokens: it has seconds only.
            tokens_per_s: timings
                .iter()
                .filter(|(_, v)| v.tokens > 0)
                .map(|(k, v)| (k.clone(), v.tokens_per_s()))
                .collect(),
            prefill_tokens: prefill_map(&timings, |t| t.prefill_tokens),
            prefill_tokens_saved: prefill_map(&timings, |t| t.prefill_tokens_saved),
            questions: question_counts(&corrections),
            intervals: iteration_intervals(&initial, &corrections, &train_pairs, &test_pairs, correctness, n as u64),
            test_rewards: test_rewards(&corrections),
        })
    }

    /// Loads `model` for sampling ([`Backend::prepare`]) and adds the time to the iteration's `load` phase, so
    /// the sampling phases' seconds and tokens/s leave loading out (a model already loaded adds nothing).
    fn timed_load(
        &mut self,
        n: usize,
        model: &Path,
        timings: &mut BTreeMap<String, PhaseTiming>,
    ) -> Result<(), StascError> {
        let t = Instant::now();
        self.backend.prepare(model).map_err(|source| StascError::Backend { iteration: n, phase: "loading", source })?;
        let seconds = t.elapsed().as_secs_f64();
        timings.entry("load".into()).or_insert_with(|| phase_timing(0.0, 0, PrefillCounts::default())).seconds +=
            seconds;
        Ok(())
    }

    /// Whether iteration `n` samples the train split: always, except the last iteration when
    /// `sample_train_at_last_iteration` is off (nothing trains on its samples).
    fn samples_train(&self, n: usize) -> bool {
        n < self.spec.iterations || self.spec.sample_train_at_last_iteration
    }

    /// Train (when `with_train`) then test questions; borrowed for the run's lifetime, not from `self`.
    fn questions(&self, with_train: bool) -> impl Iterator<Item = (Split, &'a Example)> + 'a {
        let splits: &'a Splits = self.splits;
        let train = splits.train.iter().filter(move |_| with_train).map(|e| (Split::Train, e));
        train.chain(splits.test.iter().map(|e| (Split::Test, e)))
    }

    fn sample_initial(&mut self, n: usize, model: &Path, with_train: bool) -> Result<Vec<InitialRecord>, StascError> {
        const PHASE: &str = "initial answers";
        let mut jobs = Vec::new();
        for (split, ex) in self.questions(with_train) {
            let messages = self.prompts.initial(&ex.question).map_err(|message| StascError::Sample {
                iteration: n,
                phase: PHASE,
                id: ex.id.clone(),
                message,
            })?;
            let k = if split == Split::Train { self.spec.initial_samples } else { 1 };
            let key = initial_key(n, split_name(split), &ex.id);
            jobs.push((SamplingJob { key, messages, n: k }, (split, ex)));
        }
        let n_train = if with_train { self.splits.train.len() } else { 0 };
        self.log(format!(
            "iteration {n}: sampling initial answers ({} train x{}, {} test) from {}",
            n_train,
            self.spec.initial_samples,
            self.splits.test.len(),
            model.display()
        ));
        let (scorer, cleaning) = (self.scorer, self.spec.answer_cleaning);
        self.generate_chunked(n, PHASE, "initial", model, jobs, |(split, ex), samples| {
            samples
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    let (text, raw_text) = cleaning.apply(s.text);
                    let reward = scorer.score(&ex.gold, &text).map_err(|message| StascError::Sample {
                        iteration: n,
                        phase: PHASE,
                        id: ex.id.clone(),
                        message,
                    })?;
                    Ok(InitialRecord {
                        split,
                        id: ex.id.clone(),
                        question: ex.question.clone(),
                        gold: ex.gold.clone(),
                        sample: i,
                        seed: s.seed,
                        text,
                        raw_text,
                        reward,
                        tokens: s.tokens,
                        finish_reason: s.finish_reason,
                    })
                })
                .collect()
        })
    }

    fn sample_corrections(
        &mut self,
        n: usize,
        model: &Path,
        initial: &[InitialRecord],
    ) -> Result<Vec<CorrectionRecord>, StascError> {
        const PHASE: &str = "corrections";
        let mut jobs = Vec::new();
        for r in initial {
            let messages = self.prompts.correction(&r.question, &r.text).map_err(|message| StascError::Sample {
                iteration: n,
                phase: PHASE,
                id: r.id.clone(),
                message,
            })?;
            let k = if r.split == Split::Train { self.spec.correction_samples } else { 1 };
            let key = correction_key(n, split_name(r.split), &r.id, r.sample);
            jobs.push((SamplingJob { key, messages, n: k }, r));
        }
        self.log(format!("iteration {n}: sampling corrections for {} initial answers", initial.len()));
        let (scorer, cleaning) = (self.scorer, self.spec.answer_cleaning);
        self.generate_chunked(n, PHASE, "corrections", model, jobs, |r, samples| {
            samples
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    let (text, raw_text) = cleaning.apply(s.text);
                    let reward = scorer.score(&r.gold, &text).map_err(|message| StascError::Sample {
                        iteration: n,
                        phase: PHASE,
                        id: r.id.clone(),
                        message,
                    })?;
                    Ok(CorrectionRecord {
                        split: r.split,
                        id: r.id.clone(),
                        initial_sample: r.sample,
                        sample: i,
                        seed: s.seed,
                        initial_reward: r.reward,
                        text,
                        raw_text,
                        reward,
                        tokens: s.tokens,
                        finish_reason: s.finish_reason,
                    })
                })
                .collect()
        })
    }

    /// Generates `jobs` chunk by chunk; a chunk saved by an earlier (killed) attempt is loaded, not sampled again.
    /// Unsaved chunks go to the backend [`Backend::chunks_per_call`] at a time (one per device), and each is saved
    /// on its own: the chunk boundaries, hence what a resumed run finds, do not depend on the device count.
    fn generate_chunked<M, R, F>(
        &mut self,
        n: usize,
        phase: &'static str,
        store_name: &str,
        model: &Path,
        jobs: Vec<(SamplingJob, M)>,
        mut to_records: F,
    ) -> Result<Vec<R>, StascError>
    where
        M: Copy,
        R: Serialize + serde::de::DeserializeOwned,
        F: FnMut(M, Vec<GeneratedSample>) -> Result<Vec<R>, StascError>,
    {
        let store = ChunkStore::new(&self.iter_dir(n), store_name);
        let samples = jobs.iter().map(|(r, _)| r.n as u64).sum();
        let progress = crate::progress::Phase::begin(Some(n), phase, Some(samples), "samples", self.verbose);
        let chunks: Vec<&[(SamplingJob, M)]> = jobs.chunks(self.spec.chunk_prompts.max(1)).collect();
        let mut done: Vec<Option<Vec<R>>> = Vec::with_capacity(chunks.len());
        for (index, chunk) in chunks.iter().enumerate() {
            let saved = store.load::<R>(index)?;
            if saved.is_some() {
                progress.advance(chunk.iter().map(|(r, _)| r.n as u64).sum(), 0);
            }
            done.push(saved);
        }
        let pending: Vec<usize> = (0..chunks.len()).filter(|&i| done[i].is_none()).collect();
        for group in pending.chunks(self.backend.chunks_per_call().max(1)) {
            let batch: Vec<SamplingJob> =
                group.iter().flat_map(|&i| chunks[i].iter().map(|(r, _)| r.clone())).collect();
            let samples = self
                .backend
                .generate(model, &batch, &self.spec.sampling)
                .map_err(|source| StascError::Backend { iteration: n, phase, source })?;
            if samples.len() != batch.len() {
                return Err(StascError::SampleCount {
                    iteration: n,
                    phase,
                    key: format!("batch of {}", batch.len()),
                    got: samples.len(),
                    expected: batch.len(),
                });
            }
            let mut samples = samples.into_iter();
            for &index in group {
                let mut records = Vec::new();
                for ((req, meta), s) in chunks[index].iter().zip(samples.by_ref()) {
                    if s.len() != req.n {
                        return Err(StascError::SampleCount {
                            iteration: n,
                            phase,
                            key: req.key.clone(),
                            got: s.len(),
                            expected: req.n,
                        });
                    }
                    records.extend(to_records(*meta, s)?);
                }
                store.save(index, &records)?;
                done[index] = Some(records);
            }
        }
        Ok(done.into_iter().flatten().flatten().collect())
    }

    fn filter_pairs(
        &self,
        n: usize,
        initial: &[InitialRecord],
        corrections: &[CorrectionRecord],
    ) -> Result<Vec<TrainPair>, StascError> {
        const PHASE: &str = "filter";
        let candidates = candidate_pairs(self.spec.pairing, initial, corrections)
            .map_err(|message| StascError::State { path: self.iter_dir(n).join("corrections.jsonl"), message })?;
        let mut pairs = Vec::new();
        for (init, c) in candidates {
            if !self.spec.filter.keeps(init.reward, c.reward, self.spec.correctness) {
                continue;
            }
            let messages = self
                .prompts
                .sft(&init.question, &init.text, &c.text)
                .map_err(|message| StascError::Sample { iteration: n, phase: PHASE, id: init.id.clone(), message })?;
            pairs.push(TrainPair {
                id: init.id.clone(),
                initial_sample: init.sample,
                corrected_initial_sample: c.initial_sample,
                correction_sample: c.sample,
                initial_reward: init.reward,
                correction_reward: c.reward,
                messages,
            });
        }
        Ok(pairs)
    }

    fn train(&mut self, n: usize, model: &Path, m0: &Path, pairs: &[TrainPair]) -> Result<TrainRecord, StascError> {
        let base = match self.spec.fine_tuning {
            FineTuning::Fixed => m0.to_path_buf(),
            FineTuning::Evolving => model.to_path_buf(),
        };
        if pairs.is_empty() {
            self.log(format!("iteration {n}: no pair passed the filter; no training, the model stays as it is"));
            return Ok(TrainRecord {
                trained: false,
                base,
                model_after: model.to_path_buf(),
                examples: 0,
                losses: vec![],
                tokens_per_s: 0.0,
                seconds: 0.0,
                reason: Some("no pair passed the filter".into()),
                stage_seconds: None,
            });
        }
        let out = iteration_model_dir(self.run_dir, n);
        let tmp = self.iter_dir(n).join(".model.tmp");
        for p in [&out, &tmp] {
            if p.exists() {
                fs::remove_dir_all(p).map_err(|e| StascError::io(p, e))?;
            }
        }
        self.log(format!("iteration {n}: fine-tuning {} on {} pairs", base.display(), pairs.len()));
        let examples: Vec<Vec<ChatMessage>> = pairs.iter().map(|p| p.messages.clone()).collect();
        let _progress = crate::progress::Phase::begin(Some(n), "fine-tuning", None, "steps", self.verbose);
        let t = Instant::now();
        let summary = self.backend.train(&base, &examples, &tmp).map_err(|source| StascError::Backend {
            iteration: n,
            phase: "fine-tuning",
            source,
        })?;
        let seconds = t.elapsed().as_secs_f64();
        fs::rename(&tmp, &out).map_err(|e| StascError::io(&out, e))?;
        self.backend.release();
        if let Some(stages) = summary.stage_seconds {
            self.log(format!("iteration {n}: fine-tuned in {seconds:.1} s ({stages})"));
        }
        Ok(TrainRecord {
            trained: true,
            base,
            model_after: out,
            examples: pairs.len(),
            losses: summary.losses,
            tokens_per_s: summary.tokens_per_s,
            seconds,
            reason: None,
            stage_seconds: summary.stage_seconds,
        })
    }

    /// Deletes checkpoints no later iteration needs: everything but the current model (M0 is never touched).
    fn retain_checkpoints(&self, current: &Path) -> Result<(), StascError> {
        if self.spec.keep_checkpoints {
            return Ok(());
        }
        for n in 0..=self.spec.iterations {
            let dir = iteration_model_dir(self.run_dir, n);
            if dir.exists() && dir != current {
                fs::remove_dir_all(&dir).map_err(|e| StascError::io(&dir, e))?;
            }
        }
        Ok(())
    }
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "test",
    }
}

fn phase_timing(seconds: f64, tokens: usize, prefill: PrefillCounts) -> PhaseTiming {
    PhaseTiming { seconds, tokens, prefill_tokens: prefill.run, prefill_tokens_saved: prefill.saved }
}

/// One prefill count per generation phase (those that prefilled anything).
fn prefill_map(
    timings: &BTreeMap<String, PhaseTiming>,
    count: impl Fn(&PhaseTiming) -> usize,
) -> BTreeMap<String, usize> {
    timings.iter().filter(|(_, t)| t.prefill_tokens > 0).map(|(k, t)| (k.clone(), count(t))).collect()
}
