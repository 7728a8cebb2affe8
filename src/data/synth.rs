//! The synthetic sticker generator: procedural RGBA stickers in the AI RUSH layout whose tags follow from what is
//! drawn, deterministic from a seed, multi-threaded, at AI RUSH scale.
//!
//! Each of the 350 tags is a visible kind of shape: 10 shapes x 7 colours x 5 fill patterns. Tag `i` has shape
//! `(i % 50) % 10`, fill `(i % 50) / 10` and colour `i % 7` (a bijection on 0..350 since 50 and 7 are coprime), so the
//! first ten tags differ in shape and colour. A sticker draws one big outlined shape in the middle (its first tag, the
//! label) and 0 to 2 small "companion" shapes in the upper corners (tags 2 and 3), on a transparent background.
//! `--classes K` draws labels from the first K tags only (class `i` is tag `i`); companions are any tags above the
//! label, so a sticker's label is its smallest tag id and `np.argmax` of its `train/train_label` row is the label, as
//! AI RUSH's baseline reads it.
//!
//! Stickers come in packages of `per_package`: a package shares a style (outline width and colour, a pale backdrop or
//! none, a face on the main shape or not, base tilt and scale), so splitting by package is meaningful. Every sticker is
//! drawn from its own RNG, seeded from `(seed, split, index)`, so the output is the same whatever the thread count.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::layout::{
    self, NUM_TAGS, PACKAGES_TSV, TAG_TSV, TEST_LABELS_CSV, TEST_ORDER_CSV, TRAIN_CSV, image_path,
};
use crate::data::split::choose_valid_packages;

/// A word in the four languages written to `tag.tsv`.
struct Word {
    en: &'static str,
    ko: &'static str,
    ja: &'static str,
    fr: &'static str,
}

const fn w(en: &'static str, ko: &'static str, ja: &'static str, fr: &'static str) -> Word {
    Word { en, ko, ja, fr }
}

const SHAPES: [Word; 10] = [
    w("circle", "원", "丸", "cercle"),
    w("square", "사각형", "四角", "carré"),
    w("triangle", "삼각형", "三角", "triangle"),
    w("diamond", "마름모", "ひし形", "losange"),
    w("star", "별", "星", "étoile"),
    w("heart", "하트", "ハート", "cœur"),
    w("ring", "고리", "輪", "anneau"),
    w("plus", "더하기", "十字", "plus"),
    w("arrow", "화살표", "矢印", "flèche"),
    w("moon", "달", "月", "lune"),
];

const COLOURS: [(Word, [u8; 3]); 7] = [
    (w("red", "빨강", "赤", "rouge"), [226, 38, 44]),
    (w("orange", "주황", "橙", "orange"), [246, 136, 26]),
    (w("yellow", "노랑", "黄", "jaune"), [250, 212, 30]),
    (w("green", "초록", "緑", "vert"), [52, 168, 72]),
    (w("teal", "청록", "青緑", "sarcelle"), [20, 170, 180]),
    (w("blue", "파랑", "青", "bleu"), [40, 84, 216]),
    (w("purple", "보라", "紫", "violet"), [140, 60, 190]),
];

const FILLS: [Word; 5] = [
    w("solid", "단색", "無地", "uni"),
    w("h-striped", "가로줄", "横縞", "rayé horizontal"),
    w("v-striped", "세로줄", "縦縞", "rayé vertical"),
    w("dotted", "물방울", "水玉", "à pois"),
    w("checked", "체크", "市松", "à carreaux"),
];

/// The colours a package outlines in (untagged style).
const OUTLINES: [[u8; 3]; 4] = [[20, 20, 20], [30, 40, 90], [90, 50, 20], [70, 70, 70]];

/// The tag id of a shape, colour and fill.
pub fn tag_id(shape: usize, colour: usize, fill: usize) -> u16 {
    (0..NUM_TAGS as u16).find(|&t| tag_parts(t) == (shape, colour, fill)).unwrap_or(0)
}

/// `(shape, colour, fill)` of a tag id.
pub fn tag_parts(tag: u16) -> (usize, usize, usize) {
    let t = tag as usize % NUM_TAGS;
    ((t % 50) % 10, t % 7, (t % 50) / 10)
}

/// The label (tag id) of class `i`: tag `i` (see the module note).
pub fn class_tag(class: u32) -> u16 {
    (class as usize % NUM_TAGS) as u16
}

