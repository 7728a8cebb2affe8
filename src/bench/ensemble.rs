//! Re-ensembling benchmark: `core::ensemble` mixing cached members' test probabilities (5 members of 138,343 x 350,
//! the AI RUSH test split) with new weights into predictions, as a re-submission of an ensemble does.

use std::time::Instant;

use rayon::prelude::*;

use super::Row;
use crate::core::ensemble::{Mix, Probs};
use crate::data::layout::NUM_TAGS;

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

pub fn run(args: &Args) -> anyhow::Result<Row> {
    anyhow::ensure!(args.members > 0 && args.rows > 0 && args.repeats > 0, "members, rows and repeats must be > 0");
    let classes = NUM_TAGS;
    let members: Vec<Probs> = (0..args.members)
        .map(|m| Probs::new(args.rows, classes, random_probs(m as u64, args.rows, classes)))
        .collect::<Result<_, _>>()?;
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
