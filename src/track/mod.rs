//! Experiment tracking: what fine_tune.yaml's `training.report_to` asks for. MLflow (REST API at
//! MLFLOW_TRACKING_URI) gets the resolved configuration as parameters, every iteration's metrics, every optimiser
//! step's loss, and the run's report as artifacts; TensorBoard gets event files in the run directory's
//! `tensorboard/`. A tracker that fails warns once and is switched off: the run itself never stops for it, and what
//! each tracker has logged is kept in the run directory's tracking.json, so rerunning the same command logs what
//! it missed.

pub mod mlflow;
pub mod tensorboard;
pub mod values;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{ReportTo, RunConfig};
use crate::stasc::{IterationMetrics, RunObserver, TrainRecord};

use mlflow::{MlflowClient, MlflowRun};
use tensorboard::EventWriter;
use values::StepMetrics;

/// Why a tracker could not log.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A tracking server did not answer, or answered with an error.
    #[error("{url}: {message}")]
    Http {
        /// The request's URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A setting stasc cannot track to.
    #[error("{0}")]
    Unsupported(String),
}

impl TrackError {
    /// An [`TrackError::Io`] for `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        TrackError::Io { path: path.to_path_buf(), source }
    }
}

/// Environment variable naming the MLflow server, as MLflow's own clients read it.
pub const MLFLOW_TRACKING_URI: &str = "MLFLOW_TRACKING_URI";
/// Environment variable naming the MLflow experiment, as MLflow's own clients read it.
pub const MLFLOW_EXPERIMENT_NAME: &str = "MLFLOW_EXPERIMENT_NAME";
/// The file in the run directory that records what each tracker has logged.
pub const STATE_FILE: &str = "tracking.json";
/// The run directory's folder of TensorBoard event files.
pub const TENSORBOARD_DIR: &str = "tensorboard";

/// What the trackers have logged so far (tracking.json).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrackingState {
    /// The MLflow run, once created.
    #[serde(default)]
    pub mlflow: Option<MlflowRun>,
    /// Per tracker, the iterations it has logged.
    #[serde(default)]
    pub logged: BTreeMap<String, BTreeSet<usize>>,
}

/// One tracker as the set drives it.
enum Tracker {
    Mlflow { client: MlflowClient, uri: String, experiment: String },
    Tensorboard { writer: Option<EventWriter> },
}

impl Tracker {
    fn name(&self) -> &'static str {
        match self {
            Tracker::Mlflow { .. } => "mlflow",
            Tracker::Tensorboard { .. } => "tensorboard",
        }
    }
}

/// The trackers of one run, driven by the loop as a [`RunObserver`].
pub struct Trackers {
    run_dir: PathBuf,
    run_name: String,
    params: Vec<(String, String)>,
    state: TrackingState,
    trackers: Vec<Tracker>,
    /// Optimiser steps of the iterations seen so far, so step numbers run on across iterations.
    steps_before: u64,
}

impl Trackers {
    /// The trackers `config` asks for; one warning line each for names stasc skips (wandb, ...) and for MLflow
    /// without a server. `run_dir` is where the run writes.
    pub fn from_config(config: &RunConfig, run_dir: &Path) -> Self {
        let (names, warnings) = requested(config, |k| std::env::var(k).ok());
        for w in &warnings {
            eprintln!("warning: {w}");
        }
        let mut trackers = Vec::new();
        for name in names {
            match name {
                ReportTo::Mlflow => {
                    let uri = std::env::var(MLFLOW_TRACKING_URI).unwrap_or_default();
                    match MlflowClient::new(&uri) {
                        Ok(client) => {
                            let experiment = std::env::var(MLFLOW_EXPERIMENT_NAME)
                                .ok()
                                .or_else(|| config.fine_tune.training.project_name.clone())
                                .unwrap_or_else(|| "stasc".to_string());
                            trackers.push(Tracker::Mlflow { client, uri, experiment });
                        }
                        Err(e) => eprintln!("warning: report_to mlflow: {e}; the run goes on without mlflow"),
                    }
                }
                ReportTo::Tensorboard => trackers.push(Tracker::Tensorboard { writer: None }),
                _ => {}
            }
        }
        let run_name = run_dir
            .file_name()
            .map_or_else(|| config.stasc_config.run_name.clone(), |n| n.to_string_lossy().into_owned());
        let params = serde_json::to_value(config).map(|v| values::flatten_params(&v)).unwrap_or_default();
        Trackers {
            run_dir: run_dir.to_path_buf(),
            run_name,
            params,
            state: TrackingState::default(),
            trackers,
            steps_before: 0,
        }
    }

