//! Unit tests of fine_tune.yaml loading: defaults, key errors, invalid values, ignored keys.

use super::*;
use crate::config::keys::{check, yaml_to_json};

fn load_str(text: &str) -> Result<(FineTuneConfig, IgnoredKeys), ConfigError> {
    let file = Path::new("configs/ft.yaml");
    let doc = yaml_to_json(file, serde_yaml::from_str(text).unwrap())?;
    check(file, &doc, FINE_TUNE_KEYS)?;
    FineTuneConfig::from_document(file, &doc)
}

fn err(text: &str) -> String {
    load_str(text).unwrap_err().to_string()
}

#[test]
fn empty_file_gets_reference_and_hf_defaults() {
    let (c, ignored) = load_str("").unwrap();
    let t = &c.training;
    assert_eq!((t.learning_rate, t.num_train_epochs, t.per_device_train_batch_size), (5e-5, 3.0, 8));
    assert_eq!((t.weight_decay, t.logging_steps, t.lr_scheduler_type), (0.01, 10, LrSchedulerType::Linear));
    assert_eq!((t.max_grad_norm, t.adam_beta1, t.adam_beta2, t.adam_epsilon), (1.0, 0.9, 0.999, 1e-8));
    assert_eq!((t.max_steps, t.seed), (None, 42));
    assert_eq!((c.data.block_size, c.data.truncation), (1024, Truncation::Drop));
    assert_eq!((c.peft.lora_rank, c.peft.lora_alpha, c.peft.lora_dropout), (8, 16, 0.1));
    assert_eq!(c.model.torch_dtype, Dtype::Auto);
    assert!(ignored.keys.is_empty());
}

#[test]
fn sections_may_be_empty() {
    let (c, _) = load_str("model:\npeft:\ntraining:\n  max_steps: -1\n").unwrap();
    assert!(!c.peft.use_lora);
    assert_eq!(c.training.max_steps, None);
}

#[test]
fn nested_unknown_key_suggests() {
    assert_eq!(
        err("training:\n  learnig_rate: 1.0e-4\n"),
        "configs/ft.yaml: unknown key 'training.learnig_rate' (did you mean 'learning_rate'?)"
    );
    assert_eq!(err("lora_rank: 4\n"), "configs/ft.yaml: unknown key 'lora_rank' (did you mean 'peft.lora_rank'?)");
}

#[test]
fn nested_wrong_type() {
    assert_eq!(
        err("training:\n  per_device_train_batch_size: 2.5\n"),
        "configs/ft.yaml: key 'training.per_device_train_batch_size' expects a non-negative integer, \
         found number 2.5"
    );
}

#[test]
fn invalid_values() {
    assert_eq!(
        err("training:\n  lr_scheduler_type: cosin\n"),
        "configs/ft.yaml: key 'training.lr_scheduler_type' must be one of linear, cosine, constant, \
         constant_with_warmup, found \"cosin\" (did you mean 'cosine'?)"
    );
    assert_eq!(
        err("peft:\n  use_lora: true\n"),
        "configs/ft.yaml: key 'peft.lora_target_modules' must list module names when peft.use_lora is true"
    );
    assert_eq!(
        err("training:\n  learning_rate: 0\n"),
        "configs/ft.yaml: key 'training.learning_rate' must be in (0, inf), found 0"
    );
    assert_eq!(err("data:\n  truncation: cut\n").split(" must").next(), Some("configs/ft.yaml: key 'data.truncation'"));
}

#[test]
fn report_to_is_checked_and_acted_on() {
    let (c, ignored) =
        load_str("training:\n  report_to: [\"wandb\", mlflow]\n  project_name: STaR\n  do_eval: false\n").unwrap();
    assert_eq!(c.training.report_to, vec!["wandb", "mlflow"]);
    assert!(ignored.keys.is_empty(), "report_to and project_name are acted on: {:?}", ignored.keys);
    let (c, _) = load_str("training:\n  report_to: tensorboard\n").unwrap();
    assert_eq!(c.training.report_to, vec!["tensorboard"]);
    let e = load_str("training:\n  report_to: [tensorbord]\n").unwrap_err().to_string();
    assert!(e.contains("key 'training.report_to'") && e.contains("did you mean 'tensorboard'"), "{e}");
}

