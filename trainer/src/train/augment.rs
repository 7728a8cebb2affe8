//! Training-time augmentation of one decoded image (square, RGB, HWC u8): random resized crop, horizontal flip and a
//! small colour jitter, all drawn from an RNG the caller seeds per (seed, epoch, position), so an epoch's batches are
//! the same however many threads decode them and whether or not the run was resumed.

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use rush::core::spec::Augment;

/// Mixes values into one well-spread seed (splitmix64 over each).
pub fn mix_seed(parts: &[u64]) -> u64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15;
    for &p in parts {
        h ^= p.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_add(h << 6).wrapping_add(h >> 2);
        h = splitmix64(h);
    }
    h
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A crop window in source pixels (floating point, so the resize samples it exactly).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Window {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

/// torchvision's `RandomResizedCrop` window: area share in `scale`, aspect ratio log-uniform in [3/4, 4/3], ten
/// tries, then the whole image.
fn crop_window(side: f64, scale: [f64; 2], rng: &mut impl Rng) -> Window {
    let area = side * side;
    let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale[0]..=scale[1]);
        let ratio = rng.random_range(lo..=hi).exp();
        let w = (target * ratio).sqrt();
        let h = (target / ratio).sqrt();
        if w <= side && h <= side {
            let x = rng.random_range(0.0..=side - w);
            let y = rng.random_range(0.0..=side - h);
            return Window { x, y, w, h };
        }
    }
    Window { x: 0.0, y: 0.0, w: side, h: side }
}

