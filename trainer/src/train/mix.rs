//! Batch mixing (`augment.mixup`, `augment.cutmix`), as timm's `Mixup`: each image is mixed with a partner, the batch
//! reversed (`flip(0)`), and the loss with the partner's label in proportion.
//!
//! - Mixup (Zhang et al., 2018): `x = λ x + (1 - λ) x_rev`, λ ~ Beta(alpha, alpha).
//! - CutMix (Yun et al., 2019): a box of the partner pasted into each image; its sides are `sqrt(1 - λ)` of the
//!   image's, its centre uniform, clipped to the image, and λ is then the share of the image left uncovered.
//! - The loss is `λ loss(y) + (1 - λ) loss(y_rev)` (with BCE the same as mixing the multi-hot targets).
//!
//! One draw per batch ([`draw`]): with `cutmix` set, u < `cutmix.prob` picks CutMix; else, with `mixup` set, u <
//! `mixup.prob` picks mixup; else the batch stays as it is. It is seeded from (seed, epoch, the batch's index in the
//! epoch) on its own stream, so it is the same whichever path built the batch and whether the run was resumed. The mix
//! is applied in one place, the training step, to the batch as it arrives (uint8 from the streaming loader, float from
//! the device-resident path; 0..255 either way) before normalisation, so both paths mix identically by construction.

use rand::Rng;
use rand_distr::{Beta, Distribution};
use tch::{Kind, Tensor};

use crate::train::augment;
use rush::core::spec::Augment;

/// The random stream of the mix draws (the loader's shuffle and per-image augmentation are 1 and 2, the training
/// loop's torch reseed 3).
const STREAM_MIX: u64 = 4;

/// How a batch is mixed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MixKind {
    Mixup,
    /// The pasted box, in pixels: rows `top..top + height`, columns `left..left + width` (possibly empty).
    Cutmix {
        top: i64,
        left: i64,
        height: i64,
        width: i64,
    },
}

/// One batch's draw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixDraw {
    pub kind: MixKind,
    /// The share of each image's own label in the loss: mixup's λ, CutMix's uncovered area share.
    pub lambda: f64,
}

impl MixDraw {
    /// Whether the batch's own labels outweigh the partners' (training accuracy counts against the dominant label).
    pub fn own_label_dominates(&self) -> bool {
        self.lambda >= 0.5
    }
}

/// The draw of batch `batch` (0-based, in the epoch) of `epoch`, for `side`-square images; `None` leaves the batch
/// as it is (neither option set, or neither drawn).
pub fn draw(spec: &Augment, side: i64, seed: u64, epoch: u32, batch: u64) -> Option<MixDraw> {
    if spec.mixup.is_none() && spec.cutmix.is_none() {
        return None;
    }
    draw_with(spec, side, &mut augment::rng(augment::mix_seed(&[seed, u64::from(epoch), STREAM_MIX, batch])))
}

/// [`draw`] from a given RNG. The order: u for CutMix, then its λ and box centre (y, x); else u for mixup, then λ.
fn draw_with(spec: &Augment, side: i64, rng: &mut impl Rng) -> Option<MixDraw> {
    if let Some(cutmix) = &spec.cutmix
        && rng.random::<f64>() < cutmix.prob
    {
        let lambda = beta(cutmix.alpha, rng)?;
        return Some(cut_box(side, lambda, rng));
    }
    if let Some(mixup) = &spec.mixup
        && rng.random::<f64>() < mixup.prob
    {
        return Some(MixDraw { kind: MixKind::Mixup, lambda: beta(mixup.alpha, rng)? });
    }
    None
}

/// λ ~ Beta(alpha, alpha) in [0, 1]; `None` for an alpha the distribution refuses (validation keeps it > 0).
fn beta(alpha: f64, rng: &mut impl Rng) -> Option<f64> {
    let lambda = Beta::new(alpha, alpha).ok()?.sample(rng);
    lambda.is_finite().then_some(lambda.clamp(0.0, 1.0))
}

