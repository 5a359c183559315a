//! The `stasc` binary: parse the command line, call the library, map errors to exit codes. No logic lives here.

use std::process::ExitCode;

fn main() -> ExitCode {
    match stasc::cli::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", stasc::cli::error::one_line(&err));
            ExitCode::FAILURE
        }
    }
}
