//! What decided an experiment, on both sides of the paper table: the settings that are compared, a run's own (its
//! config.resolved.yaml and the question counts its metrics recorded), and how they differ from the published ones
//! (reports/reference/paper_settings.csv, read by [`super::published`]) for one variant. The paper table compares
//! a row of ours with the published one only when every setting that decides the experiment matches.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_yaml::Value;

use super::error::ReportError;
use super::published::PublishedSettings;
use crate::stasc::spec::FilterLetter;
use crate::stasc::IterationMetrics;

/// One setting that decides what an experiment measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Setting {
    /// The checkpoint (its directory name, compared case-insensitively with the published label).
    Model,
    /// Train/test questions.
    Questions,
    /// The reward function.
    Reward,
    /// How initial answers and corrections are paired.
    Pairing,
    /// What the I (improving) filter keeps.
    FilterI,
    /// What the N filter keeps.
    FilterN,
    /// When an answer counts as correct.
    Correctness,
    /// What part of a generation is scored.
    EvaluatorMode,
    /// K_init/K_corr.
    K,
    /// N, the number of STaSC iterations (shown, never a reason for "not comparable").
    Iterations,
    /// Few-shot or zero-shot prompts.
    Prompts,
    /// What the SFT example's context is.
    SftContext,
    /// How completions are cleaned before scoring and reuse.
    AnswerCleaning,
    /// Temperature, top-p, maximum new tokens.
    Sampling,
    /// Fine-tuning learning rate.
    LearningRate,
    /// Fine-tuning epochs (or max_steps when set).
    Epochs,
    /// Examples per optimiser step: per device x accumulation x processes.
    GlobalBatch,
    /// Full fine-tuning or LoRA/DoRA.
    FineTuning,
    /// How the loss is averaged across data-parallel ranks.
    LossNormalisation,
    /// Which parameters get weight decay (fine_tune `training.decay_parameters`).
    WeightDecay,
}

impl Setting {
    /// Every setting, in the order tables list them.
    pub const ALL: [Setting; 20] = [
        Setting::Model,
        Setting::Questions,
        Setting::Reward,
        Setting::Pairing,
        Setting::FilterI,
        Setting::FilterN,
        Setting::Correctness,
        Setting::EvaluatorMode,
        Setting::K,
        Setting::Iterations,
        Setting::Prompts,
        Setting::SftContext,
        Setting::AnswerCleaning,
        Setting::Sampling,
        Setting::LearningRate,
        Setting::Epochs,
        Setting::GlobalBatch,
        Setting::FineTuning,
        Setting::LossNormalisation,
        Setting::WeightDecay,
    ];

    /// The name in paper_settings.csv and in the report's settings table.
    pub fn name(self) -> &'static str {
        match self {
            Setting::Model => "model",
            Setting::Questions => "questions",
            Setting::Reward => "reward",
            Setting::Pairing => "pairing",
            Setting::FilterI => "filter_I",
            Setting::FilterN => "filter_N",
            Setting::Correctness => "correctness",
            Setting::EvaluatorMode => "evaluator_mode",
            Setting::K => "k",
            Setting::Iterations => "iterations",
            Setting::Prompts => "prompts",
            Setting::SftContext => "sft_context",
            Setting::AnswerCleaning => "answer_cleaning",
            Setting::Sampling => "sampling",
            Setting::LearningRate => "learning_rate",
            Setting::Epochs => "epochs",
            Setting::GlobalBatch => "global_batch",
            Setting::FineTuning => "fine_tuning",
            Setting::LossNormalisation => "loss_normalisation",
            Setting::WeightDecay => "weight_decay",
        }
    }

    /// The setting named `name` in paper_settings.csv.
    pub fn parse(name: &str) -> Option<Setting> {
        Setting::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The word a difference is described with: both filter rows are "filter" (a run has one filter).
    pub fn label(self) -> &'static str {
        match self {
            Setting::FilterI | Setting::FilterN => "filter",
            s => s.name(),
        }
    }

    /// Whether a difference makes a row not comparable. N is shown only: iteration n of a shorter run is the same
    /// experiment as iteration n of a longer one.
    pub fn decides_comparability(self) -> bool {
        self != Setting::Iterations
    }

    /// Whether the setting applies to `variant`: each filter row only to variants with its letter.
    pub fn applies_to(self, variant: &str) -> bool {
        let letter = FilterLetter::of_variant(variant);
        match self {
            Setting::FilterI => letter == Some(FilterLetter::Improving),
            Setting::FilterN => letter == Some(FilterLetter::N),
            _ => true,
        }
    }

    /// Whether two values are the same setting: numbers by value ("7e-06" = "0.000007"), the model's name
    /// without regard to case, everything else as written.
    pub fn same(self, a: &str, b: &str) -> bool {
        let canonical = |s: &str| -> Vec<String> {
            let s = if self == Setting::Model { s.to_lowercase() } else { s.to_string() };
            s.split(|c: char| c.is_whitespace() || c == ',' || c == '/')
                .filter(|t| !t.is_empty())
                .map(|t| t.parse::<f64>().map_or_else(|_| t.to_string(), |v| format!("{v}")))
                .collect()
        };
        canonical(a) == canonical(b)
    }
}

