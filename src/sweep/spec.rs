//! The sweep file (`experiments/*.toml`): which base configs, which fixed overrides, which grid. Parsed into a
//! [`SweepSpec`]; the grid stays in file order because the cell order and names follow it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::SweepError;
use crate::config::ConfigError;

/// Keys of the `[sweep]` table.
pub const SWEEP_KEYS: &[&str] = &["name", "config", "ft_config", "accelerate_config", "out", "devices", "executor"];
/// Top-level tables.
pub const TABLES: &[&str] = &["sweep", "set", "grid", "tasks", "slurm"];

/// Where the cells run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Executor {
    /// Child processes on this machine (`sweep.executor = "local"`, the default).
    #[default]
    Local,
    /// One Slurm job array, one task per cell (`sweep.executor = "slurm"`, options from `[slurm]`).
    Slurm(Box<super::slurm::SlurmOptions>),
}

/// One grid axis: a key and the values it takes, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// The key as written: an alias (`variant`, `init`, `filter`, `ft`, `task`, `reward`, `seed`, `model`), a
    /// stasc_config key, or `ft.<section>.<key>` for fine_tune.yaml.
    pub key: String,
    /// The values, in order.
    pub values: Vec<Value>,
}

/// A parsed sweep file.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepSpec {
    /// The file it came from.
    pub file: PathBuf,
    /// Sweep name (default: the file stem).
    pub name: String,
    /// Base stasc_config.yaml.
    pub config: PathBuf,
    /// Base fine_tune.yaml.
    pub ft_config: PathBuf,
    /// Optional accelerate_config.yaml, passed to every cell.
    pub accelerate_config: Option<PathBuf>,
    /// Sweep directory (default runs/<name>).
    pub out: PathBuf,
    /// Devices to spread cells over (default: one worker, no device pinning).
    pub devices: Vec<String>,
    /// Overrides applied to every cell, as dotted keys.
    pub set: Vec<(String, Value)>,
    /// The grid axes, outermost first.
    pub grid: Vec<Axis>,
    /// Named override sets selected by the `task` axis.
    pub tasks: Vec<(String, Vec<(String, Value)>)>,
    /// Where the cells run.
    pub executor: Executor,
    /// Command-line overrides (`stasc sweep FILE key=value`), applied to every cell after the grid.
    pub overrides: Vec<crate::config::overrides::Override>,
}

impl SweepSpec {
    /// Reads and checks a sweep file.
    pub fn load(path: &Path) -> Result<SweepSpec, SweepError> {
        let text = crate::config::document::read_text(path)?;
        Self::parse(path, &text)
    }

