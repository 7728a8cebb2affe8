//! `rush bench train`'s arguments (it runs in `rush-train`: `rush_trainer::bench::train_step`), and the parsers of a
//! model and a precision the training benchmarks share.

use std::path::PathBuf;

use crate::core::spec::{ModelName, Precision};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// resnet18, resnet34, resnet50, baseline_cnn or efficientnet_b0.
    #[arg(long, default_value = "resnet18", value_parser = parse_model)]
    pub model: ModelName,
    /// Input side in pixels.
    #[arg(long, default_value_t = 64)]
    pub size: i64,
    #[arg(long, default_value_t = 32)]
    pub batch: i64,
    /// Timed steps (after the warm-up steps).
    #[arg(long, default_value_t = 10)]
    pub steps: u32,
    #[arg(long, default_value_t = 3)]
    pub warmup: u32,
    /// fp32 or bf16 (bf16 autocast applies on CUDA only).
    #[arg(long, default_value = "fp32", value_parser = parse_precision)]
    pub precision: Precision,
    /// `cpu`, `cuda` or `cuda:N` (default: the GPU if any, else the CPU).
    #[arg(long)]
    pub device: Option<String>,
    /// Also time the reference under torch.compile (GPU runs; slow to compile).
    #[arg(long)]
    pub compile: bool,
    /// Also time the trainer with each speed change turned off alone (one row per change).
    #[arg(long)]
    pub ablation: bool,
    /// Skip the PyTorch reference (rush's figure only).
    #[arg(long)]
    pub no_reference: bool,
    /// The Python with torch for the reference (default: $RUSH_PYTHON, else python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
}

pub fn parse_model(s: &str) -> Result<ModelName, String> {
    ModelName::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| {
        let names: Vec<&str> = ModelName::ALL.iter().map(|m| m.as_str()).collect();
        format!("unknown model {s:?}; one of {}", names.join(", "))
    })
}

pub fn parse_precision(s: &str) -> Result<Precision, String> {
    match s {
        "fp32" => Ok(Precision::Fp32),
        "bf16" => Ok(Precision::Bf16),
        _ => Err(format!("unknown precision {s:?}; fp32 or bf16")),
    }
}
