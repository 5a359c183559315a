//! What the trackers log, as plain (name, value) lists: the resolved configuration flattened into parameters, an
//! iteration's metrics, and the optimiser steps of its fine-tuning. One naming for every tracker.

use std::path::Path;

use serde_json::Value;

use crate::stasc::{IterationMetrics, TrainRecord, Transitions};

/// One optimiser step's metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct StepMetrics {
    /// The step, counted over the whole run (iteration 1's first step follows iteration 0's last).
    pub step: u64,
    /// (metric name, value).
    pub values: Vec<(String, f64)>,
}

/// `value` flattened into dotted keys: scalars as their text, lists as JSON, nulls left out.
pub fn flatten_params(value: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    flatten_into(value, "", &mut out);
    out
}

fn flatten_into(value: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten_into(v, &key, out);
            }
        }
        Value::Null => {}
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        Value::Array(_) => out.push((prefix.to_string(), value.to_string())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// The metrics of one iteration (logged at step = iteration).
pub fn iteration_metrics(m: &IterationMetrics) -> Vec<(String, f64)> {
    let mut out = vec![
        ("test/initial_accuracy".to_string(), m.test_initial_accuracy),
        ("test/correction_accuracy".to_string(), m.test_correction_accuracy),
        ("train/filtered_pairs".to_string(), m.filtered_pairs as f64),
    ];
    if let Some(a) = m.train_initial_accuracy {
        out.push(("train/initial_accuracy".into(), a));
    }
    if let Some(a) = m.train_correction_accuracy {
        out.push(("train/correction_accuracy".into(), a));
    }
    if let Some(l) = m.train_loss {
        out.push(("train/loss_mean".into(), l));
    }
    for (split, t) in [("test", &m.transitions), ("train", &m.train_transitions)] {
        if t.pairs == 0 {
            continue;
        }
        let values = [t.correct_to_incorrect, t.correct_to_correct, t.incorrect_to_correct, t.incorrect_to_incorrect];
        for (name, v) in Transitions::NAMES.iter().zip(values) {
            out.push((format!("{split}/transitions/{name}"), v));
        }
    }
    for (phase, s) in &m.phase_seconds {
        out.push((format!("seconds/{phase}"), *s));
    }
    for (phase, t) in &m.tokens_per_s {
        out.push((format!("tokens_per_s/{phase}"), *t));
    }
    out
}

/// The optimiser steps of one iteration's fine-tuning, numbered from `first_step`: loss from the training record,
/// and learning rate, gradient norm and speed from the checkpoint's train_log.jsonl while the checkpoint is there.
pub fn step_metrics(train: &TrainRecord, first_step: u64) -> Vec<StepMetrics> {
    let log = read_train_log(&train.model_after.join("train_log.jsonl"));
    train
        .losses
        .iter()
        .enumerate()
        .map(|(i, loss)| {
            let mut values = vec![("sft/loss".to_string(), *loss)];
            if let Some(line) = log.as_ref().and_then(|l| l.get(i)) {
                for (key, name) in [("lr", "sft/learning_rate"), ("grad_norm", "sft/grad_norm")] {
                    if let Some(v) = line.get(key).and_then(Value::as_f64) {
                        values.push((name.to_string(), v));
                    }
                }
            }
            StepMetrics { step: first_step + i as u64, values }
        })
        .collect()
}

/// train_log.jsonl's lines, when the file is there and every line is JSON (else the extras are left out).
fn read_train_log(path: &Path) -> Option<Vec<Value>> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn params_flatten_to_dotted_keys() {
        let v = json!({"a": {"b": 1, "c": "x", "d": null}, "e": [1, 2], "f": true});
        let p = flatten_params(&v);
        let expected = [("a.b", "1"), ("a.c", "x"), ("e", "[1,2]"), ("f", "true")];
        assert_eq!(p, expected.map(|(k, v)| (k.to_string(), v.to_string())).to_vec());
    }

    #[test]
    fn steps_continue_over_iterations_and_read_the_train_log() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("train_log.jsonl"),
            "{\"step\":1,\"loss\":2.0,\"lr\":0.001,\"grad_norm\":0.5}\n{\"step\":2,\"loss\":1.0,\"lr\":0.0005,\"grad_norm\":0.25}\n",
        )
        .unwrap();
        let record = TrainRecord {
            trained: true,
            base: "M0".into(),
            model_after: dir.path().to_path_buf(),
            examples: 3,
            losses: vec![2.0, 1.0],
            tokens_per_s: 1.0,
            seconds: 1.0,
            reason: None,
            stage_seconds: None,
        };
        let steps = step_metrics(&record, 5);
        assert_eq!(steps.iter().map(|s| s.step).collect::<Vec<_>>(), vec![5, 6]);
        assert_eq!(steps[1].values[0], ("sft/loss".to_string(), 1.0));
        assert_eq!(steps[1].values[1], ("sft/learning_rate".to_string(), 0.0005));
        assert_eq!(steps[1].values[2], ("sft/grad_norm".to_string(), 0.25));
        let gone = TrainRecord { model_after: dir.path().join("deleted"), ..record };
        assert_eq!(step_metrics(&gone, 0)[0].values, vec![("sft/loss".to_string(), 2.0)]);
    }
}
