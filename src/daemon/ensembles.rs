//! Ensembles from the probability cache, without new inference: the validation accuracy of a hand-made mix (the
//! builder page asks this on every change) and greedy forward selection over every cached checkpoint of a dataset
//! (`rush ensemble auto`).
//!
//! Validation labels come from the training CSV (they are not hidden): a session's validation split is recomputed
//! from its spec (`valid_fraction`, `seed`) and matched to cache entries by the order digest, so members are only ever
//! compared on the same samples in the same order. When sessions used different splits, `auto` works within the split
//! that has the most cached checkpoints.
//!
//! Selection's own accuracy is measured on the samples it was chosen on, so `auto` also cross-fits it: the validation
//! stickers fall into two fixed folds ([`selection_fold`]), selection runs on each fold and is scored on the other, and
//! the result is the gain to expect on stickers selection never saw.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{Daemon, DaemonError};
use crate::core::ensemble::{GreedyOptions, Mix, Probs, Stop, cross_fit, greedy_select};
use crate::core::session::SessionId;
use crate::data::layout::read_train;
use crate::data::split::{selection_fold, split_by_package};
use crate::home::Home;
use crate::submit::Tta;
use crate::submit::probs::{self, CacheKey, CacheMeta, CacheSplit};

/// A cached checkpoint as the builder and `ensemble auto` list it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedCheckpoint {
    pub session: String,
    pub epoch: u32,
    pub tta: Tta,
    /// Validation accuracy from the cached probabilities (`None` when the session's split cannot be recomputed).
    pub val_acc: Option<f64>,
    pub valid_rows: usize,
    /// Which validation split (a short order digest): members of one mix must share it.
    pub split: String,
}

/// One member of a mix to evaluate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixMember {
    pub session: SessionId,
    pub epoch: u32,
    pub weight: f64,
}

/// The validation accuracy of a mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixEval {
    pub val_acc: f64,
    pub rows: usize,
    /// Each member alone, in the order given.
    pub singles: Vec<f64>,
}

/// A chosen member of an automatic ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoMember {
    pub session: String,
    pub epoch: u32,
    /// Times greedy selection added it.
    pub count: u32,
    pub weight: f64,
    pub val_acc: f64,
}

/// What greedy selection chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoEnsemble {
    pub dataset: String,
    pub tta: Tta,
    pub candidates: usize,
    pub members: Vec<AutoMember>,
    pub val_acc: f64,
    pub best_single: String,
    pub best_single_acc: f64,
    pub gain: f64,
    pub valid_rows: usize,
    /// The same selection cross-fitted over two folds of the validation stickers: what it gains on stickers it was not
    /// chosen on (`None` when the validation split is too small to cut in two).
    pub held_out: Option<HeldOut>,
}

/// Greedy selection scored on validation stickers it did not see: each fold held out once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldOut {
    pub folds: usize,
    /// Held-out accuracy of the ensembles chosen on the other fold.
    pub val_acc: f64,
    /// Held-out accuracy of the checkpoints that were the best single on the other fold.
    pub best_single_acc: f64,
    pub gain: f64,
}

/// Folds for cross-fitting selection.
const SELECTION_FOLDS: u8 = 2;

/// A validation split's labels and each sticker's selection fold, in the split's order.
struct ValidLabels {
    labels: Vec<u16>,
    folds: Vec<u8>,
}

/// Validation labels by order digest, for the splits the dataset's sessions use.
type Splits = HashMap<String, ValidLabels>;

