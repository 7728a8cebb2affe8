//! `rush infer` (hidden): the child a submission job starts to turn one checkpoint into class probabilities on the
//! dataset's test split and validation split, written as float16 `.npy` files for the probability cache.
//!
//! Like the training child it is given a session folder (its `spec.yaml` names the dataset folder, the model, the
//! image size and the validation split's seed) and an output folder, nothing else: it reads test images in
//! `test_order.csv` order and never test labels. Batched, bf16 autocast on CUDA (on the CPU: the spec's precision where
//! the CPU has native bf16, else fp32), optionally averaged
//! with the horizontal mirror (flip test-time augmentation). An image that cannot be decoded is predicted from a blank
//! (white) image and counted, so rows always line up with the order.
//!
//! Output, in `--out`: `test.npy` (and `valid.npy` unless a dry run), `(rows, 350)` `<f2` probabilities, and
//! `infer.json` (`submit::report::InferReport`) written last: with it the folder is complete.
//!
//! Images come from the decoded-image cache (`data::cache`) under the training's policy (`RUSH_IMAGE_CACHE=DIR|off`,
//! same folders): the test split from `test-<size>.rgb`, built by the first member that needs it while it predicts
//! (each run of decoded images is predicted as it arrives) and read by every later member of any submission; the
//! validation split from the training cache `train-<size>.rgb` that `rush train` built, when it is there. A dry run or
//! a missing training cache decodes just the images it needs (a subset never builds a whole split's cache); the cache
//! off, or unusable, means decoding as before. The pixels are the same either way (the cache holds what
//! `data::image::load_rgb` returns) and so are the batches, so the probabilities do not depend on the source.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::Instant;

use rayon::prelude::*;
use tch::nn::{ModuleT, VarStore};
use tch::{Kind, Tensor};

use crate::train::checkpoint::{self, CheckpointIoError};
use crate::train::device::{self, DeviceError, Execution};
use crate::train::models;
use crate::train::recipe::InputNorm;
use crate::train::run::Normalizer;
use rush::core::progress::DecodeTicker;
use rush::core::score::{BoardSplit, dry_run_indices};
use rush::core::spec::{Precision, ResolvedSpec, SpecError};
use rush::data::cache::{self, Decoded, ImageCache};
use rush::data::layout::{DataError, NUM_TAGS, read_test, read_train};
use rush::data::split::split_by_package;
use rush::home::SessionDir;
use rush::submit::Tta;
use rush::submit::npy::{self, NpyError};
use rush::submit::probs::order_digest;
use rush::submit::report::{ImageOrigin, ImageSource, InferReport, REPORT};

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
    /// The board's public share of the test set, whose stickers alone a dry run predicts (the split is the one of
    /// the spec's dataset, `core::score::BoardSplit`).
    pub public_percent: u8,
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
    // Inference always autocasts to bf16 on CUDA; on the CPU it runs as the session trained: bf16 where the spec asks
    // for it and the CPU has native bf16 (`device::CpuBf16`), else fp32.
    let ex = device::prepare(device, if device.is_cuda() { Precision::Bf16 } else { spec.precision });

    let vs = VarStore::new(device);
    let model = models::build(spec.model, &vs);
    checkpoint::load_weights(&vs, &session.checkpoint_weights(opts.epoch))?;
    // Normalised as the model was trained: the statistics its checkpoint records (ImageNet's for older ones).
    let input_norm =
        checkpoint::load_meta(&session.checkpoint_meta(opts.epoch))?.input_norm.unwrap_or(InputNorm::IMAGENET);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("rush-decode-{i}"))
        .build()
        .map_err(|e| InferError::Torch(format!("cannot start decode threads: {e}")))?;
    let predictor = Predictor {
        model,
        ex,
        norm: Normalizer::new(&input_norm, device),
        tta: opts.tta,
        feeder: Feeder { size: spec.image_size, pool },
    };

    std::fs::create_dir_all(&opts.out).map_err(|source| InferError::Io { path: opts.out.clone(), source })?;
    let bad = AtomicUsize::new(0);
    let side = spec.image_size;

    let test = read_test(&resolved.dataset_path)?;
    let all_test: Vec<(String, PathBuf)> =
        test.samples.iter().map(|s| (format!("{}/{}", s.package_id, s.sticker_id), s.path.clone())).collect();
    let (test_samples, test_source) = match cache::cache_file(&resolved.dataset_path, "test", side) {
        None => (all_test, Plan::Decode(CACHE_OFF.into())),
        Some(file) if !opts.dry_run => (all_test, Plan::Build(file)),
        Some(file) => {
            // a dry run reads the full test cache when one is there, and decodes its sample otherwise
            let split = BoardSplit::new(&spec.dataset, all_test.len(), opts.public_percent)
                .map_err(|e| InferError::Torch(format!("the dry-run sample: {e}")))?;
            let rows = dry_run_indices(&split);
            let plan = predictor.feeder.reuse(&file, &all_test, rows.clone(), "a dry run builds no test cache");
            (rows.into_iter().map(|i| all_test[i].clone()).collect(), plan)
        }
    };
    let (test_probs, test_images) = predictor.predict(&test_samples, test_source, &bad)?;
    npy::write_f16_matrix(&opts.out.join("test.npy"), test_samples.len(), NUM_TAGS, &test_probs)?;

    let (mut valid_rows, mut valid_order, mut valid_images) = (0, String::new(), None);
    if !opts.dry_run {
        let set = read_train(&resolved.dataset_path)?;
        let split = split_by_package(&set, spec.valid_fraction, spec.seed);
        let all_train: Vec<(String, PathBuf)> =
            set.samples.iter().map(|s| (format!("{}/{}", s.package_id, s.sticker_id), s.path.clone())).collect();
        let valid: Vec<(String, PathBuf)> = split.valid.iter().map(|&i| all_train[i].clone()).collect();
        // the training cache holds every training sticker in CSV order, as `rush train` built it
        let plan = match cache::cache_file(&resolved.dataset_path, "train", side) {
            None => Plan::Decode(CACHE_OFF.into()),
            Some(file) => predictor.feeder.reuse(&file, &all_train, split.valid.clone(), "no training run built it"),
        };
        let (valid_probs, source) = predictor.predict(&valid, plan, &bad)?;
        npy::write_f16_matrix(&opts.out.join("valid.npy"), valid.len(), NUM_TAGS, &valid_probs)?;
        valid_rows = valid.len();
        valid_order = order_digest(valid.iter().map(|(k, _)| k.as_str()));
        valid_images = Some(source);
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
        test_images: Some(test_images),
        valid_images,
    };
    let path = opts.out.join(REPORT);
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| InferError::Report { path: path.clone(), message: e.to_string() })?;
    rush::disk::write_atomic(&path, &json).map_err(|e| InferError::Io { path: e.path, source: e.source })?;
    Ok(report)
}

