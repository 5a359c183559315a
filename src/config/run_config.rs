//! The configuration of one `stasc run`: the three files resolved together, the settings derived from more than one
//! of them (device, number of devices, dtype), and every key that was set but is not acted on.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::accelerate::AccelerateConfig;
use super::choices::{Dtype, RunDevices};
use super::document::{ignored_warning, load_yaml, IgnoredKeys};
use super::error::ConfigError;
use super::fine_tune::{FineTuneConfig, FINE_TUNE_KEYS, SET_BY_LOOP};
use super::overrides::{self, Override, Target};
use super::stasc_config::{ProtocolDefaults, StascConfig, STASC_KEYS};

/// The files a run is configured from, as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunConfigPaths {
    /// stasc_config.yaml (`--config`).
    pub config: PathBuf,
    /// fine_tune.yaml (`--ft_config`).
    pub ft_config: PathBuf,
    /// accelerate_config.yaml (`--accelerate_config_path`), optional.
    pub accelerate_config: Option<PathBuf>,
}

/// Settings decided by more than one file. Read back from config.resolved.yaml when a run resumes, through
/// [`Execution::upgrade_recorded`], so a renamed field keeps its old name as a serde alias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// stasc_config `device`; when auto and accelerate's `use_cpu` is true, cpu.
    pub device: RunDevices,
    /// Data-parallel ranks (accelerate's `num_processes`); none = one per usable GPU (accelerate's -1). See
    /// `crate::dist::topology` for how ranks map to devices. Runs recorded before the rename wrote it as
    /// `num_devices` (it counts ranks, not devices: ranks may share a device).
    #[serde(alias = "num_devices")]
    pub data_parallel_ranks: Option<usize>,
    /// GPUs to use, from accelerate's `gpu_ids`; none = all visible.
    pub gpu_ids: Option<Vec<usize>>,
    /// Weight dtype of generation and training: the first that is not auto of stasc_config `dtype`, accelerate
    /// `mixed_precision`, fine_tune `model.torch_dtype`; auto means bf16 on CUDA, f32 on CPU.
    pub dtype: Dtype,
    /// Which key decided `dtype`, e.g. `accelerate_config.yaml: mixed_precision`.
    pub dtype_source: String,
}

impl Execution {
    /// Brings the `execution` section of a config.resolved.yaml written by an earlier stasc to today's names (the
    /// serde aliases above), so that resuming such a run compares like with like. A section that does not read as
    /// an [`Execution`] is left as written: the comparison then names what differs.
    pub fn upgrade_recorded(section: &mut serde_json::Value) {
        let upgraded = serde_json::from_value::<Execution>(section.clone()).and_then(serde_json::to_value);
        if let Ok(upgraded) = upgraded {
            *section = upgraded;
        }
    }
}

/// The resolved, validated configuration of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunConfig {
    /// Where it was read from.
    pub sources: RunConfigPaths,
    /// stasc_config.yaml, resolved.
    pub stasc_config: StascConfig,
    /// fine_tune.yaml, resolved.
    pub fine_tune: FineTuneConfig,
    /// accelerate_config.yaml, resolved (accelerate's defaults when no file was given).
    pub accelerate: AccelerateConfig,
    /// Settings derived from several files.
    pub execution: Execution,
    /// The command-line overrides applied on top of the files, as typed (absent when there were none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<String>,
    /// Keys set in the files that stasc does not act on, per file.
    #[serde(skip)]
    pub ignored: Vec<IgnoredKeys>,
}

impl RunConfig {
    /// Loads, validates and resolves the three files of a run.
    pub fn load(paths: &RunConfigPaths) -> Result<RunConfig, ConfigError> {
        Self::load_parts(paths, true, &[])
    }

    /// Loads the three files with command-line overrides applied on top (see [`overrides`]).
    pub fn load_with_overrides(paths: &RunConfigPaths, overrides: &[Override]) -> Result<RunConfig, ConfigError> {
        Self::load_parts(paths, true, overrides)
    }

