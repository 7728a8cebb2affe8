//! Training-time augmentation of one decoded image (square, RGB, HWC u8): a random resized crop, horizontal flip and
//! rotation (one affine resample), colour jitter, grayscale and random erasing, all drawn from an RNG the caller
//! seeds per (seed, epoch, position), so an epoch's batches are the same however many threads decode them and
//! whether or not the run was resumed.
//!
//! The draws ([`draw`]) are separate from their application: here on the host ([`apply_draw`]), or on the device for
//! a whole batch (`train::resident`), so both paths train on the same images. Values stay floats in 0..255 from the
//! resample on (`RUSH_RECIPE_ABLATE=byte-augment` restores the earlier arithmetic: bytes, rounded after each stage).

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

/// What to apply and how: the spec's augmentation, in floats or (the ablation) in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub spec: Augment,
    /// Round to bytes after each stage, with the earlier jitter arithmetic (`RUSH_RECIPE_ABLATE=byte-augment`).
    pub bytes: bool,
}

impl Plan {
    pub fn floats(spec: Augment) -> Self {
        Self { spec, bytes: false }
    }
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

/// The output-to-source map of a draw, in normalised coordinates ([-1, 1], pixel centres at `(i + 0.5) / S * 2 - 1`,
/// as `affine_grid` with `align_corners = false` has them): `src = A u + b`, row-major `[a00, a01, b0, a10, a11, b1]`.
/// The crop window scales, the flip mirrors x, and the rotation turns about the window's centre.
pub fn affine(side: usize, d: &Draw) -> [f64; 6] {
    let s = side as f64;
    let [x0, y0, w, h] = d.window.unwrap_or([0.0, 0.0, s, s]);
    let mirror = if d.flip { -1.0 } else { 1.0 };
    let (dx, dy) = (w / s * mirror, h / s);
    let (cx, cy) = ((x0 + w / 2.0) / s * 2.0 - 1.0, (y0 + h / 2.0) / s * 2.0 - 1.0);
    let (sin, cos) = d.rotate.unwrap_or(0.0).to_radians().sin_cos();
    [cos * dx, -sin * dy, cx, sin * dx, cos * dy, cy]
}

/// Bilinear resample of the `side`-square `src` through `d`'s affine map to a `side`-square output (borders clamped),
/// as floats in 0..255.
fn resample(src: &[u8], side: usize, d: &Draw) -> Vec<f32> {
    let [a00, a01, b0, a10, a11, b1] = affine(side, d);
    let s = side as f64;
    let mut out = vec![0f32; side * side * 3];
    let max = (side - 1) as f64;
    let to_pixel = |n: f64| ((n + 1.0) / 2.0 * s - 0.5).clamp(0.0, max);
    for oy in 0..side {
        let v = (oy as f64 + 0.5) / s * 2.0 - 1.0;
        for ox in 0..side {
            let u = (ox as f64 + 0.5) / s * 2.0 - 1.0;
            let fx = to_pixel(a00 * u + a01 * v + b0);
            let fy = to_pixel(a10 * u + a11 * v + b1);
            let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
            let (x1, y1) = ((x0 + 1).min(side - 1), (y0 + 1).min(side - 1));
            let (wx, wy) = (fx - x0 as f64, fy - y0 as f64);
            for c in 0..3 {
                let p = |x: usize, y: usize| f64::from(src[(y * side + x) * 3 + c]);
                let top = p(x0, y0) * (1.0 - wx) + p(x1, y0) * wx;
                let bottom = p(x0, y1) * (1.0 - wx) + p(x1, y1) * wx;
                out[(oy * side + ox) * 3 + c] = (top * (1.0 - wy) + bottom * wy) as f32;
            }
        }
    }
    out
}

fn gray(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// Brightness, contrast and saturation factors, applied in that order. In floats each step is clamped to 0..255, as
/// torchvision's `adjust_*` clamp to [0, 1]; in bytes (the earlier arithmetic) only the end is.
fn jitter(img: &mut [f32], [b, c, s]: [f32; 3], bytes: bool) {
    let clamp = |x: f32| if bytes { x } else { x.clamp(0.0, 255.0) };
    for x in img.iter_mut() {
        *x = clamp(*x * b);
    }
    let pixels = (img.len() / 3).max(1) as f32;
    let mean = img.chunks_exact(3).map(|p| gray(p[0], p[1], p[2])).sum::<f32>() / pixels;
    for x in img.iter_mut() {
        *x = clamp((*x - mean) * c + mean);
    }
    for p in img.chunks_exact_mut(3) {
        let g = gray(p[0], p[1], p[2]);
        for x in p.iter_mut() {
            *x = (g + (*x - g) * s).clamp(0.0, 255.0);
        }
    }
}

/// An erased box in output pixels and its colour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Erase {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
    pub color: [f32; 3],
}

/// torchvision's `RandomErasing` box: area share in [0.02, 0.33], aspect log-uniform in [0.3, 3.3], ten tries (none
/// fitting: no box), filled with a random colour.
fn erase_box(side: usize, rng: &mut impl Rng) -> Option<Erase> {
    let area = (side * side) as f64;
    let (lo, hi) = (0.3f64.ln(), 3.3f64.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(0.02..=0.33);
        let ratio = rng.random_range(lo..=hi).exp();
        let h = (target * ratio).sqrt().round() as usize;
        let w = (target / ratio).sqrt().round() as usize;
        if h == 0 || w == 0 || h >= side || w >= side {
            continue;
        }
        let y = rng.random_range(0..=side - h);
        let x = rng.random_range(0..=side - w);
        let color =
            [rng.random_range(0.0..=255.0f32), rng.random_range(0.0..=255.0f32), rng.random_range(0.0..=255.0f32)];
        return Some(Erase { x, y, w, h, color });
    }
    None
}

/// One image's random choices: drawn on the host from its seeded RNG, then applied here (to one image) or on the
/// device (`train::resident`, to a batch with tensor ops), so both paths see the same images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    /// Crop window (x, y, w, h) in source pixels; `None` keeps the whole image.
    pub window: Option<[f64; 4]>,
    pub flip: bool,
    /// Rotation in degrees (counter-clockwise in the source); `None` without `augment.rotate`.
    pub rotate: Option<f64>,
    /// Brightness, contrast, saturation factors; `None` without colour jitter.
    pub jitter: Option<[f32; 3]>,
    pub grayscale: bool,
    pub erase: Option<Erase>,
}

