//! The commands that need libtorch: `rush train` (the child the daemon starts), `rush infer` (the child a submission
//! job starts), `rush doctor` (what libtorch and CUDA look like here) and `rush bench train|epoch`. They are defined
//! here, so `rush --help` lists them and `rush` checks their arguments, and run in `rush-train` (the `rush-trainer`
//! package, `trainer/`), the one binary that links libtorch: `rush` execs it ([`hand_over`]) with the same arguments,
//! so the process (its pid, process group, parent-death signal, start time) stays the one the daemon started.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

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
/// apart, before clap sees the command line ([`super::parse`]).
#[derive(Debug, Parser)]
#[command(name = "rush infer")]
pub struct InferArgs {
    /// The session folder holding `spec.yaml` and `checkpoints/`.
    pub session_dir: PathBuf,
    /// The checkpoint's epoch.
    #[arg(long)]
    pub epoch: u32,
    /// Where `test.npy`, `valid.npy` and `infer.json` go.
    #[arg(long)]
    pub out: PathBuf,
    /// Test-time augmentation: `none` or `flip`.
    #[arg(long, default_value = "none")]
    pub tta: String,
    /// Only the dry-run sample of the test split (public stickers only).
    #[arg(long)]
    pub dry_run: bool,
    /// The board's public share of the test set (percent), from which a dry run draws its sample.
    #[arg(long, default_value_t = crate::core::score::DEFAULT_PUBLIC_PERCENT)]
    pub public_percent: u8,
    #[arg(long)]
    pub device: Option<String>,
}

/// The binary that runs these commands, beside `rush`.
pub const TRAINER_BIN: &str = "rush-train";
/// The light binary, beside `rush-train`.
pub const RUSH_BIN: &str = "rush";

/// `name` in the folder of the running binary (`/proc/self/exe`, symlinks resolved).
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the running binary")?;
    Ok(exe.with_file_name(name))
}

/// `rush train` and `rush infer` of a code session (its `spec.yaml` has `entry:`) run here, in `rush`: they start
/// the user's Python (`code::child`), not libtorch. `None` for every other command, and for a session folder that
/// is no code session's (`rush-train` reads it and reports what is wrong with it).
pub fn code_session(parsed: &super::Parsed) -> Option<anyhow::Result<ExitCode>> {
    use crate::code::child;
    let dir = match parsed {
        super::Parsed::Infer(args) => &args.session_dir,
        super::Parsed::Cli(cli) => match &cli.command {
            super::Command::Trainer(Command::Train { session_dir, .. }) => session_dir,
            _ => return None,
        },
    };
    if !child::resolved(dir).is_ok_and(|r| r.spec.is_code()) {
        return None;
    }
    Some(match parsed {
        super::Parsed::Infer(args) => {
            let request = child::InferRequest {
                session_dir: args.session_dir.clone(),
                epoch: args.epoch,
                out: args.out.clone(),
                dry_run: args.dry_run,
                public_percent: args.public_percent,
                flip: args.tta != "none",
            };
            child::infer(&request).map(|_| ExitCode::SUCCESS).with_context(|| format!("rush infer {}", dir.display()))
        }
        super::Parsed::Cli(_) => match child::train(dir) {
            Ok(ended) => child::pass_on(ended),
            Err(e) => {
                // Reported the way a failed child's reason is: a `failed` event, then the exit.
                let line = crate::core::event::EventLine::new(
                    crate::core::event::Event::Failed { reason: e.to_string() },
                    crate::store::now(),
                );
                println!("{}", line.to_json());
                Err(anyhow::Error::new(e).context(format!("rush train {}", dir.display())))
            }
        },
    })
}

/// Replaces this process with `rush-train` (beside this binary) run with `args`, this process's command line as
/// given, `args[0]` included: the pid, process group, parent-death signal, environment and open files stay, so a
/// child the daemon started as `rush train DIR` is still that process, and its command line still reads `rush train
/// DIR`. `command` names it in errors (`train`, `bench epoch`). Returns only on failure.
pub fn hand_over(command: &str, args: &[OsString]) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let trainer = sibling(TRAINER_BIN)?;
    anyhow::ensure!(
        trainer.is_file(),
        "`rush {command}` runs in {}, which is missing: rush-train is the binary that links libtorch and must lie \
         beside rush (`cargo build --release --bins` builds both)",
        trainer.display()
    );
    let mut cmd = std::process::Command::new(&trainer);
    if let Some((arg0, rest)) = args.split_first() {
        cmd.arg0(arg0).args(rest);
    }
    let err = cmd.exec();
    Err(anyhow::Error::new(err).context(format!("starting {} for `rush {command}`", trainer.display())))
}