/// The rows of `tag.tsv`: id, keywords (comma-separated, all languages), languages, name.
pub fn tag_rows() -> Vec<layout::Tag> {
    (0..NUM_TAGS as u16)
        .map(|id| {
            let (s, c, f) = tag_parts(id);
            let (shape, (colour, _), fill) = (&SHAPES[s], &COLOURS[c], &FILLS[f]);
            let name = if f == 0 {
                format!("{} {}", colour.en, shape.en)
            } else {
                format!("{} {} {}", colour.en, fill.en, shape.en)
            };
            let words = [shape, colour, fill];
            let keywords: Vec<&str> = [|w: &Word| w.en, |w: &Word| w.ko, |w: &Word| w.ja, |w: &Word| w.fr]
                .iter()
                .flat_map(|lang| words.iter().map(move |w| lang(w)))
                .collect();
            layout::Tag { id, keywords: keywords.join(","), languages: "en,ko,ja,fr".into(), name }
        })
        .collect()
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub out: PathBuf,
    pub train: u64,
    pub test: u64,
    pub seed: u64,
    pub per_package: u64,
    /// Distinct labels drawn, 1..=350.
    pub classes: u32,
    pub width: u32,
    pub height: u32,
    /// Share of training packages marked `valid` in `packages.tsv` (0: none, the split column stays empty).
    pub valid_fraction: f64,
    /// Worker threads (None: all cores).
    pub threads: Option<usize>,
}

/// What was generated.
#[derive(Debug, Clone)]
pub struct SynthReport {
    pub images: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub threads: usize,
}

impl SynthReport {
    pub fn images_per_second(&self) -> f64 {
        self.images as f64 / self.seconds.max(1e-9)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Write { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SynthError + '_ {
    move |source| SynthError::Io { path: path.to_path_buf(), source }
}

/// A progress bar on stderr, hidden when `quiet` or when stderr is not a terminal.
pub fn progress_bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} stickers, {per_sec}, eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Train,
    Test,
}

impl Part {
    fn stream(self) -> u64 {
        match self {
            Part::Train => 1,
            Part::Test => 2,
        }
    }
}

