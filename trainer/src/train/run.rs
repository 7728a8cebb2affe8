//! The training loop of `rush train <session dir>`: read the resolved spec, pick the device, read and split the
//! dataset, build the model, resume if asked, then per epoch train, validate, checkpoint, and report each as an event.
//!
//! Reproducibility: every source of randomness in an epoch derives from (seed, epoch): the shuffle, each image's
//! augmentation, and torch's RNG (reseeded at the start of each epoch). The learning rate is a pure function of the
//! global step, and the optimizer state is saved exactly. So with one intra-op thread, a run stopped after epoch k and
//! resumed ends with the same weights, bit for bit, as a run that never stopped.
//!
//! Syncs: losses and accuracy counts accumulate on the device and are read only once per logging window (every few
//! steps; no `.item()` per step), which is also when a NaN/inf loss is noticed.
//!
//! Validation: each epoch's class probabilities on the validation split are kept and written with the checkpoint
//! (`checkpoints/<epoch>.valid.npy`, `submit::valid`), rows in the split's order as `rush infer` predicts them (an
//! image that cannot be decoded is predicted from a blank one, as there), so the daemon can analyse and ensemble
//! checkpoints without running inference.
//!
//! Weight averaging (`ema:`, `train::ema`): after every optimizer step the average moves towards the weights; each
//! epoch's validation, its probabilities and the checkpoint's weights file use the average (swapped in, then back),
//! while the state file keeps the raw weights, so resume stays exact. Batch mixing (`augment.mixup`,
//! `augment.cutmix`, `train::mix`): drawn per (seed, epoch, batch index), applied in the step to whatever batch the
//! data path made.
//!
//! Data: the images come from the dataset's decoded-image cache (`data::cache`, built on first use), streamed by
//! `train::loader`, or, when the uint8 dataset fits on the device, from `train::resident` (uploaded once, augmented
//! there). The time the steps wait for batches is reported per epoch.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

use crate::train::TrainOptions;
use crate::train::checkpoint::{self, CheckpointIoError, CheckpointMeta, Progress};
use crate::train::device::{self, DeviceError, Execution};
use crate::train::ema::{self, Ema, EmaError};
use crate::train::events::{EventSink, finite};
use crate::train::loader::{self, BadImages, Batch, BatchSource, Loader, LoaderSpec};
use crate::train::mix::{self, MixDraw};
use crate::train::models;
use crate::train::optim::{FlatParams, OptimError, Optimizer};
use crate::train::recipe::{self, Ablate, InputNorm};
use crate::train::resident::{self, ResidentEpoch, ResidentImages, ResidentMode};
use rush::core::event::{Event, PROGRESS_EVENTS_ENV};
use rush::core::progress::DecodeTicker;
use rush::core::schedule::learning_rate;
use rush::core::spec::{LossName, ResolvedSpec, Spec, SpecError};
use rush::data::cache::{self, ImageCache};
use rush::data::layout::{DataError, NUM_TAGS, Sample, read_train};
use rush::data::split::split_by_package;
use rush::home::SessionDir;
use rush::submit::npy::NpyError;
use rush::submit::probs::order_digest;

/// Why a run stopped early; the `failed` event carries this text.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {source}")]
    Session { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("dataset unreadable: {0}")]
    Dataset(#[from] DataError),
    #[error("dataset {path}: {message}")]
    Split { path: PathBuf, message: String },
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointIoError),
    #[error("checkpoint: validation predictions: {0}")]
    ValidPredictions(#[from] NpyError),
    #[error(transparent)]
    Optim(#[from] OptimError),
    #[error("ema: {0}")]
    Ema(#[from] EmaError),
    #[error(
        "{what} is not finite (NaN or inf: {value}) at {at}: the run diverged; lower optimizer.lr or add \
         schedule.warmup_epochs"
    )]
    NonFinite { what: &'static str, value: &'static str, at: String },
    #[error("out of memory with batch_size {batch_size} at image_size {image_size}: lower batch_size ({message})")]
    OutOfMemory { batch_size: u32, image_size: u32, message: String },
    #[error("libtorch error: {0}")]
    Torch(String),
    #[error("no image of epoch {epoch} could be decoded ({bad} bad images in all)")]
    NoImages { epoch: u32, bad: usize },
}

/// Runs the session in `opts.session_dir`, emitting events; a failure is emitted as `failed` and returned.
pub fn run(opts: &TrainOptions) -> Result<(), TrainError> {
    let session = SessionDir::new(&opts.session_dir);
    let mut sink = match EventSink::open(&session.events()) {
        Ok(sink) => sink,
        Err(source) => {
            let e = TrainError::Session { path: session.events(), source };
            eprintln!("rush train: failed: {e}");
            return Err(e);
        }
    };
    let result = train(&session, opts, &mut sink);
    if let Err(e) = &result {
        eprintln!("rush train: failed: {e}");
        sink.emit(Event::Failed { reason: e.to_string() });
    }
    result
}

/// Inputs in [0, 255] become `(x / 255 - mean) / std` per channel, as `x * scale + shift`: with the training split's
/// statistics (measured at the start of a run, recorded in every checkpoint's JSON), or ImageNet's.
pub(crate) struct Normalizer {
    scale: Tensor,
    shift: Tensor,
}