impl Daemon {
    /// Validation labels of every distinct split among the dataset's sessions, keyed by order digest.
    async fn validation_splits(&self, dataset: &str) -> Result<Splits, DaemonError> {
        let mut wanted: Vec<(u64, u64)> = Vec::new(); // (valid_fraction bits, seed)
        let filter = crate::store::SessionFilter { all: true, dataset: Some(dataset.to_string()) };
        for row in self.store.sessions(&filter).await? {
            if let Ok(r) = row.resolved_spec() {
                let key = (r.spec.valid_fraction.to_bits(), r.spec.seed);
                if !wanted.contains(&key) {
                    wanted.push(key);
                }
            }
        }
        let path = self.home().dataset(dataset);
        tokio::task::spawn_blocking(move || -> Result<Splits, DaemonError> {
            let set =
                read_train(&path).map_err(|e| DaemonError::Invalid(format!("dataset {}: {e}", path.display())))?;
            let mut splits = Splits::new();
            for (fraction, seed) in wanted {
                let split = split_by_package(&set, f64::from_bits(fraction), seed);
                let keys: Vec<String> = split
                    .valid
                    .iter()
                    .map(|&i| format!("{}/{}", set.samples[i].package_id, set.samples[i].sticker_id))
                    .collect();
                let labels: Vec<u16> = split.valid.iter().map(|&i| set.samples[i].label()).collect();
                let folds = split
                    .valid
                    .iter()
                    .map(|&i| selection_fold(&set.samples[i].package_id, &set.samples[i].sticker_id, SELECTION_FOLDS))
                    .collect();
                splits.insert(probs::order_digest(keys.iter().map(String::as_str)), ValidLabels { labels, folds });
            }
            Ok(splits)
        })
        .await
        .map_err(|e| DaemonError::Invalid(format!("reading validation labels crashed: {e}")))?
    }

    /// Every cached checkpoint of a dataset with its validation accuracy.
    pub async fn cached_checkpoints(&self, dataset: &str) -> Result<Vec<CachedCheckpoint>, DaemonError> {
        let (home, name) = (self.home().clone(), dataset.to_string());
        if blocking(move || valid_entries(&home, &name)).await?.is_empty() {
            // nothing cached: no need to read the training set for labels
            return Ok(Vec::new());
        }
        let splits = self.validation_splits(dataset).await?;
        let home = self.home().clone();
        let dataset = dataset.to_string();
        blocking(move || {
            let metas = valid_entries(&home, &dataset)?;
            let mut out = Vec::with_capacity(metas.len());
            for meta in metas {
                let val_acc = match splits.get(&meta.order) {
                    Some(valid) => read_valid(&home, &meta)?.accuracy(&valid.labels).ok(),
                    None => None,
                };
                out.push(CachedCheckpoint {
                    session: meta.session.to_string(),
                    epoch: meta.epoch,
                    tta: meta.tta,
                    val_acc,
                    valid_rows: meta.rows,
                    split: meta.order.chars().take(12).collect(),
                });
            }
            Ok(out)
        })
        .await
    }

    /// The validation accuracy of a weighted mix of cached checkpoints.
    pub async fn evaluate_mix(&self, dataset: &str, members: &[MixMember], tta: Tta) -> Result<MixEval, DaemonError> {
        if members.is_empty() {
            return Err(DaemonError::Invalid("pick at least one checkpoint".into()));
        }
        if let Some(m) = members.iter().find(|m| m.session.dataset != dataset) {
            return Err(DaemonError::Invalid(format!("{} is not a session of dataset {dataset}", m.session)));
        }
        if let Some(m) = members.iter().find(|m| !m.weight.is_finite() || m.weight < 0.0) {
            return Err(DaemonError::Invalid(format!(
                "the weight of {}:{} is {}: weights must be finite and not negative",
                m.session, m.epoch, m.weight
            )));
        }
        for m in members {
            if self.store.session(&m.session).await?.is_none() {
                return Err(DaemonError::NotFound(format!("unknown session {}", m.session)));
            }
        }
        let splits = self.validation_splits(dataset).await?;
        let home = self.home().clone();
        let members = members.to_vec();
        blocking(move || {
            let mut loaded = Vec::with_capacity(members.len());
            let mut order: Option<String> = None;
            for m in &members {
                let key = CacheKey { session: m.session.clone(), epoch: m.epoch, split: CacheSplit::Valid, tta };
                let meta = probs::meta(&home, &key).map_err(invalid)?.ok_or_else(|| {
                    DaemonError::NotFound(format!(
                        "{}:{} has no cached validation probabilities{}; submit it first (dry runs cache nothing)",
                        m.session,
                        m.epoch,
                        if tta == Tta::Flip { " with flip" } else { "" }
                    ))
                })?;
                if order.as_ref().is_some_and(|o| *o != meta.order) {
                    return Err(DaemonError::Invalid(format!(
                        "{}:{} was validated on another split than the first member (different valid_fraction or seed)",
                        m.session, m.epoch
                    )));
                }
                order = Some(meta.order.clone());
                loaded.push(read_valid(&home, &meta)?);
            }
            let order = order.unwrap_or_default();
            let labels = &splits
                .get(&order)
                .ok_or_else(|| {
                    DaemonError::Invalid("the members' validation split matches no session's spec any more".into())
                })?
                .labels;
            let refs: Vec<&Probs> = loaded.iter().collect();
            let weights: Vec<f64> = members.iter().map(|m| m.weight).collect();
            let val_acc = Mix::new(&refs, &weights).and_then(|mix| mix.accuracy(labels)).map_err(invalid)?;
            let singles = loaded.iter().map(|p| p.accuracy(labels).map_err(invalid)).collect::<Result<_, _>>()?;
            Ok(MixEval { val_acc, rows: labels.len(), singles })
        })
        .await
    }

