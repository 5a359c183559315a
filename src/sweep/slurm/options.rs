//! The `[slurm]` table of a sweep file: what every array task asks Slurm for. Each value is checked here, because
//! it becomes a line of a batch script: a wrong one is an error naming the key, never a broken script.

use std::path::Path;

use crate::config::ConfigError;

/// Keys of the `[slurm]` table.
pub const SLURM_KEYS: &[&str] = &[
    "partition",
    "account",
    "qos",
    "time",
    "gpus",
    "gpu_type",
    "cpus_per_task",
    "mem",
    "throttle",
    "job_name",
    "extra",
];

/// Resources and options of the job array (one array task per cell).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlurmOptions {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--time`, per cell (Slurm's formats: `MM`, `HH:MM:SS`, `D-HH:MM`, ...).
    pub time: Option<String>,
    /// GPUs per cell (`--gres=gpu[:TYPE]:N`); 0 asks for none.
    pub gpus: u32,
    /// The GPU type of the gres request, e.g. `a100`.
    pub gpu_type: Option<String>,
    /// `--cpus-per-task`; also each cell's libtorch thread count.
    pub cpus_per_task: Option<u32>,
    /// `--mem` per cell, e.g. `32G`.
    pub mem: Option<String>,
    /// At most this many cells run at once (the array's `%N`).
    pub throttle: Option<u32>,
    /// `--job-name` (default `stasc-<sweep name>`).
    pub job_name: Option<String>,
    /// Further sbatch options, one `#SBATCH` line each, e.g. `--constraint=a100`.
    pub extra: Vec<String>,
}

impl SlurmOptions {
    /// Reads the `[slurm]` table of sweep file `file`.
    pub fn parse(file: &Path, table: &toml::Table) -> Result<SlurmOptions, ConfigError> {
        for key in table.keys() {
            if !SLURM_KEYS.contains(&key.as_str()) {
                return Err(ConfigError::UnknownKey {
                    file: file.to_path_buf(),
                    key: format!("slurm.{key}"),
                    suggestion: crate::config::keys::closest(key, SLURM_KEYS.iter().copied()).map(str::to_string),
                });
            }
        }
        let word = |key: &str| word(file, table, key);
        let count = |key: &str, min: i64| count(file, table, key, min);
        let time = word("time")?;
        if let Some(t) = &time {
            if !is_slurm_time(t) {
                return Err(ConfigError::invalid(
                    file,
                    "slurm.time",
                    format!(
                        "must be a Slurm time limit (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS), found \"{t}\""
                    ),
                ));
            }
        }
        let mem = word("mem")?;
        if let Some(m) = &mem {
            let digits = m.trim_end_matches(['K', 'M', 'G', 'T']);
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) || m.len() - digits.len() > 1 {
                return Err(ConfigError::invalid(
                    file,
                    "slurm.mem",
                    format!("must be a size such as 16G or 16000M, found \"{m}\""),
                ));
            }
        }
        let extra = match table.get("extra") {
            None => vec![],
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) if s.starts_with('-') && !s.contains(['\n', '\r']) => Ok(s.clone()),
                    toml::Value::String(s) => Err(ConfigError::invalid(
                        file,
                        "slurm.extra",
                        format!("lists sbatch options, each on one line and starting with '-', found \"{s}\""),
                    )),
                    other => Err(wrong_type(file, "extra", "a list of sbatch options", other)),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => return Err(wrong_type(file, "extra", "a list of sbatch options", other)),
        };
        Ok(SlurmOptions {
            partition: word("partition")?,
            account: word("account")?,
            qos: word("qos")?,
            time,
            gpus: count("gpus", 0)?.unwrap_or(0),
            gpu_type: word("gpu_type")?,
            cpus_per_task: count("cpus_per_task", 1)?,
            mem,
            throttle: count("throttle", 1)?,
            job_name: word("job_name")?,
            extra,
        })
    }

    /// The `#SBATCH` options for resources, in a fixed order (without the array, output and requeue lines).
    pub fn sbatch_options(&self, sweep_name: &str) -> Vec<String> {
        let mut out = vec![format!("--job-name={}", self.job_name.clone().unwrap_or(format!("stasc-{sweep_name}")))];
        let mut push = |flag: &str, value: &Option<String>| {
            if let Some(v) = value {
                out.push(format!("--{flag}={v}"));
            }
        };
        push("partition", &self.partition);
        push("account", &self.account);
        push("qos", &self.qos);
        push("time", &self.time);
        push("mem", &self.mem);
        push("cpus-per-task", &self.cpus_per_task.map(|c| c.to_string()));
        if self.gpus > 0 {
            let kind = self.gpu_type.as_ref().map(|t| format!("{t}:")).unwrap_or_default();
            out.push(format!("--gres=gpu:{kind}{}", self.gpus));
        }
        out.extend(self.extra.iter().cloned());
        out
    }
}