    /// Loads a run that will not fine-tune (`stasc eval`): fine_tune.yaml is optional and defaults to HF's
    /// settings when absent.
    pub fn load_for_eval(
        paths: &RunConfigPaths,
        ft_given: bool,
        overrides: &[Override],
    ) -> Result<RunConfig, ConfigError> {
        Self::load_parts(paths, ft_given, overrides)
    }

    fn load_parts(
        paths: &RunConfigPaths,
        read_fine_tune: bool,
        overrides: &[Override],
    ) -> Result<RunConfig, ConfigError> {
        let blame = |target| move |e| overrides::blame(e, overrides, target);
        let mut stasc_document = load_yaml(&paths.config, STASC_KEYS)?;
        overrides::apply(overrides, Target::StascConfig, &mut stasc_document);
        let (stasc_config, stasc_ignored) =
            StascConfig::from_document(&paths.config, &stasc_document).map_err(blame(Target::StascConfig))?;
        let mut ignored = vec![stasc_ignored];
        let mut ft_document =
            if read_fine_tune { load_yaml(&paths.ft_config, FINE_TUNE_KEYS)? } else { serde_json::Value::Null };
        overrides::apply(overrides, Target::FineTune, &mut ft_document);
        let (mut fine_tune, mut ft_ignored) =
            FineTuneConfig::from_document(&paths.ft_config, &ft_document).map_err(blame(Target::FineTune))?;
        if read_fine_tune {
            let loop_set = IgnoredKeys::collect(&paths.ft_config, &ft_document, SET_BY_LOOP);
            ft_ignored.keys.extend(loop_set.keys.into_iter().map(|key| format!("{key} (set by the loop)")));
            ignored.push(ft_ignored);
        }
        // fine_tune.yaml alone cannot know the protocol; a key set in the file wins over the protocol's default.
        let training = &mut fine_tune.training;
        let defaults = ProtocolDefaults::of(stasc_config.protocol);
        training.average_tokens_across_devices.get_or_insert(defaults.average_tokens_across_devices);
        training.decay_parameters.get_or_insert(defaults.decay_parameters);
        let accelerate = match &paths.accelerate_config {
            Some(path) => {
                let (accelerate, accelerate_ignored) = AccelerateConfig::load(path)?;
                ignored.push(accelerate_ignored);
                accelerate
            }
            None => AccelerateConfig::default(),
        };
        let execution = execution(paths, &stasc_config, &fine_tune, &accelerate);
        let overrides = overrides.iter().map(|o| o.text.clone()).collect();
        Ok(RunConfig { sources: paths.clone(), stasc_config, fine_tune, accelerate, execution, overrides, ignored })
    }

    /// The one warning line listing the ignored keys of every file, or `None` when every set key is acted on.
    pub fn ignored_warning(&self) -> Option<String> {
        ignored_warning(&self.ignored)
    }

