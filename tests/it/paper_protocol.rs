//! A sweep under `protocol = "paper"` beside one under stasc's own defaults, each cell run in process on a scripted
//! model whose every answer is fixed in advance, so pair counts, filters and transitions can be counted by hand.
//! Everything else is real: the sweep file and grid, the cell config files and their loader, the dataset loader,
//! the prompt templates and few-shot files of the repository, in_acc scoring, answer cleaning and the run directory.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use stasc::config::{RunConfig, RunConfigPaths};
use stasc::data::{load_splits, Columns};
use stasc::prompt::ChatMessage;
use stasc::stasc::from_config::run_with_backend;
use stasc::stasc::records::TrainPair;
use stasc::stasc::{
    Backend, BackendError, GeneratedSample, IterationMetrics, NoObserver, RunOptions, SamplingJob, SamplingSpec,
    TrainSummary,
};
use stasc::sweep::{execute, plan, CellPlan, CellRunner, SweepOptions, SweepSpec};

/// (id, question, gold) of the train and test questions.
const TRAIN: [(&str, &str, &str); 3] = [
    ("tr1", "What is the capital of France?", "Paris"),
    ("tr2", "What is the capital of Italy?", "Rome"),
    ("tr3", "What is the capital of Norway?", "Oslo"),
];
const TEST: [(&str, &str, &str); 2] =
    [("te1", "What is the capital of Japan?", "Tokyo"), ("te2", "What is the capital of Peru?", "Lima")];

/// Whether each initial answer (2 per train question, 1 per test question) is right.
fn initial_right(id: &str) -> &'static [bool] {
    match id {
        "tr1" => &[true, false],
        "tr2" => &[false, false],
        "tr3" => &[true, true],
        "te1" => &[true],
        "te2" => &[false],
        _ => panic!("no script for {id}"),
    }
}

/// Whether each correction of initial answer `initial` is right (2 per train initial answer, 1 per test one).
fn correction_right(id: &str, initial: usize) -> &'static [bool] {
    match (id, initial) {
        ("tr1", 0) => &[true, true],
        ("tr1", 1) => &[true, false],
        ("tr2", 0) => &[false, true],
        ("tr2", 1) => &[false, false],
        ("tr3", 0) => &[true, false],
        ("tr3", 1) => &[false, false],
        ("te1", 0) => &[false],
        ("te2", 0) => &[true],
        _ => panic!("no script for {id}/{initial}"),
    }
}

fn gold(id: &str) -> &'static str {
    TRAIN.iter().chain(TEST.iter()).find(|q| q.0 == id).map(|q| q.2).unwrap()
}

/// The text of a scripted answer. Right answers come wrapped as a chat model sometimes answers ("  Assistant: ...",
/// trailing newline). One wrong answer names the gold before a stray "assistant:": in_acc over the raw text would
/// call it right; the reference's cleaning keeps only what follows the marker, which is wrong.
fn text(id: &str, right: bool, tricky: bool) -> String {
    match (right, tricky) {
        (true, _) => format!("  Assistant: Step-by-step reasoning: it is the capital.\nFinal Answer: {}\n", gold(id)),
        (false, true) => format!("{}? assistant: Step-by-step reasoning: no.\nFinal Answer: Atlantis", gold(id)),
        (false, false) => "Step-by-step reasoning: a guess.\nFinal Answer: Atlantis".to_string(),
    }
}

/// What the scripted model saw: every prompt by key, and every fine-tuning call.
#[derive(Default)]
struct Seen {
    prompts: BTreeMap<String, Vec<ChatMessage>>,
    trained: Vec<(PathBuf, Vec<Vec<ChatMessage>>)>,
}

struct Scripted<'a>(&'a Mutex<Seen>);