/// timm's `rand_bbox` on a `side` square: sides `int(side * sqrt(1 - λ))`, centre uniform over the pixels, clipped;
/// λ re-computed from the clipped box.
fn cut_box(side: i64, lambda: f64, rng: &mut impl Rng) -> MixDraw {
    let side = side.max(1);
    let cut = (side as f64 * (1.0 - lambda).sqrt()) as i64;
    let (cy, cx) = (rng.random_range(0..side), rng.random_range(0..side));
    let span = |c: i64| ((c - cut / 2).clamp(0, side), (c + cut / 2).clamp(0, side));
    let ((top, bottom), (left, right)) = (span(cy), span(cx));
    let (height, width) = (bottom - top, right - left);
    let lambda = 1.0 - (height * width) as f64 / (side * side) as f64;
    MixDraw { kind: MixKind::Cutmix { top, left, height, width }, lambda }
}

/// Each row's partner: the batch reversed (timm's choice). For images, labels and targets alike.
pub fn partner(t: &Tensor) -> Tensor {
    t.flip([0])
}

/// Mixes a batch of images `[n, H, W, 3]` in 0..255 (uint8 or float, any strides) as `draw` says; returns float
/// `[n, H, W, 3]` on the same device.
pub fn apply(images: &Tensor, draw: &MixDraw) -> Tensor {
    let x = images.to_kind(Kind::Float);
    match draw.kind {
        MixKind::Mixup => &x * draw.lambda + partner(&x) * (1.0 - draw.lambda),
        MixKind::Cutmix { top, left, height, width } => {
            let size = x.size();
            let (h, w) = (size.get(1).copied().unwrap_or(0), size.get(2).copied().unwrap_or(0));
            let (top, left) = (top.clamp(0, h), left.clamp(0, w));
            let (height, width) = (height.clamp(0, h - top), width.clamp(0, w - left));
            let out = x.copy();
            if height > 0 && width > 0 {
                let region = |t: &Tensor| t.narrow(1, top, height).narrow(2, left, width);
                region(&out).copy_(&region(&partner(&x)));
            }
            out
        }
    }
}

