//! The registered datasets' facts (`data::facts`) as the daemon keeps them: the sidecar of each dataset mapped once,
//! and each validation split its sessions ask for computed once from it, so the analysis views, the ensembles and the
//! submissions never read a dataset's training CSV or list its images. Registration computes the facts
//! ([`super::datasets::inspect`]); a dataset registered before they existed gets them at its first use, and a dataset
//! whose files changed since gets them again (checked by the length and modification time of four files, no image is
//! listed), once, whoever asks meanwhile waiting for that one computation.
//!
//! Reading a dataset at AI RUSH scale allocates a few hundred MB of small strings that outlive nothing: after each
//! computation the allocator hands its free memory back to the system ([`trim`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::DaemonError;
use crate::core::ensemble::{EnsembleError, accuracy_of};
use crate::data::facts::{self, Facts, ValidSplit};
use crate::home::Home;
use crate::submit::npy::{F16Matrix, FileVersion};

/// Validation accuracies kept per dataset before the oldest are forgotten.
const KEPT_ACCURACIES: usize = 4096;

/// One dataset's facts, the validation splits computed from them, and the validation accuracy of each version of a
/// probability file computed once (the builder asks every member's on each weight change).
#[derive(Debug)]
pub struct DatasetFacts {
    pub facts: Facts,
    /// By (`valid_fraction` bits, seed); one entry when `packages.tsv` names the validation packages.
    splits: Mutex<HashMap<(u64, u64), Arc<ValidSplit>>>,
    /// By the file's version and the split's order digest.
    accuracies: Mutex<HashMap<(FileVersion, String), f64>>,
}

impl DatasetFacts {
    fn new(facts: Facts) -> Self {
        Self { facts, splits: Mutex::default(), accuracies: Mutex::default() }
    }

    /// The accuracy of validation probabilities on `split` (whose rows they are), computed once per version of
    /// their file.
    pub fn accuracy(&self, probs: &F16Matrix, split: &ValidSplit) -> Result<f64, EnsembleError> {
        let key = (probs.version(), split.order.clone());
        if let Some(known) = self.accuracies.lock().ok().and_then(|a| a.get(&key).copied()) {
            return Ok(known);
        }
        let accuracy = accuracy_of(probs, &split.labels)?;
        if let Ok(mut all) = self.accuracies.lock() {
            if all.len() >= KEPT_ACCURACIES {
                all.clear();
            }
            all.insert(key, accuracy);
        }
        Ok(accuracy)
    }

    /// The validation split of a spec's `valid_fraction` and `seed`, computed once.
    pub fn split(&self, valid_fraction: f64, seed: u64) -> Arc<ValidSplit> {
        let key = if self.facts.split_is_seeded() { (valid_fraction.to_bits(), seed) } else { (0, 0) };
        if let Some(split) = self.splits.lock().ok().and_then(|s| s.get(&key).cloned()) {
            return split;
        }
        let split = Arc::new(self.facts.split(valid_fraction, seed));
        if let Ok(mut splits) = self.splits.lock() {
            splits.insert(key, split.clone());
        }
        split
    }
}

/// The facts of every dataset used since the daemon started.
#[derive(Debug, Default)]
pub struct FactsRegistry {
    kept: Mutex<HashMap<String, Arc<DatasetFacts>>>,
    /// One lock per dataset, held while its facts are read or computed.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl FactsRegistry {
    /// The facts of the registered dataset `name` (blocking: reads the dataset's files when its facts are missing or
    /// stale).
    pub fn get(&self, home: &Home, name: &str) -> Result<Arc<DatasetFacts>, DaemonError> {
        let root = home.dataset(name);
        if let Some(kept) = self.fresh(name, &facts::sources(&root)) {
            return Ok(kept);
        }
        let lock = self.locks.lock().map(|mut l| l.entry(name.to_string()).or_default().clone()).ok();
        let _held = lock.as_ref().map(|l| l.lock());
        // another request may have read them while this one waited
        let now = facts::sources(&root);
        if let Some(kept) = self.fresh(name, &now) {
            return Ok(kept);
        }
        let path = home.facts(name);
        let bad = |e: facts::FactsError| DaemonError::Invalid(format!("dataset {}: {e}", root.display()));
        let opened = match Facts::open(&path) {
            Ok(f) if facts::still_valid(&f.summary().sources, &now) => f,
            found => {
                if let Err(e) = &found
                    && !matches!(e, facts::FactsError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
                {
                    tracing::warn!("{e}; computing the facts of dataset {name} again");
                }
                let bytes = facts::compute(&root).map_err(bad);
                trim();
                Facts::write(&path, &bytes?).map_err(bad)?;
                trim();
                tracing::info!("dataset {name}: facts computed ({})", path.display());
                Facts::open(&path).map_err(bad)?
            }
        };
        let kept = Arc::new(DatasetFacts::new(opened));
        if let Ok(mut all) = self.kept.lock() {
            all.insert(name.to_string(), kept.clone());
        }
        Ok(kept)
    }

    /// The kept facts of `name` when they still stand for its files (`now`).
    fn fresh(&self, name: &str, now: &[Option<facts::SourceStamp>]) -> Option<Arc<DatasetFacts>> {
        let kept = self.kept.lock().ok()?.get(name).cloned()?;
        facts::still_valid(&kept.facts.summary().sources, now).then_some(kept)
    }

    /// Drops the kept facts of `name` (registration wrote new ones).
    pub fn forget(&self, name: &str) {
        if let Ok(mut all) = self.kept.lock() {
            all.remove(name);
        }
    }
}

/// Hands the allocator's free memory back to the system: reading a large dataset leaves a few hundred MB of freed
/// small allocations that glibc would otherwise keep in the daemon's resident memory.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
