//! HF's `training.report_to`: which experiment trackers a run reports to. stasc writes MLflow (over its REST API)
//! and TensorBoard event files itself; W&B and HF's other integrations are accepted with a warning that says what
//! to use instead, and an unknown name is an error with the closest known one.

use std::fmt;
use std::path::Path;

use super::error::ConfigError;
use super::keys::closest;

/// One name of `training.report_to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportTo {
    /// Report nowhere.
    None,
    /// Every tracker stasc supports: TensorBoard, and MLflow where MLFLOW_TRACKING_URI is set.
    All,
    /// An MLflow tracking server (MLFLOW_TRACKING_URI).
    Mlflow,
    /// TensorBoard event files in the run directory.
    Tensorboard,
    /// An HF integration stasc does not write to (wandb, comet_ml, ...), by name.
    Unsupported(String),
}

/// The trackers stasc writes to, as `report_to` names them.
pub const SUPPORTED: [&str; 4] = ["none", "all", "mlflow", "tensorboard"];

/// HF `report_to` integrations that stasc accepts but does not write to.
pub const UNSUPPORTED: [&str; 11] = [
    "wandb",
    "azure_ml",
    "clearml",
    "codecarbon",
    "comet_ml",
    "dagshub",
    "dvclive",
    "flyte",
    "neptune",
    "swanlab",
    "trackio",
];

impl ReportTo {
    /// Parses one name for `key` of `file`; the error lists the choices and the closest one.
    pub fn parse(file: &Path, key: &str, value: &str) -> Result<Self, ConfigError> {
        match value {
            "none" => Ok(ReportTo::None),
            "all" => Ok(ReportTo::All),
            "mlflow" => Ok(ReportTo::Mlflow),
            "tensorboard" => Ok(ReportTo::Tensorboard),
            v if UNSUPPORTED.contains(&v) => Ok(ReportTo::Unsupported(v.to_string())),
            v => {
                let known = SUPPORTED.iter().chain(UNSUPPORTED.iter()).copied();
                let hint = closest(v, known).map(|c| format!(" (did you mean '{c}'?)")).unwrap_or_default();
                Err(ConfigError::invalid(
                    file,
                    key,
                    format!("must name trackers among {}, found {v:?}{hint}", SUPPORTED.join(", ")),
                ))
            }
        }
    }

    /// Parses every name of a `report_to` list.
    pub fn parse_all(file: &Path, key: &str, values: &[String]) -> Result<Vec<Self>, ConfigError> {
        values.iter().map(|v| Self::parse(file, key, v)).collect()
    }

    /// The one-line warning for an integration stasc does not write to, saying what to use instead.
    pub fn unsupported_warning(name: &str) -> String {
        format!(
            "report_to {name:?} is not supported by stasc and is skipped: use report_to: [\"mlflow\"] (MLflow's REST \
             API at MLFLOW_TRACKING_URI) or [\"tensorboard\"] (event files in the run directory's tensorboard/); \
             every metric is also in the run directory's metrics.json and train_log.jsonl"
        )
    }
}

impl fmt::Display for ReportTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportTo::None => f.write_str("none"),
            ReportTo::All => f.write_str("all"),
            ReportTo::Mlflow => f.write_str("mlflow"),
            ReportTo::Tensorboard => f.write_str("tensorboard"),
            ReportTo::Unsupported(name) => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_typos_suggest_the_closest() {
        let f = Path::new("ft.yaml");
        let names: Vec<String> = ["mlflow", "tensorboard", "wandb", "none"].iter().map(|s| s.to_string()).collect();
        let parsed = ReportTo::parse_all(f, "training.report_to", &names).unwrap();
        assert_eq!(
            parsed,
            vec![ReportTo::Mlflow, ReportTo::Tensorboard, ReportTo::Unsupported("wandb".into()), ReportTo::None]
        );
        let e = ReportTo::parse(f, "training.report_to", "mlfow").unwrap_err().to_string();
        assert_eq!(
            e,
            "ft.yaml: key 'training.report_to' must name trackers among none, all, mlflow, tensorboard, found \
             \"mlfow\" (did you mean 'mlflow'?)"
        );
        assert!(ReportTo::unsupported_warning("wandb").contains("use report_to: [\"mlflow\"]"));
    }
}
