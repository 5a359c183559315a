//! `accelerate_config.yaml`: HF accelerate's launch configuration, every key of its `ClusterConfig`. We act on the
//! keys that say which devices and precision to use (`num_processes`, `gpu_ids`, `use_cpu`, `mixed_precision`);
//! launcher, FSDP/DeepSpeed and TPU keys are read, checked and reported as not acted on.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::choices::MixedPrecision;
use super::document::{deserialize, load_yaml, Ignored, IgnoredKeys, Neutral};
use super::error::ConfigError;
use super::keys::{Key, Kind, Node};
use super::raw::{raw_config, KeyKind, StrOrInt};

/// FSDP plugin keys accelerate writes (`fsdp_config.*`); values vary in type between accelerate versions.
const FSDP_KEYS: &[Key] = &[
    Key::leaf("fsdp_activation_checkpointing", Kind::Any),
    Key::leaf("fsdp_auto_wrap_policy", Kind::Any),
    Key::leaf("fsdp_backward_prefetch", Kind::Any),
    Key::leaf("fsdp_backward_prefetch_policy", Kind::Any),
    Key::leaf("fsdp_cpu_ram_efficient_loading", Kind::Any),
    Key::leaf("fsdp_forward_prefetch", Kind::Any),
    Key::leaf("fsdp_min_num_params", Kind::Any),
    Key::leaf("fsdp_offload_params", Kind::Any),
    Key::leaf("fsdp_reshard_after_forward", Kind::Any),
    Key::leaf("fsdp_sharding_strategy", Kind::Any),
    Key::leaf("fsdp_state_dict_type", Kind::Any),
    Key::leaf("fsdp_sync_module_states", Kind::Any),
    Key::leaf("fsdp_transformer_layer_cls_to_wrap", Kind::Any),
    Key::leaf("fsdp_use_orig_params", Kind::Any),
    Key::leaf("fsdp_version", Kind::Any),
];

/// Launcher, multi-node, sharding-engine, compiler and TPU settings: stasc runs one process per host and shards
/// nothing, so none of these change what it does.
const IGNORED: &[Ignored] = &[
    Ignored::new("compute_environment", Neutral::Str("LOCAL_MACHINE")),
    Ignored::new("debug", Neutral::Bool(false)),
    Ignored::new("distributed_type", Neutral::Str("NO")),
    Ignored::new("downcast_bf16", Neutral::Str("no")),
    Ignored::new("enable_cpu_affinity", Neutral::Bool(false)),
    Ignored::new("fsdp_config", Neutral::Empty),
    Ignored::new("machine_rank", Neutral::Int(0)),
    Ignored::new("main_training_function", Neutral::Str("main")),
    Ignored::new("num_machines", Neutral::Int(1)),
    Ignored::new("rdzv_backend", Neutral::Str("static")),
    Ignored::new("same_network", Neutral::Bool(true)),
    Ignored::new("tpu_env", Neutral::Empty),
    Ignored::new("tpu_use_cluster", Neutral::Bool(false)),
    Ignored::new("tpu_use_sudo", Neutral::Bool(false)),
    Ignored::new("main_process_ip", Neutral::Never),
    Ignored::new("main_process_port", Neutral::Never),
    Ignored::new("fp8_config", Neutral::Empty),
    Ignored::new("deepspeed_config", Neutral::Empty),
    Ignored::new("tp_config", Neutral::Empty),
    Ignored::new("megatron_lm_config", Neutral::Empty),
    Ignored::new("ipex_config", Neutral::Empty),
    Ignored::new("mpirun_config", Neutral::Empty),
    Ignored::new("dynamo_config", Neutral::Empty),
    Ignored::new("tpu_name", Neutral::Never),
    Ignored::new("tpu_zone", Neutral::Never),
    Ignored::new("command_file", Neutral::Never),
    Ignored::new("commands", Neutral::Empty),
    Ignored::new("tpu_vm", Neutral::Empty),
    Ignored::new("fp16", Neutral::Bool(false)),
    Ignored::new("dynamo_backend", Neutral::Str("no")),
];

raw_config! {
    /// accelerate_config.yaml as written: accelerate's `ClusterConfig` fields plus the legacy `fp16` and
    /// `dynamo_backend` it still converts. Its key table is [`ACCELERATE_KEYS`].
    pub struct RawAccelerateConfig, keys ACCELERATE_KEYS {
        compute_environment: String,
        debug: bool,
        distributed_type: String,
        downcast_bf16: Value,
        enable_cpu_affinity: bool,
        fsdp_config: FsdpConfig,
        machine_rank: u64,
        main_training_function: String,
        mixed_precision: String,
        num_machines: u64,
        num_processes: i64,
        rdzv_backend: String,
        same_network: bool,
        tpu_env: Vec<String>,
        tpu_use_cluster: bool,
        tpu_use_sudo: bool,
        use_cpu: bool,
        gpu_ids: StrOrInt,
        main_process_ip: String,
        main_process_port: u64,
        fp8_config: Value,
        deepspeed_config: Value,
        tp_config: Value,
        megatron_lm_config: Value,
        ipex_config: Value,
        mpirun_config: Value,
        dynamo_config: Value,
        tpu_name: String,
        tpu_zone: String,
        command_file: String,
        commands: Vec<String>,
        tpu_vm: Vec<String>,
        fp16: bool,
        dynamo_backend: String,
    }
}

