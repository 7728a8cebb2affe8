//! `rush train` (the child the daemon starts) and `rush doctor` (what libtorch and CUDA look like here).

use std::path::PathBuf;
use std::process::ExitCode;

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
        Command::Train { .. } => anyhow::bail!("`rush train` is not built yet"),
        Command::Doctor { .. } => anyhow::bail!("`rush doctor` is not built yet"),
    }
}
