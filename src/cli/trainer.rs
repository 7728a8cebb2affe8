//! `rush train` (the child the daemon starts), `rush infer` (the child a submission job starts) and `rush doctor` (what
//! libtorch and CUDA look like here).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

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

/// `rush infer`: class probabilities of one checkpoint on the test and validation splits. A submission job runs it;
/// nobody types it, so it is no subcommand of the CLI (clap would list it, or suggest it for a typo) but is read
/// apart, before clap sees the command line ([`super::run`]).
#[derive(Debug, Parser)]
#[command(name = "rush infer")]
pub struct InferArgs {
    /// The session folder holding `spec.yaml` and `checkpoints/`.
    session_dir: PathBuf,
    /// The checkpoint's epoch.
    #[arg(long)]
    epoch: u32,
    /// Where `test.npy`, `valid.npy` and `infer.json` go.
    #[arg(long)]
    out: PathBuf,
    /// Test-time augmentation: `none` or `flip`.
    #[arg(long, default_value = "none")]
    tta: String,
    /// Only the dry-run sample of the test split (public stickers only).
    #[arg(long)]
    dry_run: bool,
    /// The board's public share of the test set (percent), from which a dry run draws its sample.
    #[arg(long, default_value_t = crate::core::score::DEFAULT_PUBLIC_PERCENT)]
    public_percent: u8,
    #[arg(long)]
    device: Option<String>,
}

/// Runs `rush infer`.
pub fn infer(args: InferArgs) -> anyhow::Result<ExitCode> {
    let InferArgs { session_dir, epoch, out, tta, dry_run, public_percent, device } = args;
    let tta = tta.parse().context("--tta")?;
    let opts = crate::train::infer::InferOptions { session_dir, epoch, out, tta, dry_run, public_percent, device };
    let report = crate::train::infer::run(&opts).context("rush infer")?;
    eprintln!(
        "rush infer: epoch {} on {}: {} test + {} validation rows in {:.1} s",
        report.epoch, report.device, report.test_rows, report.valid_rows, report.seconds
    );
    Ok(ExitCode::SUCCESS)
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