#[test]
fn raw_struct_and_key_tree_agree() {
    let raw = RawFineTuneConfig {
        model: Some(Default::default()),
        data: Some(Default::default()),
        training: Some(Default::default()),
        peft: Some(Default::default()),
    };
    let doc = serde_json::to_value(raw).unwrap();
    check(Path::new("x"), &doc, FINE_TUNE_KEYS).unwrap();
    for key in FINE_TUNE_KEYS {
        let crate::config::keys::Node::Section(inner) = key.node else { panic!() };
        assert_eq!(doc[key.name].as_object().unwrap().len(), inner.len(), "{}", key.name);
    }
}

#[test]
fn average_tokens_across_devices_is_unset_unless_written() {
    assert_eq!(load_str("").unwrap().0.training.average_tokens_across_devices, None);
    let (c, ignored) = load_str("training:\n  average_tokens_across_devices: false\n").unwrap();
    assert_eq!(c.training.average_tokens_across_devices, Some(false));
    assert!(ignored.keys.is_empty(), "acted on, so not reported as ignored");
    assert_eq!(
        err("training:\n  average_tokens_across_device: true\n"),
        "configs/ft.yaml: unknown key 'training.average_tokens_across_device' \
         (did you mean 'average_tokens_across_devices'?)"
    );
    assert_eq!(
        err("training:\n  average_tokens_across_devices: \"yes\"\n"),
        "configs/ft.yaml: key 'training.average_tokens_across_devices' expects a boolean (true or false), \
         found string \"yes\""
    );
}

#[test]
fn decay_parameters_is_unset_unless_written() {
    assert_eq!(load_str("").unwrap().0.training.decay_parameters, None);
    let (c, ignored) = load_str("training:\n  decay_parameters: transformers_4_47_1\n").unwrap();
    assert_eq!(c.training.decay_parameters, Some(DecayParameters::Transformers4_47_1));
    assert!(ignored.keys.is_empty(), "acted on, so not reported as ignored");
    let (c, _) = load_str("training:\n  decay_parameters: names\n").unwrap();
    assert_eq!(c.training.decay_parameters, Some(DecayParameters::Names));
    assert_eq!(
        err("training:\n  decay_parameters: transformers_4_47\n"),
        "configs/ft.yaml: key 'training.decay_parameters' must be one of names, transformers_4_47_1, \
         found \"transformers_4_47\" (did you mean 'transformers_4_47_1'?)"
    );
    assert_eq!(
        err("training:\n  decay_parameter: names\n"),
        "configs/ft.yaml: unknown key 'training.decay_parameter' (did you mean 'decay_parameters'?)"
    );
}

#[test]
fn data_parallel_sums_overlap_and_shard_the_optimiser_unless_written() {
    let t = load_str("").unwrap().0.training;
    assert_eq!((t.overlap_grad_sums, t.shard_optimizer_state), (false, true));
    let (c, ignored) = load_str("training:\n  overlap_grad_sums: true\n  shard_optimizer_state: false\n").unwrap();
    assert_eq!((c.training.overlap_grad_sums, c.training.shard_optimizer_state), (true, false));
    assert!(ignored.keys.is_empty(), "acted on, so not reported as ignored");
}

#[test]
fn packing_is_on_with_a_budget_of_8192_tokens_unless_written() {
    let t = load_str("").unwrap().0.training;
    assert_eq!((t.packing, t.max_tokens_per_pass), (true, 8192));
    let (c, ignored) = load_str("training:\n  packing: false\n  max_tokens_per_pass: 4096\n").unwrap();
    assert_eq!((c.training.packing, c.training.max_tokens_per_pass), (false, 4096));
    assert!(ignored.keys.is_empty(), "acted on, so not reported as ignored");
    assert_eq!(
        err("training:\n  max_tokens_per_pass: 0\n"),
        "configs/ft.yaml: key 'training.max_tokens_per_pass' must be at least 1, found 0"
    );
    assert_eq!(
        err("training:\n  max_token_per_pass: 10\n"),
        "configs/ft.yaml: unknown key 'training.max_token_per_pass' (did you mean 'max_tokens_per_pass'?)"
    );
}