/// One of a run's settings: the value compared, and how it is shown (the value and how it came about).
#[derive(Debug, Clone, PartialEq)]
pub struct RunValue {
    /// The value as the published table writes it; None when the run does not say.
    pub value: Option<String>,
    /// How it is shown, e.g. "8 (1 x 4 x 2)" (per device x accumulation x processes).
    pub shown: String,
}

impl RunValue {
    fn known(value: impl Into<String>) -> Self {
        let value = value.into();
        RunValue { shown: value.clone(), value: Some(value) }
    }

    fn unknown(why: &str) -> Self {
        RunValue { value: None, shown: if why.is_empty() { "unknown".into() } else { format!("unknown ({why})") } }
    }
}

/// A run's settings, read from its config.resolved.yaml and its metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    /// `stasc_config.protocol` (`stasc` or `paper`).
    pub protocol: String,
    /// Every setting of [`Setting::ALL`]; both filter rows hold the run's one filter.
    values: BTreeMap<Setting, RunValue>,
}

/// Python's way of writing a learning rate ("7e-06"), the way the published table and HF configs write it.
fn scientific(v: f64) -> String {
    let s = format!("{v:e}");
    match s.split_once('e') {
        Some((m, e)) => {
            let (sign, digits) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
            format!("{m}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

fn at<'a>(doc: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(doc, |v, key| v.get(*key)).filter(|v| !v.is_null())
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.as_f64().map_or_else(|| n.to_string(), |f| format!("{f}"))),
        _ => None,
    }
}

impl RunSettings {
    /// The settings of the run in `dir`: None when it has no config.resolved.yaml, or one without
    /// `stasc_config` (hand-made directories); an error when the file is not YAML.
    pub fn read(dir: &Path, iterations: &[IterationMetrics]) -> Result<Option<RunSettings>, ReportError> {
        let path = dir.join("config.resolved.yaml");
        if !path.is_file() {
            return Ok(None);
        }
        let text = fs::read_to_string(&path).map_err(|e| ReportError::io(&path, e))?;
        let doc: Value = serde_yaml::from_str(&text).map_err(|e| ReportError::Yaml {
            path: path.clone(),
            what: "resolved run configuration",
            message: e.to_string().replace('\n', " "),
        })?;
        Ok(Self::from_config(&doc, iterations))
    }

    /// The settings a resolved configuration (the document of config.resolved.yaml) and the run's metrics give;
    /// None when the document has no `stasc_config`.
    pub fn from_config(doc: &Value, iterations: &[IterationMetrics]) -> Option<RunSettings> {
        at(doc, &["stasc_config"])?.as_mapping()?;
        let s = |key: &str| at(doc, &["stasc_config", key]);
        let string = |key: &str| s(key).and_then(text);
        let number = |path: &[&str]| at(doc, path).and_then(Value::as_f64);
        let flag = |path: &[&str]| at(doc, path).and_then(Value::as_bool);
        let plain = |key: &str| string(key).map_or_else(|| RunValue::unknown(""), RunValue::known);
        let protocol = string("protocol").unwrap_or_else(|| "stasc".into());
        let paper = protocol == "paper";
        // A key missing (runs made before it existed, which also lack `protocol`) or null (a fine_tune key left
        // unset) takes its protocol's default: stasc's own (full reward, few-shot prompts, the SFT template, raw
        // completions, whole-step loss normalisation) as those runs behaved, or the paper protocol's.
        let or_default = |key: &str, stasc: &str, paper_default: &str| {
            RunValue::known(string(key).unwrap_or_else(|| if paper { paper_default } else { stasc }.to_string()))
        };

        let mut values = BTreeMap::new();
        let model = string("model_path").and_then(|p| {
            p.trim_end_matches(['/', '\\']).rsplit(['/', '\\']).next().filter(|n| !n.is_empty()).map(String::from)
        });
        values.insert(Setting::Model, model.map_or_else(|| RunValue::unknown(""), RunValue::known));
        let train = iterations.iter().map(|m| m.questions.train).max().unwrap_or(0);
        let test = iterations.iter().map(|m| m.questions.test).max().unwrap_or(0);
        // 0/0: metrics written before question counts were recorded.
        values.insert(
            Setting::Questions,
            if train + test == 0 {
                RunValue::unknown("not recorded")
            } else {
                RunValue::known(format!("{train}/{test}"))
            },
        );
        values.insert(Setting::Reward, plain("evaluator_function"));
        values.insert(Setting::Pairing, plain("pairing"));
        values.insert(Setting::FilterI, plain("filter"));
        values.insert(Setting::FilterN, plain("filter"));
        values.insert(Setting::Correctness, or_default("correctness", "full_reward", "positive_reward"));
        values.insert(Setting::EvaluatorMode, plain("evaluator_mode"));
        values.insert(
            Setting::K,
            match (string("number_output_initial_generations"), string("number_output_corrections")) {
                (Some(i), Some(c)) => RunValue::known(format!("{i}/{c}")),
                _ => RunValue::unknown(""),
            },
        );
        values.insert(Setting::Iterations, plain("num_star_iterations"));
        let few_shots = flag(&["stasc_config", "use_few_shots"]).unwrap_or(!paper);
        values.insert(Setting::Prompts, RunValue::known(if few_shots { "few-shot" } else { "zero-shot" }));
        values.insert(Setting::SftContext, or_default("sft_context", "template", "correction_prompt"));
        values.insert(Setting::AnswerCleaning, or_default("answer_cleaning", "none", "reference"));
        values.insert(
            Setting::Sampling,
            match (string("temperature"), string("top_p"), string("max_tokens")) {
                (Some(t), Some(p), Some(m)) => RunValue::known(format!("temperature {t}, top_p {p}, max_tokens {m}")),
                _ => RunValue::unknown(""),
            },
        );
        fn training(key: &str) -> [&str; 3] {
            ["fine_tune", "training", key]
        }
        values.insert(
            Setting::LearningRate,
            number(&training("learning_rate"))
                .map_or_else(|| RunValue::unknown(""), |v| RunValue::known(scientific(v))),
        );
        // HF semantics: a positive max_steps replaces the epoch count.
        let epochs = match (number(&training("max_steps")).filter(|&s| s > 0.0), number(&training("num_train_epochs")))
        {
            (Some(steps), _) => RunValue::known(format!("max_steps {steps}")),
            (None, Some(e)) => RunValue::known(format!("{e}")),
            (None, None) => RunValue::unknown(""),
        };
        values.insert(Setting::Epochs, epochs);
        let per_device = number(&training("per_device_train_batch_size"));
        let accumulation = number(&training("gradient_accumulation_steps"));
        // The resolved rank count first (`num_devices` in runs recorded before it was named data_parallel_ranks, the
        // serde alias of `Execution`); accelerate's num_processes as written otherwise; null means "every GPU found
        // at run time", which the run directory does not record.
        let processes = number(&["execution", "data_parallel_ranks"])
            .or_else(|| number(&["execution", "num_devices"]))
            .or_else(|| number(&["accelerate", "num_processes"]));
        values.insert(
            Setting::GlobalBatch,
            match (per_device, accumulation) {
                (Some(d), Some(a)) => {
                    let p_text = processes.map_or_else(|| "all GPUs".to_string(), |p| format!("{p}"));
                    let how = format!("{d} x {a} x {p_text}");
                    match processes {
                        Some(p) => {
                            RunValue { value: Some(format!("{}", d * a * p)), shown: format!("{} ({how})", d * a * p) }
                        }
                        None => RunValue::unknown(&how),
                    }
                }
                _ => RunValue::unknown(""),
            },
        );
        let fine_tuning = match (flag(&["fine_tune", "peft", "use_lora"]), flag(&["fine_tune", "peft", "dora"])) {
            (Some(false), _) => RunValue::known("full"),
            (Some(true), Some(true)) => RunValue::known("dora"),
            (Some(true), _) => RunValue::known("lora"),
            (None, _) => RunValue::unknown(""),
        };
        values.insert(Setting::FineTuning, fine_tuning);
        let whole_step = flag(&training("average_tokens_across_devices")).unwrap_or(!paper);
        values.insert(Setting::LossNormalisation, RunValue::known(if whole_step { "whole_step" } else { "per_rank" }));
        // Runs made before decay_parameters existed decayed by name (no decay on biases and norm weights).
        let decay = at(doc, &training("decay_parameters"))
            .and_then(text)
            .unwrap_or_else(|| if paper { "transformers_4_47_1" } else { "names" }.to_string());
        values.insert(Setting::WeightDecay, RunValue::known(decay));
        Some(RunSettings { protocol, values })
    }

    /// The run's value of `setting`.
    pub fn get(&self, setting: Setting) -> &RunValue {
        self.values.get(&setting).expect("every setting is read")
    }

    /// What tells this run's experiment apart from another's, as (name, value) pairs: the protocol and every
    /// setting except N and the question counts (a run that has not sampled yet has none; neither separates
    /// seeds of one experiment).
    pub fn experiment_key(&self) -> Vec<(&'static str, String)> {
        let mut key = vec![("protocol", self.protocol.clone())];
        for s in Setting::ALL {
            if matches!(s, Setting::Iterations | Setting::Questions | Setting::FilterN) {
                continue;
            }
            let v = self.get(s);
            key.push((s.label(), v.value.clone().unwrap_or_else(|| v.shown.clone())));
        }
        key
    }
}

/// Our side of one setting over the runs of a group.
#[derive(Debug, Clone, PartialEq)]
pub enum Ours {
    /// Every run has this value (shown as the first run shows it).
    Same(String),
    /// Some run does not say.
    Unknown(String),
    /// The runs disagree: each distinct value once.
    Mixed(Vec<String>),
}

impl Ours {
    /// How the value is shown in a table.
    pub fn shown(&self) -> String {
        match self {
            Ours::Same(v) | Ours::Unknown(v) => v.clone(),
            Ours::Mixed(v) => format!("differs between runs: {}", v.join(", ")),
        }
    }
}

/// Whether one setting matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreement {
    /// Ours is the published value.
    Same,
    /// Ours differs, is unknown, or differs between runs.
    Differs,
    /// Shown for information (N), or not published: not a reason for "not comparable".
    Shown,
}