impl Draw {
    /// Whether the geometry changes (a resample is needed).
    pub fn moves(&self) -> bool {
        self.window.is_some() || self.flip || self.rotate.is_some_and(|r| r != 0.0)
    }
}

/// Draws an image's augmentation as `spec` asks. The RNG order is: flip, crop window, jitter factors, then only for
/// the options that are on: rotation, grayscale, erasing (so turning one on leaves the earlier draws as they were).
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
    let rotate = (spec.rotate > 0.0).then(|| rng.random_range(-spec.rotate..=spec.rotate));
    let grayscale = spec.grayscale > 0.0 && rng.random_bool(spec.grayscale.clamp(0.0, 1.0));
    let erase = (spec.random_erasing > 0.0 && rng.random_bool(spec.random_erasing.clamp(0.0, 1.0)))
        .then(|| erase_box(side, rng))
        .flatten();
    Draw { window, flip, rotate, jitter, grayscale, erase }
}

/// Augments a `side`-square RGB image as `plan` asks: floats in 0..255 (whole numbers with `plan.bytes`).
pub fn apply(img: Vec<u8>, side: usize, plan: &Plan, rng: &mut impl Rng) -> Vec<f32> {
    apply_draw(&img, side, &draw(side, &plan.spec, rng), plan.bytes)
}

