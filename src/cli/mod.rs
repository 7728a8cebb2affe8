//! The command line (clap): NSML's verbs. Each area's commands live in their own file; this one only wires them.
//!
//! Commands that change or list daemon state (`run`, `ps`, `logs`, `stop`, `submit`, ...) talk to the running daemon
//! over its HTTP JSON API; `train`, `doctor` and `dataset synth|build` work locally. The commands that need libtorch
//! (`train`, `infer`, `doctor`, `bench train|epoch`: [`libtorch_command`]) are parsed here and run by `rush-train`,
//! which `rush` execs ([`trainer::hand_over`]): the `rush` binary never loads libtorch.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod bench;
pub mod client;
pub mod daemon;
pub mod dataset;
pub mod spec;
pub mod trainer;

/// The options every command takes. Their environment variables are read by [`Global::resolve`], not by clap, so one
/// set to the empty string counts as unset (clap would refuse it as a missing value).
const GLOBAL_OPTIONS: &str = "Global options (every command takes them):
      --home <DIR>     The rush home folder: database, datasets, sessions [env: RUSH_HOME] [default: .rush]
      --url <URL>      The daemon's address [env: RUSH_URL] [default: read from the home's daemon.addr]
      --token <TOKEN>  API token: a shared daemon's user, or one bound beyond loopback [env: RUSH_TOKEN]
                       [default: the one `rush login` kept in ~/.config/rush/token]";

/// The line under each command's help, instead of the global options themselves.
const GLOBAL_NOTE: &str = "Global options --home, --url and --token work here too: see `rush --help`.";

#[derive(Debug, Parser)]
#[command(name = "rush", version, about = "An NSML-style experiment daemon for image classifiers")]
#[command(after_help = GLOBAL_OPTIONS)]
pub struct Cli {
    /// The rush home folder (database, datasets, sessions) [env: RUSH_HOME] [default: .rush].
    #[arg(long, global = true, hide = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// The daemon's address (default: read from the home folder's `daemon.addr`) [env: RUSH_URL].
    #[arg(long, global = true, hide = true)]
    pub url: Option<String>,
    /// API token for a daemon bound beyond loopback [env: RUSH_TOKEN].
    #[arg(long, global = true, hide = true)]
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

/// The command line's definition: [`Cli`], each command's help ending with [`GLOBAL_NOTE`].
pub fn command() -> clap::Command {
    fn note(cmd: clap::Command) -> clap::Command {
        let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
        names.iter().fold(cmd, |cmd, name| cmd.mut_subcommand(name, |sub| note(sub.after_help(GLOBAL_NOTE))))
    }
    note(<Cli as clap::CommandFactory>::command())
}

/// A command line, parsed.
#[derive(Debug)]
pub enum Parsed {
    /// `rush infer ...`, read apart from clap's command set (see [`trainer::InferArgs`]).
    Infer(trainer::InferArgs),
    Cli(Cli),
}

/// Parses a command line (`args[0]` is the binary). Help, `--version` and a bad command line print and exit, as clap
/// does. Both binaries parse with this, so `rush-train` reads exactly what `rush` checked.
pub fn parse(args: &[std::ffi::OsString]) -> Parsed {
    // `rush infer` is read apart: no listing, usage or typo suggestion names it (see `trainer::InferArgs`).
    if args.get(1).is_some_and(|a| a == "infer") {
        return Parsed::Infer(<trainer::InferArgs as Parser>::parse_from(&args[1..]));
    }
    let matches = command().get_matches_from(args);
    Parsed::Cli(<Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit()))
}

/// The command's name when it needs libtorch, and so runs in `rush-train` (`train`, `infer`, `doctor`, `bench train`,
/// `bench epoch`); `None` for every command `rush` runs itself.
pub fn libtorch_command(parsed: &Parsed) -> Option<&'static str> {
    match parsed {
        Parsed::Infer(_) => Some("infer"),
        Parsed::Cli(cli) => match &cli.command {
            Command::Trainer(trainer::Command::Train { .. }) => Some("train"),
            Command::Trainer(trainer::Command::Doctor { .. }) => Some("doctor"),
            Command::Bench(bench::Args { command: bench::Command::Train(_) }) => Some("bench train"),
            Command::Bench(bench::Args { command: bench::Command::Epoch(_) }) => Some("bench epoch"),
            _ => None,
        },
    }
}

/// Whether a command exits quietly when its reader goes away ([`quiet_broken_pipe`]): all but the daemon and the
/// children it starts.
pub fn quits_on_broken_pipe(parsed: &Parsed) -> bool {
    match parsed {
        Parsed::Infer(_) => false,
        Parsed::Cli(cli) => !matches!(cli.command, Command::Daemon(_) | Command::Trainer(_)),
    }
}