/// Why images were decoded when the cache is off.
const CACHE_OFF: &str = "image cache off (RUSH_IMAGE_CACHE=off)";

/// Bad images named on stderr (the rest are only counted).
const NAMED_BAD: usize = 20;

/// Where one split's images will come from.
enum Plan {
    /// Decode the PNGs (why).
    Decode(String),
    /// Build this cache file of exactly the samples while predicting (or reuse it when it is current).
    Build(PathBuf),
    /// Rows of a current cache file: sample `k` is cached image `rows[k]`.
    Cached { cache: ImageCache, rows: Vec<usize>, seconds: f64 },
}

/// A loaded model and how to feed it.
struct Predictor {
    model: Box<dyn ModuleT>,
    ex: Execution,
    norm: Normalizer,
    tta: Tta,
    feeder: Feeder,
}

/// A batch of HWC uint8 images on its way to the model: (how many, their pixels back to back).
type Pixels = (usize, Vec<u8>);

impl Predictor {
    /// Probabilities of `samples` (key, image path), row-major `(samples, NUM_TAGS)` f32, and where the images came
    /// from. The batches are always `samples.chunks(BATCH)`, whatever the source.
    fn predict(
        &self,
        samples: &[(String, PathBuf)],
        plan: Plan,
        bad: &AtomicUsize,
    ) -> Result<(Vec<f32>, ImageSource), InferError> {
        let mut out = Vec::with_capacity(samples.len() * NUM_TAGS);
        let feeder = &self.feeder;
        // the next batches are read or decoded on another thread while the model runs on this one
        let source = std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Pixels>(2);
            let producer = scope.spawn(move || feeder.produce(samples, plan, bad, &tx));
            let consumed = (|| {
                for (n, pixels) in rx {
                    let probs = catch_unwind(AssertUnwindSafe(|| self.forward(&pixels, n)))
                        .map_err(|payload| InferError::Torch(rush::core::format::panic_message(payload.as_ref())))??;
                    if probs.len() != n * NUM_TAGS {
                        return Err(InferError::Torch(format!("{} probabilities for a batch of {n}", probs.len())));
                    }
                    out.extend(probs);
                }
                Ok(())
            })();
            let source = producer
                .join()
                .map_err(|payload| InferError::Torch(rush::core::format::panic_message(payload.as_ref())));
            consumed?;
            source
        })?;
        if out.len() != samples.len() * NUM_TAGS {
            return Err(InferError::Torch(format!("{} rows predicted of {}", out.len() / NUM_TAGS, samples.len())));
        }
        Ok((out, source))
    }

    /// One batch of uint8 HWC pixels -> softmax probabilities (averaged with the mirror under flip TTA).
    fn forward(&self, pixels: &[u8], n: usize) -> Result<Vec<f32>, InferError> {
        let side = self.feeder.size as i64;
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

/// Reads or decodes the images of a split for a [`Predictor`], on its own threads.
struct Feeder {
    size: u32,
    /// Decodes and fingerprints images.
    pool: rayon::ThreadPool,
}

impl Feeder {
    fn image_bytes(&self) -> usize {
        cache::image_bytes(self.size)
    }

    /// Reads `rows` of `file` (a cache of `all`) when it is current; else decodes, saying why (`absent`: no file).
    fn reuse(&self, file: &Path, all: &[(String, PathBuf)], rows: Vec<usize>, absent: &str) -> Plan {
        let started = Instant::now();
        let paths: Vec<PathBuf> = all.iter().map(|(_, p)| p.clone()).collect();
        match ImageCache::open_existing(file, &paths, self.size, &self.pool) {
            Ok(cache) => Plan::Cached { cache, rows, seconds: started.elapsed().as_secs_f64() },
            Err(cache::Unusable::Absent) => Plan::Decode(format!("{}: absent ({absent})", file.display())),
            Err(cache::Unusable::Because(why)) => Plan::Decode(format!("{}: not used ({why})", file.display())),
        }
    }

    /// Sends `samples`' images in batches of [`BATCH`] as `plan` says; returns what it did. Stops early (quietly)
    /// when the model side has given up.
    fn produce(
        &self,
        samples: &[(String, PathBuf)],
        plan: Plan,
        bad: &AtomicUsize,
        tx: &SyncSender<Pixels>,
    ) -> ImageSource {
        match plan {
            Plan::Decode(note) => {
                eprintln!("rush infer: decoding {} images ({note})", samples.len());
                self.send_decoded(samples, bad, tx);
                ImageSource::decoded(samples.len(), note)
            }
            Plan::Cached { cache, rows, seconds } => {
                eprintln!("rush infer: {} images from the image cache {}", rows.len(), cache.path().display());
                self.send_cached(&cache, samples, &rows, bad, tx);
                ImageSource::reused(cache.path().to_path_buf(), seconds)
            }
            Plan::Build(file) => {
                let paths: Vec<PathBuf> = samples.iter().map(|(_, p)| p.clone()).collect();
                let mut batch =
                    Batcher { tx, size: self.image_bytes(), pixels: Vec::new(), images: 0, sent: 0, open: true };
                let started = Instant::now();
                let mut ticker = DecodeTicker::new(paths.len() as u64, 1.0);
                let built =
                    ImageCache::open_or_build_with(&file, &paths, self.size, &self.pool, &mut |run: Decoded<'_>| {
                        let done = (run.first + run.len()) as u64;
                        if let Some(p) = ticker.tick(done, started.elapsed().as_secs_f64()) {
                            eprintln!("rush infer: image cache: {}", p.line());
                        }
                        for k in 0..run.len() {
                            match run.image(k) {
                                Some(image) => batch.push(image),
                                None => {
                                    bad.fetch_add(1, Ordering::Relaxed);
                                    batch.push_blank();
                                }
                            }
                        }
                    });
                match built {
                    Ok((_, report)) if report.built => {
                        batch.flush();
                        for (index, message) in report.failures.iter().take(NAMED_BAD) {
                            eprintln!("rush infer: image {index}: {message}; predicting from a blank image");
                        }
                        let note = report.rebuilt_because.map(|why| format!("rebuilt: {why}"));
                        eprintln!(
                            "rush infer: image cache {}: decoded {} images at {} px while predicting, in {:.1} s{}",
                            file.display(),
                            report.decoded,
                            self.size,
                            report.seconds,
                            note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()
                        );
                        ImageSource {
                            origin: ImageOrigin::Built,
                            file: Some(file),
                            note,
                            decoded: report.decoded,
                            seconds: report.seconds,
                        }
                    }
                    Ok((cache, report)) => {
                        eprintln!("rush infer: image cache {}: reused ({} images)", file.display(), cache.len());
                        let rows: Vec<usize> = (0..samples.len()).collect();
                        self.send_cached(&cache, samples, &rows, bad, tx);
                        ImageSource::reused(file, report.seconds)
                    }
                    Err(e) => {
                        // what was handed over is good; decode the rest
                        batch.flush();
                        let rest = batch.sent.min(samples.len());
                        let note = format!("image cache unusable ({e}); decoded instead");
                        eprintln!("rush infer: {note}");
                        if batch.open {
                            self.send_decoded(&samples[rest..], bad, tx);
                        }
                        ImageSource::decoded(samples.len(), note)
                    }
                }
            }
        }
    }

    /// Decodes `samples` batch by batch (in parallel) and sends them; a failed image is blank (white) and counted.
    fn send_decoded(&self, samples: &[(String, PathBuf)], bad: &AtomicUsize, tx: &SyncSender<Pixels>) {
        let (size, n) = (self.size, self.image_bytes());
        for chunk in samples.chunks(BATCH) {
            let images: Vec<Vec<u8>> = self.pool.install(|| {
                chunk
                    .par_iter()
                    .map(|(_, path)| match rush::data::image::load_rgb(path, size) {
                        Ok(img) if img.len() == n => img,
                        Ok(img) => {
                            note_bad(bad, &format!("{}: decoded to {} bytes, not {n}", path.display(), img.len()));
                            vec![255u8; n]
                        }
                        Err(e) => {
                            note_bad(bad, &e.to_string());
                            vec![255u8; n]
                        }
                    })
                    .collect()
            });
            if tx.send((chunk.len(), images.concat())).is_err() {
                return;
            }
        }
    }

    /// Sends cached image `rows[k]` for sample `k`; an image the cache marks undecodable is blank (white) and counted.
    fn send_cached(
        &self,
        cache: &ImageCache,
        samples: &[(String, PathBuf)],
        rows: &[usize],
        bad: &AtomicUsize,
        tx: &SyncSender<Pixels>,
    ) {
        let n = self.image_bytes();
        for (chunk, keys) in rows.chunks(BATCH).zip(samples.chunks(BATCH)) {
            let mut pixels = Vec::with_capacity(chunk.len() * n);
            for (&row, (_, path)) in chunk.iter().zip(keys) {
                match cache.image(row) {
                    Some(image) => pixels.extend_from_slice(image),
                    None => {
                        let file = cache.path().display();
                        note_bad(
                            bad,
                            &format!("{}: could not be decoded when the image cache {file} was built", path.display()),
                        );
                        pixels.resize(pixels.len() + n, 255);
                    }
                }
            }
            if tx.send((chunk.len(), pixels)).is_err() {
                return;
            }
        }
    }
}

