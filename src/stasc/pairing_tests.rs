//! The loop under all_pairs pairing (the paper protocol's), with the scripted fake backend of `tests.rs`: pair counts,
//! the I + N identity the published table satisfies, train transitions over the cross product, filters on a
//! non-binary reward, answer cleaning, and skipping the last iteration's train sampling.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use super::records::{CorrectionRecord, InitialRecord, Split, TrainPair};
use super::rundir::read_jsonl;
use super::tests::{run_ok, spec, splits, FakeBackend, FakePrompts, FakeScorer};
use super::*;

const K_INIT: usize = 3;
const K_CORR: usize = 2;
const TRAIN_QUESTIONS: usize = 6;

fn all_pairs(filter: CorrectionFilter, iterations: usize) -> RunSpec {
    let mut s = spec(Initialization::Evolving, filter, FineTuning::Evolving, iterations);
    s.pairing = Pairing::AllPairs;
    s
}

fn records(dir: &Path, n: usize) -> (Vec<InitialRecord>, Vec<CorrectionRecord>) {
    let initial = read_jsonl(&dir.join(format!("iter_{n}/initial.jsonl"))).unwrap();
    let corrections = read_jsonl(&dir.join(format!("iter_{n}/corrections.jsonl"))).unwrap();
    (initial, corrections)
}

/// Per train question: (correct initial answers, correct corrections), counted from the saved rewards.
fn correct_counts(initial: &[InitialRecord], corrections: &[CorrectionRecord]) -> BTreeMap<String, (usize, usize)> {
    let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in initial.iter().filter(|r| r.split == Split::Train) {
        out.entry(r.id.clone()).or_default().0 += (r.reward == 1.0) as usize;
    }
    for c in corrections.iter().filter(|c| c.split == Split::Train) {
        out.entry(c.id.clone()).or_default().1 += (c.reward == 1.0) as usize;
    }
    out
}

#[test]
fn all_pairs_pairs_every_initial_answer_with_every_correction_of_its_question() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(&all_pairs(CorrectionFilter::Improving, 0), dir.path());
    let m = &out.metrics[0];
    // K_init x (K_init x K_corr) candidates per question.
    assert_eq!(m.train_transitions.pairs, TRAIN_QUESTIONS * K_INIT * (K_INIT * K_CORR));
    assert_eq!(m.train_transitions.pairs, 108);
    // Test questions have one initial answer and one correction: one pair each, under any pairing.
    assert_eq!(m.transitions.pairs, 4);

    let (initial, corrections) = records(dir.path(), 0);
    let counts = correct_counts(&initial, &corrections);
    let pct = |count: usize| 100.0 * count as f64 / 108.0;
    // Hand count over the cross product, question by question.
    let (mut c2c, mut i2c, mut c2i, mut i2i) = (0, 0, 0, 0);
    for &(right_init, right_corr) in counts.values() {
        let (wrong_init, wrong_corr) = (K_INIT - right_init, K_INIT * K_CORR - right_corr);
        c2c += right_init * right_corr;
        i2c += wrong_init * right_corr;
        c2i += right_init * wrong_corr;
        i2i += wrong_init * wrong_corr;
    }
    let t = m.train_transitions;
    assert_eq!(
        (t.correct_to_correct, t.incorrect_to_correct, t.correct_to_incorrect, t.incorrect_to_incorrect),
        (pct(c2c), pct(i2c), pct(c2i), pct(i2i))
    );
    assert!(c2c > 0 && i2c > 0 && c2i > 0, "the fake must produce every transition: {c2c} {i2c} {c2i}");
    // The improving filter keeps exactly the incorrect -> correct candidates.
    assert_eq!(m.filtered_pairs, i2c);

    // Each kept pair trains on its own initial answer followed by a correction sampled for any initial answer of
    // the same question.
    let pairs: Vec<TrainPair> = read_jsonl(&dir.path().join("iter_0/train_pairs.jsonl")).unwrap();
    assert!(pairs.iter().any(|p| p.corrected_initial_sample != p.initial_sample));
    for p in &pairs {
        let init = initial.iter().find(|r| r.split == Split::Train && r.id == p.id && r.sample == p.initial_sample);
        let corr = corrections.iter().find(|c| {
            c.split == Split::Train
                && c.id == p.id
                && c.initial_sample == p.corrected_initial_sample
                && c.sample == p.correction_sample
        });
        let (init, corr) = (init.unwrap(), corr.unwrap());
        assert_eq!((p.initial_reward, p.correction_reward), (0.0, 1.0));
        assert_eq!(p.messages[1].content, init.text);
        assert_eq!(p.messages.last().unwrap().content, corr.text);
    }
}

