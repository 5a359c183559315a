//! `stasc sweep status DIR [--watch]`: one table of a sweep's cells, read from the files (done, running with
//! iteration, phase, progress, rate, since when and where, failed with the error's last line and log, pending).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::stasc::status::unix_now;
use crate::sweep::status::{all_ended, read_sweep, render};

/// The subcommands of `stasc sweep`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Show the state of every cell of a sweep directory (what `stasc sweep FILE` wrote).
    #[command(after_help = "A cell is running while its status.json heartbeat (rewritten every few seconds by its \
                            runner) is at most 60 s old; an older one means its runner died and the cell is pending \
                            (rerun `stasc sweep FILE` to resume it).")]
    Status(StatusArgs),
}

/// Arguments of `stasc sweep status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The sweep directory (the sweep file's `out`, e.g. runs/ablation).
    pub dir: PathBuf,
    /// Refresh the table until every cell is done or failed (Ctrl-C stops it earlier).
    #[arg(long)]
    pub watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    pub interval: f64,
}

/// Runs `stasc sweep status`.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    let Command::Status(args) = command;
    let terminal = std::io::stdout().is_terminal();
    let mut drawn = 0usize;
    loop {
        let now = unix_now();
        let (index, rows) = read_sweep(&args.dir, now)?;
        let table = render(&format!("sweep {} ({})", index.name, args.dir.display()), &rows, now);
        let mut out = std::io::stdout().lock();
        if terminal && drawn > 0 {
            write!(out, "\x1b[{drawn}F\x1b[J")?;
        }
        write!(out, "{table}")?;
        out.flush()?;
        drawn = table.lines().count();
        if !args.watch || all_ended(&rows) {
            return Ok(ExitCode::SUCCESS);
        }
        if !terminal {
            writeln!(out)?;
        }
        drop(out);
        std::thread::sleep(Duration::from_secs_f64(args.interval.max(0.1)));
    }
}