/// The mixed loss: `λ loss(own labels) + (1 - λ) loss(partners' labels)`, `loss(reversed)` giving the loss against
/// the labels (and targets) as they are or in partner order.
pub fn loss(draw: &MixDraw, loss: impl Fn(bool) -> Tensor) -> Tensor {
    loss(false) * draw.lambda + loss(true) * (1.0 - draw.lambda)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rush::core::spec::Mix;
    use tch::Device;

    fn spec(mixup: Option<(f64, f64)>, cutmix: Option<(f64, f64)>) -> Augment {
        let mix = |(alpha, prob)| Mix { alpha, prob };
        Augment { mixup: mixup.map(mix), cutmix: cutmix.map(mix), ..Augment::default() }
    }

    /// `n` distinct uint8 images `[n, side, side, 3]`, as the streaming loader packs them.
    fn host_batch(n: i64, side: i64) -> Tensor {
        Tensor::arange(n * side * side * 3, (Kind::Int64, Device::Cpu))
            .g_mul_scalar(7)
            .remainder(256)
            .to_kind(Kind::Uint8)
            .view([n, side, side, 3])
    }

    #[test]
    fn draws_are_seeded_per_batch_and_off_without_either_option() {
        let both = spec(Some((0.4, 0.5)), Some((1.0, 0.5)));
        assert_eq!(draw(&both, 32, 7, 2, 5), draw(&both, 32, 7, 2, 5));
        let draws: Vec<Option<MixDraw>> = (0..400).map(|b| draw(&both, 32, 7, 2, b)).collect();
        let cut = draws.iter().filter(|d| matches!(d, Some(MixDraw { kind: MixKind::Cutmix { .. }, .. }))).count();
        let mixup = draws.iter().filter(|d| matches!(d, Some(MixDraw { kind: MixKind::Mixup, .. }))).count();
        // CutMix on half the batches, mixup on half of the rest, a quarter left alone.
        assert!((160..240).contains(&cut), "{cut}");
        assert!((70..130).contains(&mixup), "{mixup}");
        assert!(draws.iter().flatten().all(|d| (0.0..=1.0).contains(&d.lambda)));
        let other_epoch: Vec<Option<MixDraw>> = (0..400).map(|b| draw(&both, 32, 7, 3, b)).collect();
        assert_ne!(draws, other_epoch);
        assert!((0..100).all(|b| draw(&Augment::default(), 32, 7, 2, b).is_none()));
        // prob 0 never mixes; prob 1 always.
        assert!((0..100).all(|b| draw(&spec(Some((1.0, 0.0)), Some((1.0, 0.0))), 32, 7, 2, b).is_none()));
        let always = spec(Some((0.2, 1.0)), None);
        assert!((0..100).all(|b| draw(&always, 32, 7, 2, b).is_some_and(|d| d.kind == MixKind::Mixup)));
    }

    #[test]
    fn mixup_is_a_convex_combination_with_the_reversed_batch() {
        let x = host_batch(4, 6);
        let d = MixDraw { kind: MixKind::Mixup, lambda: 0.3 };
        let out = apply(&x, &d);
        assert_eq!((out.size(), out.kind()), (vec![4, 6, 6, 3], Kind::Float));
        let f = x.to_kind(Kind::Float);
        for i in 0..4 {
            let want = f.get(i) * 0.3 + f.get(3 - i) * 0.7;
            assert!(out.get(i).allclose(&want, 1e-6, 1e-4, false), "image {i}");
        }
        // The mixed loss weights the two label sets the same way.
        let l = loss(&d, |reversed| Tensor::from(if reversed { 10.0f32 } else { 1.0 }));
        assert!((l.double_value(&[]) - (0.3 + 7.0)).abs() < 1e-5);
        assert!(!d.own_label_dominates());
    }

    #[test]
    fn cutmix_replaces_exactly_a_box_and_lambda_is_the_kept_share() {
        let side = 16;
        let x = host_batch(3, side);
        let cutmix = spec(None, Some((1.0, 1.0)));
        let mut seen = 0;
        for b in 0..50 {
            let d = draw(&cutmix, side, 1, 1, b).expect("prob 1 always draws");
            let MixKind::Cutmix { top, left, height, width } = d.kind else { panic!("{d:?}") };
            assert!(top >= 0 && left >= 0 && top + height <= side && left + width <= side, "{d:?}");
            assert!((d.lambda - (1.0 - (height * width) as f64 / (side * side) as f64)).abs() < 1e-12, "{d:?}");
            let out = apply(&x, &d);
            let f = x.to_kind(Kind::Float);
            let rev = f.flip([0]);
            // Inside the box: the partner's pixels; outside: the image's own.
            let inside = Tensor::zeros([side, side], (Kind::Bool, Device::Cpu));
            if height > 0 && width > 0 {
                let _ = inside.narrow(0, top, height).narrow(1, left, width).fill_(1);
                seen += 1;
            }
            let inside = inside.view([1, side, side, 1]);
            assert!(out.equal(&rev.where_self(&inside, &f)), "{d:?}");
        }
        assert!(seen > 40, "{seen} non-empty boxes");
    }

    #[test]
    fn the_host_and_device_resident_kinds_of_a_batch_mix_identically() {
        // The streaming loader's batch is uint8 and contiguous; the resident path's is float in 0..255, a permuted
        // view of an NCHW result (or NHWC-contiguous). The same images, the same draws: the same mixed batch.
        let side = 12;
        let host = host_batch(5, side);
        let resident = host.to_kind(Kind::Float).permute([0, 3, 1, 2]).contiguous().permute([0, 2, 3, 1]);
        let resident_nhwc = resident.contiguous();
        let both = spec(Some((0.4, 0.5)), Some((1.0, 0.5)));
        let mut kinds = (0, 0);
        for b in 0..40 {
            // The draw depends on (spec, side, seed, epoch, batch index) only, never on the batch's tensor.
            let Some(d) = draw(&both, side, 9, 1, b) else { continue };
            match d.kind {
                MixKind::Mixup => kinds.0 += 1,
                MixKind::Cutmix { .. } => kinds.1 += 1,
            }
            let a = apply(&host, &d);
            assert!(a.equal(&apply(&resident, &d)), "batch {b}: {d:?}");
            assert!(a.equal(&apply(&resident_nhwc, &d)), "batch {b}: {d:?}");
        }
        assert!(kinds.0 > 0 && kinds.1 > 0, "{kinds:?}");
        assert!(partner(&Tensor::from_slice(&[1i64, 2, 3])).equal(&Tensor::from_slice(&[3i64, 2, 1])));
    }
}
