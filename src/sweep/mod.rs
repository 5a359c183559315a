//! Declarative sweeps: a TOML file names base configs, fixed overrides and a grid over the STaSC flags, tasks,
//! rewards, models, seeds or any config key; stasc expands the ordered product into cells (one run directory each,
//! named from its overrides), validates all of them first, then runs them, resumably, isolating failures: as child
//! processes on this machine, or as one Slurm job array.

pub mod error;
pub mod exec;
pub mod grid;
pub mod live;
pub mod overrides;
pub mod shared;
pub mod slurm;
pub mod spec;
pub mod status;

pub use error::SweepError;
pub use exec::{execute, plan, CellPlan, CellRunner, ProcessRunner, SweepIndex, SweepOptions, SweepOutcome};
pub use grid::{expand, Cell};
pub use spec::{Executor, SweepSpec};

#[cfg(test)]
mod tests;