/// `rush`: parses the command line, then runs the command here, or in `rush-train` when it needs libtorch.
pub fn run() -> anyhow::Result<ExitCode> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let parsed = parse(&args);
    if let Some(ran) = trainer::code_session(&parsed) {
        return ran;
    }
    if let Some(command) = libtorch_command(&parsed) {
        return trainer::hand_over(command, &args);
    }
    if quits_on_broken_pipe(&parsed) {
        quiet_broken_pipe();
    }
    let Parsed::Cli(cli) = parsed else { unreachable!("`rush infer` runs in rush-train") };
    let global = Global::resolve(cli.home, cli.url, cli.token, |name| std::env::var(name).ok());
    match cli.command {
        Command::Daemon(args) => daemon::run(&global, args),
        Command::Trainer(_) => unreachable!("the trainer's commands run in rush-train"),
        Command::Dataset(cmd) => dataset::run(&global, cmd),
        Command::Client(cmd) => client::run(&global, cmd),
        Command::Bench(args) => crate::cli::bench::run(&global, args),
    }
}

/// A listing piped into `head` ends when `head` stops reading: exit at once and quietly, as Unix tools do, rather than
/// panic in `println!` ("failed printing to stdout: Broken pipe", exit 101). Not for the daemon and the training
/// child, which must outlive a reader that went away.
pub fn quiet_broken_pipe() {
    // SAFETY: restoring a signal's default disposition before this process starts any thread of its own.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Options every command sees.
#[derive(Debug, Clone)]
pub struct Global {
    pub home: crate::home::Home,
    pub url: Option<String>,
    pub token: Option<String>,
}

impl Global {
    /// The flags, else their environment variables (`env` reads one; set but empty counts as unset), else defaults.
    pub fn resolve(
        home: Option<PathBuf>,
        url: Option<String>,
        token: Option<String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Global {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        let home = home.or_else(|| var("RUSH_HOME").map(PathBuf::from)).unwrap_or_else(|| PathBuf::from(".rush"));
        let kept = || {
            let path = token_file(var)?;
            let text = std::fs::read_to_string(path).ok()?;
            Some(text.trim().to_string()).filter(|t| !t.is_empty())
        };
        Global {
            home: crate::home::Home::new(&home),
            url: url.or_else(|| var("RUSH_URL")),
            token: token.or_else(|| var("RUSH_TOKEN")).or_else(kept),
        }
    }
}

/// Where `rush login` keeps the token: `$XDG_CONFIG_HOME/rush/token`, else `~/.config/rush/token`.
pub fn token_file(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    let config =
        var("XDG_CONFIG_HOME").map(PathBuf::from).or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("rush").join("token"))
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
    fn global_options_come_from_flags_then_non_empty_variables_then_defaults() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let g = Global::resolve(None, None, None, env(&[("RUSH_HOME", ""), ("RUSH_URL", ""), ("RUSH_TOKEN", "")]));
        assert_eq!((g.home.root(), g.url, g.token), (std::path::Path::new(".rush"), None, None));
        let g = Global::resolve(None, None, None, env(&[("RUSH_HOME", "/h"), ("RUSH_URL", "http://x:1")]));
        assert_eq!((g.home.root(), g.url.as_deref()), (std::path::Path::new("/h"), Some("http://x:1")));
        let g = Global::resolve(Some("/flag".into()), None, Some("t".into()), env(&[("RUSH_HOME", "/h")]));
        assert_eq!((g.home.root(), g.token.as_deref()), (std::path::Path::new("/flag"), Some("t")));
    }

    #[test]
    fn help_lists_the_global_options_once_and_no_hidden_command() {
        let mut cmd = command();
        let top = cmd.render_long_help().to_string();
        assert!(top.contains("--home <DIR>") && top.contains("RUSH_HOME"), "{top}");
        assert!(!top.contains("infer"), "{top}");
        let run = cmd.find_subcommand_mut("run").unwrap().render_long_help().to_string();
        assert!(!run.contains("--home <") && !run.contains("--token <"), "{run}");
        assert!(run.contains(GLOBAL_NOTE), "{run}");
        let usage = cmd.find_subcommand_mut("run").unwrap().render_usage().to_string();
        assert!(!usage.contains("home"), "{usage}");
        let model = cmd.find_subcommand_mut("model").unwrap();
        let rm = model.find_subcommand_mut("rm").unwrap().render_long_help().to_string();
        assert!(rm.contains(GLOBAL_NOTE) && !rm.contains("--url <"), "{rm}");
        // Still accepted anywhere.
        let m = command().try_get_matches_from(["rush", "ps", "--home", "/x", "--url", "http://a:1"]).unwrap();
        let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&m).unwrap();
        assert_eq!(cli.home.as_deref(), Some(std::path::Path::new("/x")));
        assert!(command().try_get_matches_from(["rush", "infer", "x"]).is_err(), "no `infer` subcommand for clap");
    }

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
