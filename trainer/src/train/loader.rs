//! Batches for the training loop: a producer thread takes each batch's images from the decoded-image cache
//! (`data::cache`; without one it decodes them with `data::image::load_rgb`), augments them in parallel (a rayon
//! pool), packs tensors (floats when augmented, else the bytes) and sends them through a bounded channel, so the next
//! few batches are ready while the model trains. The loop measures how long it waits. (`train::resident` is the other
//! source: the whole dataset on the device, augmented there.)
//!
//! Everything random is drawn from seeds derived from (run seed, epoch, position), so an epoch's batches do not depend
//! on thread timing or on whether the run was resumed. An image that fails to decode is skipped and counted, reported
//! once on stderr, and never decoded again.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rayon::prelude::*;
use tch::{Device, Tensor};

use crate::train::augment;
use rush::data::cache::ImageCache;
use rush::data::layout::{NUM_TAGS, Sample};

/// Which random stream a seed is for.
const STREAM_SHUFFLE: u64 = 1;
const STREAM_AUGMENT: u64 = 2;

/// The epoch's training batches: the training indices shuffled by (seed, epoch), in full batches (a last partial
/// batch is dropped so batch-norm never sees a tiny batch), or one batch of everything when there is less than one.
pub fn epoch_batches(train: &[usize], batch_size: usize, seed: u64, epoch: u32) -> Vec<Vec<usize>> {
    let mut order = train.to_vec();
    order.shuffle(&mut augment::rng(augment::mix_seed(&[seed, u64::from(epoch), STREAM_SHUFFLE])));
    let batch_size = batch_size.max(1);
    if order.len() <= batch_size {
        return if order.is_empty() { vec![] } else { vec![order] };
    }
    order.chunks_exact(batch_size).map(<[usize]>::to_vec).collect()
}

/// Steps per epoch for `train_size` images: what [`epoch_batches`] yields.
pub fn steps_per_epoch(train_size: usize, batch_size: usize) -> u64 {
    let batch_size = batch_size.max(1);
    if train_size == 0 {
        0
    } else if train_size <= batch_size {
        1
    } else {
        (train_size / batch_size) as u64
    }
}

/// Validation batches: in order, the last one partial.
pub fn eval_batches(valid: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    valid.chunks(batch_size.max(1)).map(<[usize]>::to_vec).collect()
}

/// The seed of one epoch's augmentation stream.
pub fn augment_seed(seed: u64, epoch: u32) -> u64 {
    augment::mix_seed(&[seed, u64::from(epoch), STREAM_AUGMENT])
}

/// Images that failed to decode, by sample index, with the error. Shared by every epoch's loader.
#[derive(Debug, Default)]
pub struct BadImages {
    failed: Mutex<HashMap<usize, String>>,
}

/// How many bad images are reported one by one before only the count is.
const REPORT_EACH: usize = 20;

impl BadImages {
    /// Whether `index` failed to decode.
    pub fn is_bad(&self, index: usize) -> bool {
        self.failed.lock().map(|m| m.contains_key(&index)).unwrap_or(false)
    }

    /// Records a failure (reported on stderr, up to a few one by one).
    pub fn record(&self, index: usize, message: String) {
        if let Ok(mut m) = self.failed.lock() {
            if m.len() < REPORT_EACH {
                eprintln!("rush train: skipping an image that cannot be decoded: {message}");
            } else if m.len() == REPORT_EACH {
                eprintln!("rush train: more images cannot be decoded; only the count is reported from now on");
            }
            m.insert(index, message);
        }
    }