    /// Whether any tracker is on.
    pub fn is_empty(&self) -> bool {
        self.trackers.is_empty()
    }

    /// Reads tracking.json and opens every tracker (MLflow: finds or creates the run and logs the parameters).
    pub fn start(&mut self) {
        let path = self.run_dir.join(STATE_FILE);
        if let Ok(text) = std::fs::read_to_string(&path) {
            match serde_json::from_str(&text) {
                Ok(state) => self.state = state,
                Err(e) => eprintln!("warning: {}: not valid ({e}); tracking starts afresh", path.display()),
            }
        }
        let trackers = std::mem::take(&mut self.trackers);
        for mut t in trackers {
            let result = self.open(&mut t);
            if self.keep(&t, result) {
                self.trackers.push(t);
            }
        }
        self.save_state();
    }

    fn open(&mut self, tracker: &mut Tracker) -> Result<(), TrackError> {
        match tracker {
            Tracker::Tensorboard { writer } => {
                *writer = Some(EventWriter::create(&self.run_dir.join(TENSORBOARD_DIR))?);
                Ok(())
            }
            Tracker::Mlflow { client, uri, experiment } => {
                let known = self.state.mlflow.as_ref().filter(|r| r.tracking_uri == *uri).cloned();
                if let Some(run) = known {
                    if client.run_exists(&run.run_id)? {
                        return Ok(());
                    }
                }
                let experiment_id = client.experiment_id(experiment)?;
                let tags = [
                    ("mlflow.source.name", "stasc".to_string()),
                    ("stasc.run_dir", self.run_dir.display().to_string()),
                ];
                let run = client.create_run(uri, &experiment_id, &self.run_name, &tags)?;
                client.log_params(&run.run_id, &self.params)?;
                self.state.mlflow = Some(run);
                self.state.logged.remove("mlflow");
                Ok(())
            }
        }
    }

    /// Keeps a tracker that worked; warns about one that failed and drops it.
    fn keep(&self, tracker: &Tracker, result: Result<(), TrackError>) -> bool {
        match result {
            Ok(()) => true,
            Err(e) => {
                eprintln!(
                    "warning: {}: {e}; the run goes on without it ({} in the run directory keeps what was logged, and \
                     rerunning the same command logs the rest)",
                    tracker.name(),
                    STATE_FILE
                );
                false
            }
        }
    }

    fn save_state(&self) {
        if self.trackers.is_empty() && self.state == TrackingState::default() {
            return;
        }
        let path = self.run_dir.join(STATE_FILE);
        if let Err(e) = crate::stasc::rundir::write_json(&path, &self.state) {
            eprintln!("warning: {e}");
        }
    }

    fn log(
        &mut self,
        tracker: &mut Tracker,
        n: usize,
        metrics: &[(String, f64)],
        steps: &[StepMetrics],
    ) -> Result<(), TrackError> {
        match tracker {
            Tracker::Tensorboard { writer: Some(w) } => {
                w.scalars(n as u64, metrics)?;
                for s in steps {
                    w.scalars(s.step, &s.values)?;
                }
                Ok(())
            }
            Tracker::Tensorboard { writer: None } => Ok(()),
            Tracker::Mlflow { client, .. } => {
                let Some(run) = &self.state.mlflow else { return Ok(()) };
                let mut all: Vec<(u64, String, f64)> = metrics.iter().map(|(k, v)| (n as u64, k.clone(), *v)).collect();
                for s in steps {
                    all.extend(s.values.iter().map(|(k, v)| (s.step, k.clone(), *v)));
                }
                client.log_metrics(&run.run_id, &all)
            }
        }
    }