/// accelerate's `fsdp_config` section: checked against [`FSDP_KEYS`], kept whole (recorded, not acted on).
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct FsdpConfig(pub BTreeMap<String, Value>);

impl KeyKind for FsdpConfig {
    const NODE: Node = Node::Section(FSDP_KEYS);
}

/// The resolved accelerate configuration. Defaults are accelerate's (`ClusterConfig` and its `process_config`).
/// Only the four keys whose docs say "acted on" change what stasc does; the rest are kept for the record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccelerateConfig {
    /// Default LOCAL_MACHINE.
    pub compute_environment: String,
    /// Default false.
    pub debug: bool,
    /// Default NO (accelerate requires the key; without a file there is no distribution).
    pub distributed_type: String,
    /// Default "no".
    pub downcast_bf16: Value,
    /// Default false.
    pub enable_cpu_affinity: bool,
    /// FSDP plugin settings, recorded only. Default empty.
    pub fsdp_config: BTreeMap<String, Value>,
    /// Default 0.
    pub machine_rank: u64,
    /// Default main.
    pub main_training_function: String,
    /// Acted on: the run's dtype when stasc_config's `dtype` is auto. Default no (accelerate: none).
    pub mixed_precision: MixedPrecision,
    /// Default 1.
    pub num_machines: u64,
    /// Acted on: the run's data-parallel ranks (accelerate's processes; `execution.data_parallel_ranks`); none means
    /// one per visible device (accelerate's -1). Default 1 when distributed_type is NO, else none.
    pub num_processes: Option<usize>,
    /// Default static.
    pub rdzv_backend: String,
    /// Default true (what `accelerate config` writes for one machine).
    pub same_network: bool,
    /// Default empty.
    pub tpu_env: Vec<String>,
    /// Default false.
    pub tpu_use_cluster: bool,
    /// Default false.
    pub tpu_use_sudo: bool,
    /// Acted on: true forces the CPU when stasc_config's `device` is auto. Default false.
    pub use_cpu: bool,
    /// Acted on: which GPUs to use; none means all. Default all.
    pub gpu_ids: Option<Vec<usize>>,
    /// Default none.
    pub main_process_ip: Option<String>,
    /// Default none.
    pub main_process_port: Option<u64>,
}

impl AccelerateConfig {
    /// Loads and resolves the accelerate YAML at `path`, with the keys it sets that we do not act on.
    pub fn load(path: &Path) -> Result<(AccelerateConfig, IgnoredKeys), ConfigError> {
        let document = load_yaml(path, ACCELERATE_KEYS)?;
        Self::from_document(path, &document)
    }

    /// Resolves a document already checked against [`ACCELERATE_KEYS`].
    pub fn from_document(file: &Path, document: &Value) -> Result<(AccelerateConfig, IgnoredKeys), ConfigError> {
        let raw: RawAccelerateConfig = deserialize(file, document)?;
        Ok((resolve(file, raw)?, IgnoredKeys::collect(file, document, IGNORED)))
    }
}

impl Default for AccelerateConfig {
    /// What stasc does without an accelerate file: one process, full precision, the device stasc_config asks for.
    fn default() -> Self {
        resolve(Path::new("<default>"), RawAccelerateConfig::default()).expect("defaults are valid")
    }
}

fn resolve(file: &Path, raw: RawAccelerateConfig) -> Result<AccelerateConfig, ConfigError> {
    let distributed_type = raw.distributed_type.unwrap_or_else(|| "NO".to_string());
    let num_processes = match raw.num_processes {
        None if distributed_type == "NO" => Some(1),
        None | Some(-1) => None,
        Some(n) if n >= 1 => Some(n as usize),
        Some(n) => {
            return Err(ConfigError::invalid(
                file,
                "num_processes",
                format!("must be at least 1 (or -1 for all), found {n}"),
            ))
        }
    };
    // The legacy `fp16: true` means mixed_precision fp16, as accelerate's process_config converts it.
    let mixed_precision = match (raw.mixed_precision.as_deref(), raw.fp16) {
        (Some(text), _) => MixedPrecision::parse(file, "mixed_precision", text)?,
        (None, Some(true)) => MixedPrecision::Fp16,
        (None, _) => MixedPrecision::No,
    };
    Ok(AccelerateConfig {
        compute_environment: raw.compute_environment.unwrap_or_else(|| "LOCAL_MACHINE".to_string()),
        debug: raw.debug.unwrap_or(false),
        distributed_type,
        downcast_bf16: raw.downcast_bf16.unwrap_or_else(|| Value::from("no")),
        enable_cpu_affinity: raw.enable_cpu_affinity.unwrap_or(false),
        fsdp_config: raw.fsdp_config.unwrap_or_default().0,
        machine_rank: raw.machine_rank.unwrap_or(0),
        main_training_function: raw.main_training_function.unwrap_or_else(|| "main".to_string()),
        mixed_precision,
        num_machines: raw.num_machines.unwrap_or(1),
        num_processes,
        rdzv_backend: raw.rdzv_backend.unwrap_or_else(|| "static".to_string()),
        same_network: raw.same_network.unwrap_or(true),
        tpu_env: raw.tpu_env.unwrap_or_default(),
        tpu_use_cluster: raw.tpu_use_cluster.unwrap_or(false),
        tpu_use_sudo: raw.tpu_use_sudo.unwrap_or(false),
        use_cpu: raw.use_cpu.unwrap_or(false),
        gpu_ids: parse_gpu_ids(file, raw.gpu_ids.map(|v| v.text()))?,
        main_process_ip: raw.main_process_ip,
        main_process_port: raw.main_process_port,
    })
}

