//! Train/validation split by package, never per image: from `packages.tsv` when it names validation packages,
//! otherwise deterministic from a seed.

use crate::data::layout::TrainSet;

/// Indices into `TrainSet::samples`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub valid: Vec<usize>,
}

pub fn split_by_package(set: &TrainSet, valid_fraction: f64, seed: u64) -> Split {
    let _ = (set, valid_fraction, seed);
    todo!("data layer")
}