    /// Greedy forward selection with replacement over every cached checkpoint of `dataset` (Caruana et al., 2004).
    pub async fn auto_ensemble(
        &self,
        dataset: &str,
        max_members: usize,
        tta: Tta,
    ) -> Result<AutoEnsemble, DaemonError> {
        let splits = self.validation_splits(dataset).await?;
        let home = self.home().clone();
        let dataset = dataset.to_string();
        blocking(move || {
            let mut by_split: BTreeMap<String, Vec<CacheMeta>> = BTreeMap::new();
            for meta in valid_entries(&home, &dataset)?.into_iter().filter(|m| m.tta == tta) {
                if splits.contains_key(&meta.order) {
                    by_split.entry(meta.order.clone()).or_default().push(meta);
                }
            }
            let Some((order, metas)) = by_split.into_iter().max_by_key(|(_, metas)| metas.len()) else {
                return Err(DaemonError::NotFound(format!(
                    "dataset {dataset} has no cached validation probabilities{}: submit checkpoints first",
                    if tta == Tta::Flip { " with flip" } else { "" }
                )));
            };
            let ValidLabels { labels, folds } = &splits[&order];
            let loaded: Vec<Probs> = metas.iter().map(|m| read_valid(&home, m)).collect::<Result<_, _>>()?;
            let refs: Vec<&Probs> = loaded.iter().collect();
            let options = GreedyOptions { max_members: max_members.max(1), init_best: 0, stop: Stop::BestSoFar };
            let selection = greedy_select(&refs, labels, options).map_err(invalid)?;
            // a split too small for two non-empty folds gets no held-out estimate
            let held_out = cross_fit(&refs, labels, folds, options).ok().map(|cf| HeldOut {
                folds: cf.folds,
                val_acc: cf.val_acc,
                best_single_acc: cf.best_single_acc,
                gain: cf.gain,
            });
            let name = |i: usize| format!("{}:{}", metas[i].session, metas[i].epoch);
            let members = selection
                .members
                .iter()
                .map(|m| {
                    Ok(AutoMember {
                        session: metas[m.candidate].session.to_string(),
                        epoch: metas[m.candidate].epoch,
                        count: m.count,
                        weight: m.weight,
                        val_acc: loaded[m.candidate].accuracy(labels).map_err(invalid)?,
                    })
                })
                .collect::<Result<_, DaemonError>>()?;
            Ok(AutoEnsemble {
                dataset,
                tta,
                candidates: metas.len(),
                members,
                val_acc: selection.val_acc,
                best_single: name(selection.best_single),
                best_single_acc: selection.best_single_acc,
                gain: selection.gain,
                valid_rows: labels.len(),
                held_out,
            })
        })
        .await
    }
}

fn invalid(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Invalid(e.to_string())
}

/// The complete validation entries of a dataset's cache.
fn valid_entries(home: &Home, dataset: &str) -> Result<Vec<CacheMeta>, DaemonError> {
    Ok(probs::list(home, dataset).map_err(invalid)?.into_iter().filter(|m| m.split == CacheSplit::Valid).collect())
}

fn read_valid(home: &Home, meta: &CacheMeta) -> Result<Probs, DaemonError> {
    probs::read(home, &meta.key(), &meta.order)
        .map_err(invalid)?
        .ok_or_else(|| DaemonError::NotFound(format!("{}:{}: the cache entry vanished", meta.session, meta.epoch)))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DaemonError> + Send + 'static,
) -> Result<T, DaemonError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| DaemonError::Invalid(format!("an ensemble task crashed: {e}")))?
}