/// Collects a build's decoded images into batches of [`BATCH`] and sends each full one.
struct Batcher<'a> {
    tx: &'a SyncSender<Pixels>,
    /// Bytes per image.
    size: usize,
    pixels: Vec<u8>,
    images: usize,
    /// Images sent so far.
    sent: usize,
    /// False once the model side stopped listening.
    open: bool,
}

impl Batcher<'_> {
    fn push(&mut self, image: &[u8]) {
        self.pixels.extend_from_slice(image);
        self.added();
    }

    fn push_blank(&mut self) {
        self.pixels.resize(self.pixels.len() + self.size, 255);
        self.added();
    }

    fn added(&mut self) {
        self.images += 1;
        if self.images == BATCH {
            self.flush();
        }
    }

    /// Sends what is collected (a last, partial batch).
    fn flush(&mut self) {
        if self.images == 0 {
            return;
        }
        let pixels = std::mem::replace(&mut self.pixels, Vec::with_capacity(BATCH * self.size));
        if self.open && self.tx.send((self.images, pixels)).is_err() {
            self.open = false;
        }
        self.sent += self.images;
        self.images = 0;
    }
}

/// Counts a bad image, naming the first few on stderr.
fn note_bad(bad: &AtomicUsize, message: &str) {
    if bad.fetch_add(1, Ordering::Relaxed) < NAMED_BAD {
        eprintln!("rush infer: {message}; predicting from a blank image");
    }
}