impl Normalizer {
    pub(crate) fn new(norm: &InputNorm, device: Device) -> Self {
        let InputNorm { mean, std } = *norm;
        let scale: Vec<f32> = std.iter().map(|s| 1.0 / (255.0 * s)).collect();
        let shift: Vec<f32> = mean.iter().zip(&std).map(|(m, s)| -m / s).collect();
        let shape = [1i64, 3, 1, 1];
        Self {
            scale: Tensor::from_slice(&scale).view(shape).to_device(device),
            shift: Tensor::from_slice(&shift).view(shape).to_device(device),
        }
    }

    /// `[n, H, W, 3]` in 0..255 (uint8 on the host, or already on the device from `train::resident`) -> normalised
    /// float `[n, 3, H, W]` on the device: NHWC strides (channels-last) when the execution wants them, else contiguous
    /// NCHW.
    pub(crate) fn input(&self, images: &Tensor, ex: &Execution) -> Tensor {
        let x = to_device(images, ex.device).to_kind(Kind::Float).permute([0, 3, 1, 2]);
        let x = x * &self.scale + &self.shift;
        if ex.channels_last { x } else { x.contiguous() }
    }
}

/// A host tensor on `device`, copied asynchronously (the loader pins batches bound for a GPU).
fn to_device(t: &Tensor, device: Device) -> Tensor {
    t.to_device_(device, t.kind(), true, false)
}

/// The loss of `logits` (fp32) for a batch: cross-entropy on the label with label smoothing, or binary cross-entropy
/// on all tags (targets smoothed towards 1/2), summed over tags and averaged over the batch.
fn loss_of(spec: &Spec, logits: &Tensor, labels: &Tensor, targets: Option<&Tensor>) -> Tensor {
    let smoothing = spec.loss.label_smoothing;
    match (spec.loss.name, targets) {
        (LossName::Bce, Some(targets)) => {
            let t = targets * (1.0 - smoothing) + smoothing / 2.0;
            logits.binary_cross_entropy_with_logits::<Tensor>(&t, None, None, Reduction::Sum) / logits.size()[0] as f64
        }
        _ => logits.cross_entropy_loss::<Tensor>(labels, None, Reduction::Mean, -100, smoothing),
    }
}

/// The log's words for the spec's batch mixing, if any: `cutmix (alpha 1, 50% of batches), else mixup (...)`.
fn mix_line(spec: &Spec) -> Option<String> {
    let say =
        |name: &str, m: &rush::core::spec::Mix| format!("{name} (alpha {}, {}% of batches)", m.alpha, m.prob * 100.0);
    let parts: Vec<String> = [("cutmix", &spec.augment.cutmix), ("mixup", &spec.augment.mixup)]
        .into_iter()
        .filter_map(|(name, m)| m.as_ref().map(|m| say(name, m)))
        .collect();
    (!parts.is_empty()).then(|| format!("{}; partners: the batch reversed", parts.join(", else ")))
}

/// Runs a piece of tensor work, turning libtorch's panics (tch panics on C++ errors) into errors, with out-of-memory
/// (CUDA's, or the CPU allocator's) named as such.
fn guarded<T>(spec: &Spec, f: impl FnOnce() -> T) -> Result<T, TrainError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = rush::core::format::panic_message(payload.as_ref());
        match out_of_memory(&message) {
            Some(summary) => {
                TrainError::OutOfMemory { batch_size: spec.batch_size, image_size: spec.image_size, message: summary }
            }
            None => TrainError::Torch(message.chars().take(2000).collect()),
        }
    })
}

/// libtorch's own sentence when an allocation failed (without the C++ stack that follows it), if one did.
fn out_of_memory(message: &str) -> Option<String> {
    const MARKERS: [&str; 3] = ["CUDA out of memory", "DefaultCPUAllocator: ", "out of memory"];
    let at = MARKERS.iter().find_map(|m| message.find(m))?;
    let rest = &message[at..];
    // tch's panic prints the C++ message escaped (`\n` as two characters) or with real line breaks.
    let end = rest.find("\\n").into_iter().chain(rest.find('\n')).min().unwrap_or(rest.len());
    let sentence = &rest[..end];
    (sentence.contains("memory")).then(|| sentence.chars().take(300).collect())
}

/// Device-side running sums, read on the host every few steps.
struct Accumulator {
    loss_sum: Tensor,
    correct: Tensor,
    images: u64,
}

impl Accumulator {
    fn new(device: Device) -> Self {
        Self {
            loss_sum: Tensor::zeros([], (Kind::Float, device)),
            correct: Tensor::zeros([], (Kind::Int64, device)),
            images: 0,
        }
    }

    fn add(&mut self, loss: &Tensor, correct: &Tensor, n: usize) {
        self.loss_sum = &self.loss_sum + loss * n as f64;
        self.correct = &self.correct + correct;
        self.images += n as u64;
    }

    /// (loss sum, correct, images) so far, and starts over. This is the sync point.
    fn take(&mut self) -> (f64, u64, u64) {
        let loss = self.loss_sum.double_value(&[]);
        let correct = self.correct.int64_value(&[]).max(0) as u64;
        let images = self.images;
        let _ = self.loss_sum.zero_();
        let _ = self.correct.zero_();
        self.images = 0;
        (loss, correct, images)
    }
}

/// Host-side sums over a span (a logging window, an epoch).
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    loss_sum: f64,
    correct: u64,
    images: u64,
}