fn wrong_type(file: &Path, key: &str, expected: &'static str, found: &toml::Value) -> ConfigError {
    ConfigError::WrongType {
        file: file.to_path_buf(),
        key: format!("slurm.{key}"),
        expected,
        found: found.type_str().to_string(),
    }
}

/// A string that goes into one `#SBATCH --key=value` line: no blanks, no line breaks.
fn word(file: &Path, table: &toml::Table, key: &str) -> Result<Option<String>, ConfigError> {
    match table.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) if !s.is_empty() && !s.chars().any(char::is_whitespace) => Ok(Some(s.clone())),
        Some(toml::Value::String(s)) => Err(ConfigError::invalid(
            file,
            &format!("slurm.{key}"),
            format!("must be one word without blanks, found \"{s}\""),
        )),
        Some(other) => Err(wrong_type(file, key, "a string", other)),
    }
}

fn count(file: &Path, table: &toml::Table, key: &str, min: i64) -> Result<Option<u32>, ConfigError> {
    match table.get(key) {
        None => Ok(None),
        Some(toml::Value::Integer(i)) if *i >= min && *i <= i64::from(u32::MAX) => Ok(Some(*i as u32)),
        Some(toml::Value::Integer(i)) => {
            Err(ConfigError::invalid(file, &format!("slurm.{key}"), format!("must be at least {min}, found {i}")))
        }
        Some(other) => Err(wrong_type(file, key, "a whole number", other)),
    }
}

/// Slurm's time formats: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`.
fn is_slurm_time(t: &str) -> bool {
    let numbers = |s: &str, max_parts: usize| {
        let parts: Vec<&str> = s.split(':').collect();
        parts.len() <= max_parts && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    };
    match t.split_once('-') {
        Some((days, rest)) => numbers(days, 1) && numbers(rest, 3),
        None => numbers(t, 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SlurmOptions, String> {
        let table: toml::Table = text.parse().unwrap();
        SlurmOptions::parse(Path::new("s.toml"), &table).map_err(|e| e.to_string())
    }

    #[test]
    fn options_become_sbatch_lines() {
        let o = parse(
            "partition = \"gpu\"\naccount = \"lab\"\ntime = \"1-12:00:00\"\ngpus = 2\ngpu_type = \"a100\"\n\
             cpus_per_task = 8\nmem = \"64G\"\nthrottle = 4\nextra = [\"--constraint=nvlink\"]\n",
        )
        .unwrap();
        assert_eq!(o.throttle, Some(4));
        assert_eq!(
            o.sbatch_options("abl"),
            [
                "--job-name=stasc-abl",
                "--partition=gpu",
                "--account=lab",
                "--time=1-12:00:00",
                "--mem=64G",
                "--cpus-per-task=8",
                "--gres=gpu:a100:2",
                "--constraint=nvlink"
            ]
        );
        assert_eq!(parse("").unwrap().sbatch_options("x"), ["--job-name=stasc-x"]);
    }

    #[test]
    fn bad_options_are_one_line_errors_naming_the_key() {
        assert_eq!(parse("gpu = 2").unwrap_err(), "s.toml: unknown key 'slurm.gpu' (did you mean 'gpus'?)");
        assert_eq!(
            parse("cpus_per_tsk = 2").unwrap_err(),
            "s.toml: unknown key 'slurm.cpus_per_tsk' (did you mean 'cpus_per_task'?)"
        );
        assert!(parse("time = \"2h\"").unwrap_err().contains("key 'slurm.time' must be a Slurm time limit"));
        assert!(parse("mem = \"lots\"").unwrap_err().contains("key 'slurm.mem' must be a size"));
        assert!(parse("partition = \"a b\"").unwrap_err().contains("one word"));
        assert!(parse("extra = [\"--x\\n#SBATCH --y\"]").unwrap_err().contains("key 'slurm.extra'"));
        assert!(parse("gpus = -1").unwrap_err().contains("key 'slurm.gpus' must be at least 0"));
        assert!(parse("throttle = \"4\"").unwrap_err().contains("key 'slurm.throttle' expects a whole number"));
        for ok in ["30", "30:00", "12:00:00", "2-0", "2-12:30", "2-12:30:00"] {
            assert!(parse(&format!("time = \"{ok}\"")).is_ok(), "{ok}");
        }
    }
}