impl Backend for Scripted<'_> {
    fn generate(
        &mut self,
        _model: &Path,
        requests: &[SamplingJob],
        _sampling: &SamplingSpec,
    ) -> Result<Vec<Vec<GeneratedSample>>, BackendError> {
        let mut seen = self.0.lock().unwrap();
        let mut out = Vec::new();
        for r in requests {
            seen.prompts.insert(r.key.clone(), r.messages.clone());
            // Keys: iter<n>/initial/<split>/<id> and iter<n>/correction/<split>/<id>/<initial sample>.
            let parts: Vec<&str> = r.key.split('/').collect();
            let (id, script) = match parts[1] {
                "initial" => (parts[3], initial_right(parts[3])),
                _ => (parts[3], correction_right(parts[3], parts[4].parse()?)),
            };
            assert_eq!(script.len(), r.n, "{}", r.key);
            let tricky = parts[1] == "initial" && id == "tr2";
            out.push(
                script
                    .iter()
                    .enumerate()
                    .map(|(i, &right)| GeneratedSample {
                        text: text(id, right, tricky && i == 0),
                        seed: 0,
                        tokens: 1,
                        finish_reason: None,
                    })
                    .collect(),
            );
        }
        Ok(out)
    }

    fn train(&mut self, base: &Path, examples: &[Vec<ChatMessage>], out: &Path) -> Result<TrainSummary, BackendError> {
        self.0.lock().unwrap().trained.push((base.to_path_buf(), examples.to_vec()));
        fs::create_dir_all(out)?;
        Ok(TrainSummary { losses: vec![0.5], tokens_per_s: 1.0, stage_seconds: None })
    }
}

