//! End-to-end tests of stasc, one module per area, in one test target so they build once.

mod chat_templates;
mod config_cli;
mod data_parallel;
mod dry_run;
mod generation;
mod gguf_import;
mod kernels;
mod kv_pool;
mod lineage;
mod model_parity;
mod packing;
mod paper_protocol;
mod prefix_sharing;
mod report;
mod reward_goldens;
mod reward_plugins;
mod score_cli;
mod slurm;
mod stasc_run;
mod sweep_cli;
mod sweep_status;
mod tracking;
mod train;
