//! The `rush` binary: parse the command line, run it, print errors with their causes.

use std::process::ExitCode;

fn main() -> ExitCode {
    match rush::cli::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("rush: {}", rush::cli::error_line(&err));
            ExitCode::FAILURE
        }
    }
}