/// Generates a dataset in `opts.out` (which must not exist or be empty).
pub fn generate(opts: &SynthOptions, progress: &ProgressBar) -> Result<SynthReport, SynthError> {
    validate(opts)?;
    let started = Instant::now();
    let out = &opts.out;
    if out.exists() && std::fs::read_dir(out).map_err(io(out))?.next().is_some() {
        return Err(SynthError::Invalid(format!("{}: the output folder is not empty", out.display())));
    }
    let train_dir = layout::train_dir(out);
    let test_dir = layout::test_dir(out);
    for dir in [&train_dir, &test_dir] {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let train_packages = opts.train.div_ceil(opts.per_package);
    let test_packages = opts.test.div_ceil(opts.per_package);
    for p in 0..train_packages {
        let dir = train_dir.join("images").join(package_id(Part::Train, p, opts));
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    }
    for p in 0..test_packages {
        let dir = test_dir.join("images").join(package_id(Part::Test, p, opts));
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    }

    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(threads) = opts.threads {
        builder = builder.num_threads(threads);
    }
    let pool = builder.build().map_err(|e| SynthError::Invalid(format!("cannot start worker threads: {e}")))?;
    let threads = pool.current_num_threads();
    progress.set_length(opts.train + opts.test);
    progress.set_message("synth");

    let render_part = |part: Part, count: u64, dir: &Path| -> Result<Vec<(Vec<u16>, u64)>, SynthError> {
        pool.install(|| {
            (0..count)
                .into_par_iter()
                .map_init(Painter::default, |painter, index| {
                    let sticker = Sticker::new(opts, part, index);
                    let path = image_path(dir, &sticker.package_id, &sticker.sticker_id);
                    let bytes = painter.png(&sticker, opts.width, opts.height, &path)?;
                    std::fs::write(&path, bytes).map_err(io(&path))?;
                    progress.inc(1);
                    Ok((sticker.tags, bytes.len() as u64))
                })
                .collect()
        })
    };
    let train = render_part(Part::Train, opts.train, &train_dir)?;
    let test = render_part(Part::Test, opts.test, &test_dir)?;
    progress.finish_and_clear();

    write_train_csv(&train_dir.join(TRAIN_CSV), opts, &train)?;
    layout::write_train_label(out)
        .map_err(|e| SynthError::Write { path: layout::train_label_path(out), message: e.to_string() })?;
    write_tag_tsv(&train_dir.join(TAG_TSV))?;
    write_packages_tsv(&train_dir.join(PACKAGES_TSV), opts, train_packages)?;
    write_test_csvs(out, opts, &test)?;

    let bytes = train.iter().chain(&test).map(|(_, b)| b).sum();
    Ok(SynthReport { images: opts.train + opts.test, bytes, seconds: started.elapsed().as_secs_f64(), threads })
}

fn validate(opts: &SynthOptions) -> Result<(), SynthError> {
    let bad = |m: String| Err(SynthError::Invalid(m));
    if opts.classes == 0 || opts.classes as usize > NUM_TAGS {
        return bad(format!("--classes {} must be in 1..={NUM_TAGS}", opts.classes));
    }
    if opts.per_package == 0 {
        return bad("--per-package must be at least 1".into());
    }
    if opts.width < 16 || opts.height < 16 || opts.width > 4096 || opts.height > 4096 {
        return bad(format!("--width {} --height {} must each be in 16..=4096", opts.width, opts.height));
    }
    if opts.train == 0 {
        return bad("--train must be at least 1".into());
    }
    if !(0.0..1.0).contains(&opts.valid_fraction) {
        return bad(format!("--valid-fraction {} must be in [0, 1)", opts.valid_fraction));
    }
    if opts.threads == Some(0) {
        return bad("--threads must be at least 1".into());
    }
    Ok(())
}

/// Package ids are numbers, test packages numbered after the training ones; sticker ids likewise.
fn package_id(part: Part, package: u64, opts: &SynthOptions) -> String {
    match part {
        Part::Train => package.to_string(),
        Part::Test => (opts.train.div_ceil(opts.per_package) + package).to_string(),
    }
}

fn sticker_id(part: Part, index: u64, opts: &SynthOptions) -> String {
    match part {
        Part::Train => index.to_string(),
        Part::Test => (opts.train + index).to_string(),
    }
}

/// A deterministic RNG for one (seed, stream, index).
fn rng_for(seed: u64, stream: u64, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&stream.to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    key[24..].copy_from_slice(b"rushsynt");
    ChaCha8Rng::from_seed(key)
}

/// A package's shared look.
#[derive(Debug, Clone)]
struct Style {
    /// Outline width as a share of the short side.
    outline_width: f32,
    outline: [u8; 3],
    /// A pale disc (true) or rounded square (false) behind the shape, or nothing.
    backdrop: Option<(bool, [u8; 3])>,
    face: bool,
    tilt: f32,
    scale: f32,
}

impl Style {
    fn new(seed: u64, part: Part, package: u64) -> Style {
        let mut rng = rng_for(seed, 10 + part.stream(), package);
        let backdrop = if rng.random_bool(0.5) {
            let tint = [rng.random_range(215..=250), rng.random_range(215..=250), rng.random_range(215..=250)];
            Some((rng.random_bool(0.5), tint))
        } else {
            None
        };
        Style {
            outline_width: rng.random_range(0.008..0.03),
            outline: OUTLINES[rng.random_range(0..OUTLINES.len())],
            backdrop,
            face: rng.random_bool(0.3),
            tilt: rng.random_range(-0.2..0.2),
            scale: rng.random_range(0.55..0.68),
        }
    }
}

/// Everything about one sticker: ids, tags, and where things are drawn.
#[derive(Debug, Clone)]
struct Sticker {
    package_id: String,
    sticker_id: String,
    style: Style,
    /// The label first, then the companions' tags.
    tags: Vec<u16>,
    /// Centre offset, as a share of the short side.
    shift: (f32, f32),
    angle: f32,
    scale: f32,
    /// Which upper corner each companion sits in (right first).
    corners: Vec<bool>,
}

impl Sticker {
    fn new(opts: &SynthOptions, part: Part, index: u64) -> Sticker {
        let package = index / opts.per_package;
        let style = Style::new(opts.seed, part, package);
        let mut rng = rng_for(opts.seed, part.stream(), index);
        let label = class_tag(rng.random_range(0..opts.classes));
        let mut tags = vec![label];
        let companions = match rng.random_range(0..100) {
            0..40 => 0,
            40..75 => 1,
            _ => 2,
        };
        // Any tag above the label (so the label stays the smallest id): companions use the rest of the vocabulary.
        let companions = companions.min(NUM_TAGS - 1 - label as usize);
        for _ in 0..companions {
            let tag = loop {
                let t = rng.random_range(label + 1..NUM_TAGS as u16);
                if !tags.contains(&t) {
                    break t;
                }
            };
            tags.push(tag);
        }
        let first_right = rng.random_bool(0.5);
        let corners = (0..companions).map(|i| (i == 0) == first_right).collect();
        Sticker {
            package_id: package_id(part, package, opts),
            sticker_id: sticker_id(part, index, opts),
            tags,
            shift: (rng.random_range(-0.05..0.05), rng.random_range(-0.03..0.05)),
            angle: style.tilt + rng.random_range(-0.12..0.12),
            scale: style.scale * rng.random_range(0.9..1.1),
            style,
            corners,
        }
    }
}

/// Signed distance (negative inside) of a shape of "radius" about 1 at local point `(x, y)`, y pointing down.
fn shape_distance(shape: usize, x: f32, y: f32) -> f32 {
    match shape {
        0 => (x * x + y * y).sqrt() - 0.95,
        1 => rounded_box(x, y, 0.8, 0.8, 0.12),
        2 => polygon_distance(&TRIANGLE, x, y),
        3 => polygon_distance(&DIAMOND, x, y),
        4 => polygon_distance(&STAR, x, y),
        5 => heart_distance(x, y),
        6 => ((x * x + y * y).sqrt() - 0.68).abs() - 0.3,
        7 => rounded_box(x, y, 0.95, 0.32, 0.04).min(rounded_box(x, y, 0.32, 0.95, 0.04)),
        8 => polygon_distance(&ARROW, x, y),
        _ => {
            let outer = (x * x + y * y).sqrt() - 0.95;
            let (dx, dy) = (x - 0.42, y + 0.22);
            let bite = (dx * dx + dy * dy).sqrt() - 0.78;
            outer.max(-bite)
        }
    }
}

fn rounded_box(x: f32, y: f32, hx: f32, hy: f32, r: f32) -> f32 {
    let (qx, qy) = (x.abs() - hx + r, y.abs() - hy + r);
    let outside = (qx.max(0.0).powi(2) + qy.max(0.0).powi(2)).sqrt();
    outside + qx.max(qy).min(0.0) - r
}

/// Inigo Quilez's exact heart distance, scaled to fill the unit radius.
fn heart_distance(x: f32, y: f32) -> f32 {
    const S: f32 = 1.65;
    let (px, py) = (x.abs() / S, (0.92 - y) / S);
    let dot2 = |a: f32, b: f32| a * a + b * b;
    let d = if px + py > 1.0 {
        dot2(px - 0.25, py - 0.75).sqrt() - std::f32::consts::SQRT_2 / 4.0
    } else {
        let m = 0.5 * (px + py).max(0.0);
        dot2(px, py - 1.0).min(dot2(px - m, py - m)).sqrt() * (px - py).signum()
    };
    d * S
}

/// Signed distance to a closed polygon (Inigo Quilez's winding formulation).
fn polygon_distance(v: &[(f32, f32)], x: f32, y: f32) -> f32 {
    let mut d = (x - v[0].0).powi(2) + (y - v[0].1).powi(2);
    let mut s = 1.0f32;
    let mut j = v.len() - 1;
    for i in 0..v.len() {
        let (ex, ey) = (v[j].0 - v[i].0, v[j].1 - v[i].1);
        let (wx, wy) = (x - v[i].0, y - v[i].1);
        let t = ((wx * ex + wy * ey) / (ex * ex + ey * ey)).clamp(0.0, 1.0);
        let (bx, by) = (wx - ex * t, wy - ey * t);
        d = d.min(bx * bx + by * by);
        let c = (y >= v[i].1, y < v[j].1, ex * wy > ey * wx);
        if (c.0 && c.1 && c.2) || (!c.0 && !c.1 && !c.2) {
            s = -s;
        }
        j = i;
    }
    s * d.sqrt()
}

fn regular(points: usize, outer: f32, inner: f32, rotation: f32, dy: f32) -> Vec<(f32, f32)> {
    let n = if inner > 0.0 { points * 2 } else { points };
    (0..n)
        .map(|i| {
            let r = if inner > 0.0 && i % 2 == 1 { inner } else { outer };
            let a = rotation + i as f32 * std::f32::consts::TAU / n as f32;
            (r * a.cos(), r * a.sin() + dy)
        })
        .collect()
}

static TRIANGLE: LazyLock<Vec<(f32, f32)>> = LazyLock::new(|| regular(3, 1.12, 0.0, -std::f32::consts::FRAC_PI_2, 0.2));
static STAR: LazyLock<Vec<(f32, f32)>> = LazyLock::new(|| regular(5, 1.05, 0.45, -std::f32::consts::FRAC_PI_2, 0.08));
static DIAMOND: [(f32, f32); 4] = [(0.0, -1.0), (0.75, 0.0), (0.0, 1.0), (-0.75, 0.0)];
static ARROW: [(f32, f32); 7] =
    [(-0.95, -0.28), (0.1, -0.28), (0.1, -0.7), (0.95, 0.0), (0.1, 0.7), (0.1, 0.28), (-0.95, 0.28)];

/// How a shape is painted.
struct Paint {
    colour: [u8; 3],
    fill: usize,
    outline: [u8; 3],
    /// Outline width in pixels.
    width: f32,
}

/// One worker's canvas and encoder buffer.
#[derive(Default)]
struct Painter {
    /// Straight-alpha RGBA.
    rgba: Vec<u8>,
    png: Vec<u8>,
    width: usize,
    height: usize,
}

impl Painter {
    /// Draws `sticker` and encodes it as PNG, returning the bytes.
    fn png(&mut self, sticker: &Sticker, width: u32, height: u32, path: &Path) -> Result<&[u8], SynthError> {
        self.draw(sticker, width as usize, height as usize);
        self.png.clear();
        let fail = |e: png::EncodingError| SynthError::Write { path: path.to_path_buf(), message: e.to_string() };
        let mut encoder = png::Encoder::new(&mut self.png, width, height);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header().map_err(fail)?;
        writer.write_image_data(&self.rgba).map_err(fail)?;
        writer.finish().map_err(fail)?;
        Ok(&self.png)
    }

    fn draw(&mut self, sticker: &Sticker, width: usize, height: usize) {
        self.width = width;
        self.height = height;
        self.rgba.clear();
        self.rgba.resize(width * height * 4, 0);
        let short = width.min(height) as f32;
        let style = &sticker.style;
        let (cx, cy) = (width as f32 / 2.0 + sticker.shift.0 * short, height as f32 / 2.0 + sticker.shift.1 * short);
        let radius = sticker.scale * short / 2.0;
        let outline_width = (style.outline_width * short).max(1.0);

        if let Some((disc, tint)) = style.backdrop {
            let r = 0.47 * short;
            let (bx, by) = (width as f32 / 2.0, height as f32 / 2.0);
            self.fill_region(bx, by, r * 1.05, |x, y| {
                let (lx, ly) = ((x - bx) / r, (y - by) / r);
                let d = if disc { (lx * lx + ly * ly).sqrt() - 1.0 } else { rounded_box(lx, ly, 0.92, 0.92, 0.25) };
                let alpha = (0.5 - d * r).clamp(0.0, 1.0);
                (alpha > 0.0).then_some(([tint[0] as f32, tint[1] as f32, tint[2] as f32], alpha))
            });
        }

        let (shape, colour, fill) = tag_parts(sticker.tags[0]);
        let paint = Paint { colour: COLOURS[colour].1, fill, outline: style.outline, width: outline_width };
        self.shape(shape, &paint, (cx, cy), radius, sticker.angle);

        if style.face {
            let dark = [30.0, 30.0, 30.0];
            let eye = 0.09 * radius;
            for side in [-1.0f32, 1.0] {
                let (ex, ey) = (cx + side * 0.3 * radius, cy - 0.08 * radius);
                self.fill_region(ex, ey, eye + 1.0, |x, y| {
                    let d = ((x - ex).powi(2) + (y - ey).powi(2)).sqrt() - eye;
                    let alpha = (0.5 - d).clamp(0.0, 1.0);
                    (alpha > 0.0).then_some((dark, alpha))
                });
            }
            let (mx, my, mr, mt) = (cx, cy + 0.05 * radius, 0.3 * radius, 0.05 * radius);
            self.fill_region(mx, my + mr / 2.0, mr + mt + 1.0, |x, y| {
                let arc = (((x - mx).powi(2) + (y - my).powi(2)).sqrt() - mr).abs() - mt;
                let d = arc.max(my + 0.25 * mr - y);
                let alpha = (0.5 - d).clamp(0.0, 1.0);
                (alpha > 0.0).then_some((dark, alpha))
            });
        }

        for (&tag, &right) in sticker.tags[1..].iter().zip(&sticker.corners) {
            let (shape, colour, fill) = tag_parts(tag);
            let small = 0.32 * radius;
            let side = if right { 1.0 } else { -1.0 };
            let centre = (cx + side * 1.0 * radius, cy - 0.92 * radius);
            let paint = Paint {
                colour: COLOURS[colour].1,
                fill,
                outline: style.outline,
                width: (outline_width * 0.6).max(1.0),
            };
            self.shape(shape, &paint, centre, small, 0.0);
        }
    }

    /// Draws an outlined, pattern-filled shape.
    fn shape(&mut self, shape: usize, paint: &Paint, (cx, cy): (f32, f32), radius: f32, angle: f32) {
        let (sin, cos) = angle.sin_cos();
        let half = paint.width / 2.0;
        let period = (radius * 0.5).max(3.0);
        let colour = paint.colour.map(|c| c as f32);
        let light = paint.colour.map(|c| c as f32 * 0.2 + 255.0 * 0.8);
        let outline = paint.outline.map(|c| c as f32);
        let fill = paint.fill;
        self.fill_region(cx, cy, radius * 1.15 + half + 1.0, |x, y| {
            let (dx, dy) = (x - cx, y - cy);
            let (lx, ly) = ((dx * cos + dy * sin) / radius, (-dx * sin + dy * cos) / radius);
            let d = shape_distance(shape, lx, ly) * radius;
            let alpha = (0.5 - (d - half)).clamp(0.0, 1.0);
            if alpha <= 0.0 {
                return None;
            }
            // The pattern is fixed to the image axes (not the tilt), relative to the shape's centre.
            let (u, v) = (dx / period, dy / period);
            let lit = match fill {
                0 => false,
                1 => v.rem_euclid(1.0) < 0.5,
                2 => u.rem_euclid(1.0) < 0.5,
                3 => {
                    let (fu, fv) = (u.rem_euclid(1.0) - 0.5, v.rem_euclid(1.0) - 0.5);
                    fu * fu + fv * fv < 0.09
                }
                _ => (u.floor() as i64 + v.floor() as i64).rem_euclid(2) == 0,
            };
            let inside = if lit { light } else { colour };
            let edge = (0.5 - (d.abs() - half)).clamp(0.0, 1.0);
            let edge = if d > 0.0 { 1.0 } else { edge };
            let rgb = [0, 1, 2].map(|k| inside[k] + (outline[k] - inside[k]) * edge);
            Some((rgb, alpha))
        });
    }

    /// Blends `pixel(x, y) -> (rgb, alpha)` (straight alpha, pixel centres) over the canvas within a square of
    /// half-side `reach` around `(cx, cy)`.
    fn fill_region(&mut self, cx: f32, cy: f32, reach: f32, pixel: impl Fn(f32, f32) -> Option<([f32; 3], f32)>) {
        let x0 = (cx - reach).floor().max(0.0) as usize;
        let y0 = (cy - reach).floor().max(0.0) as usize;
        let x1 = ((cx + reach).ceil().max(0.0) as usize).min(self.width);
        let y1 = ((cy + reach).ceil().max(0.0) as usize).min(self.height);
        for y in y0..y1 {
            let row = &mut self.rgba[y * self.width * 4..(y + 1) * self.width * 4];
            for x in x0..x1 {
                let Some((rgb, a)) = pixel(x as f32 + 0.5, y as f32 + 0.5) else { continue };
                let px = &mut row[x * 4..x * 4 + 4];
                // Values are in 0..=255, so `+ 0.5` then truncation rounds (and `as u8` saturates).
                if a >= 1.0 || px[3] == 0 {
                    px.copy_from_slice(&[rgb[0] + 0.5, rgb[1] + 0.5, rgb[2] + 0.5, a * 255.0 + 0.5].map(|v| v as u8));
                    continue;
                }
                let da = px[3] as f32 / 255.0;
                let out_a = a + da * (1.0 - a);
                for k in 0..3 {
                    px[k] = ((rgb[k] * a + px[k] as f32 * da * (1.0 - a)) / out_a + 0.5) as u8;
                }
                px[3] = (out_a * 255.0 + 0.5) as u8;
            }
        }
    }
}

fn csv_error(path: &Path) -> impl Fn(csv::Error) -> SynthError + '_ {
    move |e| SynthError::Write { path: path.to_path_buf(), message: e.to_string() }
}

