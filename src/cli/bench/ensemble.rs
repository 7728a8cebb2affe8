//! Re-ensembling benchmark: `core::ensemble` mixing cached members' test probabilities (5 members of 138,343 x 350,
//! the AI RUSH test split) with new weights into predictions, as a re-submission of an ensemble does; then the whole
//! cached path of a submission's worker: the members read from the probability cache, mixed, `predictions.npy`
//! written and scored against the hidden labels.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use rayon::prelude::*;

use super::Row;
use crate::core::ensemble::{Mix, Probs};
use crate::core::score::DEFAULT_PUBLIC_PERCENT;
use crate::data::layout::NUM_TAGS;
use crate::home::Home;
use crate::submit::Tta;
use crate::submit::npy::{self, F16Matrix};
use crate::submit::probs::{self, CacheKey, CacheSplit};
use crate::submit::scorer::{self, Scored};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 5)]
    pub members: usize,
    /// Test rows per member (the AI RUSH test split has 138,343).
    #[arg(long, default_value_t = 138_343)]
    pub rows: usize,
    /// Timed re-ensembles (median reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: u32,
}

/// Goal of issue 7: re-ensembling cached members in under a second.
const GOAL_SECS: f64 = 1.0;

/// Two rows: mixing members already in memory, and the submission worker's whole path for cached members.
pub fn run(args: &Args) -> anyhow::Result<Vec<Row>> {
    anyhow::ensure!(args.members > 0 && args.rows > 0 && args.repeats > 0, "members, rows and repeats must be > 0");
    let classes = NUM_TAGS;
    // Values a float16 holds exactly, so the members read back from the cache equal these and the two paths' predictions
    // can be compared exactly.
    let members: Vec<Probs> = (0..args.members)
        .map(|m| {
            let mut values = random_probs(m as u64, args.rows, classes);
            values.par_iter_mut().for_each(|v| *v = half::f16::from_f32(*v).to_f32());
            Probs::new(args.rows, classes, values)
        })
        .collect::<Result<_, _>>()?;
    let mixed = mix_in_memory(args, &members)?;
    let cached = super::daemon::in_scratch("ensemble", false, |dir| from_the_cache(args, &members, dir))?;
    Ok(vec![mixed, cached])
}

fn mix_in_memory(args: &Args, members: &[Probs]) -> anyhow::Result<Row> {
    let classes = NUM_TAGS;
    let refs: Vec<&Probs> = members.iter().collect();
    let mut times = Vec::new();
    let mut checksum = 0i64;
    for r in 0..args.repeats {
        // New weights each time, as a greedy selection or a user's re-weighting would give.
        let weights: Vec<f64> = (0..args.members).map(|m| 1.0 + ((m as u32 + r) % 3) as f64).collect();
        let started = Instant::now();
        let predictions = Mix::new(&refs, &weights)?.predict();
        times.push(started.elapsed().as_secs_f64());
        checksum += predictions.iter().take(1000).sum::<i64>();
    }
    std::hint::black_box(checksum);
    let median = super::median(&mut times).unwrap_or(f64::NAN);
    Ok(Row {
        name: format!(
            "re-ensemble {} cached members of {} x {} probs ({} threads)",
            args.members,
            args.rows,
            classes,
            rayon::current_num_threads()
        ),
        figure: format!("{:.0} ms", median * 1e3),
        reference: format!("{:.0} ms goal", GOAL_SECS * 1e3),
        ratio: Some(GOAL_SECS / median),
        goal: format!("< {GOAL_SECS} s"),
        met: Some(median < GOAL_SECS),
    })
}

