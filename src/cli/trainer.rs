//! `rush train` (the child the daemon starts) and `rush doctor` (what libtorch and CUDA look like here).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use super::Global;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train one session from its folder (the daemon runs this as a child process).
    Train {
        /// The session folder holding `spec.yaml`.
        session_dir: PathBuf,
        /// `cpu`, `cuda` or `cuda:N` (default: the GPU in CUDA_VISIBLE_DEVICES, else the CPU).
        #[arg(long)]
        device: Option<String>,
    },
    /// Print the libtorch version, where it was found, and the CUDA devices.
    Doctor {
        /// Print JSON.
        #[arg(short = 'j', long)]
        json: bool,
    },
}

pub fn run(_global: &Global, cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Train { session_dir, device } => {
            let opts = crate::train::TrainOptions { session_dir, device };
            // A file-size limit (RLIMIT_FSIZE, as a full quota is often enforced) must surface as an error that names
            // the checkpoint being written (EFBIG), not as a silent kill by SIGXFSZ.
            // SAFETY: setting a signal's disposition to "ignore" before any other thread is started.
            unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
            // The failure is already on stderr and in the event stream as `failed`.
            match crate::train::run::run(&opts) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(_) => Ok(ExitCode::FAILURE),
            }
        }
        Command::Doctor { json } => {
            let report = crate::train::doctor::report();
            if json {
                println!("{}", serde_json::to_string_pretty(&report).context("serialising the report")?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
