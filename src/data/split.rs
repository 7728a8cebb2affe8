//! Train/validation split by package, never per image: from `packages.tsv` when it names validation packages,
//! otherwise deterministic from a seed.
//!
//! Stickers of one package are near-copies (one artist, one character, one style), so a per-image split would leak:
//! every package lies wholly on one side.

use std::collections::{BTreeSet, HashSet};

use crate::data::layout::{SplitName, TrainSet};

/// Indices into `TrainSet::samples`, each list ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub valid: Vec<usize>,
}

/// Splits `set` by package. When `packages.tsv` marks at least one package `valid`, exactly those packages form the
/// validation side (and `valid_fraction`/`seed` are unused). Otherwise the packages are ordered by a hash of
/// `(seed, package_id)` and the first `round(n * valid_fraction)` go to validation; with two or more packages and a
/// positive fraction each side gets at least one package, and a single package always trains. The result depends
/// only on the package ids, the fraction and the seed (not on the order of the rows).
pub fn split_by_package(set: &TrainSet, valid_fraction: f64, seed: u64) -> Split {
    let named = set.packages.iter().filter(|p| p.split == Some(SplitName::Valid)).map(|p| p.package_id.as_str());
    let valid_packages = valid_packages(named, set.samples.iter().map(|s| s.package_id.as_str()), valid_fraction, seed);
    let mut split = Split { train: Vec::new(), valid: Vec::new() };
    for (i, sample) in set.samples.iter().enumerate() {
        if valid_packages.contains(sample.package_id.as_str()) {
            split.valid.push(i);
        } else {
            split.train.push(i);
        }
    }
    split
}

/// The validation packages of a split: the packages `packages.tsv` names `valid` (`named`) when it names any, else the
/// seeded choice among the packages of the samples (`ids`, duplicates allowed; [`choose_valid_packages`]). What
/// [`split_by_package`] puts on the validation side, and the dataset facts (`data::facts`) too.
pub fn valid_packages<'a>(
    named: impl IntoIterator<Item = &'a str>,
    ids: impl IntoIterator<Item = &'a str>,
    valid_fraction: f64,
    seed: u64,
) -> HashSet<&'a str> {
    let named: HashSet<&str> = named.into_iter().collect();
    if !named.is_empty() { named } else { choose_valid_packages(ids, valid_fraction, seed) }
}

/// The seeded choice of validation packages among `ids` (duplicates allowed): the packages ordered by a hash of
/// `(seed, package_id)`, the first `round(n * valid_fraction)` of them, at least one and at most `n - 1` when there are
/// two or more packages and the fraction is positive. Also used by the synthetic generator to fill `packages.tsv`.
pub fn choose_valid_packages<'a>(
    ids: impl IntoIterator<Item = &'a str>,
    valid_fraction: f64,
    seed: u64,
) -> HashSet<&'a str> {
    let ids: BTreeSet<&str> = ids.into_iter().collect();
    let mut ranked: Vec<(u64, &str)> = ids.into_iter().map(|id| (package_hash(seed, id), id)).collect();
    ranked.sort_unstable();
    let n = ranked.len();
    let fraction = if valid_fraction.is_finite() { valid_fraction.clamp(0.0, 1.0) } else { 0.0 };
    let mut take = (n as f64 * fraction).round() as usize;
    if n < 2 {
        take = 0; // one package cannot be split; it trains
    } else if fraction > 0.0 {
        take = take.clamp(1, n - 1);
    }
    ranked.into_iter().take(take).map(|(_, id)| id).collect()
}

/// The cross-fitting fold (`0..folds`) of a validation sticker, for estimating on unseen stickers how an ensemble
/// chosen on the others does (`rush ensemble auto`). Stable: a sticker keeps its fold across runs and machines.
pub fn selection_fold(package_id: &str, sticker_id: &str, folds: u8) -> u8 {
    let h = stable_hash(0, [package_id, "/", sticker_id].concat().as_bytes());
    (h % u64::from(folds.max(1))) as u8
}

/// A hash of a package id that is stable across platforms, Rust versions and runs (FNV-1a, then a SplitMix64 finish
/// mixed with the seed).
fn package_hash(seed: u64, package_id: &str) -> u64 {
    stable_hash(seed, package_id.as_bytes())
}

fn stable_hash(seed: u64, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::layout::{Package, Sample};

    fn set(packages: usize, per_package: usize) -> TrainSet {
        let mut samples = Vec::new();
        for p in 0..packages {
            for s in 0..per_package {
                samples.push(Sample {
                    package_id: format!("pkg{p}"),
                    sticker_id: format!("{s}"),
                    tags: vec![(p % 7) as u16],
                    path: format!("/x/pkg{p}/{s}.png").into(),
                });
            }
        }
        TrainSet { root: "/x".into(), samples, tags: Vec::new(), packages: Vec::new(), problems: Vec::new() }
    }

    fn packages_of(set: &TrainSet, idx: &[usize]) -> BTreeSet<String> {
        idx.iter().map(|&i| set.samples[i].package_id.clone()).collect()
    }

    #[test]
    fn split_is_by_package_deterministic_and_sized() {
        let data = set(50, 7);
        let a = split_by_package(&data, 0.2, 3);
        assert_eq!(a, split_by_package(&data, 0.2, 3));
        assert_eq!(a.train.len() + a.valid.len(), data.samples.len());
        let (train, valid) = (packages_of(&data, &a.train), packages_of(&data, &a.valid));
        assert!(train.is_disjoint(&valid), "a package on both sides");
        assert_eq!(valid.len(), 10);
        assert_ne!(a, split_by_package(&data, 0.2, 4), "another seed gives another split");

        // Row order does not matter.
        let mut shuffled = data.clone();
        shuffled.samples.reverse();
        let b = split_by_package(&shuffled, 0.2, 3);
        assert_eq!(packages_of(&shuffled, &b.valid), valid);
    }

    #[test]
    fn each_side_gets_a_package_when_there_are_two() {
        let data = set(2, 5);
        for fraction in [0.01, 0.5, 0.99] {
            let s = split_by_package(&data, fraction, 0);
            assert_eq!((s.train.len(), s.valid.len()), (5, 5), "fraction {fraction}");
        }
        assert!(split_by_package(&data, 0.0, 0).valid.is_empty());
        let one = set(1, 5);
        assert_eq!(split_by_package(&one, 0.5, 0).train.len(), 5);
    }

    #[test]
    fn packages_tsv_names_the_validation_packages() {
        let mut data = set(10, 3);
        for (p, split) in [("pkg3", SplitName::Valid), ("pkg7", SplitName::Valid), ("pkg1", SplitName::Train)] {
            data.packages.push(Package {
                package_id: p.into(),
                style: String::new(),
                family: String::new(),
                source: String::new(),
                licence: String::new(),
                split: Some(split),
            });
        }
        for seed in [0, 1, 2] {
            let s = split_by_package(&data, 0.5, seed);
            assert_eq!(packages_of(&data, &s.valid), ["pkg3", "pkg7"].map(String::from).into());
            assert_eq!(s.train.len(), 24);
        }
    }
}