fn tags_field(tags: &[u16]) -> String {
    tags.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(",")
}

fn write_train_csv(path: &Path, opts: &SynthOptions, rows: &[(Vec<u16>, u64)]) -> Result<(), SynthError> {
    let mut csv = csv::Writer::from_path(path).map_err(csv_error(path))?;
    csv.write_record(["package_id", "sticker_id", "tags"]).map_err(csv_error(path))?;
    for (index, (tags, _)) in rows.iter().enumerate() {
        let index = index as u64;
        let package = package_id(Part::Train, index / opts.per_package, opts);
        let sticker = sticker_id(Part::Train, index, opts);
        csv.write_record([package, sticker, tags_field(tags)]).map_err(csv_error(path))?;
    }
    csv.flush().map_err(io(path))
}

fn write_tag_tsv(path: &Path) -> Result<(), SynthError> {
    let mut text = String::from("tag\tkeywords\tlanguages\tname\n");
    for tag in tag_rows() {
        text.push_str(&format!("{}\t{}\t{}\t{}\n", tag.id, tag.keywords, tag.languages, tag.name));
    }
    std::fs::write(path, text).map_err(io(path))
}

fn write_packages_tsv(path: &Path, opts: &SynthOptions, packages: u64) -> Result<(), SynthError> {
    let ids: Vec<String> = (0..packages).map(|p| package_id(Part::Train, p, opts)).collect();
    let valid = choose_valid_packages(ids.iter().map(String::as_str), opts.valid_fraction, opts.seed);
    let mut text = String::from("package_id\tstyle\tfamily\tsource\tlicence\tsplit\n");
    for (p, id) in ids.iter().enumerate() {
        let style = Style::new(opts.seed, Part::Train, p as u64);
        let describe = format!(
            "outline {:.1}% {}{}",
            style.outline_width * 100.0,
            match style.backdrop {
                Some((true, _)) => "disc backdrop",
                Some((false, _)) => "square backdrop",
                None => "no backdrop",
            },
            if style.face { ", face" } else { "" }
        );
        let split = if valid.contains(id.as_str()) {
            "valid"
        } else if opts.valid_fraction > 0.0 {
            "train"
        } else {
            ""
        };
        let source = format!("rush dataset synth --seed {}", opts.seed);
        text.push_str(&format!("{id}\t{describe}\tsynth\t{source}\tCC0-1.0\t{split}\n"));
    }
    std::fs::write(path, text).map_err(io(path))
}

