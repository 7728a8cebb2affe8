//! The training child, `rush train <session dir>`: data loading, models, the loop, checkpoints and events.

use std::path::PathBuf;

/// Options of `rush train` beyond the session folder.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    pub session_dir: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`; default: the GPU given by `CUDA_VISIBLE_DEVICES` if any, else the CPU.
    pub device: Option<String>,
}
