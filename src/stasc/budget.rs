//! What a run will sample and train, counted from K, N and the data sizes before it starts: the samples of every
//! phase the loop runs (the same rules as the loop: evolving or fixed initial answers, the train split skipped at
//! the last iteration when asked), and bounds on the tokens, since a sample may stop before `max_tokens` and the
//! filter keeps an unknown share of the candidate pairs.

use serde::Serialize;

use crate::config::{Pairing, RunConfig};

use super::preflight::PromptTokens;

/// The work of one run, for a dry run to print.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Budget {
    /// Iterations evaluated (0..=N).
    pub iterations: usize,
    /// Completions sampled over the run (initial answers and corrections, both splits).
    pub samples: u64,
    /// At most this many generated tokens: every sample runs to max_tokens.
    pub generated_tokens_at_most: u64,
    /// At most this many prompt tokens prefilled (each prompt once, forked for its samples; a correction prompt
    /// counted with an initial answer of max_tokens). None without the model's tokenizer.
    pub prompt_tokens_at_most: Option<u64>,
    /// Fine-tuning rounds (N).
    pub training_rounds: usize,
    /// At most this many SFT examples per round: every candidate pair kept.
    pub train_examples_per_round_at_most: u64,
    /// At most this many tokens trained over the run (examples x epochs, each example at most its prompt plus two
    /// answers of max_tokens, and at most data.block_size). None without the tokenizer, or when max_steps sets the
    /// length of training without a fixed number of ranks.
    pub train_tokens_at_most: Option<u64>,
}

/// Counts the work of `config` on `train` and `test` questions (after the example caps).
pub fn budget(config: &RunConfig, train: usize, test: usize, prompts: Option<&PromptTokens>) -> Budget {
    let c = &config.stasc_config;
    let (train, test) = (train as u64, test as u64);
    let (k_init, k_corr) = (c.number_output_initial_generations as u64, c.number_output_corrections as u64);
    let max_tokens = c.max_tokens as u64;
    let n = c.num_star_iterations;
    let samples_train = |i: usize| i < n || c.sample_train_at_last_iteration;
    let (mut samples, mut prompt_tokens) = (0u64, 0u64);
    for i in 0..=n {
        let with_train = samples_train(i);
        // Fixed initialization samples initial answers once, at iteration 0, with the train split if iteration 0
        // samples it.
        if c.initial_answer_with_new_model || i == 0 {
            samples += test + if with_train { train * k_init } else { 0 };
            if let Some(p) = prompts {
                prompt_tokens += p.initial_test + if with_train { p.initial_train } else { 0 };
            }
        }
        samples += test + if with_train { train * k_init * k_corr } else { 0 };
        if let Some(p) = prompts {
            prompt_tokens += p.correction_test + test * max_tokens;
            if with_train {
                prompt_tokens += k_init * (p.correction_train + train * max_tokens);
            }
        }
    }
    let per_question = match c.pairing {
        Pairing::PerInitial => k_init * k_corr,
        Pairing::AllPairs => k_init * k_init * k_corr,
    };
    let examples = train * per_question;
    let t = &config.fine_tune.training;
    let block = config.fine_tune.data.block_size as u64;
    let train_tokens = prompts.and_then(|p| {
        // Every question's examples share its SFT prompt; the longest example is capped by block_size.
        let longest_example = (p.sft_train / train.max(1) + 2 * max_tokens).min(block);
        let per_round = match t.max_steps {
            None => {
                let all = (p.sft_train * per_question + examples * 2 * max_tokens).min(examples * block);
                (all as f64 * t.num_train_epochs).ceil() as u64
            }
            Some(steps) => {
                let ranks = config.execution.data_parallel_ranks? as u64;
                let step = (t.per_device_train_batch_size * t.gradient_accumulation_steps) as u64 * ranks;
                steps as u64 * step * longest_example
            }
        };
        Some(per_round * n as u64)
    });
    Budget {
        iterations: n + 1,
        samples,
        generated_tokens_at_most: samples * max_tokens,
        prompt_tokens_at_most: prompts.map(|_| prompt_tokens),
        training_rounds: n,
        train_examples_per_round_at_most: examples,
        train_tokens_at_most: train_tokens,
    }
}

/// A count with thousands separators, e.g. `12,500`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfigPaths;

    fn config(extra: &str) -> RunConfig {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("s.yaml");
        std::fs::write(&config, format!("model_path: m\ndata_path: d\nmax_tokens: 10\n{extra}")).unwrap();
        let ft_config = dir.path().join("f.yaml");
        std::fs::write(&ft_config, "training:\n  num_train_epochs: 2\n").unwrap();
        RunConfig::load(&RunConfigPaths { config, ft_config, accelerate_config: None }).unwrap()
    }

    #[test]
    fn evolving_runs_sample_every_iteration_and_fixed_ones_reuse_iteration_0() {
        // 2 iterations of 4 train (K 5/5) + 3 test questions.
        let b = budget(&config("num_star_iterations: 1\n"), 4, 3, None);
        let per_iteration = (3 + 4 * 5) + (3 + 4 * 25);
        assert_eq!((b.iterations, b.training_rounds, b.samples), (2, 1, 2 * per_iteration));
        assert_eq!(b.generated_tokens_at_most, b.samples * 10);
        assert_eq!(
            (b.train_examples_per_round_at_most, b.prompt_tokens_at_most, b.train_tokens_at_most),
            (100, None, None)
        );
        let fixed = budget(&config("num_star_iterations: 1\ninitial_answer_with_new_model: false\n"), 4, 3, None);
        assert_eq!(fixed.samples, per_iteration + (3 + 4 * 25));
        let skip_last = "num_star_iterations: 1\nsample_train_at_last_iteration: false\n";
        assert_eq!(budget(&config(skip_last), 4, 3, None).samples, per_iteration + 3 + 3);
        let all_pairs = budget(&config("num_star_iterations: 1\npairing: all_pairs\n"), 4, 3, None);
        assert_eq!(all_pairs.train_examples_per_round_at_most, 4 * 125);
    }

    #[test]
    fn token_bounds_follow_the_prompt_lengths() {
        let prompts = PromptTokens {
            initial_train: 40,
            initial_test: 30,
            correction_train: 80,
            correction_test: 60,
            sft_train: 48,
            longest: 20,
            max_model_len: 2048,
        };
        let b = budget(&config("num_star_iterations: 1\n"), 4, 3, Some(&prompts));
        // Per iteration: initial prompts 70; correction prompts: test 60 + 3 x 10, train 5 x (80 + 4 x 10).
        assert_eq!(b.prompt_tokens_at_most, Some(2 * (70 + 90 + 600)));
        // 100 examples: SFT prompts 48 x 25 + 100 x 2 x 10 answer tokens, 2 epochs, 1 round.
        assert_eq!(b.train_tokens_at_most, Some(2 * (48 * 25 + 2000)));
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(grouped(999), "999");
    }
}