/// Bilinear resample of `window` of the `side`-square `src` to a `side`-square output, mirrored when `flip`.
fn resample(src: &[u8], side: usize, window: Window, flip: bool) -> Vec<u8> {
    let mut out = vec![0u8; side * side * 3];
    let (sx, sy) = (window.w / side as f64, window.h / side as f64);
    let max = (side - 1) as f64;
    for oy in 0..side {
        let fy = (window.y + (oy as f64 + 0.5) * sy - 0.5).clamp(0.0, max);
        let y0 = fy.floor() as usize;
        let y1 = (y0 + 1).min(side - 1);
        let wy = fy - y0 as f64;
        for ox in 0..side {
            let col = if flip { side - 1 - ox } else { ox };
            let fx = (window.x + (col as f64 + 0.5) * sx - 0.5).clamp(0.0, max);
            let x0 = fx.floor() as usize;
            let x1 = (x0 + 1).min(side - 1);
            let wx = fx - x0 as f64;
            for c in 0..3 {
                let p = |x: usize, y: usize| f64::from(src[(y * side + x) * 3 + c]);
                let top = p(x0, y0) * (1.0 - wx) + p(x1, y0) * wx;
                let bottom = p(x0, y1) * (1.0 - wx) + p(x1, y1) * wx;
                out[(oy * side + ox) * 3 + c] = (top * (1.0 - wy) + bottom * wy).round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Brightness, contrast and saturation factors (each drawn in [1 - s, 1 + s]), applied in that order.
fn jitter(img: &mut [u8], [b, c, s]: [f32; 3]) {
    let gray = |r: f32, g: f32, b: f32| 0.299 * r + 0.587 * g + 0.114 * b;
    let pixels = img.len() / 3;
    let mean = img.chunks_exact(3).map(|p| gray(f32::from(p[0]), f32::from(p[1]), f32::from(p[2]))).sum::<f32>()
        / pixels.max(1) as f32
        * b;
    for p in img.chunks_exact_mut(3) {
        let mut v = [f32::from(p[0]) * b, f32::from(p[1]) * b, f32::from(p[2]) * b];
        for x in &mut v {
            *x = (*x - mean) * c + mean;
        }
        let g = gray(v[0], v[1], v[2]);
        for (dst, x) in p.iter_mut().zip(v) {
            *dst = (g + (x - g) * s).round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// One image's random choices: drawn on the host from its seeded RNG, then applied here (to bytes) or on the device
/// (`train::resident`, to a batch with tensor ops), so both paths see the same crops, flips and jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    /// Crop window (x, y, w, h) in source pixels; `None` keeps the whole image.
    pub window: Option<[f64; 4]>,
    pub flip: bool,
    /// Brightness, contrast, saturation factors; `None` without colour jitter.
    pub jitter: Option<[f32; 3]>,
}

/// Draws an image's augmentation as `spec` asks (the RNG order is: flip, crop window, jitter factors).
pub fn draw(side: usize, spec: &Augment, rng: &mut impl Rng) -> Draw {
    let flip = spec.hflip && rng.random_bool(0.5);
    let window = spec.random_resized_crop.map(|scale| {
        let w = crop_window(side as f64, scale, rng);
        [w.x, w.y, w.w, w.h]
    });
    let jitter = (spec.color_jitter > 0.0).then(|| {
        let s = spec.color_jitter;
        let mut factor = || rng.random_range((1.0 - s).max(0.0)..=1.0 + s) as f32;
        [factor(), factor(), factor()]
    });
    Draw { window, flip, jitter }
}

/// Augments a `side`-square RGB image as `spec` asks.
pub fn apply(img: Vec<u8>, side: usize, spec: &Augment, rng: &mut impl Rng) -> Vec<u8> {
    apply_draw(img, side, &draw(side, spec, rng))
}

/// Applies drawn choices to a `side`-square RGB image.
pub fn apply_draw(img: Vec<u8>, side: usize, d: &Draw) -> Vec<u8> {
    let mut out = match d.window {
        Some([x, y, w, h]) => resample(&img, side, Window { x, y, w, h }, d.flip),
        None if d.flip => resample(&img, side, Window { x: 0.0, y: 0.0, w: side as f64, h: side as f64 }, true),
        None => img,
    };
    if let Some(factors) = d.jitter {
        jitter(&mut out, factors);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(side: usize) -> Vec<u8> {
        (0..side * side * 3).map(|i| ((i / 3) % side * 255 / (side - 1)) as u8).collect()
    }

    #[test]
    fn seeds_spread_and_are_stable() {
        assert_eq!(mix_seed(&[1, 2]), mix_seed(&[1, 2]));
        assert_ne!(mix_seed(&[1, 2]), mix_seed(&[2, 1]));
        assert_ne!(mix_seed(&[0, 1]), mix_seed(&[0, 2]));
    }

    #[test]
    fn identity_window_without_flip_is_the_image() {
        let img = gradient(8);
        let out = resample(&img, 8, Window { x: 0.0, y: 0.0, w: 8.0, h: 8.0 }, false);
        assert_eq!(out, img);
    }

    #[test]
    fn flip_mirrors_columns() {
        let side = 6;
        let img = gradient(side);
        let spec = Augment { random_resized_crop: None, hflip: true, color_jitter: 0.0, ..Augment::default() };
        // Find a seed that flips, then check the mirror.
        let flipped = (0..20).map(|s| apply(img.clone(), side, &spec, &mut rng(s))).find(|o| *o != img).unwrap();
        for y in 0..side {
            for x in 0..side {
                assert_eq!(flipped[(y * side + x) * 3], img[(y * side + side - 1 - x) * 3]);
            }
        }
    }

    #[test]
    fn crops_stay_inside_and_respect_the_scale() {
        let mut r = rng(7);
        for _ in 0..200 {
            let w = crop_window(32.0, [0.3, 0.6], &mut r);
            assert!(w.x >= 0.0 && w.y >= 0.0 && w.x + w.w <= 32.0 + 1e-9 && w.y + w.h <= 32.0 + 1e-9, "{w:?}");
            let share = w.w * w.h / 1024.0;
            assert!((0.3 - 1e-9..=0.6 + 1e-9).contains(&share) || share == 1.0, "{share}");
        }
    }

    #[test]
    fn augmentation_is_deterministic_from_the_seed() {
        let img = gradient(16);
        let spec =
            Augment { random_resized_crop: Some([0.5, 1.0]), hflip: true, color_jitter: 0.3, ..Augment::default() };
        let a = apply(img.clone(), 16, &spec, &mut rng(42));
        let b = apply(img.clone(), 16, &spec, &mut rng(42));
        let c = apply(img.clone(), 16, &spec, &mut rng(43));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), img.len());
    }

    #[test]
    fn jitter_keeps_gray_gray_and_white_near_white_at_low_strength() {
        let mut img = vec![200u8; 4 * 4 * 3];
        let spec = Augment { random_resized_crop: None, hflip: false, color_jitter: 0.1, ..Augment::default() };
        let factors = draw(4, &spec, &mut rng(1)).jitter.unwrap();
        assert!(factors.iter().all(|f| (0.9..=1.1).contains(f)), "{factors:?}");
        jitter(&mut img, factors);
        for p in img.chunks_exact(3) {
            assert!(p[0] == p[1] && p[1] == p[2], "{p:?}");
            assert!((180..=220).contains(&p[0]), "{p:?}");
        }
    }
}
