//! `rush dataset ...`: the synthetic generator, the emoji builder, and the daemon's dataset registry and board.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::Global;

mod registry;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a synthetic sticker dataset in the AI RUSH layout.
    Synth(SynthArgs),
    /// Build a dataset from a recipe (the emoji art styles).
    Build(BuildArgs),
    /// List registered datasets.
    Ls {
        /// JSON, every field.
        #[arg(short = 'j', long)]
        json: bool,
    },
    /// Register a dataset in the AI RUSH layout; its test labels move where only the scorer reads them.
    Push {
        /// The name to register it under (letters, digits, - _ .).
        name: String,
        /// The dataset folder (holding `train/` and, optionally, `test/`).
        path: PathBuf,
        /// Move the folder instead of copying it.
        #[arg(long)]
        r#move: bool,
    },
    /// Show a dataset's leaderboard.
    Board {
        /// A registered dataset.
        dataset: String,
        /// Show private scores: only for a dataset the daemon's config reveals (`reveal_private`, after the deadline).
        #[arg(long)]
        private: bool,
        #[arg(short = 'j', long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// The folder to write (it must be empty or absent).
    #[arg(long)]
    pub out: PathBuf,
    /// Training stickers.
    #[arg(long, default_value_t = 2000)]
    pub train: u64,
    /// Test stickers.
    #[arg(long, default_value_t = 500)]
    pub test: u64,
    /// The same seed writes the same dataset, byte for byte.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stickers per package.
    #[arg(long, default_value_t = 40)]
    pub per_package: u64,
    /// Number of distinct classes (first tags) drawn; at most 350.
    #[arg(long, default_value_t = 350)]
    pub classes: u32,
    /// Image width in pixels.
    #[arg(long, default_value_t = 370)]
    pub width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 320)]
    pub height: u32,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Share of training packages marked `valid` in packages.tsv (0: none; the split is then seeded by package).
    #[arg(long, default_value_t = 0.1)]
    pub valid_fraction: f64,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The recipe name (`emoji`) or a recipe file.
    pub recipe: String,
    /// The dataset folder to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Image size in pixels.
    #[arg(long, default_value_t = 128)]
    pub size: u32,
    /// Where the npm tarballs are (default: the setup cache).
    #[arg(long, env = "RUSH_NPM_CACHE")]
    pub tarballs: Option<PathBuf>,
    /// Only these styles (comma-separated), for quick builds.
    #[arg(long, value_delimiter = ',')]
    pub styles: Vec<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Replace an existing dataset at --out.
    #[arg(long)]
    pub force: bool,
}

pub fn run(global: &Global, cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Synth(args) => synth(args),
        Command::Ls { json } => registry::ls(global, json),
        Command::Push { name, path, r#move } => registry::push(global, &name, &path, r#move),
        Command::Build(args) => build(args),
        Command::Board { dataset, private, json } => super::client::submit::board(global, &dataset, private, json),
    }
}

fn synth(args: SynthArgs) -> anyhow::Result<ExitCode> {
    use crate::data::synth;
    let opts = synth::SynthOptions {
        out: args.out,
        train: args.train,
        test: args.test,
        seed: args.seed,
        per_package: args.per_package,
        classes: args.classes,
        width: args.width,
        height: args.height,
        valid_fraction: args.valid_fraction,
        threads: args.threads,
    };
    let progress = synth::progress_bar(opts.train + opts.test, args.quiet);
    let report = synth::generate(&opts, &progress).context("dataset synth")?;
    println!(
        "wrote {} stickers ({:.1} MB of PNG) to {} in {:.1} s: {:.0} images/s on {} threads",
        report.images,
        report.bytes as f64 / 1e6,
        opts.out.display(),
        report.seconds,
        report.images_per_second(),
        report.threads
    );
    Ok(ExitCode::SUCCESS)
}

/// `rush dataset build`: renders the recipe's styles into the AI RUSH layout and prints per-style counts and speed.
fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    use crate::data::emoji::{BuildOptions, Recipe};
    let recipe = Recipe::load(&args.recipe).with_context(|| format!("reading recipe `{}`", args.recipe))?;
    let options = BuildOptions {
        recipe,
        out: args.out,
        size: args.size,
        tarballs: args.tarballs.unwrap_or_else(crate::data::emoji::npm::default_cache_dir),
        styles: args.styles,
        threads: args.threads,
        progress: !args.quiet,
        force: args.force,
    };
    let report = crate::data::emoji::build(&options).with_context(|| format!("building {}", options.out.display()))?;
    println!("{report}");
    for style in &report.styles {
        if let Some(licence) = &style.licence_mismatch {
            eprintln!(
                "note: {}: the recipe says {}, the tarball's package.json says {licence}",
                style.name, style.licence
            );
        }
        for failure in style.failures.iter().take(5) {
            eprintln!("skipped {}/{}: {}", style.name, failure.sticker_id, failure.reason);
        }
    }
    Ok(ExitCode::SUCCESS)
}