impl Totals {
    fn add(&mut self, (loss_sum, correct, images): (f64, u64, u64)) {
        self.loss_sum += loss_sum;
        self.correct += correct;
        self.images += images;
    }
    fn loss(&self) -> f64 {
        if self.images == 0 { 0.0 } else { self.loss_sum / self.images as f64 }
    }
    fn acc(&self) -> f64 {
        if self.images == 0 { 0.0 } else { self.correct as f64 / self.images as f64 }
    }
}

/// A float tensor's values, row-major, on the host.
fn host_values(t: &Tensor) -> Result<Vec<f32>, TrainError> {
    let flat = t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous().view([-1]);
    Vec::<f32>::try_from(&flat).map_err(|e| TrainError::Torch(e.to_string()))
}

fn nan_or_inf(x: f64) -> &'static str {
    if x.is_nan() { "NaN" } else { "inf" }
}

fn share(part: Duration, whole: Duration) -> f64 {
    if whole.is_zero() { 0.0 } else { (part.as_secs_f64() / whole.as_secs_f64()).clamp(0.0, 1.0) }
}

/// Everything one run holds.
struct Trainer<'a> {
    session: &'a SessionDir,
    resolved: ResolvedSpec,
    ex: Execution,
    samples: Arc<[Sample]>,
    train_idx: Vec<usize>,
    /// Ascending, as the split lists them.
    valid_idx: Vec<usize>,
    /// `order_digest` of the validation keys `package_id/sticker_id`, in `valid_idx` order.
    valid_order: String,
    vs: VarStore,
    model: Box<dyn ModuleT>,
    flat: FlatParams,
    optimizer: Optimizer,
    /// The input statistics (recorded in each checkpoint) and their normaliser.
    input_norm: InputNorm,
    /// The moving average of the weights (`ema:`), if the spec asks for one.
    ema: Option<Ema>,
    norm: Normalizer,
    /// Earlier recipe choices restored for `rush bench recipe --ablate`.
    ablate: Ablate,
    pool: Arc<rayon::ThreadPool>,
    bad: Arc<BadImages>,
    /// The decoded images of `samples` at the spec's size (`None` when the cache cannot be used: decode per epoch).
    cache: Option<Arc<ImageCache>>,
    /// The same images on the device, when they fit there.
    resident: Option<Rc<ResidentImages>>,
    steps_per_epoch: u64,
    total_steps: u64,
    /// Steps between `step` events.
    log_every: u64,
    /// Steps between host reads of the running loss (the NaN check).
    sync_every: u64,
    /// The progress line every few seconds.
    progress: super::progress::Progress,
}

fn train(session: &SessionDir, opts: &TrainOptions, sink: &mut EventSink) -> Result<(), TrainError> {
    let spec_path = session.spec();
    let text = std::fs::read_to_string(&spec_path)
        .map_err(|source| TrainError::Session { path: spec_path.clone(), source })?;
    let resolved = ResolvedSpec::from_yaml(&spec_path.display().to_string(), &text)?;
    let spec = resolved.spec.clone();

    let cuda_visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let device = device::choose(opts.device.as_deref(), cuda_visible.as_deref(), device::CudaView::probe())?;
    let ex = device::prepare_training(device, spec.precision, spec.image_size);

    let set = read_train(&resolved.dataset_path)?;
    if !set.problems.is_empty() {
        eprintln!("rush train: {} problem(s) in the dataset, skipped:", set.problems.len());
        for p in set.problems.iter().take(10) {
            eprintln!("  {p}");
        }
    }
    let split = split_by_package(&set, spec.valid_fraction, spec.seed);
    let split_err = |message: String| TrainError::Split { path: resolved.dataset_path.clone(), message };
    if split.train.is_empty() {
        return Err(split_err("the training split is empty".into()));
    }
    if split.valid.is_empty() {
        return Err(split_err(format!(
            "the validation split is empty ({} packages); name validation packages in packages.tsv or add packages",
            set.packages.len()
        )));
    }
    let valid_keys: Vec<String> =
        split.valid.iter().map(|&i| format!("{}/{}", set.samples[i].package_id, set.samples[i].sticker_id)).collect();
    let valid_order = order_digest(valid_keys.iter().map(String::as_str));
    let samples: Arc<[Sample]> = set.samples.into();

    let ablate = recipe::ablate_from_env();
    if let Some(line) = ablate.describe() {
        eprintln!("rush train: {line}");
    }
    tch::manual_seed(spec.seed as i64);
    let vs = VarStore::new(device);
    let init = if ablate.tch_init { models::Init::Tch } else { models::Init::Pytorch };
    let model = models::build_with(spec.model, &vs, init);
    if let Some(init) = &resolved.init_from {
        checkpoint::load_weights(&vs, init)?;
        eprintln!("rush train: initial weights from {}", init.display());
    }
    let flat = FlatParams::new(&vs, ex.channels_last)?;
    let optimizer = Optimizer::new(&spec.optimizer, &flat);
    let ema = spec.ema.as_ref().map(|e| Ema::new(e.decay, &vs, &flat)).transpose()?;

    let steps_per_epoch = loader::steps_per_epoch(split.train.len(), spec.batch_size as usize);
    let total_steps = steps_per_epoch * u64::from(spec.epochs);
    // A few hundred `step` events per run; on the GPU never a host read every step.
    let log_every = (total_steps / 300).max(if device.is_cuda() { 10 } else { 1 });
    // Host reads of the running sums only every `log_every` steps: one sync per logging window, never per step.
    let sync_every = log_every;
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("rush-decode-{i}"))
        .build()
        .map_err(|e| TrainError::Torch(format!("cannot start decode threads: {e}")))?;

    let pool = Arc::new(pool);
    let bad = Arc::new(BadImages::default());
    let cache = open_cache(&resolved.dataset_path, &samples, spec.image_size, &pool, &bad, sink);
    let resident = cache.as_ref().and_then(|cache| place_on_device(cache, &samples, &spec, device));
    let input_norm = if ablate.imagenet_norm {
        InputNorm::IMAGENET
    } else {
        input_statistics(cache.as_deref(), &samples, &split.train, spec.image_size, &pool)
    };
    eprintln!(
        "rush train: inputs normalised by mean {:.3?} std {:.3?} ({})",
        input_norm.mean,
        input_norm.std,
        if ablate.imagenet_norm { "ImageNet's" } else { "the training split's" }
    );

    let mut trainer = Trainer {
        session,
        resolved,
        ex,
        samples,
        train_idx: split.train,
        valid_idx: split.valid,
        valid_order,
        vs,
        model,
        flat,
        optimizer,
        input_norm,
        norm: Normalizer::new(&input_norm, device),
        ablate,
        ema,
        pool,
        bad,
        cache,
        resident,
        steps_per_epoch,
        total_steps,
        log_every,
        sync_every,
        progress: super::progress::Progress::new(),
    };
    trainer.run(sink)
}