/// Runs one sweep cell in process on `backend`, from the cell's own config files, as `stasc run` would.
fn run_cell(cell: &CellPlan, backend: &mut dyn Backend) -> Result<(), String> {
    let paths = RunConfigPaths {
        config: cell.config.clone(),
        ft_config: cell.ft_config.clone(),
        accelerate_config: cell.accelerate_config.clone(),
    };
    let mut config = RunConfig::load(&paths).map_err(|e| e.to_string())?;
    config.stasc_config.output_dir = cell.dir.clone();
    let c = &config.stasc_config;
    let splits = load_splits(&c.data_path, &Columns::from_config(c)).map_err(|e| e.to_string())?;
    run_with_backend(&config, &splits, backend, &RunOptions::default(), &mut NoObserver)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Runs each cell on the scripted model and keeps what the model saw, by cell.
struct InProcess(Mutex<BTreeMap<String, Seen>>);

impl CellRunner for InProcess {
    fn run(&self, cell: &CellPlan, _device: Option<&str>, _log: &Path) -> Result<(), String> {
        let seen = Mutex::new(Seen::default());
        run_cell(cell, &mut Scripted(&seen))?;
        self.0.lock().unwrap().insert(cell.name.clone(), seen.into_inner().unwrap());
        Ok(())
    }
}

/// Plans and runs every cell of the sweep file with `runner`; every cell must succeed.
fn run_sweep(sweep_file: &Path, runner: &dyn CellRunner) {
    let spec = SweepSpec::load(sweep_file).unwrap();
    let plans = plan(&spec, false).unwrap();
    let outcome = execute(&spec, &plans, &SweepOptions::default(), runner).unwrap();
    assert_eq!(outcome.failed, 0, "{:?}", outcome.cells);
}

fn write_dataset(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    for (name, rows) in [("train.jsonl", &TRAIN[..]), ("test.jsonl", &TEST[..])] {
        let lines: Vec<String> = rows
            .iter()
            .map(|(id, q, g)| serde_json::json!({"question_id": id, "question_text": q, "reference": [g]}).to_string())
            .collect();
        fs::write(dir.join(name), lines.join("\n") + "\n").unwrap();
    }
}

fn metrics(cell: &Path) -> Vec<IterationMetrics> {
    (0..3)
        .map(|n| {
            serde_json::from_str(&fs::read_to_string(cell.join(format!("iter_{n}/metrics.json"))).unwrap()).unwrap()
        })
        .collect()
}

fn pairs(cell: &Path, n: usize) -> Vec<TrainPair> {
    let text = fs::read_to_string(cell.join(format!("iter_{n}/train_pairs.jsonl"))).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn a_paper_protocol_sweep_counts_pairs_filters_and_transitions_as_the_reference_did() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_dataset(&dir.join("data"));
    // The model directory is never read by the scripted model; its name is what reports compare.
    fs::create_dir_all(dir.join("Qwen2.5-1.5B-Instruct")).unwrap();
    fs::write(
        dir.join("stasc.yaml"),
        format!(
            "model_path: {m}\ndata_path: {d}\ntemplate_dir: {t}\nfew_shot_dir: {f}\nnum_star_iterations: 2\n\
             number_output_initial_generations: 2\nnumber_output_corrections: 2\ndevice: cpu\n",
            m = dir.join("Qwen2.5-1.5B-Instruct").display(),
            d = dir.join("data").display(),
            t = root.join("templates").display(),
            f = root.join("few_shots").display(),
        ),
    )
    .unwrap();
    fs::write(dir.join("ft.yaml"), "training:\n  num_train_epochs: 1\n").unwrap();
    let sweep_file = dir.join("sweep.toml");
    fs::write(
        &sweep_file,
        format!(
            "[sweep]\nname = \"protocols\"\nconfig = \"{c}\"\nft_config = \"{f}\"\nout = \"{o}\"\n\
             [grid]\nprotocol = [\"paper\", \"stasc\"]\nvariant = [\"EIE\", \"ENF\"]\n",
            c = dir.join("stasc.yaml").display(),
            f = dir.join("ft.yaml").display(),
            o = dir.join("runs").display(),
        ),
    )
    .unwrap();
    let runner = InProcess(Mutex::new(BTreeMap::new()));
    run_sweep(&sweep_file, &runner);
    let seen = runner.0.into_inner().unwrap();
    let cell = |name: &str| dir.join("runs").join(name);

    // By hand, per train question (2 initial answers x 4 corrections = 8 all_pairs candidates), with R/W = right or
    // wrong after cleaning (tr2's first initial answer names the gold only before "assistant:", so it is wrong):
    //   tr1: initial R W, corrections R R R W -> C>C 1x3, C>I 1x1, I>C 1x3, I>I 1x1
    //   tr2: initial W W, corrections W R W W -> I>C 2x1, I>I 2x3
    //   tr3: initial R R, corrections R W W W -> C>C 2x1, C>I 2x3
    // Totals over 24 pairs: C>C 5, C>I 7, I>C 5, I>I 7. Improving keeps I>C = 5; the paper's N keeps C>C = 5;
    // and 5 + 5 = K_init (2) x correct corrections (3 + 1 + 1).
    for variant in ["EIE", "ENF"] {
        let name = format!("protocol=paper,variant={variant}");
        let all = metrics(&cell(&name));
        for m in &all {
            assert_eq!(m.variant, variant);
            let t = m.train_transitions;
            assert_eq!(t.pairs, 24, "{name} iteration {}", m.iteration);
            assert!(close(t.correct_to_correct, 500.0 / 24.0) && close(t.incorrect_to_correct, 500.0 / 24.0));
            assert!(close(t.correct_to_incorrect, 700.0 / 24.0) && close(t.incorrect_to_incorrect, 700.0 / 24.0));
            assert_eq!(m.filtered_pairs, 5, "{name} iteration {}", m.iteration);
            assert_eq!((m.train_initial_accuracy, m.train_correction_accuracy), (Some(3.0 / 6.0), Some(5.0 / 12.0)));
            // Test: te1 right -> wrong, te2 wrong -> right.
            assert_eq!((m.test_initial_accuracy, m.test_correction_accuracy), (0.5, 0.5));
            assert_eq!((m.transitions.correct_to_incorrect, m.transitions.incorrect_to_correct), (50.0, 50.0));
            assert_eq!(m.questions.train + m.questions.test, 5);
        }
        assert_eq!(all.iter().map(|m| m.trained).collect::<Vec<_>>(), [true, true, false]);
        for n in 0..3 {
            let kept = pairs(&cell(&name), n);
            let expected = if variant == "EIE" { (0.0, 1.0) } else { (1.0, 1.0) };
            assert!(kept.iter().all(|p| (p.initial_reward, p.correction_reward) == expected), "{name}");
        }
        // Zero-shot prompts with the reference's turns; SFT examples are exactly a correction prompt + correction.
        let s = &seen[&name];
        let init = &s.prompts["iter0/initial/train/tr1"];
        assert_eq!(init.iter().map(|m| m.role.as_str()).collect::<Vec<_>>(), ["user", "user"]);
        let corr = &s.prompts["iter0/correction/train/tr1/0"];
        assert_eq!(corr.iter().map(|m| m.role.as_str()).collect::<Vec<_>>(), ["user", "user", "assistant", "user"]);
        // The initial answer is reused cleaned.
        assert_eq!(corr[2].content, "Step-by-step reasoning: it is the capital.\nFinal Answer: Paris");
        assert_eq!(s.trained.len(), 2);
        for example in &s.trained[0].1 {
            let (prompt, answer) = example.split_at(example.len() - 1);
            assert_eq!(answer[0].role, "assistant");
            assert!(
                s.prompts.iter().any(|(k, p)| k.starts_with("iter0/correction/train/") && p.as_slice() == prompt),
                "{name}: an SFT example that is not a sampled correction prompt: {prompt:?}"
            );
        }
        let records = fs::read_to_string(cell(&name).join("iter_0/initial.jsonl")).unwrap();
        assert!(records.contains("\"raw_text\""), "cleaned answers keep their raw text");
    }

    // stasc's own protocol on the same answers: per-initial pairing (12 pairs), few-shot prompts, no cleaning.
    //   tr1: R with R R (C>C 2); W with R W (I>C 1, I>I 1)   tr2: W with W R (I>C 1); W with W W (I>I 2)
    //   tr3: R with R W (C>C 1, C>I 1); R with W W (C>I 2)
    // Improving keeps 2; N = non_decreasing keeps I>C + C>C = 5.
    for (variant, kept) in [("EIE", 2), ("ENF", 5)] {
        let name = format!("protocol=stasc,variant={variant}");
        let m = &metrics(&cell(&name))[0];
        assert_eq!((m.train_transitions.pairs, m.filtered_pairs), (12, kept), "{name}");
        let s = &seen[&name];
        assert!(s.prompts["iter0/initial/train/tr1"].len() > 2, "few-shot messages are shown");
        let records = fs::read_to_string(cell(&name).join("iter_0/initial.jsonl")).unwrap();
        assert!(!records.contains("\"raw_text\""));
    }
}

/// A deterministic 64-bit hash (FNV-1a), so the scripted answers are the same on every machine.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Right with probability about 1/5, decided by the prompt key and the sample index.
struct Coin;

impl Backend for Coin {
    fn generate(
        &mut self,
        _model: &Path,
        requests: &[SamplingJob],
        _sampling: &SamplingSpec,
    ) -> Result<Vec<Vec<GeneratedSample>>, BackendError> {
        Ok(requests
            .iter()
            .map(|r| {
                let id = r.key.split('/').nth(3).unwrap_or_default();
                (0..r.n)
                    .map(|i| {
                        let right = fnv(&format!("{}#{i}", r.key)).is_multiple_of(5);
                        let answer = if right { format!("gold-{id}") } else { "Atlantis".into() };
                        GeneratedSample {
                            text: format!("Final Answer: {answer}"),
                            seed: 0,
                            tokens: 1,
                            finish_reason: None,
                        }
                    })
                    .collect()
            })
            .collect())
    }

    fn train(
        &mut self,
        _base: &Path,
        _examples: &[Vec<ChatMessage>],
        out: &Path,
    ) -> Result<TrainSummary, BackendError> {
        fs::create_dir_all(out)?;
        Ok(TrainSummary { losses: vec![0.5], tokens_per_s: 1.0, stage_seconds: None })
    }
}

struct CoinRunner;

impl CellRunner for CoinRunner {
    fn run(&self, cell: &CellPlan, _device: Option<&str>, _log: &Path) -> Result<(), String> {
        run_cell(cell, &mut Coin)
    }
}

#[test]
fn the_paper_report_compares_paper_protocol_rows_and_marks_the_others_not_comparable() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The published setting's size: 500 train and 500 test questions.
    fs::create_dir_all(dir.join("data")).unwrap();
    for split in ["train", "test"] {
        let lines: Vec<String> = (0..500)
            .map(|q| {
                let id = format!("{split}{q}");
                serde_json::json!({"question_id": id, "question_text": format!("Question {id}?"), "reference": [format!("gold-{id}")]})
                    .to_string()
            })
            .collect();
        fs::write(dir.join(format!("data/{split}.jsonl")), lines.join("\n") + "\n").unwrap();
    }
    fs::create_dir_all(dir.join("Qwen2.5-1.5B-Instruct")).unwrap();
    // The shipped paper configuration (protocol paper, K = 5/5, the reference's fine-tuning and accelerate files),
    // pointed at the scripted model and the generated questions, for two iterations.
    let sweep_file = dir.join("sweep.toml");
    fs::write(
        &sweep_file,
        format!(
            "[sweep]\nname = \"paper\"\nconfig = \"{r}/configs/stasc_config.yaml\"\nft_config = \"{r}/configs/fine_tune.yaml\"\n\
             accelerate_config = \"{r}/configs/accelerate_config.yaml\"\nout = \"{o}\"\n\
             [set]\nmodel_path = \"{m}\"\ndata_path = \"{d}\"\ntemplate_dir = \"{r}/templates\"\nfew_shot_dir = \"{r}/few_shots\"\n\
             num_star_iterations = 1\n\
             [grid]\nprotocol = [\"paper\", \"stasc\"]\nvariant = [\"EIE\", \"ENF\"]\n",
            r = root.display(),
            o = dir.join("runs").display(),
            m = dir.join("Qwen2.5-1.5B-Instruct").display(),
            d = dir.join("data").display(),
        ),
    )
    .unwrap();
    run_sweep(&sweep_file, &CoinRunner);

    let out = dir.join("report");
    let options = stasc::report::ReportOptions {
        out: out.clone(),
        paper_model: Some(stasc::report::DEFAULT_MODEL_LABEL.to_string()),
        templates: None,
    };
    stasc::report::write_report(&dir.join("runs"), &options).unwrap();
    let table = fs::read_to_string(out.join("paper_table.md")).unwrap();
    let rows = |protocol: &str| -> Vec<&str> {
        table.lines().filter(|l| l.contains(&format!("protocol={protocol}"))).collect()
    };
    let (paper, ours) = (rows("paper"), rows("stasc"));
    assert!(!paper.is_empty() && !ours.is_empty(), "{table}");
    assert!(paper.iter().all(|l| !l.contains("not comparable")), "{table}");
    for variant in ["EIE", "ENF"] {
        let marked: Vec<&&str> = ours.iter().filter(|l| l.contains(variant) && l.contains("not comparable")).collect();
        assert!(!marked.is_empty(), "{variant}: {table}");
        // configs/stasc_config.yaml sets evaluator_mode: default explicitly, so it stays default under either
        // protocol; everything else the stasc protocol decides differs.
        let mut expected =
            vec!["pairing per_initial", "prompts few-shot", "answer_cleaning none", "weight_decay names"];
        if variant == "ENF" {
            expected.push("filter non_decreasing (published correct_to_correct)");
        }
        for difference in expected {
            assert!(marked.iter().any(|l| l.contains(difference)), "{variant} {difference}: {table}");
        }
        assert!(!marked.iter().any(|l| l.contains("evaluator_mode")), "{table}");
    }
}
