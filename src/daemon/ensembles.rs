//! Ensembles without new inference: the validation accuracy of a hand-made mix (the builder page asks this on every
//! change) and greedy forward selection over every checkpoint of a dataset (`rush ensemble auto`). A checkpoint's
//! validation probabilities come from the probability cache (a submission's `rush infer`, with or without flip) or,
//! for a kept checkpoint that was never submitted, from its own `<epoch>.valid.npy`, which the trainer wrote when it
//! saved it (`submit::valid`: without flip). So `auto` chooses among every kept checkpoint of the dataset, submitted or
//! not, and only the chosen members' test inference runs when the ensemble is submitted. Asked for flip, a checkpoint
//! never submitted with flip competes with its probabilities without flip (the answer counts them).
//!
//! Validation labels come from the dataset's facts ([`super::facts`], computed from the training CSV when the dataset
//! was registered; they are not hidden): a session's validation split is computed from its spec (`valid_fraction`,
//! `seed`) and matched to cache entries by the order digest, so members are only ever compared on the same samples in
//! the same order. When sessions used different splits, `auto` works within the split that has the most cached
//! checkpoints. No request reads the training CSV or lists the images.
//!
//! Members are mapped float16 files ([`F16Matrix`]), read a block of rows at a time by the mix and handed back span by
//! span, so memory does not grow with the members; the validation accuracy of each member alone is computed once per
//! version of its file ([`DatasetFacts::accuracy`]).
//!
//! Selection's own accuracy is measured on the samples it was chosen on, so `auto` also cross-fits it: the validation
//! stickers fall into two fixed folds (`data::split::selection_fold`), selection runs on each fold and is scored on the
//! other, and the result is the gain to expect on stickers selection never saw.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::facts::DatasetFacts;
use super::{Daemon, DaemonError};
use crate::core::ensemble::{GreedyOptions, Mix, Stop, cross_fit, greedy_select};
use crate::core::session::SessionId;
use crate::data::facts::ValidSplit;
use crate::home::{Home, SessionDir};
use crate::submit::Tta;
use crate::submit::npy::F16Matrix;
use crate::submit::probs::{self, CacheKey, CacheMeta, CacheSplit};
use crate::submit::valid::{self, ValidRecord};

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
    /// Candidates whose validation probabilities are their checkpoint's own (kept, never submitted): their test
    /// inference runs only if they are submitted.
    #[serde(default)]
    pub from_checkpoints: usize,
    /// Asked for flip: candidates judged on probabilities without flip (never submitted with flip).
    #[serde(default)]
    pub without_flip: usize,
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

/// The validation splits the dataset's sessions use (labels and selection folds), by order digest.
type Splits = HashMap<String, Arc<ValidSplit>>;

/// Where a candidate's validation probabilities are read from.
#[derive(Debug, Clone)]
enum Source {
    /// The probability cache.
    Cache(CacheMeta),
    /// A kept checkpoint's `<epoch>.valid.npy` (without flip).
    Checkpoint(SessionDir),
}

/// A checkpoint with validation probabilities, as selection and the builder use it.
#[derive(Debug, Clone)]
struct Candidate {
    session: SessionId,
    epoch: u32,
    /// The test-time augmentation of its probabilities.
    tta: Tta,
    /// The order digest of its validation split.
    order: String,
    source: Source,
}

impl Candidate {
    fn from_cache(meta: CacheMeta) -> Self {
        Candidate {
            session: meta.session.clone(),
            epoch: meta.epoch,
            tta: meta.tta,
            order: meta.order.clone(),
            source: Source::Cache(meta),
        }
    }

    fn from_checkpoint(session: SessionId, epoch: u32, dir: SessionDir, record: ValidRecord) -> Self {
        Candidate { session, epoch, tta: Tta::None, order: record.order, source: Source::Checkpoint(dir) }
    }

