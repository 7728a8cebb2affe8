//! The device-resident data path: when the decoded uint8 dataset fits, it is uploaded once (from the memory-mapped
//! `data::cache`) as one `[N, S, S, 3]` tensor on the training device, and each batch is gathered and augmented there
//! with tensor ops, so an epoch needs no CPU decoding or per-image work at all.
//!
//! The random choices (crop window, flip, rotation, jitter factors, grayscale, erased box) are drawn on the host
//! exactly as the streaming loader draws them (`augment::draw`, seeded per (seed, epoch, position)); only their
//! application moves to the device: crop, flip and rotation as one batched affine grid sample (bilinear, borders
//! clamped: the same sampling points as the host's resample), the rest as per-sample broadcasts and masks. So both
//! paths train on the same images up to float rounding.
//!
//! "Device memory" is the GPU's free memory on CUDA and the host's available memory on the CPU, where the tensor
//! simply lives in RAM. `RUSH_DEVICE_DATA` = `auto` (default: resident on CUDA when the images take at most half of
//! the free memory; streaming on the CPU, where the rayon loader is the faster way), `on` or `off`.

use std::rc::Rc;
use std::time::{Duration, Instant};

use tch::{Device, Kind, TchError, Tensor};

use crate::train::augment::{self, Draw, Plan};
use crate::train::loader::{Batch, BatchSource};
use rush::data::cache::{ImageCache, image_bytes};
use rush::data::layout::{NUM_TAGS, Sample};

/// Whether to keep the dataset on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResidentMode {
    Auto,
    On,
    Off,
}

impl ResidentMode {
    /// Parses `RUSH_DEVICE_DATA`'s value (unset or empty = auto).
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("") | Some("auto") => Ok(Self::Auto),
            Some("on") => Ok(Self::On),
            Some("off") => Ok(Self::Off),
            Some(other) => Err(format!("RUSH_DEVICE_DATA={other:?}: expected auto, on or off")),
        }
    }
}

/// Share of the free device memory the images may take under `auto`.
pub const FREE_SHARE: f64 = 0.5;

/// Decides whether the images (`needed` bytes) go on the device; the string says why, for the log.
pub fn decide(mode: ResidentMode, cuda: bool, needed: u64, free: Option<u64>) -> (bool, String) {
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    match mode {
        ResidentMode::On => (true, "RUSH_DEVICE_DATA=on".into()),
        ResidentMode::Off => (false, "RUSH_DEVICE_DATA=off".into()),
        ResidentMode::Auto if !cuda => {
            (false, "the CPU streams from the image cache; RUSH_DEVICE_DATA=on to change".into())
        }
        ResidentMode::Auto => match free {
            Some(free) if needed as f64 <= FREE_SHARE * free as f64 => {
                (true, format!("{:.2} GiB of images fit in {:.1} GiB free", gib(needed), gib(free)))
            }
            Some(free) => (
                false,
                format!("{:.2} GiB of images exceed {FREE_SHARE} of {:.1} GiB free; streaming", gib(needed), gib(free)),
            ),
            None => (false, "free device memory unknown; streaming".into()),
        },
    }
}

/// Free memory of `device` in bytes: `cudaMemGetInfo` on CUDA (looked up in the loaded CUDA runtime), `MemAvailable`
/// on the CPU.
pub fn free_memory(device: Device) -> Option<u64> {
    match device {
        Device::Cuda(_) => cuda_free(),
        _ => {
            let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
            let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        }
    }
}