/// Applies drawn choices to a `side`-square RGB image: the resample, jitter, grayscale, erasing, in that order; with
/// `bytes`, rounded after each.
pub fn apply_draw(img: &[u8], side: usize, d: &Draw, bytes: bool) -> Vec<f32> {
    let round = |v: &mut [f32]| {
        if bytes {
            v.iter_mut().for_each(|x| *x = x.round().clamp(0.0, 255.0));
        }
    };
    let only_flip = d.window.is_none() && d.rotate.is_none_or(|r| r == 0.0);
    let mut out: Vec<f32> = if only_flip {
        // A mirror alone is exact (the device path flips without resampling too).
        let col = |i: usize| if d.flip { side - 1 - (i / 3) % side } else { (i / 3) % side };
        (0..img.len()).map(|i| f32::from(img[(i / 3 / side * side + col(i)) * 3 + i % 3])).collect()
    } else {
        resample(img, side, d)
    };
    round(&mut out);
    if let Some(factors) = d.jitter {
        jitter(&mut out, factors, bytes);
        round(&mut out);
    }
    if d.grayscale {
        for p in out.chunks_exact_mut(3) {
            let g = gray(p[0], p[1], p[2]);
            p.fill(g);
        }
        round(&mut out);
    }
    if let Some(e) = d.erase {
        for y in e.y..e.y + e.h {
            for x in e.x..e.x + e.w {
                out[(y * side + x) * 3..(y * side + x) * 3 + 3].copy_from_slice(&e.color);
            }
        }
        round(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(side: usize) -> Vec<u8> {
        (0..side * side * 3).map(|i| ((i / 3) % side * 255 / (side - 1)) as u8).collect()
    }

    fn only(f: impl FnOnce(&mut Augment)) -> Augment {
        let mut a = Augment {
            random_resized_crop: None,
            hflip: false,
            color_jitter: 0.0,
            rotate: 0.0,
            grayscale: 0.0,
            random_erasing: 0.0,
            ..Augment::default()
        };
        f(&mut a);
        a
    }

    fn floats(img: &[u8]) -> Vec<f32> {
        img.iter().map(|&b| f32::from(b)).collect()
    }

    const NONE: Draw = Draw { window: None, flip: false, rotate: None, jitter: None, grayscale: false, erase: None };

    #[test]
    fn seeds_spread_and_are_stable() {
        assert_eq!(mix_seed(&[1, 2]), mix_seed(&[1, 2]));
        assert_ne!(mix_seed(&[1, 2]), mix_seed(&[2, 1]));
        assert_ne!(mix_seed(&[0, 1]), mix_seed(&[0, 2]));
    }

    #[test]
    fn the_identity_window_is_the_image_exactly() {
        let img = gradient(8);
        let d = Draw { window: Some([0.0, 0.0, 8.0, 8.0]), ..NONE };
        assert_eq!(resample(&img, 8, &d), floats(&img));
        assert_eq!(apply_draw(&img, 8, &NONE, false), floats(&img));
    }

    #[test]
    fn flip_mirrors_columns() {
        let side = 6;
        let img = gradient(side);
        let plan = Plan::floats(only(|a| a.hflip = true));
        // Find a seed that flips, then check the mirror.
        let flipped =
            (0..20).map(|s| apply(img.clone(), side, &plan, &mut rng(s))).find(|o| *o != floats(&img)).unwrap();
        for y in 0..side {
            for x in 0..side {
                assert_eq!(flipped[(y * side + x) * 3], f32::from(img[(y * side + side - 1 - x) * 3]));
            }
        }
    }

    #[test]
    fn a_quarter_turn_moves_columns_to_rows() {
        let side = 8;
        let img = gradient(side); // value grows with x, constant down a column
        let out = apply_draw(&img, side, &Draw { rotate: Some(90.0), ..NONE }, false);
        // Turned a quarter: the value now grows (or falls) with y and is constant along a row.
        for y in 0..side {
            let row: Vec<f32> = (0..side).map(|x| out[(y * side + x) * 3]).collect();
            assert!(row.iter().all(|v| (v - row[0]).abs() < 1e-3), "row {y}: {row:?}");
        }
        let (top, bottom) = (out[0], out[(side - 1) * side * 3]);
        assert!((top - bottom).abs() > 200.0, "{top} {bottom}");
        // A small angle changes the image but keeps it close.
        let small = apply_draw(&img, side, &Draw { rotate: Some(5.0), ..NONE }, false);
        assert_ne!(small, floats(&img));
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
    fn augmentation_is_deterministic_from_the_seed_and_floats_unless_bytes() {
        let img = gradient(16);
        let spec = Augment {
            random_resized_crop: Some([0.5, 1.0]),
            hflip: true,
            color_jitter: 0.3,
            rotate: 20.0,
            grayscale: 0.5,
            random_erasing: 0.5,
            ..Augment::default()
        };
        let plan = Plan::floats(spec.clone());
        let a = apply(img.clone(), 16, &plan, &mut rng(42));
        let b = apply(img.clone(), 16, &plan, &mut rng(42));
        let c = apply(img.clone(), 16, &plan, &mut rng(43));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), img.len());
        assert!(a.iter().any(|x| x.fract() != 0.0), "floats keep fractions");
        let bytes = apply(img.clone(), 16, &Plan { spec, bytes: true }, &mut rng(42));
        assert!(bytes.iter().all(|x| x.fract() == 0.0 && (0.0..=255.0).contains(x)));
        let worst = a.iter().zip(&bytes).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(worst <= 3.0, "bytes differ from floats by rounding only: {worst}");
    }

    #[test]
    fn options_that_are_off_leave_the_earlier_draws_alone() {
        let base = Augment { random_resized_crop: Some([0.5, 1.0]), hflip: true, color_jitter: 0.3, ..only(|_| {}) };
        let with = Augment { rotate: 10.0, grayscale: 0.5, random_erasing: 0.5, ..base.clone() };
        for seed in 0..20 {
            let (a, b) = (draw(16, &base, &mut rng(seed)), draw(16, &with, &mut rng(seed)));
            assert_eq!((a.window, a.flip, a.jitter), (b.window, b.flip, b.jitter));
            assert_eq!((a.rotate, a.grayscale, a.erase), (None, false, None));
        }
    }

    #[test]
    fn jitter_keeps_gray_gray_and_white_near_white_at_low_strength() {
        let mut img = vec![200f32; 4 * 4 * 3];
        let factors = draw(4, &only(|a| a.color_jitter = 0.1), &mut rng(1)).jitter.unwrap();
        assert!(factors.iter().all(|f| (0.9..=1.1).contains(f)), "{factors:?}");
        jitter(&mut img, factors, false);
        for p in img.chunks_exact(3) {
            assert!(p[0] == p[1] && p[1] == p[2], "{p:?}");
            assert!((180.0..=220.0).contains(&p[0]), "{p:?}");
        }
    }

    #[test]
    fn grayscale_makes_every_pixel_grey_at_its_luma_and_only_when_drawn() {
        let img: Vec<u8> = (0..4 * 4).flat_map(|i| [(i * 16) as u8, 200, 30]).collect();
        let out = apply_draw(&img, 4, &Draw { grayscale: true, ..NONE }, false);
        for (p, q) in out.chunks_exact(3).zip(img.chunks_exact(3)) {
            assert!(p[0] == p[1] && p[1] == p[2]);
            assert!((p[0] - gray(f32::from(q[0]), f32::from(q[1]), f32::from(q[2]))).abs() < 1e-3);
        }
        let spec = only(|a| a.grayscale = 0.3);
        let share = (0..1000).filter(|&s| draw(4, &spec, &mut rng(s)).grayscale).count();
        assert!((230..=370).contains(&share), "grayscale drawn {share} times in 1000 at p = 0.3");
        assert!((0..100).all(|s| !draw(4, &only(|_| {}), &mut rng(s)).grayscale));
    }

    #[test]
    fn erasing_paints_exactly_one_box_of_the_drawn_size() {
        let side = 32;
        let img = gradient(side);
        let spec = only(|a| a.random_erasing = 1.0);
        for seed in 0..50 {
            let d = draw(side, &spec, &mut rng(seed));
            let e = d.erase.expect("p = 1 erases");
            let share = (e.w * e.h) as f64 / (side * side) as f64;
            assert!((0.01..=0.36).contains(&share), "{e:?}");
            assert!(e.x + e.w <= side && e.y + e.h <= side);
            let out = apply_draw(&img, side, &d, false);
            let changed: Vec<usize> =
                (0..side * side).filter(|&i| out[i * 3..i * 3 + 3] != floats(&img[i * 3..i * 3 + 3])[..]).collect();
            let inside = |i: usize| (e.x..e.x + e.w).contains(&(i % side)) && (e.y..e.y + e.h).contains(&(i / side));
            assert!(changed.iter().all(|&i| inside(i)), "a pixel outside the box changed");
            let i = (e.y + e.h / 2) * side + e.x + e.w / 2;
            assert_eq!(&out[i * 3..i * 3 + 3], &e.color);
        }
    }
}