    /// The file its probabilities are read from.
    fn path(&self, home: &Home) -> PathBuf {
        match &self.source {
            Source::Cache(meta) => meta.key().probs_path(home),
            Source::Checkpoint(dir) => dir.checkpoint_valid(self.epoch),
        }
    }

    /// Which version of its probabilities it is: the file's size and modification time (None: unreadable).
    fn version(&self, home: &Home) -> Option<(u64, std::time::SystemTime)> {
        let meta = std::fs::metadata(self.path(home)).ok()?;
        Some((meta.len(), meta.modified().ok()?))
    }

    fn load(&self, home: &Home) -> Result<F16Matrix, DaemonError> {
        let gone =
            || DaemonError::NotFound(format!("{}:{}: its validation probabilities vanished", self.session, self.epoch));
        match &self.source {
            Source::Cache(meta) => read_valid(home, meta),
            Source::Checkpoint(dir) => valid::open(dir, self.epoch, &self.order).map_err(invalid)?.ok_or_else(gone),
        }
    }
}

/// The checkpoint's own validation predictions, when it is kept and has them.
fn checkpoint_candidate(home: &Home, session: &SessionId, epoch: u32) -> Result<Option<Candidate>, DaemonError> {
    let dir = SessionDir::new(home.session(session));
    Ok(valid::record(&dir, epoch)
        .map_err(invalid)?
        .map(|record| Candidate::from_checkpoint(session.clone(), epoch, dir, record)))
}

impl Daemon {
    /// The dataset's facts, and the validation split of every distinct (`valid_fraction`, `seed`) among its
    /// sessions, keyed by order digest.
    async fn validation_splits(&self, dataset: &str) -> Result<(Arc<DatasetFacts>, Splits), DaemonError> {
        let mut wanted: Vec<(u64, u64)> = Vec::new(); // (valid_fraction bits, seed)
        let filter =
            crate::store::SessionFilter { all: true, dataset: Some(dataset.to_string()), ..Default::default() };
        for row in self.store.sessions(&filter).await? {
            if let Ok(r) = row.resolved_spec() {
                let key = (r.spec.valid_fraction.to_bits(), r.spec.seed);
                if !wanted.contains(&key) {
                    wanted.push(key);
                }
            }
        }
        let facts = self.dataset_facts(dataset).await?;
        let held = facts.clone();
        blocking(move || {
            let mut splits = Splits::new();
            for (fraction, seed) in wanted {
                let split = held.split(f64::from_bits(fraction), seed);
                splits.insert(split.order.clone(), split);
            }
            Ok(splits)
        })
        .await
        .map(|splits| (facts, splits))
    }

