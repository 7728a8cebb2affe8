//! The daemon's children, the only code that names libtorch: the training child, `rush train <session dir>` (data
//! loading, models, the loop, checkpoints and events), and the inference child, `rush infer` ([`infer`]). Both run in
//! `rush-train`, which `rush` execs.
//!
//! The daemon starts one child per session with only its session folder (the resolved `spec.yaml` there names the
//! dataset); the child never reads test labels. Events go to stdout and `events.jsonl`, human logs to stderr.
//!
//! - [`infer`]: a checkpoint's class probabilities on the test and validation splits, for a submission;
//! - [`timing`]: the trainer's step timed on a fixed batch (`rush bench train-step`);
//! - [`run`]: the loop (resume, epochs, validation, checkpoints, failures as `failed` events);
//! - [`models`]: the baseline CNN, ResNet-18/34/50, EfficientNet-B0, all with 350 outputs;
//! - [`loader`] and [`augment`]: batches from the decoded-image cache (`data::cache`), augmented in parallel and
//!   prefetched; [`resident`]: the whole uint8 dataset on the device, augmented there with tensor ops;
//! - [`recipe`]: the input statistics, and the switch that restores earlier recipe choices for the ablation;
//! - [`mix`]: mixup and CutMix of a training batch, drawn per batch, applied in the step whatever path made it;
//! - [`optim`]: SGD / AdamW over parameters held in one flat buffer, with state we can save exactly;
//! - [`ema`]: an exponential moving average of the weights, which validation and checkpoints use;
//! - [`checkpoint`]: the per-epoch files, written atomically;
//! - [`device`]: CPU or GPU, bf16 autocast, channels-last; [`doctor`]: what libtorch and CUDA look like here.

use std::path::PathBuf;

pub mod augment;
pub mod checkpoint;
pub mod device;
pub mod doctor;
pub mod ema;
pub mod events;
pub mod infer;
pub mod loader;
pub mod mix;
pub mod models;
pub mod optim;
mod progress;
pub mod recipe;
pub mod resident;
pub mod run;
pub mod timing;

/// Options of `rush train` beyond the session folder.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    pub session_dir: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`; default: the GPU given by `CUDA_VISIBLE_DEVICES` if any, else the CPU.
    pub device: Option<String>,
}