/// One setting of one compared variant.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingRow {
    /// Which setting.
    pub setting: Setting,
    /// The published value ("—" when the table does not list it).
    pub published: Option<String>,
    /// Where the published value comes from.
    pub source: Option<String>,
    /// Ours.
    pub ours: Ours,
    /// Whether they match.
    pub agreement: Agreement,
}

impl SettingRow {
    /// The difference in words, e.g. "pairing per_initial (published all_pairs)"; None when they match.
    pub fn difference(&self) -> Option<String> {
        if self.agreement != Agreement::Differs {
            return None;
        }
        let published = self.published.as_deref().unwrap_or("?");
        Some(format!("{} {} (published {published})", self.setting.label(), self.ours.shown()))
    }
}

/// How a group of our runs of one variant compares with the published settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The settings that apply to the variant, in [`Setting::ALL`] order.
    pub rows: Vec<SettingRow>,
    /// Names of the runs whose settings are unknown (no config.resolved.yaml with a stasc_config).
    pub unknown_runs: Vec<String>,
}

impl Comparison {
    /// Whether the runs measure the published experiment: every deciding setting known and equal.
    pub fn comparable(&self) -> bool {
        self.unknown_runs.is_empty() && self.rows.iter().all(|r| r.agreement != Agreement::Differs)
    }

