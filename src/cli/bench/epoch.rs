//! `rush bench epoch`'s arguments (it runs in `rush-train`: `rush_trainer::bench::epoch`).

use std::path::PathBuf;

use super::train_step::{parse_model, parse_precision};
use crate::core::spec::{ModelName, Precision};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A dataset in the AI RUSH layout (default: `rush dataset synth` of --images 370x320 stickers in a temp folder).
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Stickers to synthesise (default: 100,000 on a GPU, 800 on the CPU).
    #[arg(long)]
    pub images: Option<u64>,
    /// Default: resnet50 on a GPU, baseline_cnn on the CPU.
    #[arg(long, value_parser = parse_model)]
    pub model: Option<ModelName>,
    /// Image side (default: 128 on a GPU, 32 on the CPU).
    #[arg(long)]
    pub size: Option<u32>,
    /// Batch size (default: 256 on a GPU, 64 on the CPU).
    #[arg(long)]
    pub batch: Option<u32>,
    #[arg(long, default_value_t = 2)]
    pub epochs: u32,
    #[arg(long, default_value = "bf16", value_parser = parse_precision)]
    pub precision: Precision,
    /// `cpu`, `cuda` or `cuda:N` (default: the GPU if any, else the CPU).
    #[arg(long)]
    pub device: Option<String>,
    /// rush's data path: auto, on (dataset on the device) or off (stream from the image cache).
    #[arg(long, default_value = "auto")]
    pub resident: String,
    /// DataLoader workers of the reference (default: all cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Stickers the reference trains on per epoch (default: all on a GPU, 400 on the CPU; a rate needs no full pass
    /// of a slow pipeline).
    #[arg(long)]
    pub reference_images: Option<u64>,
    /// Skip the PyTorch reference.
    #[arg(long)]
    pub no_reference: bool,
    /// The Python with torch and pillow for the reference (default: $RUSH_PYTHON, else python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Keep the temporary folder (printed).
    #[arg(long)]
    pub keep: bool,
}