fn cuda_free() -> Option<u64> {
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    // SAFETY: NUL-terminated names looked up among the libraries already loaded (libtorch_cuda brings libcudart);
    // RTLD_NOLOAD only returns a handle to a library that is loaded already, so nothing new is loaded here.
    let mut ptr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"cudaMemGetInfo".as_ptr()) };
    for lib in [c"libcudart.so.13", c"libcudart.so.12", c"libcudart.so"] {
        if !ptr.is_null() {
            break;
        }
        // SAFETY: as above.
        let handle = unsafe { libc::dlopen(lib.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        if !handle.is_null() {
            // SAFETY: as above; the handle stays valid (the library stays loaded by libtorch).
            ptr = unsafe { libc::dlsym(handle, c"cudaMemGetInfo".as_ptr()) };
        }
    }
    if ptr.is_null() {
        return None;
    }
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: `cudaError_t cudaMemGetInfo(size_t *free, size_t *total)`; both pointers are valid for the call.
    let status = unsafe {
        let f: MemGetInfo = std::mem::transmute::<*mut libc::c_void, MemGetInfo>(ptr);
        f(&mut free, &mut total)
    };
    (status == 0).then_some(free as u64)
}

/// A small host tensor on `device` without a sync: on CUDA through pinned memory with an asynchronous copy (a copy
/// from pageable memory would wait for the GPU to finish its queue, every step); elsewhere as it is.
fn upload(t: Tensor, device: Device) -> Tensor {
    if device.is_cuda() {
        let kind = t.kind();
        t.pin_memory(device).to_device_(device, kind, true, false)
    } else {
        t
    }
}

/// The dataset on the device.
pub struct ResidentImages {
    /// uint8 `[N, S, S, 3]`.
    images: Tensor,
    /// int64 `[N]`: each sample's first tag.
    labels: Tensor,
    ok: Vec<bool>,
    side: i64,
    device: Device,
}

/// Host bytes copied per upload chunk.
const UPLOAD_CHUNK: usize = 256 << 20;

impl ResidentImages {
    /// Copies every image of `cache` (the images of `samples`, same order) to `device`, a chunk at a time.
    pub fn upload(cache: &ImageCache, samples: &[Sample], device: Device) -> Result<Self, TchError> {
        let n = cache.len();
        let side = i64::from(cache.side());
        let per = image_bytes(cache.side()).max(1);
        let images = Tensor::f_empty([n as i64, side, side, 3], (Kind::Uint8, device))?;
        let all = cache.all_images();
        let chunk = (UPLOAD_CHUNK / per).max(1);
        let mut start = 0usize;
        while start < n {
            let len = chunk.min(n - start);
            let host =
                Tensor::f_from_slice(&all[start * per..(start + len) * per])?.f_view([len as i64, side, side, 3])?;
            images.f_narrow(0, start as i64, len as i64)?.f_copy_(&host)?;
            start += len;
        }
        let labels: Vec<i64> = samples.iter().map(|s| s.tags.first().map_or(0, |&t| i64::from(t))).collect();
        let labels = Tensor::f_from_slice(&labels)?.f_to_device(device)?;
        let ok = (0..n).map(|i| cache.is_ok(i)).collect();
        Ok(Self { images, labels, ok, side, device })
    }

    /// Bytes the images take on the device.
    pub fn bytes(count: usize, side: u32) -> u64 {
        count as u64 * image_bytes(side) as u64
    }

    pub fn is_ok(&self, index: usize) -> bool {
        self.ok.get(index).copied().unwrap_or(false)
    }

    /// One batch of `indices` (undecodable images left out; `None` when none is left). `first_position` numbers the
    /// batch's first image in the epoch, as the streaming loader does, for the augmentation seeds. With `augment`,
    /// images come back as float `[n, S, S, 3]` in 0..255 (NHWC-contiguous when `nhwc`), else as uint8.
    pub fn batch(
        &self,
        samples: &[Sample],
        indices: &[usize],
        augment: Option<(&Plan, u64)>,
        first_position: u64,
        multi_hot: bool,
        nhwc: bool,
    ) -> Option<Batch> {
        let kept: Vec<(usize, u64)> = indices
            .iter()
            .enumerate()
            .filter(|(_, i)| self.is_ok(**i))
            .map(|(k, &i)| (i, first_position + k as u64))
            .collect();
        if kept.is_empty() {
            return None;
        }
        let idx: Vec<i64> = kept.iter().map(|k| k.0 as i64).collect();
        let idx = upload(Tensor::from_slice(&idx), self.device);
        let raw = self.images.index_select(0, &idx);
        let images = match augment {
            None => raw,
            Some((plan, seed)) => {
                let side = self.side as usize;
                let draws: Vec<Draw> = kept
                    .iter()
                    .map(|&(_, position)| {
                        augment::draw(side, &plan.spec, &mut augment::rng(augment::mix_seed(&[seed, position])))
                    })
                    .collect();
                let x = apply_on_device(&raw, &draws, plan.bytes);
                if nhwc { x.contiguous() } else { x }
            }
        };
        let targets = multi_hot.then(|| {
            let mut t = vec![0f32; kept.len() * NUM_TAGS];
            for (row, (index, _)) in kept.iter().enumerate() {
                for &tag in samples[*index].tags.iter().filter(|&&t| (t as usize) < NUM_TAGS) {
                    t[row * NUM_TAGS + tag as usize] = 1.0;
                }
            }
            upload(Tensor::from_slice(&t).view([kept.len() as i64, NUM_TAGS as i64]), self.device)
        });
        let indices = kept.iter().map(|k| k.0).collect();
        Some(Batch { images, labels: self.labels.index_select(0, &idx), targets, len: kept.len(), indices })
    }
}

/// Applies `draws` (one per image) to uint8 `[n, S, S, 3]` images on their device; returns float `[n, S, S, 3]` in
/// 0..255 (a permuted view of an NCHW result): the same stages as `augment::apply_draw`, with tensor ops over the
/// batch. With `bytes`, values are rounded after each stage, as the host's bytes are.
pub fn apply_on_device(raw: &Tensor, draws: &[Draw], bytes: bool) -> Tensor {
    let device = raw.device();
    let n = draws.len() as i64;
    let side = raw.size().get(1).copied().unwrap_or(1);
    let round = |t: Tensor| if bytes { t.round().clamp(0.0, 255.0) } else { t };
    let mut x = raw.to_kind(Kind::Float).permute([0, 3, 1, 2]);
    let only_flips = draws.iter().all(|d| d.window.is_none() && d.rotate.is_none_or(|r| r == 0.0));
    if only_flips && draws.iter().any(|d| d.flip) {
        let mask: Vec<bool> = draws.iter().map(|d| d.flip).collect();
        let mask = upload(Tensor::from_slice(&mask).view([n, 1, 1, 1]), device);
        x = x.flip([3]).where_self(&mask, &x);
    } else if draws.iter().any(|d| d.moves()) {
        // Output pixel centre u in [-1, 1] (align_corners = false) samples the source at A u + b: the host's map
        // (`augment::affine`), with the same border clamp.
        let theta: Vec<f32> = draws.iter().flat_map(|d| augment::affine(side as usize, d)).map(|v| v as f32).collect();
        let theta = upload(Tensor::from_slice(&theta).view([n, 2, 3]), device);
        let grid = Tensor::affine_grid_generator(&theta, [n, 3, side, side], false);
        // interpolation 0 = bilinear, padding 1 = border.
        x = round(x.contiguous().grid_sampler(&grid, 0, 1, false));
    }
    let gray = |v: &Tensor| (v.select(1, 0) * 0.299 + v.select(1, 1) * 0.587 + v.select(1, 2) * 0.114).unsqueeze(1);
    let per_image = |values: Vec<f32>| upload(Tensor::from_slice(&values).view([n, 1, 1, 1]), device);
    if draws.iter().any(|d| d.jitter.is_some()) {
        let factors: Vec<f32> = draws.iter().flat_map(|d| d.jitter.unwrap_or([1.0; 3])).collect();
        let f = upload(Tensor::from_slice(&factors).view([n, 3]), device);
        let factor = |i: i64| f.select(1, i).view([n, 1, 1, 1]);
        // In floats each step clamps to 0..255 (torchvision's adjust_*); in bytes only the end does.
        let clamp = |t: Tensor| if bytes { t } else { t.clamp(0.0, 255.0) };
        let v = clamp(&x * factor(0));
        let mean = gray(&v).mean_dim([1i64, 2, 3].as_slice(), true, Kind::Float);
        let v = clamp((&v - &mean) * factor(1) + &mean);
        let g = gray(&v);
        x = round((&g + (&v - &g) * factor(2)).clamp(0.0, 255.0));
    }
    if draws.iter().any(|d| d.grayscale) {
        let mask = per_image(draws.iter().map(|d| if d.grayscale { 1.0 } else { 0.0 }).collect());
        let g = gray(&x).expand_as(&x);
        x = round(&x + (g - &x) * mask);
    }
    if draws.iter().any(|d| d.erase.is_some()) {
        // Per image: a box mask from its bounds (an empty box for images without one) and its colour.
        let bound = |f: fn(&augment::Erase) -> f32| -> Tensor {
            per_image(draws.iter().map(|d| d.erase.as_ref().map_or(0.0, f)).collect())
        };
        let (x0, y0) = (bound(|e| e.x as f32), bound(|e| e.y as f32));
        let (x1, y1) = (bound(|e| (e.x + e.w) as f32), bound(|e| (e.y + e.h) as f32));
        let at = Tensor::arange(side, (Kind::Float, device));
        let cols = at.view([1, 1, 1, side]);
        let rows = at.view([1, 1, side, 1]);
        let inside = cols
            .ge_tensor(&x0)
            .logical_and(&cols.lt_tensor(&x1))
            .logical_and(&rows.ge_tensor(&y0).logical_and(&rows.lt_tensor(&y1)));
        let colors: Vec<f32> = draws.iter().flat_map(|d| d.erase.map_or([0.0; 3], |e| e.color)).collect();
        let colors = upload(Tensor::from_slice(&colors).view([n, 3, 1, 1]), device);
        x = round(colors.expand_as(&x).where_self(&inside.expand_as(&x), &x));
    }
    x.permute([0, 2, 3, 1])
}

/// One epoch's batches from the resident dataset, as a [`BatchSource`]: built on demand on the training thread; the
/// time that takes (kernel launches, a host-to-device copy of the indices) counts as data wait.
pub struct ResidentEpoch {
    resident: Rc<ResidentImages>,
    samples: std::sync::Arc<[Sample]>,
    batches: std::vec::IntoIter<Vec<usize>>,
    augment: Option<Plan>,
    seed: u64,
    multi_hot: bool,
    nhwc: bool,
    position: u64,
    waited: Duration,
}

impl ResidentEpoch {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        resident: Rc<ResidentImages>,
        samples: std::sync::Arc<[Sample]>,
        batches: Vec<Vec<usize>>,
        augment: Option<Plan>,
        seed: u64,
        multi_hot: bool,
        nhwc: bool,
    ) -> Self {
        Self {
            resident,
            samples,
            batches: batches.into_iter(),
            augment,
            seed,
            multi_hot,
            nhwc,
            position: 0,
            waited: Duration::ZERO,
        }
    }
}

