//! The STaSC algorithm: the loop over iterations, the correction filters, transition statistics, and the run
//! directory that holds every sample and makes runs resumable. Talks to models only through [`Backend`].

pub mod backend;
pub mod budget;
pub mod cleaning;
pub mod error;
pub mod filter;
pub mod from_config;
pub mod lineage;
pub mod metrics;
pub mod pairing;
pub mod preflight;
pub mod records;
pub mod rundir;
pub mod runner;
pub mod shared;
pub mod spec;
pub mod status;
pub mod tch_backend;

pub use backend::{Backend, BackendError, GeneratedSample, PrefillCounts, SamplingJob, TrainSummary};
pub use error::StascError;
pub use filter::Transitions;
pub use metrics::{IterationMetrics, QuestionCounts, QuestionRewards};
pub use runner::{run_stasc, run_stasc_observed, NoObserver, Prompts, RunObserver, RunOptions, Scorer, TrainRecord};
pub use spec::{
    AnswerCleaning, CorrectionFilter, Correctness, FineTuning, Initialization, Pairing, RunSpec, SamplingSpec,
};

#[cfg(test)]
mod pairing_tests;
#[cfg(test)]
mod shared_tests;
#[cfg(test)]
mod tests;
