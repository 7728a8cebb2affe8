//! Decode benchmark: `data::image::load_rgb` (PNG decode, resize, composite on white) on one thread vs PIL in one
//! Python process, over the same sticker files, both after a pass that puts the files in the page cache.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use super::Row;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A folder of PNG stickers (searched recursively), e.g. from `rush dataset synth`.
    #[arg(long)]
    pub images: PathBuf,
    /// Output side in pixels.
    #[arg(long, default_value_t = 128)]
    pub size: u32,
    /// Use at most this many images (sorted by path).
    #[arg(long)]
    pub limit: Option<usize>,
    /// The Python with pillow for the reference (default: $RUSH_PYTHON, else python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
}

/// Goal of issue 7: at least 6x PIL per core.
const GOAL: f64 = 6.0;

pub fn run(args: &Args) -> anyhow::Result<Row> {
    let mut files = Vec::new();
    collect_pngs(&args.images, &mut files)?;
    files.sort();
    if let Some(limit) = args.limit {
        files.truncate(limit);
    }
    anyhow::ensure!(!files.is_empty(), "no .png files under {}", args.images.display());
    // Warm the page cache so both sides measure decoding, not the disk.
    for f in &files {
        std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
    }
    let mut out = Vec::new();
    let started = Instant::now();
    let mut checksum = 0u64;
    for f in &files {
        crate::data::image::load_rgb_into(f, args.size, &mut out)?;
        checksum = checksum.wrapping_add(u64::from(out[out.len() / 2]));
    }
    let rush_secs = started.elapsed().as_secs_f64();
    std::hint::black_box(checksum);
    let rush = files.len() as f64 / rush_secs;

    let mut ref_args = vec!["--size".to_string(), args.size.to_string()];
    ref_args.extend(files.iter().map(|f| f.display().to_string()));
    let python = super::python(args.python.as_ref());
    let answer = super::run_reference(&python, super::PIL_DECODE_PY, &ref_args)?;
    let images = answer["images"].as_f64().context("the PIL reference did not say how many images")?;
    let secs = answer["seconds"].as_f64().context("the PIL reference did not say how long")?;
    anyhow::ensure!(images as usize == files.len() && secs > 0.0, "the PIL reference answered {answer}");
    let pil = images / secs;
    let ratio = rush / pil;
    Ok(Row {
        name: format!("decode+resize+composite {}px, 1 core, {} PNGs", args.size, files.len()),
        figure: format!("{rush:.0} img/s"),
        reference: format!("{pil:.0} img/s (PIL {})", answer["pil"].as_str().unwrap_or("?")),
        ratio: Some(ratio),
        goal: format!(">= {GOAL}x"),
        met: Some(ratio >= GOAL),
    })
}

fn collect_pngs(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading folder {}", dir.display()))? {
        let path = entry.with_context(|| format!("reading folder {}", dir.display()))?.path();
        if path.is_dir() {
            collect_pngs(&path, out)?;
        } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
            out.push(path);
        }
    }
    Ok(())
}
