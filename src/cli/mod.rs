//! Command-line interface: clap definitions turned into library requests. Each subcommand lives in its own file
//! with an `Args` struct and a `run` function; this file only dispatches. Loads no models itself.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Top-level command line.
#[derive(Debug, Parser)]
#[command(name = "stasc", version, about = "Self-Taught Self-Correction experiments on small language models")]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand stasc offers. A subcommand is listed only once it works.
#[derive(Debug, Subcommand)]
pub enum Command {}

/// Parses the process arguments and runs the chosen subcommand.
pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {}
}