/// The dataset's decoded-image cache at `side`, reused or built now (`data::cache`); images that fail to decode are
/// recorded as bad. A build reports its progress about once a second: a log line, and a `decoding` event when the
/// daemon asked for them (`core::event::PROGRESS_EVENTS_ENV`). `None` (and a log line) when it cannot be used: the
/// loader then decodes every epoch.
fn open_cache(
    dataset: &std::path::Path,
    samples: &[Sample],
    side: u32,
    pool: &rayon::ThreadPool,
    bad: &BadImages,
    sink: &mut EventSink,
) -> Option<Arc<ImageCache>> {
    let Some(file) = cache::cache_file(dataset, "train", side) else {
        eprintln!("rush train: image cache off (RUSH_IMAGE_CACHE=off); decoding every image every epoch");
        return None;
    };
    let paths: Vec<PathBuf> = samples.iter().map(|s| s.path.clone()).collect();
    let started = Instant::now();
    let mut ticker = DecodeTicker::new(paths.len() as u64, 1.0);
    let events = std::env::var_os(PROGRESS_EVENTS_ENV).is_some_and(|v| v == "1");
    let built = ImageCache::open_or_build_with(&file, &paths, side, pool, &mut |run| {
        let done = (run.first + run.len()) as u64;
        if let Some(p) = ticker.tick(done, started.elapsed().as_secs_f64()) {
            eprintln!("rush train: image cache: {}", p.line());
            if events {
                sink.emit(Event::Decoding { done: p.done, total: p.total, seconds: p.seconds });
            }
        }
    });
    match built {
        Ok((cache, report)) => {
            if let Some(reason) = &report.rebuilt_because {
                eprintln!("rush train: image cache {} was rebuilt: {reason}", file.display());
            }
            if report.built {
                eprintln!(
                    "rush train: image cache {}: decoded {} images at {side} px in {:.1} s ({:.0} img/s)",
                    file.display(),
                    report.decoded,
                    report.seconds,
                    report.decoded as f64 / report.seconds.max(1e-9)
                );
            } else {
                eprintln!("rush train: image cache {}: reused ({} images)", file.display(), cache.len());
            }
            for (index, message) in report.failures {
                bad.record(index, message);
            }
            // A reused file knows its undecodable images too (without the decoder's message).
            for (index, sample) in samples.iter().enumerate().filter(|(i, _)| !cache.is_ok(*i) && !bad.is_bad(*i)) {
                let (path, file) = (sample.path.display(), file.display());
                bad.record(index, format!("{path}: could not be decoded when the image cache {file} was built"));
            }
            Some(Arc::new(cache))
        }
        Err(e) => {
            eprintln!("rush train: image cache unusable ({e}); decoding every image every epoch");
            None
        }
    }
}

/// The per-channel statistics of the training split's images ([`recipe::norm_sample`] of them): read from the image
/// cache, or decoded when there is none. ImageNet's when none can be read.
fn input_statistics(
    cache: Option<&ImageCache>,
    samples: &[Sample],
    train: &[usize],
    side: u32,
    pool: &rayon::ThreadPool,
) -> InputNorm {
    let chosen = recipe::norm_sample(train);
    let measured = match cache {
        Some(cache) => InputNorm::of_images(chosen.iter().filter_map(|&i| cache.image(i))),
        None => {
            use rayon::prelude::*;
            let images: Vec<Vec<u8>> = pool.install(|| {
                chosen
                    .par_iter()
                    .take(2_000)
                    .filter_map(|&i| rush::data::image::load_rgb(&samples[i].path, side).ok())
                    .collect()
            });
            InputNorm::of_images(images.iter().map(Vec::as_slice))
        }
    };
    measured.unwrap_or(InputNorm::IMAGENET)
}

