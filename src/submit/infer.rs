//! `rush infer` (hidden): the child a submission job starts to turn one checkpoint into class probabilities on the
//! dataset's test split and validation split, written as float16 `.npy` files for the probability cache.
//!
//! Like the training child it is given a session folder (its `spec.yaml` names the dataset folder, the model, the
//! image size and the validation split's seed) and an output folder, nothing else: it reads test images in
//! `test_order.csv` order and never test labels. Batched, bf16 autocast on CUDA, fp32 on the CPU, optionally averaged
//! with the horizontal mirror (flip test-time augmentation). An image that cannot be decoded is predicted from a blank
//! (white) image and counted, so rows always line up with the order.
//!
//! Output, in `--out`: `test.npy` (and `valid.npy` unless a dry run), `(rows, 350)` `<f2` probabilities, and
//! `infer.json` ([`InferReport`]) written last: with it the folder is complete.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::nn::{ModuleT, VarStore};
use tch::{Kind, Tensor};

use super::Tta;
use super::npy::{self, NpyError};
use super::probs::order_digest;
use crate::core::score::dry_run_indices;
use crate::core::spec::{Precision, ResolvedSpec, SpecError};
use crate::data::layout::{DataError, NUM_TAGS, read_test, read_train};
use crate::data::split::split_by_package;
use crate::home::SessionDir;
use crate::train::checkpoint::{self, CheckpointIoError};
use crate::train::device::{self, DeviceError, Execution};
use crate::train::models;
use crate::train::run::Normalizer;

/// The report's file name in the output folder.
pub const REPORT: &str = "infer.json";

/// Images per forward pass.
const BATCH: usize = 128;

/// What `rush infer` was asked.
#[derive(Debug, Clone)]
pub struct InferOptions {
    pub session_dir: PathBuf,
    pub epoch: u32,
    pub out: PathBuf,
    pub tta: Tta,
    /// Predict only the dry-run sample of the test split ([`dry_run_indices`]); no validation split.
    pub dry_run: bool,
    /// `cpu`, `cuda` or `cuda:N` (default: the GPU in `CUDA_VISIBLE_DEVICES`, else the CPU).
    pub device: Option<String>,
}

/// Why inference failed.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("dataset unreadable: {0}")]
    Dataset(#[from] DataError),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointIoError),
    #[error(transparent)]
    Npy(#[from] NpyError),
    #[error("libtorch error: {0}")]
    Torch(String),
    #[error("{path}: {message}")]
    Report { path: PathBuf, message: String },
}

/// `infer.json`: what was predicted, in which order, how fast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferReport {
    pub epoch: u32,
    pub tta: Tta,
    pub dry_run: bool,
    pub classes: usize,
    /// Rows of `test.npy`: every test sticker, or the dry-run sample.
    pub test_rows: usize,
    /// `order_digest` of the test stickers predicted (`package_id/sticker_id`, in row order).
    pub test_order: String,
    /// Rows of `valid.npy` (0 on a dry run).
    pub valid_rows: usize,
    /// `order_digest` of the validation stickers in row order (empty on a dry run).
    pub valid_order: String,
    /// Images that could not be decoded (predicted from a blank image).
    pub bad_images: usize,
    pub device: String,
    pub seconds: f64,
}

/// Runs inference as asked and writes the output folder.
pub fn run(opts: &InferOptions) -> Result<InferReport, InferError> {
    let started = Instant::now();
    let session = SessionDir::new(&opts.session_dir);
    let spec_path = session.spec();
    let text =
        std::fs::read_to_string(&spec_path).map_err(|source| InferError::Io { path: spec_path.clone(), source })?;
    let resolved = ResolvedSpec::from_yaml(&spec_path.display().to_string(), &text)?;
    let spec = &resolved.spec;

    let cuda_visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let device = device::choose(opts.device.as_deref(), cuda_visible.as_deref(), device::CudaView::probe())?;
    // Inference always autocasts to bf16 on CUDA; the CPU runs fp32.
    let ex = device::prepare(device, if device.is_cuda() { Precision::Bf16 } else { Precision::Fp32 });

    let vs = VarStore::new(device);
    let model = models::build(spec.model, &vs);
    checkpoint::load_weights(&vs, &session.checkpoint_weights(opts.epoch))?;
    let predictor = Predictor { model, ex, norm: Normalizer::new(device), size: spec.image_size, tta: opts.tta };

    std::fs::create_dir_all(&opts.out).map_err(|source| InferError::Io { path: opts.out.clone(), source })?;
    let bad = AtomicUsize::new(0);

    let test = read_test(&resolved.dataset_path)?;
    let mut test_samples: Vec<(String, PathBuf)> =
        test.samples.iter().map(|s| (format!("{}/{}", s.package_id, s.sticker_id), s.path.clone())).collect();
    if opts.dry_run {
        let all = std::mem::take(&mut test_samples);
        test_samples = dry_run_indices(all.len()).into_iter().map(|i| all[i].clone()).collect();
    }
    let test_probs = predictor.predict(&test_samples, &bad)?;
    npy::write_f16_matrix(&opts.out.join("test.npy"), test_samples.len(), NUM_TAGS, &test_probs)?;

    let (mut valid_rows, mut valid_order) = (0, String::new());
    if !opts.dry_run {
        let set = read_train(&resolved.dataset_path)?;
        let split = split_by_package(&set, spec.valid_fraction, spec.seed);
        let valid: Vec<(String, PathBuf)> = split
            .valid
            .iter()
            .map(|&i| {
                let s = &set.samples[i];
                (format!("{}/{}", s.package_id, s.sticker_id), s.path.clone())
            })
            .collect();
        let valid_probs = predictor.predict(&valid, &bad)?;
        npy::write_f16_matrix(&opts.out.join("valid.npy"), valid.len(), NUM_TAGS, &valid_probs)?;
        valid_rows = valid.len();
        valid_order = order_digest(valid.iter().map(|(k, _)| k.as_str()));
    }

    let report = InferReport {
        epoch: opts.epoch,
        tta: opts.tta,
        dry_run: opts.dry_run,
        classes: NUM_TAGS,
        test_rows: test_samples.len(),
        test_order: order_digest(test_samples.iter().map(|(k, _)| k.as_str())),
        valid_rows,
        valid_order,
        bad_images: bad.load(Ordering::Relaxed),
        device: device::name(device),
        seconds: started.elapsed().as_secs_f64(),
    };
    let path = opts.out.join(REPORT);
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| InferError::Report { path: path.clone(), message: e.to_string() })?;
    crate::daemon::write_atomic(&path, &json).map_err(|source| InferError::Io { path, source })?;
    Ok(report)
}