/// What the submission worker does when every member is cached (`daemon::submissions`): read each member's float16
/// test probabilities from the cache, mix them with new weights, write `predictions.npy`, score it against the hidden
/// labels. The members are written into the cache of a scratch home first (untimed), as `rush infer` left them.
fn from_the_cache(args: &Args, members: &[Probs], dir: &Path) -> anyhow::Result<Row> {
    let home = Home::new(dir.join("home"));
    let dataset = "bench";
    let order =
        probs::order_digest((0..args.rows).map(|i| format!("{i}")).collect::<Vec<_>>().iter().map(String::as_str));
    let keys: Vec<CacheKey> = (0..members.len())
        .map(|m| -> anyhow::Result<CacheKey> {
            let session = format!("bench/{dataset}/{}", m + 1).parse()?;
            Ok(CacheKey { session, epoch: 1, split: CacheSplit::Test, tta: Tta::None })
        })
        .collect::<anyhow::Result<_>>()?;
    for (key, member) in keys.iter().zip(members) {
        probs::write(&home, key, &order, member)?;
    }
    // Hidden labels: one tag per row, in test order.
    let labels_path = home.labels(dataset);
    std::fs::create_dir_all(labels_path.parent().unwrap_or(dir))?;
    let mut labels = std::io::BufWriter::new(
        std::fs::File::create(&labels_path).with_context(|| format!("creating {}", labels_path.display()))?,
    );
    writeln!(labels, "index,tags")?;
    for i in 0..args.rows {
        writeln!(labels, "{i},{}", (i * 7919) % NUM_TAGS)?;
    }
    labels.into_inner().map_err(|e| e.into_error())?.sync_all()?;

    let predictions = dir.join("predictions.npy");
    let mut times = Vec::new();
    let mut last_accuracy = f64::NAN;
    let mut differing = 0;
    for r in 0..args.repeats {
        let weights: Vec<f64> = (0..members.len()).map(|m| 1.0 + ((m as u32 + r) % 3) as f64).collect();
        let started = Instant::now();
        // as the worker does: each member's float16 file mapped, mixed a block of rows at a time
        let mapped: Vec<F16Matrix> = keys
            .iter()
            .map(|key| probs::open(&home, key, &order)?.with_context(|| format!("cache entry {key:?} is missing")))
            .collect::<anyhow::Result<_>>()?;
        let refs: Vec<&F16Matrix> = mapped.iter().collect();
        npy::write_i64(&predictions, &Mix::weighted(&refs, &weights)?.predict())?;
        let scored = scorer::score_file(&home, dataset, &predictions, false, DEFAULT_PUBLIC_PERCENT)?;
        times.push(started.elapsed().as_secs_f64());
        if let Scored::Full(s) = scored {
            last_accuracy = s.public;
        }
        // Untimed: the written predictions are the in-memory mix's.
        let expected = Mix::new(&members.iter().collect::<Vec<_>>(), &weights)?.predict();
        let written = npy::read_i64(&predictions)?;
        differing +=
            written.len().abs_diff(expected.len()) + written.iter().zip(&expected).filter(|(a, b)| a != b).count();
    }
    let median = super::median(&mut times).unwrap_or(f64::NAN);
    Ok(Row {
        name: format!(
            "re-submit {} cached members of {} x {}: read float16 cache + mix + predictions.npy + score ({} threads)",
            members.len(),
            args.rows,
            NUM_TAGS,
            rayon::current_num_threads()
        ),
        figure: format!(
            "{:.0} ms (public accuracy {last_accuracy:.4}; {})",
            median * 1e3,
            match differing {
                0 => "predictions equal the in-memory mix's".to_string(),
                n => format!("{n} predictions DIFFER from the in-memory mix's"),
            }
        ),
        reference: format!("{:.0} ms goal", GOAL_SECS * 1e3),
        ratio: Some(GOAL_SECS / median),
        goal: format!("< {GOAL_SECS} s"),
        met: Some(median < GOAL_SECS && differing == 0),
    })
}

/// Rows of positive values summing to 1, from a cheap deterministic generator (splitmix64 per row).
fn random_probs(seed: u64, rows: usize, classes: usize) -> Vec<f32> {
    let mut data = vec![0f32; rows * classes];
    data.par_chunks_mut(classes).enumerate().for_each(|(row, out)| {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (row as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mut total = 0f32;
        for v in out.iter_mut() {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            *v = ((z >> 40) as f32 + 1.0) / (1u64 << 24) as f32;
            total += *v;
        }
        for v in out.iter_mut() {
            *v /= total;
        }
    });
    data
}