/// Uploads the cached images to the device when they fit there (`train::resident`); logs the choice.
fn place_on_device(cache: &ImageCache, samples: &[Sample], spec: &Spec, device: Device) -> Option<Rc<ResidentImages>> {
    let mode = match ResidentMode::parse(std::env::var("RUSH_DEVICE_DATA").ok().as_deref()) {
        Ok(mode) => mode,
        Err(e) => {
            eprintln!("rush train: {e}; using auto");
            ResidentMode::Auto
        }
    };
    let needed = ResidentImages::bytes(cache.len(), spec.image_size);
    let (yes, why) = resident::decide(mode, device.is_cuda(), needed, resident::free_memory(device));
    if !yes {
        eprintln!("rush train: data: streaming from the image cache ({why})");
        return None;
    }
    let started = Instant::now();
    match guarded(spec, || ResidentImages::upload(cache, samples, device)) {
        Ok(Ok(images)) => {
            eprintln!(
                "rush train: data: {} images on {} ({why}; uploaded in {:.1} s), augmented there",
                cache.len(),
                device::name(device),
                started.elapsed().as_secs_f64()
            );
            Some(Rc::new(images))
        }
        Ok(Err(e)) => {
            eprintln!("rush train: data: upload to {} failed ({e}); streaming instead", device::name(device));
            None
        }
        Err(e) => {
            eprintln!("rush train: data: upload to {} failed ({e}); streaming instead", device::name(device));
            None
        }
    }
}