#[test]
fn improving_plus_correct_to_correct_is_k_init_times_the_correct_corrections() {
    // The identity behind the published iteration 0: EIE's pairs + ENF's pairs = 5 x correct train corrections.
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let improving = run_ok(&all_pairs(CorrectionFilter::Improving, 0), a.path());
    let c2c = run_ok(&all_pairs(CorrectionFilter::CorrectToCorrect, 0), b.path());
    let (_, corrections) = records(a.path(), 0);
    let correct = corrections.iter().filter(|c| c.split == Split::Train && c.reward == 1.0).count();
    assert!(correct > 0);
    assert_eq!(improving.metrics[0].filtered_pairs + c2c.metrics[0].filtered_pairs, K_INIT * correct);
    // Same samples in both runs, so the same train correction accuracy: correct / (questions x K_init x K_corr).
    let acc = correct as f64 / (TRAIN_QUESTIONS * K_INIT * K_CORR) as f64;
    assert_eq!(improving.metrics[0].train_correction_accuracy, Some(acc));
    assert_eq!(c2c.metrics[0].train_correction_accuracy, Some(acc));
}

#[test]
fn per_initial_pairing_keeps_k_init_times_k_corr_pairs_per_question() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(&spec(Initialization::Evolving, CorrectionFilter::Improving, FineTuning::Evolving, 0), dir.path());
    assert_eq!(out.metrics[0].train_transitions.pairs, TRAIN_QUESTIONS * K_INIT * K_CORR);
}

/// Rewards in {0, 0.5, 1}: the fake's RIGHT samples score 1, WRONG samples of odd index 0.5, the rest 0.
struct HalfScorer;
impl Scorer for HalfScorer {
    fn score(&self, _gold: &[String], text: &str) -> Result<f64, String> {
        let index: usize = text.rsplit('|').nth(1).and_then(|i| i.parse().ok()).ok_or("no sample index")?;
        Ok(if text.ends_with("RIGHT") {
            1.0
        } else if index % 2 == 1 {
            0.5
        } else {
            0.0
        })
    }
}

fn run_half(spec: &RunSpec, dir: &Path) -> Vec<IterationMetrics> {
    let calls = Rc::new(RefCell::new(Vec::new()));
    let mut backend = FakeBackend { calls, fail_at: None, correct_one_in: 3, chunks_per_call: 1 };
    let fp = serde_json::to_value(spec).unwrap();
    run_stasc(spec, &splits(6, 4), &mut backend, &FakePrompts, &HalfScorer, dir, &fp, &RunOptions::default()).unwrap()
}

#[test]
fn filters_on_a_non_binary_reward_follow_the_correctness_rule() {
    let mut counted = Vec::new();
    for (filter, correctness) in [
        (CorrectionFilter::Improving, Correctness::PositiveReward),
        (CorrectionFilter::CorrectToCorrect, Correctness::PositiveReward),
        (CorrectionFilter::CorrectToCorrect, Correctness::FullReward),
        (CorrectionFilter::NonDecreasing, Correctness::FullReward),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut s = all_pairs(filter, 0);
        s.correctness = correctness;
        let m = run_half(&s, dir.path()).remove(0);
        let (initial, corrections) = records(dir.path(), 0);
        assert!(corrections.iter().any(|c| c.reward == 0.5), "the scorer must give half rewards");
        let mut expected = 0;
        for i in initial.iter().filter(|r| r.split == Split::Train) {
            for c in corrections.iter().filter(|c| c.split == Split::Train && c.id == i.id) {
                let (a, b) = (i.reward, c.reward);
                expected += match (filter, correctness) {
                    (CorrectionFilter::Improving, _) => b > a,
                    (CorrectionFilter::CorrectToCorrect, Correctness::PositiveReward) => a > 0.0 && b > 0.0,
                    (CorrectionFilter::CorrectToCorrect, Correctness::FullReward) => a == 1.0 && b == 1.0,
                    (CorrectionFilter::NonDecreasing, _) => b >= a && b > 0.0,
                } as usize;
            }
        }
        assert_eq!(m.filtered_pairs, expected, "{filter:?} / {correctness:?}");
        counted.push(expected);
        // Half rewards are not one 0/1 value per question, so the intervals come from the question bootstrap.
        let acc = m.test_correction_accuracy;
        assert!(m.intervals["test_correction_accuracy"].contains(acc), "{:?}", m.intervals);
    }
    // A reward of 0.5 counts as correct for the reference's truthiness test only.
    assert!(counted[1] > counted[2], "{counted:?}");
}