    /// Every cached checkpoint of a dataset with its validation accuracy (`only`: of this user's sessions alone).
    pub async fn cached_checkpoints(
        &self,
        dataset: &str,
        only: Option<&str>,
    ) -> Result<Vec<CachedCheckpoint>, DaemonError> {
        let only = only.map(str::to_string);
        let (home, name) = (self.home().clone(), dataset.to_string());
        if blocking(move || valid_entries(&home, &name)).await?.is_empty() {
            // nothing cached: no need for the dataset's facts
            return Ok(Vec::new());
        }
        let (facts, splits) = self.validation_splits(dataset).await?;
        let home = self.home().clone();
        let dataset = dataset.to_string();
        blocking(move || {
            let metas = valid_entries(&home, &dataset)?;
            let mut out = Vec::with_capacity(metas.len());
            for meta in metas.into_iter().filter(|m| only.as_ref().is_none_or(|u| m.session.user == *u)) {
                let val_acc = match splits.get(&meta.order) {
                    Some(split) => facts.accuracy(&read_valid(&home, &meta)?, split).ok(),
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
        let (facts, splits) = self.validation_splits(dataset).await?;
        let home = self.home().clone();
        let members = members.to_vec();
        blocking(move || {
            let mut loaded = Vec::with_capacity(members.len());
            let mut order: Option<String> = None;
            for m in &members {
                // cached (as asked), else the checkpoint's own predictions (without flip)
                let key = CacheKey { session: m.session.clone(), epoch: m.epoch, split: CacheSplit::Valid, tta };
                let candidate = match probs::meta(&home, &key).map_err(invalid)? {
                    Some(meta) => Candidate::from_cache(meta),
                    None => checkpoint_candidate(&home, &m.session, m.epoch)?.ok_or_else(|| {
                        DaemonError::NotFound(format!(
                            "{}:{} has no validation probabilities: none cached{} and none saved with the checkpoint \
                             (deleted, or saved by an older rush); submit it first (dry runs cache nothing)",
                            m.session,
                            m.epoch,
                            if tta == Tta::Flip { " with flip" } else { "" }
                        ))
                    })?,
                };
                if order.as_ref().is_some_and(|o| *o != candidate.order) {
                    return Err(DaemonError::Invalid(format!(
                        "{}:{} was validated on another split than the first member (different valid_fraction or seed)",
                        m.session, m.epoch
                    )));
                }
                order = Some(candidate.order.clone());
                loaded.push(candidate.load(&home)?);
            }
            let order = order.unwrap_or_default();
            let split = splits.get(&order).ok_or_else(|| {
                DaemonError::Invalid("the members' validation split matches no session's spec any more".into())
            })?;
            let refs: Vec<&F16Matrix> = loaded.iter().collect();
            let weights: Vec<f64> = members.iter().map(|m| m.weight).collect();
            let val_acc =
                Mix::weighted(&refs, &weights).and_then(|mix| mix.accuracy(&split.labels)).map_err(invalid)?;
            let singles = loaded.iter().map(|p| facts.accuracy(p, split).map_err(invalid)).collect::<Result<_, _>>()?;
            Ok(MixEval { val_acc, rows: split.labels.len(), singles })
        })
        .await
    }

    /// Every kept checkpoint of the dataset's sessions, `(session, epoch)`.
    async fn kept_checkpoints(&self, dataset: &str) -> Result<Vec<(SessionId, u32)>, DaemonError> {
        let filter =
            crate::store::SessionFilter { all: true, dataset: Some(dataset.to_string()), ..Default::default() };
        let mut kept = Vec::new();
        for row in self.store.sessions(&filter).await? {
            for c in self.store.checkpoints(&row.id).await? {
                kept.push((row.id.clone(), c.epoch.clamp(0, i64::from(u32::MAX)) as u32));
            }
        }
        Ok(kept)
    }

    /// Greedy forward selection with replacement over every checkpoint of `dataset` with validation probabilities
    /// (Caruana et al., 2004): the cached ones of `tta`, and every kept checkpoint with its own.
    /// `only`: among this user's sessions alone (a member of a shared daemon).
    pub async fn auto_ensemble(
        &self,
        dataset: &str,
        max_members: usize,
        tta: Tta,
        only: Option<&str>,
    ) -> Result<AutoEnsemble, DaemonError> {
        let (facts, splits) = self.validation_splits(dataset).await?;
        let mut kept = self.kept_checkpoints(dataset).await?;
        let only = only.map(str::to_string);
        kept.retain(|(session, _)| only.as_ref().is_none_or(|u| session.user == *u));
        let home = self.home().clone();
        let dataset = dataset.to_string();
        let memo = self.auto_memo.clone();
        blocking(move || {
            let mut candidates: Vec<Candidate> = valid_entries(&home, &dataset)?
                .into_iter()
                .filter(|m| m.tta == tta && only.as_ref().is_none_or(|u| m.session.user == *u))
                .map(Candidate::from_cache)
                .collect();
            for (session, epoch) in &kept {
                if !candidates.iter().any(|c| c.session == *session && c.epoch == *epoch)
                    && let Some(c) = checkpoint_candidate(&home, session, *epoch)?
                {
                    candidates.push(c);
                }
            }
            candidates.sort_by(|a, b| (&a.session, a.epoch).cmp(&(&b.session, b.epoch)));
            let mut by_split: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
            for c in candidates {
                if splits.contains_key(&c.order) {
                    by_split.entry(c.order.clone()).or_default().push(c);
                }
            }
            let Some((order, metas)) = by_split.into_iter().max_by_key(|(_, metas)| metas.len()) else {
                return Err(DaemonError::NotFound(format!(
                    "dataset {dataset} has no checkpoint with validation probabilities: each checkpoint a session \
                     saves has them (train one), and so does every submitted one{}",
                    if tta == Tta::Flip { " (with flip when submitted with --tta flip)" } else { "" }
                )));
            };
            // The answer depends only on these files and the options: asked again (the builder's page, a script
            // polling), it is read from the memo instead of mixing every candidate again.
            let mut key = format!("{dataset}|{order}|{tta}|{max_members}");
            for c in &metas {
                let kind = if matches!(c.source, Source::Cache(_)) { "cache" } else { "checkpoint" };
                key.push_str(&format!("|{}:{}:{}:{}:{:?}", c.session, c.epoch, c.tta, kind, c.version(&home)));
            }
            if let Some(known) = memo.get(&key) {
                return Ok(known);
            }
            let split = &splits[&order];
            let (labels, folds) = (&split.labels, &split.folds);
            let loaded: Vec<F16Matrix> = metas.iter().map(|c| c.load(&home)).collect::<Result<_, _>>()?;
            let refs: Vec<&F16Matrix> = loaded.iter().collect();
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
                        val_acc: facts.accuracy(&loaded[m.candidate], split).map_err(invalid)?,
                    })
                })
                .collect::<Result<_, DaemonError>>()?;
            let answer = AutoEnsemble {
                dataset,
                tta,
                candidates: metas.len(),
                from_checkpoints: metas.iter().filter(|c| matches!(c.source, Source::Checkpoint(_))).count(),
                without_flip: metas.iter().filter(|c| c.tta != tta).count(),
                members,
                val_acc: selection.val_acc,
                best_single: name(selection.best_single),
                best_single_acc: selection.best_single_acc,
                gain: selection.gain,
                valid_rows: labels.len(),
                held_out,
            };
            memo.put(key, answer.clone());
            Ok(answer)
        })
        .await
    }
}