fn write_test_csvs(out: &Path, opts: &SynthOptions, rows: &[(Vec<u16>, u64)]) -> Result<(), SynthError> {
    // The submission order is a seeded permutation, so nothing can lean on the order the images were made in.
    let mut order: Vec<u64> = (0..opts.test).collect();
    order.shuffle(&mut rng_for(opts.seed, 3, 0));
    let order_path = layout::test_dir(out).join(TEST_ORDER_CSV);
    let labels_path = out.join("test").join(TEST_LABELS_CSV);
    let mut order_csv = csv::Writer::from_path(&order_path).map_err(csv_error(&order_path))?;
    let mut labels_csv = csv::Writer::from_path(&labels_path).map_err(csv_error(&labels_path))?;
    order_csv.write_record(["index", "package_id", "sticker_id"]).map_err(csv_error(&order_path))?;
    labels_csv.write_record(["index", "tags"]).map_err(csv_error(&labels_path))?;
    for (index, &sticker) in order.iter().enumerate() {
        let package = package_id(Part::Test, sticker / opts.per_package, opts);
        let id = sticker_id(Part::Test, sticker, opts);
        order_csv.write_record([index.to_string(), package, id]).map_err(csv_error(&order_path))?;
        let tags = tags_field(&rows[sticker as usize].0);
        labels_csv.write_record([index.to_string(), tags]).map_err(csv_error(&labels_path))?;
    }
    order_csv.flush().map_err(io(&order_path))?;
    labels_csv.flush().map_err(io(&labels_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_map_onto_all_350_tags_and_the_first_ten_differ_in_shape() {
        let tags: std::collections::BTreeSet<u16> = (0..350).map(class_tag).collect();
        assert_eq!(tags.len(), 350);
        let shapes: std::collections::BTreeSet<usize> = (0..10).map(|c| tag_parts(class_tag(c)).0).collect();
        assert_eq!(shapes.len(), 10);
        for t in 0..350u16 {
            let (s, c, f) = tag_parts(t);
            assert_eq!(tag_id(s, c, f), t);
        }
    }

    #[test]
    fn every_sticker_s_label_is_its_smallest_tag_and_the_argmax_of_its_train_label_row() {
        let out = tempfile::tempdir().unwrap();
        let opts = SynthOptions {
            out: out.path().to_path_buf(),
            train: 400,
            test: 10,
            seed: 1,
            per_package: 20,
            classes: 350,
            width: 24,
            height: 24,
            valid_fraction: 0.2,
            threads: Some(2),
        };
        generate(&opts, &ProgressBar::hidden()).unwrap();
        let set = layout::read_train(&opts.out).unwrap();
        let bytes = std::fs::read(layout::train_label_path(&opts.out)).unwrap();
        let header = crate::core::npy::header("|u1", &[set.samples.len(), NUM_TAGS]);
        assert!(bytes.starts_with(&header) && bytes.len() == header.len() + set.samples.len() * NUM_TAGS);
        let mut with_companions = 0;
        for (i, sample) in set.samples.iter().enumerate() {
            let row = &bytes[header.len() + i * NUM_TAGS..][..NUM_TAGS];
            let argmax = row.iter().position(|&b| b == 1).unwrap();
            assert_eq!(argmax, sample.label() as usize, "{sample:?}");
            assert_eq!(sample.tags.iter().min(), Some(&sample.label()), "{sample:?}");
            assert_eq!(row.iter().filter(|&&b| b == 1).count(), sample.tags.len());
            with_companions += usize::from(sample.tags.len() > 1);
        }
        assert!(with_companions > 100, "companions are still drawn: {with_companions}");
    }

    #[test]
    fn tag_names_are_unique_and_readable() {
        let rows = tag_rows();
        let names: std::collections::BTreeSet<&str> = rows.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), 350);
        assert_eq!(rows[0].name, "red circle");
        assert_eq!(rows[tag_id(5, 5, 3) as usize].name, "blue dotted heart");
        assert!(rows[0].keywords.contains("원") && rows[0].keywords.contains("赤"), "{}", rows[0].keywords);
    }

    #[test]
    fn shapes_contain_their_centre_and_not_the_corners() {
        for shape in 0..10 {
            let centre = match shape {
                6 => shape_distance(shape, 0.68, 0.0),
                9 => shape_distance(shape, -0.6, 0.2),
                _ => shape_distance(shape, 0.0, 0.1),
            };
            assert!(centre < 0.0, "shape {shape} centre distance {centre}");
            assert!(shape_distance(shape, 1.3, 1.3) > 0.0, "shape {shape}");
        }
    }

    #[test]
    fn the_label_decides_the_main_shape_pixels() {
        let opts = SynthOptions {
            out: PathBuf::new(),
            train: 10,
            test: 0,
            seed: 1,
            per_package: 5,
            classes: 10,
            width: 120,
            height: 100,
            valid_fraction: 0.0,
            threads: Some(1),
        };
        let mut painter = Painter::default();
        for index in 0..10 {
            let sticker = Sticker::new(&opts, Part::Train, index);
            assert!((1..=3).contains(&sticker.tags.len()));
            painter.draw(&sticker, 120, 100);
            // The corners stay transparent, the area is partly opaque.
            assert_eq!(painter.rgba[3], 0);
            assert!(painter.rgba.chunks(4).filter(|p| p[3] == 255).count() > 1000);
        }
    }
}
