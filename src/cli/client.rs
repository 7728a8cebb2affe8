//! The daemon and its client verbs: `daemon`, `run`, `ps`, `logs`, `stop`, `rm`, `fork`, `model`, `spec`, `submit`,
//! `ensemble`. Client verbs talk to the daemon's HTTP JSON API.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::Global;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: watch experiments/, queue, train, serve the dashboard.
    Daemon(DaemonArgs),
    /// Queue a session (the spec lands in experiments/ under a new name).
    Run {
        #[arg(short = 'd', long)]
        dataset: String,
        /// A spec file to start from.
        #[arg(short = 'e', long)]
        spec: Option<PathBuf>,
        /// Overrides, "key=value key2=value2" (dotted paths, e.g. optimizer.lr=0.01).
        #[arg(short = 'a', long)]
        args: Option<String>,
        #[arg(short = 'm', long)]
        memo: Option<String>,
    },
    /// List sessions.
    Ps {
        /// All sessions, not only queued and running ones.
        #[arg(short = 'a', long)]
        all: bool,
        #[arg(short = 'd', long)]
        dataset: Option<String>,
        #[arg(short = 'j', long)]
        json: bool,
    },
    /// Show a session's log.
    Logs {
        session: String,
        /// Follow until the session ends.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Stop a queued or running session.
    Stop { session: String },
    /// Remove a finished session and its files.
    Rm { session: String },
    /// Start a new session from a checkpoint of another.
    Fork {
        session: String,
        #[arg(short = 'c', long)]
        checkpoint: String,
        #[arg(short = 'a', long)]
        args: Option<String>,
        #[arg(short = 'm', long)]
        memo: Option<String>,
    },
    /// Checkpoints of a session.
    #[command(subcommand)]
    Model(ModelCommand),
    /// The spec format.
    #[command(subcommand)]
    Spec(SpecCommand),
    /// Submit a checkpoint (`SESSION CHECKPOINT`) or an ensemble (`SESSION:CKPT ...`) for scoring.
    Submit(SubmitArgs),
    /// Ensembles picked for you.
    #[command(subcommand)]
    Ensemble(EnsembleCommand),
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// A config file (TOML or YAML); flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The watched intake folder.
    #[arg(long)]
    pub experiments: Option<PathBuf>,
    /// The user name in session ids (default: $USER, else `local`).
    #[arg(long)]
    pub user: Option<String>,
    /// Address to bind (default 127.0.0.1:8470; port 0 picks a free one).
    #[arg(long)]
    pub bind: Option<String>,
    /// CPU worker slots when there is no GPU.
    #[arg(long)]
    pub cpu_slots: Option<u32>,
    /// GPU ids to use (default: all detected).
    #[arg(long, value_delimiter = ',')]
    pub gpus: Option<Vec<u32>>,
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// List a session's checkpoints.
    Ls {
        session: String,
        #[arg(short = 'j', long)]
        json: bool,
    },
    /// Delete a checkpoint.
    Rm { session: String, checkpoint: String },
}

#[derive(Debug, Subcommand)]
pub enum SpecCommand {
    /// Print the spec's JSON Schema.
    Schema,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// `SESSION CHECKPOINT`, or one or more `SESSION:CHECKPOINT` for an ensemble.
    #[arg(required = true)]
    pub targets: Vec<String>,
    /// Dry run on 200 test samples; not ranked.
    #[arg(short = 't', long)]
    pub test: bool,
    /// Verbose.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Ensemble weights, one per member.
    #[arg(long, value_delimiter = ',')]
    pub weights: Option<Vec<f64>>,
    /// Test-time augmentation: `flip`.
    #[arg(long)]
    pub tta: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EnsembleCommand {
    /// Greedy forward selection over cached checkpoints, maximising validation accuracy.
    Auto {
        #[arg(short = 'd', long)]
        dataset: String,
        #[arg(long, default_value_t = 10)]
        max_members: usize,
        /// Submit the chosen ensemble.
        #[arg(long)]
        submit: bool,
        #[arg(short = 'j', long)]
        json: bool,
    },
}

pub fn run(_global: &Global, _cmd: Command) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this command is not built yet")
}