#[test]
fn accuracies_and_transitions_get_intervals_over_questions() {
    let dir = tempfile::tempdir().unwrap();
    let m = run_ok(&all_pairs(CorrectionFilter::Improving, 0), dir.path()).metrics.remove(0);
    assert_eq!(m.questions, QuestionCounts { train: 6, test: 4 });
    assert_eq!(m.test_rewards.len(), 4);
    // One 0/1 reward per test question: Wilson's interval over the 4 questions.
    let w = crate::stats::wilson(m.test_correction_accuracy, 4).unwrap();
    assert_eq!(m.intervals["test_correction_accuracy"], w);
    for name in ["train_initial_accuracy", "train_correction_accuracy"] {
        assert!(m.intervals.contains_key(name), "{name}: {:?}", m.intervals.keys());
    }
    let c2c = m.intervals["train_transitions.correct_to_correct"];
    assert!(c2c.contains(m.train_transitions.correct_to_correct) && c2c.high <= 100.0, "{c2c:?}");
    assert_eq!(m.intervals.len(), 4 + 8);
}

#[test]
fn the_last_iteration_can_skip_train_sampling() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = all_pairs(CorrectionFilter::Improving, 1);
    s.sample_train_at_last_iteration = false;
    let out = run_ok(&s, dir.path());
    let (initial, corrections) = records(dir.path(), 1);
    assert!(initial.iter().all(|r| r.split == Split::Test));
    assert!(corrections.iter().all(|c| c.split == Split::Test));
    let last = &out.metrics[1];
    assert_eq!((last.train_initial_accuracy, last.train_correction_accuracy), (None, None));
    assert_eq!((last.questions.train, last.train_transitions.pairs), (0, 0));
    assert!(out.metrics[0].train_initial_accuracy.is_some(), "earlier iterations still sample train");
    assert_eq!(last.test_rewards.len(), 4);
}

/// Completions wrapped the way a chat model sometimes answers: the reference strips them and cuts a stray
/// "Assistant:" prefix before scoring and reusing them.
struct ChattyBackend(FakeBackend);
impl Backend for ChattyBackend {
    fn generate(
        &mut self,
        model: &Path,
        requests: &[SamplingJob],
        sampling: &SamplingSpec,
    ) -> Result<Vec<Vec<GeneratedSample>>, BackendError> {
        let mut out = self.0.generate(model, requests, sampling)?;
        for s in out.iter_mut().flatten() {
            s.text = format!("  Assistant: {}\n", s.text);
        }
        Ok(out)
    }
    fn train(
        &mut self,
        base: &Path,
        examples: &[Vec<crate::prompt::ChatMessage>],
        out: &Path,
    ) -> Result<TrainSummary, BackendError> {
        self.0.train(base, examples, out)
    }
}

#[test]
fn reference_cleaning_changes_what_is_scored_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = all_pairs(CorrectionFilter::Improving, 0);
    s.answer_cleaning = AnswerCleaning::Reference;
    let calls = Rc::new(RefCell::new(Vec::new()));
    let mut backend = ChattyBackend(FakeBackend { calls, fail_at: None, correct_one_in: 3, chunks_per_call: 1 });
    let fp = serde_json::to_value(&s).unwrap();
    run_stasc(&s, &splits(6, 4), &mut backend, &FakePrompts, &FakeScorer, dir.path(), &fp, &RunOptions::default())
        .unwrap();
    let (initial, corrections) = records(dir.path(), 0);
    for r in &initial {
        assert!(r.text.starts_with("M0|") && (r.text.ends_with("RIGHT") || r.text.ends_with("WRONG")), "{}", r.text);
        assert_eq!(r.raw_text.as_deref(), Some(format!("  Assistant: {}\n", r.text).as_str()));
        // FakeScorer reads the end of the text: the trailing newline is gone, so RIGHT answers score.
        assert_eq!(r.reward, r.text.ends_with("RIGHT") as u8 as f64);
    }
    assert!(initial.iter().any(|r| r.reward == 1.0));
    let c = &corrections[0];
    assert!(c.raw_text.is_some() && !c.text.starts_with(' '));
}
