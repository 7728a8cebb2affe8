//! The command line (clap): NSML's verbs. Each area's commands live in their own file; this one only wires them.
//!
//! Commands that change or list daemon state (`run`, `ps`, `logs`, `stop`, `submit`, ...) talk to the running daemon
//! over its HTTP JSON API; `train`, `doctor` and `dataset synth|build` work locally.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod client;
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
    #[command(flatten)]
    Trainer(trainer::Command),
    /// Datasets: generate, build, register, list, board.
    #[command(subcommand)]
    Dataset(dataset::Command),
    #[command(flatten)]
    Client(client::Command),
    /// Speed benchmarks against their references (see BENCHMARKS.md).
    Bench(crate::bench::Args),
}

pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let global = Global { home: crate::home::Home::new(&cli.home), url: cli.url, token: cli.token };
    match cli.command {
        Command::Trainer(cmd) => trainer::run(&global, cmd),
        Command::Dataset(cmd) => dataset::run(&global, cmd),
        Command::Client(cmd) => client::run(&global, cmd),
        Command::Bench(args) => crate::bench::run(&global, args),
    }
}

/// Options every command sees.
#[derive(Debug, Clone)]
pub struct Global {
    pub home: crate::home::Home,
    pub url: Option<String>,
    pub token: Option<String>,
}
