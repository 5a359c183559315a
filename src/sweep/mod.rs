//! Declarative sweeps: a TOML file names base configs, fixed overrides and a grid over the STaSC flags, tasks,
//! rewards, models, seeds or any config key; stasc expands the ordered product into cells (one run directory each,
//! named from its overrides), validates all of them first, then runs them, resumably, isolating failures.

pub mod error;
pub mod exec;
pub mod grid;
pub mod overrides;
pub mod spec;

pub use error::SweepError;
pub use exec::{execute, plan, CellPlan, CellRunner, ProcessRunner, SweepIndex, SweepOptions, SweepOutcome};
pub use grid::{expand, Cell};
pub use spec::SweepSpec;

#[cfg(test)]
mod tests;