    pub fn count(&self) -> usize {
        self.failed.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// How a loader makes its batches.
#[derive(Debug, Clone)]
pub struct LoaderSpec {
    pub image_size: u32,
    /// `None` for validation (no augmentation).
    pub augment: Option<augment::Plan>,
    /// Also build multi-hot targets of every tag (for BCE).
    pub multi_hot: bool,
    /// Pin the batch's host memory for a fast copy to this CUDA device.
    pub pin_for: Option<Device>,
    /// Batches decoded ahead.
    pub prefetch: usize,
    /// Base of the per-image augmentation seeds ([`augment_seed`]).
    pub seed: u64,
    /// Decoded images of `samples` (same order) at `image_size`; without it each image is decoded from its PNG.
    pub cache: Option<Arc<ImageCache>>,
}

/// One batch on the host: images `[n, S, S, 3]` (HWC; uint8 for validation, float in 0..255 when augmented), labels `[n]` (the first tag), and for BCE targets
/// `[n, 350]`.
#[derive(Debug)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
    pub targets: Option<Tensor>,
    pub len: usize,
    /// The sample index of each image, in order (images that failed to decode are left out of a batch).
    pub indices: Vec<usize>,
}

/// Where the training loop takes an epoch's batches from: the streaming [`Loader`] or the device-resident dataset
/// (`train::resident`). Both count the time the loop spends waiting for them.
pub trait BatchSource {
    /// The next batch, or `None` at the end of the epoch.
    fn next_batch(&mut self) -> Option<Batch>;
    /// Total time the caller spent waiting in [`BatchSource::next_batch`].
    fn waited(&self) -> Duration;
}

impl BatchSource for Loader {
    fn next_batch(&mut self) -> Option<Batch> {
        Loader::next_batch(self)
    }
    fn waited(&self) -> Duration {
        Loader::waited(self)
    }
}

/// A running producer; dropping it stops the thread.
pub struct Loader {
    rx: Option<Receiver<Batch>>,
    worker: Option<JoinHandle<()>>,
    waited: Duration,
}

impl Loader {
    /// Starts producing `batches` (lists of indices into `samples`) in order.
    pub fn spawn(
        samples: Arc<[Sample]>,
        batches: Vec<Vec<usize>>,
        spec: LoaderSpec,
        pool: Arc<rayon::ThreadPool>,
        bad: Arc<BadImages>,
    ) -> Self {
        let (tx, rx) = sync_channel(spec.prefetch.max(1));
        let worker = std::thread::Builder::new()
            .name("rush-loader".into())
            .spawn(move || produce(&samples, batches, &spec, &pool, &bad, &tx))
            .ok();
        if worker.is_none() {
            eprintln!("rush train: cannot start the data loader thread");
        }
        Self { rx: Some(rx), worker, waited: Duration::ZERO }
    }

    /// The next batch, or `None` at the end of the epoch. Time spent blocked here is added to [`Loader::waited`].
    pub fn next_batch(&mut self) -> Option<Batch> {
        let start = Instant::now();
        let batch = self.rx.as_ref()?.recv().ok();
        self.waited += start.elapsed();
        batch
    }

