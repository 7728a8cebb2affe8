//! The `rush-train` binary: the commands of `rush` that need libtorch, which `rush` execs (see the crate's doc). Its
//! errors read like `rush`'s, since the user typed `rush`.

use std::process::ExitCode;

fn main() -> ExitCode {
    match rush_trainer::cli::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("rush: {}", rush::cli::error_line(&err));
            ExitCode::FAILURE
        }
    }
}