    /// Every reason the group is not comparable, in words.
    pub fn differences(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.unknown_runs.is_empty() {
            out.push(format!("settings unknown ({} has no config.resolved.yaml)", self.unknown_runs.join(", ")));
        }
        out.extend(self.rows.iter().filter_map(SettingRow::difference));
        out
    }
}

/// Compares the runs of one group of `variant` (name and settings of each) with the published settings.
pub fn compare(published: &PublishedSettings, variant: &str, runs: &[(&str, Option<&RunSettings>)]) -> Comparison {
    let unknown_runs: Vec<String> = runs.iter().filter(|r| r.1.is_none()).map(|r| r.0.to_string()).collect();
    let known: Vec<&RunSettings> = runs.iter().filter_map(|r| r.1).collect();
    let mut rows = Vec::new();
    for setting in Setting::ALL.into_iter().filter(|s| s.applies_to(variant)) {
        let p = published.values.get(&setting);
        let values: Vec<&RunValue> = known.iter().map(|k| k.get(setting)).collect();
        let ours = if known.is_empty() {
            Ours::Unknown("unknown".into())
        } else if let Some(u) = values.iter().find(|v| v.value.is_none()) {
            Ours::Unknown(u.shown.clone())
        } else {
            let mut distinct: Vec<&RunValue> = Vec::new();
            for v in &values {
                let a = v.value.as_deref().unwrap_or("");
                if !distinct.iter().any(|d| setting.same(d.value.as_deref().unwrap_or(""), a)) {
                    distinct.push(v);
                }
            }
            match distinct.as_slice() {
                [one] => Ours::Same(one.shown.clone()),
                many => Ours::Mixed(many.iter().map(|v| v.shown.clone()).collect()),
            }
        };
        let agreement = match (&ours, p) {
            _ if !setting.decides_comparability() => Agreement::Shown,
            (_, None) => Agreement::Shown,
            (Ours::Same(_), Some(p)) => {
                let value = values[0].value.as_deref().unwrap_or("");
                if setting.same(&p.value, value) {
                    Agreement::Same
                } else {
                    Agreement::Differs
                }
            }
            // Nothing known about our side (all runs without settings): reported once, as unknown settings.
            (Ours::Unknown(_), Some(_)) if known.is_empty() => Agreement::Shown,
            (Ours::Unknown(_) | Ours::Mixed(_), Some(_)) => Agreement::Differs,
        };
        rows.push(SettingRow {
            setting,
            published: p.map(|p| p.value.clone()),
            source: p.map(|p| p.source.clone()),
            ours,
            agreement,
        });
    }
    Comparison { rows, unknown_runs }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::published::PaperSettings;
    use crate::report::testutil::*;

    fn published() -> PublishedSettings {
        PaperSettings::embedded().unwrap().of("Qwen2.5-1.5B-Instruct").unwrap().clone()
    }

    fn run(config: &str, questions: (usize, usize)) -> RunSettings {
        let doc: Value = serde_yaml::from_str(config).unwrap();
        let mut m = metrics("ENF", 0, 0.2);
        m.questions.train = questions.0;
        m.questions.test = questions.1;
        RunSettings::from_config(&doc, &[m]).unwrap()
    }

    #[test]
    fn values_compare_by_number_and_model_case() {
        assert!(Setting::LearningRate.same("7e-06", "0.000007"));
        assert!(Setting::Sampling
            .same("temperature 0.6, top_p 0.9, max_tokens 256", "temperature 0.60, top_p 0.9, max_tokens 256"));
        assert!(Setting::Model.same("qwen2.5-1.5b-instruct", "Qwen2.5-1.5B-Instruct"));
        assert!(!Setting::Pairing.same("per_initial", "all_pairs"));
        assert_eq!(scientific(7e-6), "7e-06");
        assert_eq!(scientific(1e-5), "1e-05");
    }

    #[test]
    fn stasc_defaults_differ_from_the_published_settings() {
        let ours = run(&resolved_config(&RunConfigFixture::stasc_defaults()), (500, 500));
        let c = compare(&published(), "ENF", &[("a", Some(&ours)), ("b", Some(&ours))]);
        assert!(!c.comparable());
        let d = c.differences();
        assert_eq!(
            d,
            [
                "pairing per_initial (published all_pairs)",
                "filter non_decreasing (published correct_to_correct)",
                "correctness full_reward (published positive_reward)",
                "evaluator_mode final (published default)",
                "prompts few-shot (published zero-shot)",
                "sft_context template (published correction_prompt)",
                "answer_cleaning none (published reference)",
                "loss_normalisation whole_step (published per_rank)",
                "weight_decay names (published transformers_4_47_1)",
            ]
        );
        // The I filter row is not shown for an N variant.
        assert!(c.rows.iter().all(|r| r.setting != Setting::FilterI));
    }

    #[test]
    fn the_paper_protocol_is_comparable_and_n_is_shown_only() {
        let mut fixture = RunConfigFixture::paper();
        fixture.iterations = 3;
        let ours = run(&resolved_config(&fixture), (500, 500));
        let c = compare(&published(), "ENF", &[("a", Some(&ours))]);
        assert!(c.comparable(), "{:?}", c.differences());
        let n = c.rows.iter().find(|r| r.setting == Setting::Iterations).unwrap();
        assert_eq!((n.ours.shown(), n.agreement), ("3".to_string(), Agreement::Shown));
        let batch = c.rows.iter().find(|r| r.setting == Setting::GlobalBatch).unwrap();
        assert_eq!(batch.ours.shown(), "8 (1 x 4 x 2)");
        // 8/8 questions (a smoke test) is another experiment.
        let small = run(&resolved_config_for(&RunConfigFixture::paper(), "EIE"), (8, 8));
        let c = compare(&published(), "EIE", &[("a", Some(&small))]);
        assert_eq!(c.differences(), ["questions 8/8 (published 500/500)"]);
    }

    #[test]
    fn runs_of_a_group_that_disagree_or_lack_settings_are_not_comparable() {
        let paper = run(&resolved_config_for(&RunConfigFixture::paper(), "EIE"), (500, 500));
        let mut other = RunConfigFixture::paper();
        other.model_path = "/models/Qwen2.5-0.5B-Instruct/".into();
        let other = run(&resolved_config_for(&other, "EIE"), (500, 500));
        let c = compare(&published(), "EIE", &[("a", Some(&paper)), ("b", Some(&other)), ("c", None)]);
        assert_eq!(
            c.differences(),
            [
                "settings unknown (c has no config.resolved.yaml)",
                "model differs between runs: Qwen2.5-1.5B-Instruct, Qwen2.5-0.5B-Instruct (published Qwen2.5-1.5B-Instruct)"
            ]
        );
        let none = compare(&published(), "EIE", &[("c", None)]);
        assert_eq!(none.differences(), ["settings unknown (c has no config.resolved.yaml)"]);
    }

    #[test]
    fn missing_or_unset_keys_take_their_protocols_default() {
        let old = "stasc_config:\n  model_path: Qwen2.5-1.5B-Instruct\n  pairing: per_initial\n  filter: improving\n";
        let s = run(old, (0, 0));
        assert_eq!(s.protocol, "stasc");
        assert_eq!(s.get(Setting::Correctness).shown, "full_reward");
        assert_eq!(s.get(Setting::Prompts).shown, "few-shot");
        assert_eq!(s.get(Setting::LossNormalisation).shown, "whole_step");
        assert_eq!(s.get(Setting::Questions).value, None);
        assert_eq!(s.get(Setting::GlobalBatch).value, None);
        // Unset (null) under the paper protocol: the protocol's per-rank normalisation.
        let paper = resolved_config_for(&RunConfigFixture::paper(), "EIE")
            .replace("average_tokens_across_devices: false", "average_tokens_across_devices: null")
            .replace("  answer_cleaning: reference\n", "");
        let s = run(&paper, (500, 500));
        assert_eq!(s.get(Setting::LossNormalisation).shown, "per_rank");
        assert_eq!(s.get(Setting::AnswerCleaning).shown, "reference");
        let doc: Value = serde_yaml::from_str("stasc:\n  num_star_iterations: 2\n").unwrap();
        assert_eq!(RunSettings::from_config(&doc, &[]), None);
    }

    #[test]
    fn the_rank_count_reads_under_its_old_and_new_names() {
        let batch = |config: &str| run(config, (500, 500)).get(Setting::GlobalBatch).shown.clone();
        let now = resolved_config(&RunConfigFixture::paper()).replace("num_processes: 2", "num_processes: null");
        assert!(now.contains("  data_parallel_ranks: 2\n"), "{now}");
        assert_eq!(batch(&now), "8 (1 x 4 x 2)");
        // config.resolved.yaml of a run recorded before `execution.num_devices` became `data_parallel_ranks`.
        let old = now.replace("  data_parallel_ranks: 2\n", "  num_devices: 3\n");
        assert_eq!(batch(&old), "12 (1 x 4 x 3)");
    }

    #[test]
    fn unreadable_config_is_a_one_line_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("config.resolved.yaml"), "stasc_config: [unclosed\n  x: {").unwrap();
        let err = RunSettings::read(tmp.path(), &[]).unwrap_err().to_string();
        assert!(err.starts_with(&tmp.path().join("config.resolved.yaml").display().to_string()), "{err}");
        assert!(err.contains("not a valid resolved run configuration") && !err.contains('\n'), "{err}");
        assert_eq!(RunSettings::read(&tmp.path().join("none"), &[]).unwrap(), None);
    }
}