    /// Total time spent waiting for batches.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel first makes a producer blocked on `send` return.
        self.rx.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn produce(
    samples: &[Sample],
    batches: Vec<Vec<usize>>,
    spec: &LoaderSpec,
    pool: &rayon::ThreadPool,
    bad: &BadImages,
    tx: &SyncSender<Batch>,
) {
    let side = spec.image_size as usize;
    let mut position: u64 = 0;
    for indices in batches {
        let first = position;
        position += indices.len() as u64;
        let images: Vec<Option<Pixels>> = pool.install(|| {
            indices
                .par_iter()
                .enumerate()
                .map(|(i, &index)| decode(samples, index, side, spec, first + i as u64, bad))
                .collect()
        });
        let kept: Vec<(usize, Pixels)> =
            indices.iter().zip(images).filter_map(|(&index, img)| img.map(|img| (index, img))).collect();
        if kept.is_empty() {
            continue;
        }
        let batch = pack(samples, &kept, side, spec);
        if tx.send(batch).is_err() {
            return;
        }
    }
}

fn decode(
    samples: &[Sample],
    index: usize,
    side: usize,
    spec: &LoaderSpec,
    position: u64,
    bad: &BadImages,
) -> Option<Pixels> {
    if bad.is_bad(index) {
        return None;
    }
    let sample = samples.get(index)?;
    let loaded = match &spec.cache {
        Some(cache) => cache.image(index).map(<[u8]>::to_vec).ok_or_else(|| {
            format!(
                "{}: could not be decoded when the image cache {} was built",
                sample.path.display(),
                cache.path().display()
            )
        }),
        None => rush::data::image::load_rgb(&sample.path, spec.image_size).map_err(|e| e.to_string()),
    };
    match loaded {
        Ok(img) => Some(match &spec.augment {
            Some(plan) => Pixels::Floats(augment::apply(
                img,
                side,
                plan,
                &mut augment::rng(augment::mix_seed(&[spec.seed, position])),
            )),
            None => Pixels::Bytes(img),
        }),
        Err(message) => {
            bad.record(index, message);
            None
        }
    }
}

/// One decoded image: the cached bytes (validation), or augmented floats in 0..255 (training).
enum Pixels {
    Bytes(Vec<u8>),
    Floats(Vec<f32>),
}

fn pack(samples: &[Sample], kept: &[(usize, Pixels)], side: usize, spec: &LoaderSpec) -> Batch {
    let n = kept.len();
    let per = side * side * 3;
    let floats = kept.iter().any(|(_, p)| matches!(p, Pixels::Floats(_)));
    let (mut bytes, mut values) =
        if floats { (Vec::new(), Vec::with_capacity(n * per)) } else { (Vec::with_capacity(n * per), Vec::new()) };
    let mut labels = Vec::with_capacity(n);
    let mut targets = spec.multi_hot.then(|| vec![0f32; n * NUM_TAGS]);
    for (row, (index, img)) in kept.iter().enumerate() {
        match img {
            Pixels::Bytes(b) if floats => values.extend(b.iter().map(|&x| f32::from(x))),
            Pixels::Bytes(b) => bytes.extend_from_slice(b),
            Pixels::Floats(f) => values.extend_from_slice(f),
        }
        let tags = &samples[*index].tags;
        labels.push(tags.first().map(|&t| i64::from(t)).unwrap_or(0));
        if let Some(targets) = targets.as_mut() {
            for &t in tags.iter().filter(|&&t| (t as usize) < NUM_TAGS) {
                targets[row * NUM_TAGS + t as usize] = 1.0;
            }
        }
    }
    let side = side as i64;
    // Pinned host memory lets the loop copy to the GPU asynchronously (a pageable copy would sync the stream).
    let pin = |t: Tensor| match spec.pin_for {
        Some(device) => t.pin_memory(device),
        None => t,
    };
    Batch {
        images: pin(if floats { Tensor::from_slice(&values) } else { Tensor::from_slice(&bytes) }
            .view([n as i64, side, side, 3])),
        labels: pin(Tensor::from_slice(&labels)),
        targets: targets.map(|t| pin(Tensor::from_slice(&t).view([n as i64, NUM_TAGS as i64]))),
        len: n,
        indices: kept.iter().map(|(index, _)| *index).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_batches_are_a_seeded_permutation_in_full_batches() {
        let train: Vec<usize> = (0..10).collect();
        let a = epoch_batches(&train, 4, 7, 1);
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|b| b.len() == 4));
        assert_eq!(a, epoch_batches(&train, 4, 7, 1));
        assert_ne!(a, epoch_batches(&train, 4, 7, 2));
        assert_ne!(a, epoch_batches(&train, 4, 8, 1));
        let mut seen: Vec<usize> = a.concat();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 8);
        assert_eq!(steps_per_epoch(10, 4), 2);
        assert_eq!(epoch_batches(&train[..3], 4, 7, 1).len(), 1);
        assert_eq!(steps_per_epoch(3, 4), 1);
        assert_eq!(steps_per_epoch(0, 4), 0);
        assert!(epoch_batches(&[], 4, 7, 1).is_empty());
    }

    #[test]
    fn eval_batches_keep_order_and_the_remainder() {
        assert_eq!(eval_batches(&[5, 6, 7], 2), vec![vec![5, 6], vec![7]]);
    }
}