    /// Ends the run on every tracker: MLflow gets the run's report (written by `crate::report` into a temporary
    /// directory) and config.resolved.yaml as artifacts, and the status FINISHED or FAILED.
    pub fn finish(&mut self, succeeded: bool) {
        let trackers = std::mem::take(&mut self.trackers);
        for mut t in trackers {
            let result = self.close(&mut t, succeeded);
            if self.keep(&t, result) {
                self.trackers.push(t);
            }
        }
    }

    fn close(&mut self, tracker: &mut Tracker, succeeded: bool) -> Result<(), TrackError> {
        let Tracker::Mlflow { client, .. } = tracker else { return Ok(()) };
        let Some(run) = self.state.mlflow.clone() else { return Ok(()) };
        if succeeded {
            let report = tempfile::tempdir().map_err(|e| TrackError::io(&std::env::temp_dir(), e))?;
            let options =
                crate::report::ReportOptions { out: report.path().to_path_buf(), paper_model: None, templates: None };
            match crate::report::write_report(&self.run_dir, &options) {
                Ok(_) => {
                    client.log_artifacts(&run, report.path(), "report")?;
                }
                Err(e) => eprintln!("warning: mlflow: the run's report could not be written ({e}); not uploaded"),
            }
            let config = self.run_dir.join("config.resolved.yaml");
            if config.is_file() {
                let dir = tempfile::tempdir().map_err(|e| TrackError::io(&std::env::temp_dir(), e))?;
                let copy = dir.path().join("config.resolved.yaml");
                std::fs::copy(&config, &copy).map_err(|e| TrackError::io(&config, e))?;
                client.log_artifacts(&run, dir.path(), "")?;
            }
        }
        client.end_run(&run.run_id, succeeded)
    }
}

impl RunObserver for Trackers {
    fn iteration(&mut self, metrics: &IterationMetrics, train: Option<&TrainRecord>) {
        let n = metrics.iteration;
        let steps = train.filter(|t| t.trained).map(|t| values::step_metrics(t, self.steps_before)).unwrap_or_default();
        self.steps_before += steps.len() as u64;
        let list = values::iteration_metrics(metrics);
        let trackers = std::mem::take(&mut self.trackers);
        for mut t in trackers {
            let done = self.state.logged.get(t.name()).is_some_and(|s| s.contains(&n));
            let result = if done { Ok(()) } else { self.log(&mut t, n, &list, &steps) };
            if result.is_ok() && !done {
                self.state.logged.entry(t.name().to_string()).or_default().insert(n);
            }
            if self.keep(&t, result) {
                self.trackers.push(t);
            }
        }
        self.save_state();
    }
}

/// The trackers `config`'s report_to asks for (each once), and the warnings about the ones stasc skips.
/// `env` reads an environment variable (a parameter so tests need not change the process environment).
pub fn requested(config: &RunConfig, env: impl Fn(&str) -> Option<String>) -> (Vec<ReportTo>, Vec<String>) {
    let file = &config.sources.ft_config;
    let names =
        ReportTo::parse_all(file, "training.report_to", &config.fine_tune.training.report_to).unwrap_or_default();
    let (mut out, mut warnings) = (Vec::new(), Vec::new());
    let has_uri = env(MLFLOW_TRACKING_URI).is_some_and(|u| !u.is_empty());
    for name in names {
        let wanted: Vec<ReportTo> = match name {
            ReportTo::None => vec![],
            ReportTo::All if has_uri => vec![ReportTo::Mlflow, ReportTo::Tensorboard],
            ReportTo::All => vec![ReportTo::Tensorboard],
            ReportTo::Mlflow if !has_uri => {
                warnings.push(format!(
                    "{}: report_to mlflow, but {MLFLOW_TRACKING_URI} is not set (e.g. http://127.0.0.1:5000 for \
                     `mlflow server --port 5000`); the run goes on without mlflow",
                    file.display()
                ));
                vec![]
            }
            ReportTo::Unsupported(n) => {
                warnings.push(format!("{}: {}", file.display(), ReportTo::unsupported_warning(&n)));
                vec![]
            }
            other => vec![other],
        };
        for w in wanted {
            if !out.contains(&w) {
                out.push(w);
            }
        }
    }
    (out, warnings)
}

/// The warning lines `config`'s report_to gives (for dry runs, which open no tracker).
pub fn warnings(config: &RunConfig) -> Vec<String> {
    requested(config, |k| std::env::var(k).ok()).1
}