/// The latest answers of `ensemble auto`, by what they were computed from (dataset, split, options, and each
/// candidate's file version): selection reads every candidate's probabilities many times, seconds at AI RUSH scale,
/// and a new or changed file makes a new key.
#[derive(Debug, Default)]
pub struct AutoMemo {
    answers: std::sync::Mutex<Vec<(String, AutoEnsemble)>>,
}

impl AutoMemo {
    /// How many answers are kept (the oldest is dropped).
    const KEPT: usize = 16;

    fn get(&self, key: &str) -> Option<AutoEnsemble> {
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers.iter().find(|(k, _)| k == key).map(|(_, a)| a.clone())
    }

    fn put(&self, key: String, answer: AutoEnsemble) {
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        answers.retain(|(k, _)| *k != key);
        if answers.len() >= Self::KEPT {
            answers.remove(0);
        }
        answers.push((key, answer));
    }
}

fn invalid(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Invalid(e.to_string())
}

/// The complete validation entries of a dataset's cache.
fn valid_entries(home: &Home, dataset: &str) -> Result<Vec<CacheMeta>, DaemonError> {
    Ok(probs::list(home, dataset).map_err(invalid)?.into_iter().filter(|m| m.split == CacheSplit::Valid).collect())
}

fn read_valid(home: &Home, meta: &CacheMeta) -> Result<F16Matrix, DaemonError> {
    probs::open(home, &meta.key(), &meta.order)
        .map_err(invalid)?
        .ok_or_else(|| DaemonError::NotFound(format!("{}:{}: the cache entry vanished", meta.session, meta.epoch)))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DaemonError> + Send + 'static,
) -> Result<T, DaemonError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| DaemonError::Invalid(format!("an ensemble task crashed: {e}")))?
}
