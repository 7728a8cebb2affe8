//! `rush daemon`: resolve the configuration (file, flags, the GPUs NVML sees), set up logging, then run the daemon
//! through the composition root (`crate::serve`) until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::Global;

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// A config file (YAML: experiments, user, bind, db, cpu_slots, gpus, stop_grace_secs, executor, slurm, token,
    /// public_read, submissions_per_day, public_percent, reveal_private; see docs/daemon.md); flags override it.
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

/// `rush daemon`: resolve the configuration, then run until SIGTERM/SIGINT.
pub fn run(global: &Global, args: DaemonArgs) -> anyhow::Result<ExitCode> {
    use crate::daemon::config::{DaemonConfig, Flags};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
    // Through NVML, not libtorch: the daemon never loads libtorch or CUDA (only its `rush train` children do). Counted
    // even when --gpus is given, which is refused on a machine with no GPU.
    let detected = crate::web::gpus::visible_gpus();
    let flags = Flags {
        config: args.config,
        experiments: args.experiments,
        user: args.user,
        bind: args.bind,
        cpu_slots: args.cpu_slots,
        gpus: args.gpus,
        token: global.token.clone().map(crate::core::access::Token::new),
    };
    let config = DaemonConfig::resolve(global.home.clone(), flags, detected)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    runtime.block_on(crate::serve::run(config))?;
    Ok(ExitCode::SUCCESS)
}