impl BatchSource for ResidentEpoch {
    fn next_batch(&mut self) -> Option<Batch> {
        let start = Instant::now();
        let mut out = None;
        for indices in self.batches.by_ref() {
            let first = self.position;
            self.position += indices.len() as u64;
            let augment = self.augment.as_ref().map(|a| (a, self.seed));
            if let Some(batch) = self.resident.batch(&self.samples, &indices, augment, first, self.multi_hot, self.nhwc)
            {
                out = Some(batch);
                break;
            }
        }
        self.waited += start.elapsed();
        out
    }

    fn waited(&self) -> Duration {
        self.waited
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rush::core::spec::Augment;

    #[test]
    fn modes_and_the_fit_decision() {
        assert_eq!(ResidentMode::parse(None), Ok(ResidentMode::Auto));
        assert_eq!(ResidentMode::parse(Some("on")), Ok(ResidentMode::On));
        assert!(ResidentMode::parse(Some("yes")).unwrap_err().contains("RUSH_DEVICE_DATA"));
        let gib = 1u64 << 30;
        assert!(decide(ResidentMode::Auto, true, 10 * gib, Some(100 * gib)).0);
        assert!(!decide(ResidentMode::Auto, true, 60 * gib, Some(100 * gib)).0);
        assert!(!decide(ResidentMode::Auto, true, gib, None).0);
        assert!(!decide(ResidentMode::Auto, false, gib, Some(100 * gib)).0);
        assert!(decide(ResidentMode::On, false, gib, None).0);
        assert!(!decide(ResidentMode::Off, true, gib, Some(100 * gib)).0);
    }

    fn gradient(n: i64, side: i64) -> Tensor {
        Tensor::arange(n * side * side * 3, (Kind::Int64, Device::Cpu))
            .remainder(251)
            .to_kind(Kind::Uint8)
            .view([n, side, side, 3])
    }

    fn every_option() -> Augment {
        Augment {
            random_resized_crop: Some([0.4, 1.0]),
            hflip: true,
            color_jitter: 0.3,
            rotate: 30.0,
            grayscale: 0.5,
            random_erasing: 0.5,
            ..Augment::default()
        }
    }

    #[test]
    fn the_device_path_matches_the_host_path() {
        let side = 16usize;
        let raw = gradient(8, side as i64);
        let draws: Vec<Draw> =
            (0..8).map(|i| augment::draw(side, &every_option(), &mut augment::rng(100 + i))).collect();
        assert!(draws.iter().any(|d| d.grayscale) && draws.iter().any(|d| d.erase.is_some()));
        for bytes in [false, true] {
            let out = apply_on_device(&raw, &draws, bytes);
            assert_eq!(out.size(), vec![8, 16, 16, 3]);
            assert_eq!(out.kind(), Kind::Float);
            for (i, d) in draws.iter().enumerate() {
                let img = Vec::<u8>::try_from(raw.get(i as i64).flatten(0, -1)).unwrap();
                let host = augment::apply_draw(&img, side, d, bytes);
                let dev = Vec::<f32>::try_from(out.get(i as i64).contiguous().flatten(0, -1)).unwrap();
                let worst = host.iter().zip(&dev).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                // Floats agree to float rounding; bytes may round a value the other way.
                let limit = if bytes { 2.0 } else { 0.05 };
                assert!(worst <= limit, "image {i} (bytes: {bytes}): differs by {worst} ({d:?})");
            }
        }
    }

    #[test]
    fn flips_mirror_exactly_without_a_crop() {
        let raw = gradient(2, 5);
        let none = Draw { window: None, flip: false, rotate: None, jitter: None, grayscale: false, erase: None };
        let draws = [Draw { flip: true, ..none }, none];
        let out = apply_on_device(&raw, &draws, false);
        assert!(out.get(0).equal(&raw.get(0).flip([1]).to_kind(Kind::Float)));
        assert!(out.get(1).equal(&raw.get(1).to_kind(Kind::Float)));
    }
}