impl Trainer<'_> {
    fn spec(&self) -> &Spec {
        &self.resolved.spec
    }

    /// The training augmentation: the spec's, in floats (bytes under `RUSH_RECIPE_ABLATE=byte-augment`).
    fn plan(&self) -> crate::train::augment::Plan {
        crate::train::augment::Plan { spec: self.spec().augment.clone(), bytes: self.ablate.byte_augment }
    }

    /// Loads the newest complete checkpoint when resuming; returns (first epoch to train, best val_acc so far).
    fn resume(&mut self) -> Result<(u32, f64), TrainError> {
        let epochs = checkpoint::complete_epochs(self.session)?;
        let Some(&last) = epochs.last() else { return Ok((1, 0.0)) };
        if !self.spec().resume {
            eprintln!("rush train: resume is off; starting over (checkpoints up to epoch {last} will be overwritten)");
            return Ok((1, 0.0));
        }
        let meta = checkpoint::load_meta(&self.session.checkpoint_meta(last))?;
        // The run goes on with the statistics it started with.
        if let Some(norm) = meta.input_norm.filter(|_| !self.ablate.imagenet_norm) {
            self.input_norm = norm;
            self.norm = Normalizer::new(&norm, self.ex.device);
        }
        if meta.spec_hash != self.spec().hash() {
            eprintln!("rush train: warning: checkpoint {last} was written under a different spec (hash differs)");
        }
        checkpoint::load_weights(&self.vs, &self.session.checkpoint_weights(last))?;
        let state_path = self.session.checkpoint_state(last);
        let (progress, tensors) = checkpoint::load_state(&state_path)?;
        if progress.epoch != last {
            return Err(CheckpointIoError::Mismatch {
                path: state_path,
                message: format!("says epoch {}, its name says {last}", progress.epoch),
            }
            .into());
        }
        if progress.seed != self.spec().seed {
            eprintln!(
                "rush train: warning: checkpoint {last} used seed {}, the spec says {}",
                progress.seed,
                self.spec().seed
            );
        }
        self.optimizer.load_state(&self.flat, &tensors)?;
        // The weights file holds the average when `ema:` is on; the state file the raw weights training goes on from.
        match &mut self.ema {
            Some(ema) => {
                if !ema.resume(&self.vs, &tensors)? {
                    eprintln!(
                        "rush train: checkpoint {last} has no EMA state (written without `ema:`): the average starts \
                         over from its weights"
                    );
                }
            }
            None => {
                if ema::load_raw(&self.vs, &tensors)? {
                    eprintln!(
                        "rush train: checkpoint {last} was written with `ema:` on; going on from its raw weights, \
                         without the average"
                    );
                }
            }
        }
        let mut best = 0.0f64;
        for e in &epochs {
            if let Ok(m) = checkpoint::load_meta(&self.session.checkpoint_meta(*e)) {
                best = best.max(m.val_acc);
            }
        }
        eprintln!("rush train: resuming after checkpoint {last} (step {})", progress.step);
        Ok((last + 1, best))
    }

    fn run(&mut self, sink: &mut EventSink) -> Result<(), TrainError> {
        let (start_epoch, mut best) = self.resume()?;
        let spec = self.spec().clone();
        let mut classes: Vec<u16> =
            self.train_idx.iter().filter_map(|&i| self.samples[i].tags.first().copied()).collect();
        classes.sort_unstable();
        classes.dedup();
        let device = device::name(self.ex.device);
        eprintln!(
            "rush train: {} on {device}{} | {} train / {} valid images, {} classes | {} epoch{} x {} steps",
            spec.model.as_str(),
            match (self.ex.autocast_bf16, self.ex.channels_last) {
                (true, true) => " (bf16 autocast, channels-last)",
                (true, false) => " (bf16 autocast)",
                (false, true) => " (fp32, channels-last)",
                (false, false) => " (fp32)",
            },
            self.train_idx.len(),
            self.valid_idx.len(),
            classes.len(),
            spec.epochs,
            if spec.epochs == 1 { "" } else { "s" },
            self.steps_per_epoch
        );
        if let Some(ema) = &self.ema {
            eprintln!(
                "rush train: EMA of the weights on, decay {} (warm-up min(decay, (1 + n) / (10 + n))): validation and \
                 checkpoints use the average",
                ema.decay()
            );
        }
        if let Some(line) = mix_line(&spec) {
            eprintln!("rush train: batch mixing: {line}");
        }
        sink.emit(Event::Started {
            device,
            params: models::parameter_count(&self.vs),
            train_size: self.train_idx.len() as u64,
            valid_size: self.valid_idx.len() as u64,
            classes: classes.len() as u32,
            epochs: spec.epochs,
            steps_per_epoch: self.steps_per_epoch,
            start_epoch,
        });
        self.progress.start(u64::from(start_epoch.saturating_sub(1)) * self.steps_per_epoch);
        // A sweep's trial under ASHA stops at its next rung, checkpoint written, and waits for the rung's decision.
        let pause_after = spec.searcher.as_ref().and_then(|s| s.pause_after(start_epoch, spec.epochs));
        for epoch in start_epoch..=spec.epochs {
            let started = Instant::now();
            let (train, waited, data_wait) = self.train_epoch(epoch, sink)?;
            // With `ema:`, the average is validated and saved as the weights; the raw weights come back after.
            self.swap_ema()?;
            let (valid, valid_probs) = self.validate()?;
            if !valid.loss().is_finite() {
                let (value, at) = (nan_or_inf(valid.loss()), format!("the end of epoch {epoch}"));
                return Err(TrainError::NonFinite { what: "validation loss", value, at });
            }
            let seconds = started.elapsed().as_secs_f64();
            eprintln!(
                "rush train: epoch {epoch}/{}: train loss {:.4} acc {:.4} | val loss {:.4} acc {:.4} | {seconds:.1} s, \
                 {:.0} img/s, data wait {:.2} s ({:.0}%)",
                spec.epochs,
                train.loss(),
                train.acc(),
                valid.loss(),
                valid.acc(),
                train.images as f64 / seconds.max(1e-9),
                waited.as_secs_f64(),
                data_wait * 100.0
            );
            sink.emit(Event::Epoch {
                epoch,
                train_loss: finite(train.loss()),
                train_acc: train.acc(),
                val_loss: finite(valid.loss()),
                val_acc: valid.acc(),
                seconds,
                data_wait,
                data_wait_s: Some(waited.as_secs_f64()),
            });
            let bytes = self.save_checkpoint(epoch, &train, &valid, &valid_probs)?;
            self.swap_ema()?;
            best = best.max(valid.acc());
            sink.emit(Event::Checkpoint {
                name: epoch.to_string(),
                path: format!("checkpoints/{epoch}.safetensors"),
                epoch,
                val_acc: valid.acc(),
                bytes,
                score: None,
                best_by: None,
            });
            if pause_after == Some(epoch) {
                eprintln!(
                    "rush train: paused after epoch {epoch}, a rung of the sweep's searcher: the daemon decides whether \
                     it goes on"
                );
                sink.emit(Event::Paused { epoch });
                return Ok(());
            }
        }
        if self.bad.count() > 0 {
            eprintln!("rush train: {} image(s) could not be decoded and were skipped", self.bad.count());
        }
        sink.emit(Event::Finished { epochs: spec.epochs, best_val_acc: best });
        Ok(())
    }

    /// The epoch's batches: from the device-resident dataset when there is one, else streamed by the loader.
    fn loader(&self, batches: Vec<Vec<usize>>, augment: bool, seed: u64) -> Box<dyn BatchSource> {
        let spec = self.spec();
        if let Some(resident) = &self.resident {
            return Box::new(ResidentEpoch::new(
                resident.clone(),
                self.samples.clone(),
                batches,
                augment.then(|| self.plan()),
                seed,
                spec.loss.name == LossName::Bce,
                self.ex.channels_last,
            ));
        }
        Box::new(Loader::spawn(
            self.samples.clone(),
            batches,
            LoaderSpec {
                image_size: spec.image_size,
                augment: augment.then(|| self.plan()),
                multi_hot: spec.loss.name == LossName::Bce,
                pin_for: self.ex.device.is_cuda().then_some(self.ex.device),
                prefetch: 4,
                seed,
                cache: self.cache.clone(),
            },
            self.pool.clone(),
            self.bad.clone(),
        ))
    }

    /// Trains one epoch; returns its totals, the time spent waiting for data and that time's share.
    fn train_epoch(&mut self, epoch: u32, sink: &mut EventSink) -> Result<(Totals, Duration, f64), TrainError> {
        let spec = self.spec().clone();
        tch::manual_seed(crate::train::augment::mix_seed(&[spec.seed, u64::from(epoch), 3]) as i64);
        let batches = loader::epoch_batches(&self.train_idx, spec.batch_size as usize, spec.seed, epoch);
        let mut loader = self.loader(batches, true, loader::augment_seed(spec.seed, epoch));
        let epoch_start = Instant::now();
        let mut acc = Accumulator::new(self.ex.device);
        let mut epoch_totals = Totals::default();
        let mut window = Totals::default();
        let mut window_start = (Instant::now(), Duration::ZERO);
        let first_step = u64::from(epoch - 1) * self.steps_per_epoch;
        let mut index = 0u64;
        while let Some(batch) = loader.next_batch() {
            let step = first_step + index;
            index += 1;
            let lr = learning_rate(spec.optimizer.lr, &spec.schedule, step, self.steps_per_epoch, self.total_steps);
            let mixing = mix::draw(&spec.augment, i64::from(spec.image_size), spec.seed, epoch, index - 1);
            let (loss, correct) = guarded(&spec, || self.train_step(&batch, lr, mixing.as_ref()))?;
            if step == 0 {
                self.flat.check_views()?;
                if let Some(ema) = &self.ema {
                    ema.check_views()?;
                }
            }
            acc.add(&loss, &correct, batch.len);
            let done = step + 1;
            let last_of_epoch = index == self.steps_per_epoch;
            if done % self.sync_every == 0 || last_of_epoch {
                let read = guarded(&spec, || acc.take())?;
                if !read.0.is_finite() {
                    let at = format!("step {done} (epoch {epoch})");
                    return Err(TrainError::NonFinite { what: "training loss", value: nan_or_inf(read.0), at });
                }
                window.add(read);
                epoch_totals.add(read);
            }
            if done % self.log_every == 0 || last_of_epoch {
                let elapsed = window_start.0.elapsed();
                let waited = loader.waited() - window_start.1;
                let img_per_s = if elapsed.is_zero() { 0.0 } else { window.images as f64 / elapsed.as_secs_f64() };
                sink.emit(Event::Step {
                    step: done,
                    epoch,
                    loss: finite(window.loss()),
                    lr,
                    img_per_s,
                    data_wait: share(waited, elapsed),
                });
                let line = rush::core::progress::StepProgress {
                    epoch,
                    epochs: spec.epochs,
                    step_in_epoch: index,
                    steps_per_epoch: self.steps_per_epoch,
                    loss: window.loss(),
                    img_per_s,
                    eta: None,
                };
                self.progress.tick(done, self.total_steps, line);
                window = Totals::default();
                window_start = (Instant::now(), loader.waited());
            }
        }
        if index == 0 {
            return Err(TrainError::NoImages { epoch, bad: self.bad.count() });
        }
        let read = guarded(&spec, || acc.take())?;
        epoch_totals.add(read);
        Ok((epoch_totals, loader.waited(), share(loader.waited(), epoch_start.elapsed())))
    }

    /// Forward, loss, backward, update (and the EMA's). Returns the (detached) batch loss and the count of correct
    /// top-1 predictions, both still on the device. A mixed batch (`mixing`) is mixed here, before normalisation,
    /// whichever path made it; its loss weighs both labels, and its accuracy counts against the dominant one.
    fn train_step(&mut self, batch: &Batch, lr: f64, mixing: Option<&MixDraw>) -> (Tensor, Tensor) {
        let x = match mixing {
            Some(d) => self.norm.input(&mix::apply(&to_device(&batch.images, self.ex.device), d), &self.ex),
            None => self.norm.input(&batch.images, &self.ex),
        };
        let labels = to_device(&batch.labels, self.ex.device);
        let targets = batch.targets.as_ref().map(|t| to_device(t, self.ex.device));
        self.flat.zero_grad();
        let logits = self.ex.forward(|| self.model.forward_t(&x, true)).to_kind(Kind::Float);
        let spec = &self.resolved.spec;
        let (loss, dominant) = match mixing {
            None => (loss_of(spec, &logits, &labels, targets.as_ref()), labels),
            Some(d) => {
                let loss = mix::loss(d, |reversed| match reversed {
                    false => loss_of(spec, &logits, &labels, targets.as_ref()),
                    true => loss_of(spec, &logits, &mix::partner(&labels), targets.as_ref().map(mix::partner).as_ref()),
                });
                (loss, if d.own_label_dominates() { labels } else { mix::partner(&labels) })
            }
        };
        loss.backward();
        self.optimizer.step(&mut self.flat, lr);
        if let Some(ema) = &mut self.ema {
            ema.update();
        }
        let correct = logits.detach().argmax(-1, false).eq_tensor(&dominant).sum(Kind::Int64);
        (loss.detach(), correct)
    }

    /// Exchanges the live weights and their average, when there is one (`train::ema`).
    fn swap_ema(&mut self) -> Result<(), TrainError> {
        let spec = self.spec().clone();
        match &mut self.ema {
            Some(ema) => guarded(&spec, || ema.swap()),
            None => Ok(()),
        }
    }

    /// The validation split's loss and accuracy, and its class probabilities: row-major `(valid, NUM_TAGS)` f32 in the
    /// split's order. They stay on the device until the end (one copy to the host per epoch, no sync per batch).
    fn validate(&mut self) -> Result<(Totals, Vec<f32>), TrainError> {
        let spec = self.spec().clone();
        let batches = loader::eval_batches(&self.valid_idx, spec.batch_size as usize);
        let mut loader = self.loader(batches, false, 0);
        let mut acc = Accumulator::new(self.ex.device);
        let mut probs: Vec<Tensor> = Vec::new();
        let mut indices: Vec<usize> = Vec::with_capacity(self.valid_idx.len());
        while let Some(batch) = loader.next_batch() {
            let (loss, correct, p) = guarded(&spec, || {
                tch::no_grad(|| {
                    let x = self.norm.input(&batch.images, &self.ex);
                    let labels = to_device(&batch.labels, self.ex.device);
                    let targets = batch.targets.as_ref().map(|t| to_device(t, self.ex.device));
                    let logits = self.ex.forward(|| self.model.forward_t(&x, false)).to_kind(Kind::Float);
                    let loss = loss_of(&spec, &logits, &labels, targets.as_ref());
                    let correct = logits.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64);
                    (loss, correct, logits.softmax(-1, Kind::Float))
                })
            })?;
            acc.add(&loss, &correct, batch.len);
            probs.push(p);
            indices.extend_from_slice(&batch.indices);
        }
        let mut totals = Totals::default();
        totals.add(guarded(&spec, || acc.take())?);
        let probs = guarded(&spec, || self.valid_probabilities(&probs, &indices))??;
        Ok((totals, probs))
    }

    /// The validation probabilities of every row of the split, from each batch's `(n, NUM_TAGS)` probabilities and
    /// the sample indices of its images; rows whose image could not be decoded get those of a blank (white) image,
    /// as `rush infer` predicts them.
    fn valid_probabilities(&self, parts: &[Tensor], indices: &[usize]) -> Result<Vec<f32>, TrainError> {
        let rows = self.valid_idx.len();
        let mut out = vec![0f32; rows * NUM_TAGS];
        let mut filled = vec![false; rows];
        if !parts.is_empty() {
            let values = host_values(&Tensor::cat(parts, 0))?;
            if values.len() != indices.len() * NUM_TAGS {
                let message = format!("{} validation probabilities for {} images", values.len(), indices.len());
                return Err(TrainError::Torch(message));
            }
            for (k, index) in indices.iter().enumerate() {
                let Ok(row) = self.valid_idx.binary_search(index) else {
                    return Err(TrainError::Torch(format!("sample {index} is not in the validation split")));
                };
                out[row * NUM_TAGS..(row + 1) * NUM_TAGS].copy_from_slice(&values[k * NUM_TAGS..(k + 1) * NUM_TAGS]);
                filled[row] = true;
            }
        }
        if filled.contains(&false) {
            let side = i64::from(self.spec().image_size);
            let white = Tensor::from_slice(&vec![255u8; (side * side * 3) as usize]).view([1, side, side, 3]);
            let blank = tch::no_grad(|| {
                let x = self.norm.input(&white, &self.ex);
                self.ex.forward(|| self.model.forward_t(&x, false)).to_kind(Kind::Float).softmax(-1, Kind::Float)
            });
            let blank = host_values(&blank)?;
            if blank.len() != NUM_TAGS {
                return Err(TrainError::Torch(format!("{} probabilities for a blank image", blank.len())));
            }
            for row in (0..rows).filter(|&r| !filled[r]) {
                out[row * NUM_TAGS..(row + 1) * NUM_TAGS].copy_from_slice(&blank);
            }
        }
        Ok(out)
    }

    fn save_checkpoint(
        &self,
        epoch: u32,
        train: &Totals,
        valid: &Totals,
        valid_probs: &[f32],
    ) -> Result<u64, TrainError> {
        let dir = self.session.checkpoints();
        std::fs::create_dir_all(&dir).map_err(|source| TrainError::Session { path: dir, source })?;
        let spec = self.spec();
        let step = u64::from(epoch) * self.steps_per_epoch;
        let bytes = checkpoint::save_weights(&self.vs, &self.session.checkpoint_weights(epoch))?;
        // With `ema:` the weights above are the average (swapped in), and the state keeps the raw weights.
        let mut state = self.optimizer.state_tensors(&self.flat);
        state.extend(self.ema.iter().flat_map(Ema::state_tensors));
        let state_bytes = checkpoint::save_state(
            &self.session.checkpoint_state(epoch),
            Progress { epoch, step, seed: spec.seed },
            state,
        )?;
        // before the JSON, which completes the checkpoint and records what the file holds
        let valid_record = rush::submit::valid::write(
            self.session,
            epoch,
            &self.valid_order,
            self.valid_idx.len(),
            NUM_TAGS,
            valid_probs,
        )?;
        let meta = CheckpointMeta {
            epoch,
            step,
            train_loss: finite(train.loss()),
            train_acc: train.acc(),
            val_loss: finite(valid.loss()),
            val_acc: valid.acc(),
            spec_hash: spec.hash(),
            model: spec.model.as_str().to_string(),
            image_size: spec.image_size,
            bytes,
            state_bytes,
            valid: Some(valid_record),
            input_norm: Some(self.input_norm),
        };
        checkpoint::save_meta(&self.session.checkpoint_meta(epoch), &meta)?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::out_of_memory;

    #[test]
    fn allocation_failures_are_named_without_the_stack() {
        let cpu = "called `Result::unwrap()` on an `Err` value: Torch(\"[enforce fail at alloc_cpu.cpp:127] err == 0. \
                   DefaultCPUAllocator: can't allocate memory: you tried to allocate 4362076160 bytes. Error code 12 \
                   (Cannot allocate memory)\\nframe #0: c10::ThrowEnforceNotMet(char const*)";
        assert_eq!(
            out_of_memory(cpu).as_deref(),
            Some(
                "DefaultCPUAllocator: can't allocate memory: you tried to allocate 4362076160 bytes. Error code 12 \
                 (Cannot allocate memory)"
            )
        );
        let cuda = "Torch(\"CUDA out of memory. Tried to allocate 2.00 GiB\nframe #0: x";
        assert_eq!(out_of_memory(cuda).as_deref(), Some("CUDA out of memory. Tried to allocate 2.00 GiB"));
        assert_eq!(out_of_memory("shape mismatch: [2, 3] vs [3, 2]"), None);
    }
}