    /// Parses the text of a sweep file; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<SweepSpec, SweepError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            SweepError::from(ConfigError::Syntax {
                file: path.to_path_buf(),
                format: "TOML",
                message: e.message().to_string(),
            })
        })?;
        for key in table.keys() {
            if !TABLES.contains(&key.as_str()) {
                return Err(unknown(path, key, TABLES));
            }
        }
        let sweep = section(path, &table, "sweep")?.unwrap_or_default();
        for key in sweep.keys() {
            if !SWEEP_KEYS.contains(&key.as_str()) {
                return Err(unknown(path, &format!("sweep.{key}"), SWEEP_KEYS));
            }
        }
        let string = |key: &str| -> Result<Option<String>, SweepError> {
            match sweep.get(key) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(SweepError::from(ConfigError::WrongType {
                    file: path.to_path_buf(),
                    key: format!("sweep.{key}"),
                    expected: "a string",
                    found: other.type_str().to_string(),
                })),
            }
        };
        let name = string("name")?
            .unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
        let config = string("config")?.ok_or_else(|| {
            SweepError::from(ConfigError::Missing { file: path.to_path_buf(), key: "sweep.config".into() })
        })?;
        let ft_config = string("ft_config")?.ok_or_else(|| {
            SweepError::from(ConfigError::Missing { file: path.to_path_buf(), key: "sweep.ft_config".into() })
        })?;
        let out = string("out")?.map(PathBuf::from).unwrap_or_else(|| Path::new("runs").join(&name));
        let devices = match sweep.get("devices") {
            None => vec![],
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    toml::Value::Integer(i) => Ok(i.to_string()),
                    other => Err(SweepError::from(ConfigError::WrongType {
                        file: path.to_path_buf(),
                        key: "sweep.devices".into(),
                        expected: "a list of device ids",
                        found: other.type_str().to_string(),
                    })),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(SweepError::from(ConfigError::WrongType {
                    file: path.to_path_buf(),
                    key: "sweep.devices".into(),
                    expected: "a list of device ids",
                    found: other.type_str().to_string(),
                }))
            }
        };
        let set = flatten(section(path, &table, "set")?.as_ref());
        let mut grid = Vec::new();
        for (key, value) in flatten(section(path, &table, "grid")?.as_ref()) {
            let values = match value {
                Value::Array(a) if !a.is_empty() => a,
                _ => {
                    return Err(SweepError::from(ConfigError::WrongType {
                        file: path.to_path_buf(),
                        key: format!("grid.{key}"),
                        expected: "a non-empty list of values",
                        found: describe(&value),
                    }))
                }
            };
            // A repeated value would give two cells one name and one directory (TOML reads 0.6 and 0.60 alike).
            let repeated =
                (0..values.len()).find_map(|i| values[..i].iter().position(|v| *v == values[i]).map(|j| (j, i)));
            if let Some((first, again)) = repeated {
                return Err(SweepError::from(ConfigError::invalid(
                    path,
                    &format!("grid.{key}"),
                    format!(
                        "lists the value {} twice (entries {} and {}); each value must appear once",
                        values[again],
                        first + 1,
                        again + 1
                    ),
                )));
            }
            grid.push(Axis { key, values });
        }
        let mut tasks = Vec::new();
        if let Some(t) = section(path, &table, "tasks")? {
            for (task, body) in &t {
                match body {
                    toml::Value::Table(b) => tasks.push((task.clone(), flatten(Some(b)))),
                    other => {
                        return Err(SweepError::from(ConfigError::WrongType {
                            file: path.to_path_buf(),
                            key: format!("tasks.{task}"),
                            expected: "a table of overrides",
                            found: other.type_str().to_string(),
                        }))
                    }
                }
            }
        }
        let slurm = section(path, &table, "slurm")?;
        let executor = match (string("executor")?.as_deref(), slurm) {
            (None | Some("local"), None) => Executor::Local,
            (Some("slurm"), slurm) => {
                Executor::Slurm(Box::new(super::slurm::SlurmOptions::parse(path, &slurm.unwrap_or_default())?))
            }
            (None | Some("local"), Some(_)) => {
                return Err(SweepError::from(ConfigError::invalid(
                    path,
                    "slurm",
                    "is set, but sweep.executor is not \"slurm\" (add executor = \"slurm\" to [sweep])",
                )))
            }
            (Some(other), _) => {
                return Err(SweepError::from(ConfigError::invalid(
                    path,
                    "sweep.executor",
                    format!("must be \"local\" or \"slurm\", found \"{other}\""),
                )))
            }
        };
        if matches!(executor, Executor::Slurm(_)) && !devices.is_empty() {
            return Err(SweepError::from(ConfigError::invalid(
                path,
                "sweep.devices",
                "has no meaning under executor = \"slurm\": Slurm grants each cell its GPUs (set slurm.gpus)",
            )));
        }
        Ok(SweepSpec {
            file: path.to_path_buf(),
            name,
            config: PathBuf::from(config),
            ft_config: PathBuf::from(ft_config),
            accelerate_config: string("accelerate_config")?.map(PathBuf::from),
            out,
            devices,
            set,
            grid,
            tasks,
            executor,
            overrides: Vec::new(),
        })
    }
}

fn unknown(path: &Path, key: &str, known: &[&str]) -> SweepError {
    let last = key.rsplit('.').next().unwrap_or(key);
    SweepError::from(ConfigError::UnknownKey {
        file: path.to_path_buf(),
        key: key.to_string(),
        suggestion: crate::config::keys::closest(last, known.iter().copied()).map(str::to_string),
    })
}

fn section(path: &Path, table: &toml::Table, name: &str) -> Result<Option<toml::Table>, SweepError> {
    match table.get(name) {
        None => Ok(None),
        Some(toml::Value::Table(t)) => Ok(Some(t.clone())),
        Some(other) => Err(SweepError::from(ConfigError::WrongType {
            file: path.to_path_buf(),
            key: name.to_string(),
            expected: "a table",
            found: other.type_str().to_string(),
        })),
    }
}

/// Nested tables become dotted keys (`ft.training.learning_rate`); arrays and scalars are leaves. Order is kept.
fn flatten(table: Option<&toml::Table>) -> Vec<(String, Value)> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<(String, Value)>) {
        for (k, v) in table {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(t) => walk(&key, t, out),
                other => out.push((key, crate::config::keys::toml_to_json(other.clone()))),
            }
        }
    }
    let mut out = Vec::new();
    if let Some(t) = table {
        walk("", t, &mut out);
    }
    out
}

fn describe(value: &Value) -> String {
    match value {
        Value::Array(_) => "an empty list".into(),
        Value::String(s) => format!("string \"{s}\""),
        other => other.to_string(),
    }
}
