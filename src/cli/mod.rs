//! The command line (clap): NSML's verbs. Each area's commands live in their own file; this one only wires them.
//!
//! Commands that change or list daemon state (`run`, `ps`, `logs`, `stop`, `submit`, ...) talk to the running daemon
//! over its HTTP JSON API; `train`, `doctor` and `dataset synth|build` work locally.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod bench;
pub mod client;
pub mod daemon;
pub mod dataset;
pub mod spec;
pub mod trainer;

#[derive(Debug, Parser)]
#[command(name = "rush", version, about = "An NSML-style experiment daemon for image classifiers")]
pub struct Cli {
    /// The rush home folder (database, datasets, sessions).
    #[arg(long, global = true, env = "RUSH_HOME", default_value = ".rush")]
    pub home: PathBuf,
    /// The daemon's address (default: read from the home folder's `daemon.addr`).
    #[arg(long, global = true, env = "RUSH_URL")]
    pub url: Option<String>,
    /// API token for a daemon bound beyond loopback.
    #[arg(long, global = true, env = "RUSH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: watch experiments/, queue, train, serve the dashboard.
    Daemon(daemon::DaemonArgs),
    #[command(flatten)]
    Trainer(trainer::Command),
    /// Datasets: generate, build, register, list, board.
    #[command(subcommand)]
    Dataset(dataset::Command),
    #[command(flatten)]
    Client(client::Command),
    /// Speed benchmarks against their references (see BENCHMARKS.md).
    Bench(crate::cli::bench::Args),
}

pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let global = Global { home: crate::home::Home::new(&cli.home), url: cli.url, token: cli.token };
    match cli.command {
        Command::Daemon(args) => daemon::run(&global, args),
        Command::Trainer(cmd) => trainer::run(&global, cmd),
        Command::Dataset(cmd) => dataset::run(&global, cmd),
        Command::Client(cmd) => client::run(&global, cmd),
        Command::Bench(args) => crate::cli::bench::run(&global, args),
    }
}

/// Options every command sees.
#[derive(Debug, Clone)]
pub struct Global {
    pub home: crate::home::Home,
    pub url: Option<String>,
    pub token: Option<String>,
}

/// An error and its causes on one line, `outer: cause: cause`, each cause once. Many of rush's errors already name
/// their cause in their own message (`{path}: {source}`), and anyhow's `{:#}` would print it a second time.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_line_names_each_cause_once() {
        let missing = std::path::Path::new("/nonexistent/rush/tag.tsv");
        let io = std::fs::read(missing).unwrap_err();
        let io_text = io.to_string();
        let data = crate::data::layout::DataError::Io { path: missing.into(), source: io };
        let err = anyhow::Error::new(data).context("/nonexistent/rush is not a dataset in the AI RUSH layout");
        assert_eq!(
            error_line(&err),
            format!("/nonexistent/rush is not a dataset in the AI RUSH layout: /nonexistent/rush/tag.tsv: {io_text}")
        );
        assert_eq!(format!("{err:#}").matches(&io_text).count(), 2, "anyhow's own chain repeats it");
        // A cause not named by its parent is kept.
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_line(&plain), "outer: inner");
    }
}