    /// The whole resolved configuration as YAML, every default filled in (for dry runs and config.resolved.yaml).
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        serde_yaml::to_string(self)
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn execution(
    paths: &RunConfigPaths,
    stasc: &StascConfig,
    fine_tune: &FineTuneConfig,
    accelerate: &AccelerateConfig,
) -> Execution {
    let device = match stasc.device {
        RunDevices::Auto if accelerate.use_cpu => RunDevices::Cpu,
        device => device,
    };
    let accelerate_name = paths.accelerate_config.as_deref().map(file_name).unwrap_or_default();
    let (dtype, dtype_source) = if stasc.dtype != Dtype::Auto {
        (stasc.dtype, format!("{}: dtype", file_name(&paths.config)))
    } else if let Some(dtype) = accelerate.mixed_precision.dtype() {
        (dtype, format!("{accelerate_name}: mixed_precision"))
    } else if fine_tune.model.torch_dtype != Dtype::Auto {
        (fine_tune.model.torch_dtype, format!("{}: model.torch_dtype", file_name(&paths.ft_config)))
    } else {
        (Dtype::Auto, "default (bf16 on CUDA, f32 on CPU)".to_string())
    };
    Execution {
        device,
        data_parallel_ranks: accelerate.num_processes,
        gpu_ids: accelerate.gpu_ids.clone(),
        dtype,
        dtype_source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::choices::DecayParameters;
    use crate::config::{LrSchedulerType, MixedPrecision};

    fn repo(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    #[test]
    fn shipped_paper_configs_load_with_paper_settings() {
        let paths = RunConfigPaths {
            config: repo("configs/stasc_config.yaml"),
            ft_config: repo("configs/fine_tune.yaml"),
            accelerate_config: Some(repo("configs/accelerate_config.yaml")),
        };
        let c = RunConfig::load(&paths).unwrap();
        let s = &c.stasc_config;
        assert_eq!(
            (s.model_path.as_str(), s.num_star_iterations, s.random_seed),
            ("Qwen/Qwen2.5-1.5B-Instruct", 10, 42)
        );
        assert_eq!((s.number_output_initial_generations, s.number_output_corrections), (5, 5));
        assert_eq!((s.temperature, s.top_p, s.max_tokens), (0.6, 0.9, 256));
        let t = &c.fine_tune.training;
        assert_eq!((t.learning_rate, t.per_device_train_batch_size, t.gradient_accumulation_steps), (7e-6, 1, 4));
        assert_eq!((t.lr_scheduler_type, t.warmup_ratio, t.weight_decay), (LrSchedulerType::Cosine, 0.03, 0.1));
        assert_eq!(t.average_tokens_across_devices, Some(false), "protocol: paper, transformers 4.47.1's default");
        assert_eq!(t.decay_parameters, Some(DecayParameters::Transformers4_47_1), "protocol: paper");
        assert_eq!((c.accelerate.num_processes, c.accelerate.mixed_precision), (Some(2), MixedPrecision::Bf16));
        assert_eq!((c.execution.data_parallel_ranks, c.execution.dtype), (Some(2), Dtype::Bf16));
        assert_eq!(c.execution.dtype_source, "accelerate_config.yaml: mixed_precision");
        let warning = c.ignored_warning().unwrap();
        assert!(warning.contains("training.output_dir (set by the loop)"), "{warning}");
        assert!(warning.contains("fsdp_config (10 keys)"), "{warning}");
        assert!(c.to_yaml().unwrap().contains("evaluator_function: in_acc"));
    }

    #[test]
    fn shipped_cpu_configs_load_without_warnings() {
        let paths = RunConfigPaths {
            config: repo("configs/cpu_demo.yaml"),
            ft_config: repo("configs/cpu_fine_tune.yaml"),
            accelerate_config: None,
        };
        let c = RunConfig::load(&paths).unwrap();
        assert_eq!(c.ignored_warning(), None);
        assert_eq!(
            (c.execution.device, c.execution.dtype, c.execution.data_parallel_ranks),
            (RunDevices::Cpu, Dtype::F32, Some(1))
        );
        assert_eq!(c.stasc_config.data_path, PathBuf::from("data/demo_nq"));
    }

    #[test]
    fn dtype_falls_back_to_torch_dtype_and_use_cpu_forces_cpu() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let paths = RunConfigPaths {
            config: write("s.yaml", "model_path: m\ndata_path: d\n"),
            ft_config: write("f.yaml", "model:\n  torch_dtype: bfloat16\n"),
            accelerate_config: Some(write("a.yaml", "use_cpu: true\nmixed_precision: 'no'\n")),
        };
        let c = RunConfig::load(&paths).unwrap();
        assert_eq!((c.execution.device, c.execution.dtype), (RunDevices::Cpu, Dtype::Bf16));
        assert_eq!(c.execution.dtype_source, "f.yaml: model.torch_dtype");
    }

    /// A minimal stasc_config with `protocol_line` and a fine_tune.yaml of `ft`, loaded for `stasc run` and for
    /// `stasc eval` (which does not read fine_tune.yaml).
    fn load_run_and_eval(dir: &Path, protocol_line: &str, ft: &str) -> (RunConfig, RunConfig) {
        let config = dir.join("s.yaml");
        std::fs::write(&config, format!("model_path: m\ndata_path: d\n{protocol_line}")).unwrap();
        let ft_config = dir.join("f.yaml");
        std::fs::write(&ft_config, ft).unwrap();
        let paths = RunConfigPaths { config, ft_config, accelerate_config: None };
        (RunConfig::load(&paths).unwrap(), RunConfig::load_for_eval(&paths, false, &[]).unwrap())
    }

    #[test]
    fn average_tokens_across_devices_follows_the_protocol_unless_set() {
        let dir = tempfile::tempdir().unwrap();
        let load = |protocol: &str, ft: &str| {
            let (run, eval) = load_run_and_eval(dir.path(), protocol, ft);
            (
                run.fine_tune.training.average_tokens_across_devices,
                eval.fine_tune.training.average_tokens_across_devices,
            )
        };
        assert_eq!(load("", ""), (Some(true), Some(true)));
        assert_eq!(load("protocol: stasc\n", ""), (Some(true), Some(true)));
        assert_eq!(load("protocol: paper\n", ""), (Some(false), Some(false)));
        let set_true = "training:\n  average_tokens_across_devices: true\n";
        assert_eq!(load("protocol: paper\n", set_true).0, Some(true));
        let set_false = "training:\n  average_tokens_across_devices: false\n";
        assert_eq!(load("", set_false).0, Some(false));
    }

    #[test]
    fn decay_parameters_follow_the_protocol_unless_set() {
        let dir = tempfile::tempdir().unwrap();
        let load = |protocol: &str, ft: &str| {
            let (run, eval) = load_run_and_eval(dir.path(), protocol, ft);
            (run.fine_tune.training.decay_parameters, eval.fine_tune.training.decay_parameters)
        };
        let (names, hf447) = (Some(DecayParameters::Names), Some(DecayParameters::Transformers4_47_1));
        assert_eq!(load("", ""), (names, names));
        assert_eq!(load("protocol: stasc\n", ""), (names, names));
        assert_eq!(load("protocol: paper\n", ""), (hf447, hf447));
        assert_eq!(load("protocol: paper\n", "training:\n  decay_parameters: names\n").0, names);
        assert_eq!(load("", "training:\n  decay_parameters: transformers_4_47_1\n").0, hf447);
    }

    #[test]
    fn execution_recorded_with_num_devices_reads_as_data_parallel_ranks() {
        let recorded = |ranks_key: &str| {
            serde_json::json!({"device": "cuda", ranks_key: 2, "gpu_ids": [0, 1], "dtype": "bf16",
                               "dtype_source": "accelerate_config.yaml: mixed_precision"})
        };
        let mut old = recorded("num_devices");
        Execution::upgrade_recorded(&mut old);
        assert_eq!(old, recorded("data_parallel_ranks"));
        let execution: Execution = serde_json::from_value(recorded("num_devices")).unwrap();
        assert_eq!((execution.device, execution.data_parallel_ranks), (RunDevices::EveryGpu, Some(2)));
        // Something that is not an execution section stays as written.
        let mut other = serde_json::json!({"device": "tpu"});
        Execution::upgrade_recorded(&mut other);
        assert_eq!(other, serde_json::json!({"device": "tpu"}));
    }

    #[test]
    fn missing_files_are_named() {
        let paths = RunConfigPaths {
            config: repo("configs/cpu_demo.yaml"),
            ft_config: PathBuf::from("configs/nope.yaml"),
            accelerate_config: None,
        };
        assert_eq!(RunConfig::load(&paths).unwrap_err().to_string(), "config file configs/nope.yaml not found");
    }
}
