//! `rush-train`'s command line: the one `rush` parsed ([`rush::cli::parse`], the same definitions), of which it runs
//! the commands that need libtorch: `train`, `infer`, `doctor`, `bench train` and `bench epoch`.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Context;
use rush::cli::trainer::{Command, InferArgs};
use rush::cli::{Parsed, bench};

/// Parses the command line and runs it; any other command of `rush` is refused with where it runs.
pub fn run() -> anyhow::Result<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let parsed = rush::cli::parse(&args);
    if rush::cli::libtorch_command(&parsed).is_none() {
        anyhow::bail!(
            "rush-train runs only the commands that need libtorch (train, infer, doctor, bench train|epoch); run \
             this one with rush"
        );
    }
    if rush::cli::quits_on_broken_pipe(&parsed) {
        rush::cli::quiet_broken_pipe();
    }
    let cli = match parsed {
        Parsed::Infer(args) => return infer(args),
        Parsed::Cli(cli) => cli,
    };
    match cli.command {
        rush::cli::Command::Trainer(cmd) => trainer(cmd),
        rush::cli::Command::Bench(bench::Args { command }) => {
            let rows = match command {
                bench::Command::Train(a) => crate::bench::train_step::run(&a)?,
                bench::Command::Epoch(a) => crate::bench::epoch::run(&a)?,
                _ => unreachable!("rush runs the other benchmarks"),
            };
            print!("{}", bench::table(&rows));
            Ok(ExitCode::SUCCESS)
        }
        _ => unreachable!("rush runs the commands that need no libtorch"),
    }
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

/// Runs `rush train` and `rush doctor`.
pub fn trainer(cmd: Command) -> anyhow::Result<ExitCode> {
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
            // Whether code sessions can be sandboxed here (`rush::code::sandbox`).
            let sandbox = rush::code::sandbox::Bwrap::probe();
            let sandbox_line = match &sandbox {
                Ok(b) => format!("code sessions: sandboxed by bubblewrap ({})", b.program.display()),
                Err(why) => format!("code sessions: refused unless the daemon's config says `sandbox: off`: {why}"),
            };
            if json {
                let mut value = serde_json::to_value(&report).context("serialising the report")?;
                if let Some(map) = value.as_object_mut() {
                    map.insert(
                        "code_sandbox".into(),
                        serde_json::json!({"ok": sandbox.is_ok(), "detail": sandbox_line}),
                    );
                }
                println!("{}", serde_json::to_string_pretty(&value).context("serialising the report")?);
            } else {
                print!("{}", report.to_text());
                println!("{sandbox_line}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
