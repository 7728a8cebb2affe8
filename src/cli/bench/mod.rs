//! `rush bench`: the speed figures of issue 7, each measured side by side with its reference and printed as one table
//! row (figure, reference, ratio, goal, met). BENCHMARKS.md records the latest run; bench/gpu.sh runs the GPU rows.
//!
//! `train` and `epoch` time libtorch in this process, so they run in `rush-train` (`rush_trainer::bench`, which reads
//! the arguments defined here); the others run here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args as ClapArgs, Subcommand};

use crate::cli::Global;

pub mod daemon;
pub mod dashboard;
pub mod decode;
pub mod ensemble;
pub mod epoch;
pub mod recipe;
pub mod score;
pub mod spec_to_start;
pub mod train_step;

/// The reference scripts, shipped in `bench/` and compiled in so the binary runs them from anywhere.
pub const PIL_DECODE_PY: &str = include_str!("../../../bench/pil_decode.py");
pub const TORCH_TRAIN_STEP_PY: &str = include_str!("../../../bench/torch_train_step.py");
pub const TORCH_EPOCH_PY: &str = include_str!("../../../bench/torch_epoch.py");

#[derive(Debug, ClapArgs)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode + resize + composite of sticker PNGs on one core vs PIL (goal >= 6x).
    Decode(decode::Args),
    /// Training steps on inputs already on the device vs PyTorch eager (goal >= 1.0x on a GPU).
    Train(train_step::Args),
    /// Re-ensembling cached members' test probabilities with `core::ensemble` (goal < 1 s).
    Ensemble(ensemble::Args),
    /// Spec file saved -> child started with a free slot, through a real daemon (goal <= 1 s).
    SpecToStart(spec_to_start::Args),
    /// End-to-end training epochs on sticker PNGs vs a PyTorch DataLoader pipeline (first and later epochs).
    Epoch(epoch::Args),
    /// Metric ingest into the store while the dashboard serves (goal >= 500,000 points/s), and the chart of a
    /// 1,000,000-point series (goal <= 50 ms).
    Ingest(dashboard::IngestArgs),
    /// The sessions page's p99 at 10,000 sessions with 100 SSE clients connected (goal <= 50 ms).
    Dashboard(dashboard::DashboardArgs),
    /// An ensemble submission of K trained sessions through a real daemon, submit -> board (goal <= 60 s for
    /// 138,343 test stickers and 5 ResNet-50 members on an H200).
    Score(score::Args),
    /// The built-in trainer against its PyTorch twin (bench/torch_recipe.py) on the emoji dataset, same recipe and
    /// seeds: validation accuracy per epoch and test accuracy, per seed and the mean (an accuracy table, not a row).
    Recipe(recipe::Args),
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let rows = match args.command {
        Command::Decode(a) => vec![decode::run(&a)?],
        Command::Train(_) | Command::Epoch(_) => unreachable!("`rush bench train|epoch` runs in rush-train"),
        Command::Ensemble(a) => ensemble::run(&a)?,
        Command::SpecToStart(a) => vec![spec_to_start::run(global, &a)?],
        Command::Ingest(a) => dashboard::ingest(&a)?,
        Command::Dashboard(a) => dashboard::dashboard(&a)?,
        Command::Score(a) => vec![score::run(global, &a)?],
        Command::Recipe(a) => {
            recipe::run(&a)?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    print!("{}", table(&rows));
    Ok(ExitCode::SUCCESS)
}

/// One benchmark's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    /// rush's figure, with its unit.
    pub figure: String,
    /// The reference's figure, with its unit and what it is.
    pub reference: String,
    /// rush / reference for throughputs, reference / rush for times: above 1 means rush is faster.
    pub ratio: Option<f64>,
    pub goal: String,
    pub met: Option<bool>,
}

pub const HEADER: [&str; 6] = ["benchmark", "rush", "reference", "ratio", "goal", "met"];

/// A Markdown table (pasteable into BENCHMARKS.md).
pub fn table(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.figure.clone(),
                r.reference.clone(),
                r.ratio.map_or_else(|| "-".to_string(), |x| format!("{x:.2}x")),
                r.goal.clone(),
                match r.met {
                    Some(true) => "yes".to_string(),
                    Some(false) => "NO".to_string(),
                    None => "informative only".to_string(),
                },
            ]
        })
        .collect();
    markdown(&HEADER.map(String::from), &cells)
}

/// A Markdown table of `header` and `rows`, each column padded to its widest cell.
pub fn markdown(header: &[String], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().zip(&width).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(header);
    out += &line(&width.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>());
    for row in rows {
        out += &line(row);
    }
    out
}

/// The Python that runs the reference scripts: `--python`, else `$RUSH_PYTHON`, else `python3`.
pub fn python(flag: Option<&PathBuf>) -> PathBuf {
    flag.cloned()
        .or_else(|| std::env::var_os("RUSH_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// Runs a reference script (given as source) with `args`; returns its stdout's last line parsed as JSON.
pub fn run_reference(python: &std::path::Path, script: &str, args: &[String]) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running the reference with {}", python.display()))?;
    anyhow::ensure!(out.status.success(), "the reference script ({}) failed: {}", python.display(), out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("the reference printed {last:?}, not a JSON line"))
}

/// Runs a reference script that imports others: `main` and `files` ((name, source) pairs) are written to a temporary
/// folder and `main` runs from there with `args`; returns its stdout's last line parsed as JSON.
pub fn run_reference_files(
    python: &std::path::Path,
    main: (&str, &str),
    files: &[(&str, &str)],
    args: &[String],
) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let dir = std::env::temp_dir().join(format!("rush-bench-py-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, source) in files.iter().chain([&main]) {
        std::fs::write(dir.join(name), source).with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    let out = std::process::Command::new(python)
        .arg(dir.join(main.0))
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {} with {}", main.0, python.display()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    anyhow::ensure!(out.status.success(), "the reference {} ({}) failed: {}", main.0, python.display(), out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("the reference printed {last:?}, not a JSON line"))
}

/// The median of `values` (sorted in place); `None` when empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    (n > 0).then(|| if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_prints_the_ratio() {
        let row = Row {
            name: "decode".into(),
            figure: "100 img/s".into(),
            reference: "10 img/s".into(),
            ratio: Some(10.0),
            goal: ">= 6x".into(),
            met: Some(true),
        };
        let t = table(&[row]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{t}");
        assert!(lines[2].contains("| 10.00x |") && lines[2].contains("yes"), "{t}");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