/// accelerate writes `gpu_ids` as `all`, a comma list such as `0,1`, or a single integer (here as its text).
fn parse_gpu_ids(file: &Path, text: Option<String>) -> Result<Option<Vec<usize>>, ConfigError> {
    let Some(text) = text else { return Ok(None) };
    if text.trim() == "all" {
        return Ok(None);
    }
    let ids: Result<Vec<usize>, _> = text.split(',').map(|part| part.trim().parse::<usize>()).collect();
    ids.map(Some)
        .map_err(|_| ConfigError::invalid(file, "gpu_ids", format!("must be all or a list like 0,1, found {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keys::{check, yaml_to_json};

    fn load_str(text: &str) -> Result<(AccelerateConfig, IgnoredKeys), ConfigError> {
        let file = Path::new("acc.yaml");
        let doc = yaml_to_json(file, serde_yaml::from_str(text).unwrap())?;
        check(file, &doc, ACCELERATE_KEYS)?;
        AccelerateConfig::from_document(file, &doc)
    }

    #[test]
    fn defaults_are_one_full_precision_process() {
        let c = AccelerateConfig::default();
        assert_eq!(
            (c.num_processes, c.mixed_precision, c.use_cpu, c.gpu_ids.clone()),
            (Some(1), MixedPrecision::No, false, None)
        );
    }

    #[test]
    fn ddp_file_maps_devices_and_precision() {
        let text = "distributed_type: MULTI_GPU\ngpu_ids: 0,1\nmixed_precision: bf16\nnum_processes: 2\n\
                    enable_cpu_affinity: true\n";
        let (c, ignored) = load_str(text).unwrap();
        assert_eq!((c.num_processes, c.gpu_ids, c.mixed_precision), (Some(2), Some(vec![0, 1]), MixedPrecision::Bf16));
        assert_eq!(ignored.keys, vec!["distributed_type", "enable_cpu_affinity"]);
    }

    #[test]
    fn fsdp_section_is_checked_and_reported() {
        let (_, ignored) = load_str("distributed_type: FSDP\nfsdp_config:\n  fsdp_offload_params: false\n").unwrap();
        assert_eq!(ignored.keys, vec!["distributed_type", "fsdp_config (1 keys)"]);
        let e = load_str("fsdp_config:\n  fsdp_ofload_params: false\n").unwrap_err().to_string();
        assert_eq!(e, "acc.yaml: unknown key 'fsdp_config.fsdp_ofload_params' (did you mean 'fsdp_offload_params'?)");
    }

    #[test]
    fn invalid_values_are_named() {
        let e = load_str("mixed_precision: fp8\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "acc.yaml: key 'mixed_precision' must be one of no, fp16, bf16, found \"fp8\" (did you mean 'fp16'?)"
        );
        let e = load_str("num_processes: 0\n").unwrap_err().to_string();
        assert_eq!(e, "acc.yaml: key 'num_processes' must be at least 1 (or -1 for all), found 0");
        let e = load_str("gpu_ids: a,b\n").unwrap_err().to_string();
        assert_eq!(e, "acc.yaml: key 'gpu_ids' must be all or a list like 0,1, found \"a,b\"");
    }

    #[test]
    fn gpu_ids_are_read_as_written() {
        let (c, _) = load_str("gpu_ids: 1\n").unwrap();
        assert_eq!(c.gpu_ids, Some(vec![1]));
        let e = load_str("gpu_ids: -1\n").unwrap_err().to_string();
        assert_eq!(e, "acc.yaml: key 'gpu_ids' must be all or a list like 0,1, found \"-1\"");
        let (c, _) = load_str("gpu_ids: all\nfsdp_config:\n  fsdp_version: 2\n").unwrap();
        assert_eq!((c.gpu_ids, c.fsdp_config.len()), (None, 1));
    }
}