/// Reads a finished output folder's report.
pub fn read_report(out: &Path) -> Result<InferReport, InferError> {
    let path = out.join(REPORT);
    let bytes = std::fs::read(&path).map_err(|source| InferError::Io { path: path.clone(), source })?;
    serde_json::from_slice(&bytes).map_err(|e| InferError::Report { path, message: e.to_string() })
}

/// A loaded model and how to feed it.
struct Predictor {
    model: Box<dyn ModuleT>,
    ex: Execution,
    norm: Normalizer,
    size: u32,
    tta: Tta,
}

impl Predictor {
    /// Probabilities of `samples` (key, image path), row-major `(samples, NUM_TAGS)` f32.
    fn predict(&self, samples: &[(String, PathBuf)], bad: &AtomicUsize) -> Result<Vec<f32>, InferError> {
        let (size, side) = (self.size, self.size as usize);
        let decode = |chunk: &[(String, PathBuf)]| -> Vec<u8> {
            let images: Vec<Vec<u8>> = chunk
                .par_iter()
                .map(|(_, path)| match crate::data::image::load_rgb(path, size) {
                    Ok(img) => img,
                    Err(e) => {
                        if bad.fetch_add(1, Ordering::Relaxed) < 20 {
                            eprintln!("rush infer: {}: {e}; predicting from a blank image", path.display());
                        }
                        vec![255u8; side * side * 3]
                    }
                })
                .collect();
            images.concat()
        };
        let mut out = Vec::with_capacity(samples.len() * NUM_TAGS);
        // the next batches decode on another thread while the model runs on this one
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Vec<u8>)>(2);
            scope.spawn(move || {
                for chunk in samples.chunks(BATCH) {
                    if tx.send((chunk.len(), decode(chunk))).is_err() {
                        return;
                    }
                }
            });
            for (n, pixels) in rx {
                let probs = catch_unwind(AssertUnwindSafe(|| self.forward(&pixels, n)))
                    .map_err(|payload| InferError::Torch(panic_message(payload)))??;
                if probs.len() != n * NUM_TAGS {
                    return Err(InferError::Torch(format!("{} probabilities for a batch of {n}", probs.len())));
                }
                out.extend(probs);
            }
            Ok(())
        })?;
        if out.len() != samples.len() * NUM_TAGS {
            return Err(InferError::Torch(format!("{} rows predicted of {}", out.len() / NUM_TAGS, samples.len())));
        }
        Ok(out)
    }

    /// One batch of uint8 HWC pixels -> softmax probabilities (averaged with the mirror under flip TTA).
    fn forward(&self, pixels: &[u8], n: usize) -> Result<Vec<f32>, InferError> {
        let side = self.size as i64;
        tch::no_grad(|| {
            let host = Tensor::from_slice(pixels).view([n as i64, side, side, 3]);
            let x = self.norm.input(&host, &self.ex);
            let probs = |x: &Tensor| {
                self.ex.forward(|| self.model.forward_t(x, false)).to_kind(Kind::Float).softmax(-1, Kind::Float)
            };
            let mut p = probs(&x);
            if self.tta == Tta::Flip {
                p = (p + probs(&x.flip([3]))) * 0.5;
            }
            let p = p.to_device(tch::Device::Cpu).contiguous().view([-1]);
            Vec::<f32>::try_from(&p).map_err(|e| InferError::Torch(e.to_string()))
        })
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
        .chars()
        .take(2000)
        .collect()
}
