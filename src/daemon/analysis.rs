//! What a checkpoint gets wrong, and what a dataset holds: the file reading behind the analysis views. A kept
//! checkpoint's validation predictions come from `checkpoints/<epoch>.valid.npy` (`submit::valid`, written by the
//! trainer), or, for a checkpoint saved before that file existed, from the probability cache when a submission
//! predicted it. The labels are the session's validation split, recomputed from its spec as the trainer and
//! `rush infer` compute it, and matched to the predictions by the order digest. `tag.tsv` names the tags in each of its
//! languages and `packages.tsv` the packages' styles. The computations are `core::analysis`'s.
//!
//! Also the one way to a dataset's images: [`Daemon::dataset_image`] resolves a sticker of a registered dataset's
//! training split by package and sticker id, never any other path.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{Daemon, DaemonError};
use crate::core::analysis::{self, ClassDelta, ClassRow, Confusion, Outcomes, Ranked, Selection};
use crate::core::checkpoint::{CheckpointError, CheckpointRef};
use crate::core::ensemble::Probs;
use crate::core::session::SessionId;
use crate::core::tags::{self, TagText};
use crate::data::layout::{self, NUM_TAGS, Sample, SplitName, TrainSet, read_train};
use crate::data::split::split_by_package;
use crate::home::SessionDir;
use crate::submit::Tta;
use crate::submit::probs::{self, CacheKey, CacheSplit, order_digest};
use crate::submit::valid;

/// The confusion view's length: the most confused pairs.
pub const CONFUSIONS: usize = 30;
/// Predicted classes shown per sticker in a gallery.
pub const TOP_K: usize = 3;
/// Datasets whose training set is kept read.
const KEPT_SETS: usize = 4;

/// Where a checkpoint's validation predictions were read from.
pub const FROM_CHECKPOINT: &str = "checkpoint";
pub const FROM_CACHE: &str = "cache";

/// Training sets read for the views and the ensembles, kept while their CSV and TSV files are unchanged (reading one
/// lists every image).
#[derive(Debug, Default)]
pub struct TrainSets {
    sets: Mutex<HashMap<PathBuf, Kept>>,
}

/// A training set and the stamps of the files it was read from.
type Kept = (Vec<Stamp>, Arc<TrainSet>);

/// A file's modification time and length, or `None` when it is missing.
type Stamp = Option<(SystemTime, u64)>;

fn stamps(dataset: &Path) -> Vec<Stamp> {
    let dir = layout::train_dir(dataset);
    [layout::TRAIN_CSV, layout::TAG_TSV, layout::PACKAGES_TSV]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}

impl TrainSets {
    /// The training set of the dataset folder `dataset` (blocking).
    pub fn get(&self, dataset: &Path) -> Result<Arc<TrainSet>, DaemonError> {
        let stamp = stamps(dataset);
        if let Ok(sets) = self.sets.lock()
            && let Some((seen, set)) = sets.get(dataset)
            && *seen == stamp
        {
            return Ok(set.clone());
        }
        let set =
            read_train(dataset).map_err(|e| DaemonError::Invalid(format!("dataset {}: {e}", dataset.display())))?;
        let set = Arc::new(set);
        if let Ok(mut sets) = self.sets.lock() {
            if sets.len() >= KEPT_SETS && !sets.contains_key(dataset) {
                sets.clear();
            }
            sets.insert(dataset.to_path_buf(), (stamp, set.clone()));
        }
        Ok(set)
    }
}

/// A package's accuracy (a package is one art style).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageAccuracy {
    pub package: String,
    /// From `packages.tsv` (empty without one).
    pub style: String,
    pub support: usize,
    pub correct: usize,
    pub accuracy: f64,
}

/// The per-class, confusion and per-package views of one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointAnalysis {
    pub session: String,
    pub epoch: u32,
    /// `checkpoint` (the trainer's `<epoch>.valid.npy`) or `cache` (a submission's inference).
    pub source: String,
    /// Validation stickers.
    pub rows: usize,
    pub accuracy: f64,
    /// The languages of `tag.tsv`.
    pub languages: Vec<String>,
    /// Every tag the tables name.
    pub tags: Vec<TagText>,
    /// By class id.
    pub classes: Vec<ClassRow>,
    /// The [`CONFUSIONS`] most confused pairs, the most stickers first.
    pub confusions: Vec<Confusion>,
    /// The least accurate first.
    pub packages: Vec<PackageAccuracy>,
}

/// One validation sticker with what the checkpoint predicted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GalleryItem {
    pub package: String,
    pub sticker: String,
    pub truth: u16,
    pub predicted: u16,
    pub correct: bool,
    /// The [`TOP_K`] most probable classes.
    pub top: Vec<Ranked>,
}

/// The validation stickers of one class or confusion pair, wrong ones first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gallery {
    pub session: String,
    pub epoch: u32,
    pub dataset: String,
    pub selection: Selection,
    /// Stickers selected in all (`items` holds the first of them).
    pub total: usize,
    pub items: Vec<GalleryItem>,
    pub languages: Vec<String>,
    pub tags: Vec<TagText>,
}

/// Two checkpoints class by class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassComparison {
    /// `SESSION:EPOCH` of each side.
    pub a: String,
    pub b: String,
    pub accuracy_a: f64,
    pub accuracy_b: f64,
    /// Both validated on the same stickers: the per-sticker counts are there.
    pub paired: bool,
    /// Classes where A is more accurate, and where B is.
    pub a_better: usize,
    pub b_better: usize,
    /// The largest differences first.
    pub rows: Vec<ClassDelta>,
    pub languages: Vec<String>,
    pub tags: Vec<TagText>,
}

/// A sticker of a dataset's training split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sticker {
    pub package: String,
    pub sticker: String,
}

/// A package of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetPackage {
    pub package: String,
    pub style: String,
    pub family: String,
    /// `train` or `valid` when `packages.tsv` says.
    pub split: Option<String>,
    pub images: usize,
    pub classes: usize,
}

/// A class of a dataset (stickers whose first tag it is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetClass {
    pub tag: TagText,
    pub images: usize,
    pub packages: usize,
    /// The first of its stickers.
    pub sample: Option<Sticker>,
}

/// What a dataset's training split holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetOverview {
    pub name: String,
    pub images: usize,
    pub languages: Vec<String>,
    /// Tags of `tag.tsv` that label no sticker.
    pub unused_tags: usize,
    /// By package id.
    pub packages: Vec<DatasetPackage>,
    /// By tag id, the classes with stickers.
    pub classes: Vec<DatasetClass>,
}

/// A package's stickers of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageSamples {
    pub package: String,
    pub style: String,
    pub images: usize,
    /// The first few sticker ids.
    pub stickers: Vec<String>,
}

/// One class of a dataset: its keywords in every language and samples from each package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagSamples {
    pub dataset: String,
    pub tag: TagText,
    pub languages: Vec<String>,
    pub images: usize,
    pub packages: Vec<PackageSamples>,
}

/// A checkpoint's validation predictions with the labels and stickers of its rows.
struct Loaded {
    session: SessionId,
    epoch: u32,
    source: &'static str,
    set: Arc<TrainSet>,
    /// The sample index of each row.
    rows: Vec<usize>,
    probs: Probs,
    outcomes: Outcomes,
}

fn key(sample: &Sample) -> String {
    format!("{}/{}", sample.package_id, sample.sticker_id)
}

fn invalid(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Invalid(e.to_string())
}

/// Every tag of `tag.tsv`, by id.
fn tag_texts(set: &TrainSet) -> BTreeMap<u16, TagText> {
    set.tags.iter().map(|t| (t.id, TagText::new(t.id, &t.name, &t.keywords, &t.languages))).collect()
}

/// The texts of `ids` (sorted, each once; a tag without a row is named by its id).
fn tags_of(all: &BTreeMap<u16, TagText>, ids: impl IntoIterator<Item = u16>) -> Vec<TagText> {
    let mut ids: Vec<u16> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter().map(|id| all.get(&id).cloned().unwrap_or_else(|| TagText::unnamed(id))).collect()
}

fn languages_of(all: &BTreeMap<u16, TagText>) -> Vec<String> {
    tags::languages(&all.values().cloned().collect::<Vec<_>>())
}

fn styles(set: &TrainSet) -> HashMap<&str, &layout::Package> {
    set.packages.iter().map(|p| (p.package_id.as_str(), p)).collect()
}

/// A package or sticker id as it may appear in an image path: a plain file name.
fn plain(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id != "."
        && id != ".."
        && !id.starts_with('.')
        && !id.chars().any(|c| matches!(c, '/' | '\\' | '\0') || c.is_control())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DaemonError> + Send + 'static,
) -> Result<T, DaemonError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| DaemonError::Invalid(format!("an analysis task crashed: {e}")))?
}

impl Daemon {
    /// The training set of a dataset folder, read once while its files are unchanged (blocking).
    pub fn train_set(&self, dataset: &Path) -> Result<Arc<TrainSet>, DaemonError> {
        self.train_sets.get(dataset)
    }

    /// A kept checkpoint's validation predictions (`7`, `best`, `last`) with the labels of its session's split; `None`
    /// when it has none (saved before they were written, and never submitted).
    async fn predictions(&self, id: &SessionId, checkpoint: &str) -> Result<Option<Loaded>, DaemonError> {
        let row = self.store.session(id).await?.ok_or_else(|| super::unknown(id))?;
        let resolved = row.resolved_spec()?;
        let reference: CheckpointRef = checkpoint.parse().map_err(|e: CheckpointError| invalid(e))?;
        let epoch = self.checkpoint_row(id, reference).await?.epoch.clamp(0, i64::from(u32::MAX)) as u32;
        let (home, sets, id) = (self.home().clone(), self.train_sets.clone(), id.clone());
        blocking(move || {
            let set = sets.get(&resolved.dataset_path)?;
            let split = split_by_package(&set, resolved.spec.valid_fraction, resolved.spec.seed);
            let keys: Vec<String> = split.valid.iter().map(|&i| key(&set.samples[i])).collect();
            let order = order_digest(keys.iter().map(String::as_str));
            let session = SessionDir::new(home.session(&id));
            let (probs, source) = match valid::read(&session, epoch, &order).map_err(invalid)? {
                Some(p) => (p, FROM_CHECKPOINT),
                None => {
                    let cached = CacheKey { session: id.clone(), epoch, split: CacheSplit::Valid, tta: Tta::None };
                    match probs::read(&home, &cached, &order).map_err(invalid)? {
                        Some(p) => (p, FROM_CACHE),
                        None => return Ok(None),
                    }
                }
            };
            if probs.rows() != split.valid.len() || probs.classes() != NUM_TAGS {
                return Err(invalid(format!(
                    "{id}:{epoch}: {} x {} validation probabilities for a split of {} stickers",
                    probs.rows(),
                    probs.classes(),
                    split.valid.len()
                )));
            }
            let labels: Vec<u16> = split.valid.iter().map(|&i| set.samples[i].label()).collect();
            let outcomes = Outcomes::from_probs(labels, &probs).map_err(invalid)?;
            Ok(Some(Loaded { session: id, epoch, source, set, rows: split.valid, probs, outcomes }))
        })
        .await
    }

    /// The per-class table, the most confused pairs and the per-package accuracy of a kept checkpoint's validation
    /// predictions; `None` when the checkpoint has none.
    pub async fn checkpoint_analysis(
        &self,
        id: &SessionId,
        checkpoint: &str,
    ) -> Result<Option<CheckpointAnalysis>, DaemonError> {
        let Some(l) = self.predictions(id, checkpoint).await? else { return Ok(None) };
        blocking(move || {
            let all = tag_texts(&l.set);
            let classes = l.outcomes.per_class();
            let confusions = l.outcomes.confusions(CONFUSIONS);
            let groups: Vec<&str> = l.rows.iter().map(|&i| l.set.samples[i].package_id.as_str()).collect();
            let styles = styles(&l.set);
            let packages = l
                .outcomes
                .per_group(&groups)
                .map_err(invalid)?
                .into_iter()
                .map(|g| PackageAccuracy {
                    style: styles.get(g.group.as_str()).map(|p| p.style.clone()).unwrap_or_default(),
                    package: g.group,
                    support: g.support,
                    correct: g.correct,
                    accuracy: g.accuracy,
                })
                .collect();
            let named = classes
                .iter()
                .flat_map(|c| std::iter::once(c.class).chain(c.top_wrong.map(|w| w.class)))
                .chain(confusions.iter().flat_map(|c| [c.truth, c.predicted]));
            Ok(Some(CheckpointAnalysis {
                session: l.session.to_string(),
                epoch: l.epoch,
                source: l.source.to_string(),
                rows: l.outcomes.len(),
                accuracy: l.outcomes.accuracy(),
                languages: languages_of(&all),
                tags: tags_of(&all, named),
                classes,
                confusions,
                packages,
            }))
        })
        .await
    }

    /// The validation stickers of a class or confusion pair with the checkpoint's top predictions, wrong ones first,
    /// at most `limit`; `None` when the checkpoint has no validation predictions.
    pub async fn validation_gallery(
        &self,
        id: &SessionId,
        checkpoint: &str,
        selection: Selection,
        limit: usize,
    ) -> Result<Option<Gallery>, DaemonError> {
        let classes = match selection {
            Selection::Class { class } => vec![class],
            Selection::Pair { truth, predicted } => vec![truth, predicted],
        };
        if let Some(c) = classes.iter().find(|&&c| usize::from(c) >= NUM_TAGS) {
            return Err(invalid(format!("class {c} is out of range (tags are 0..{NUM_TAGS})")));
        }
        let Some(l) = self.predictions(id, checkpoint).await? else { return Ok(None) };
        blocking(move || {
            let all = tag_texts(&l.set);
            let chosen = l.outcomes.select(selection);
            let items: Vec<GalleryItem> = chosen
                .iter()
                .take(limit)
                .map(|&r| {
                    let sample = &l.set.samples[l.rows[r]];
                    GalleryItem {
                        package: sample.package_id.clone(),
                        sticker: sample.sticker_id.clone(),
                        truth: l.outcomes.labels()[r],
                        predicted: l.outcomes.predicted()[r],
                        correct: l.outcomes.is_right(r),
                        top: analysis::top_k(l.probs.row(r), TOP_K),
                    }
                })
                .collect();
            let named = classes
                .into_iter()
                .chain(items.iter().flat_map(|i| [i.truth, i.predicted]))
                .chain(items.iter().flat_map(|i| i.top.iter().map(|t| t.class)));
            Ok(Some(Gallery {
                session: l.session.to_string(),
                epoch: l.epoch,
                dataset: l.session.dataset.clone(),
                selection,
                total: chosen.len(),
                languages: languages_of(&all),
                tags: tags_of(&all, named),
                items,
            }))
        })
        .await
    }

    /// Checkpoint `ca` of session `a` against `cb` of `b`, class by class (refused when either has no validation
    /// predictions).
    pub async fn compare_classes(
        &self,
        (a, ca): (&SessionId, &str),
        (b, cb): (&SessionId, &str),
    ) -> Result<ClassComparison, DaemonError> {
        let mut sides = Vec::with_capacity(2);
        for (id, c) in [(a, ca), (b, cb)] {
            let loaded = self.predictions(id, c).await?.ok_or_else(|| {
                DaemonError::NotFound(format!("{id}:{c}: no validation predictions for this checkpoint"))
            })?;
            sides.push(loaded);
        }
        let (lb, la) = (sides.pop(), sides.pop());
        let (Some(la), Some(lb)) = (la, lb) else { return Err(invalid("two checkpoints to compare")) };
        blocking(move || {
            let rows = analysis::class_delta(&la.outcomes, &lb.outcomes);
            let mut all = tag_texts(&lb.set);
            all.extend(tag_texts(&la.set));
            Ok(ClassComparison {
                a: format!("{}:{}", la.session, la.epoch),
                b: format!("{}:{}", lb.session, lb.epoch),
                accuracy_a: la.outcomes.accuracy(),
                accuracy_b: lb.outcomes.accuracy(),
                paired: la.outcomes.labels() == lb.outcomes.labels(),
                a_better: rows.iter().filter(|r| r.delta.is_some_and(|d| d > 0.0)).count(),
                b_better: rows.iter().filter(|r| r.delta.is_some_and(|d| d < 0.0)).count(),
                languages: languages_of(&all),
                tags: tags_of(&all, rows.iter().map(|r| r.class)),
                rows,
            })
        })
        .await
    }

    /// The folder of a registered dataset.
    async fn registered(&self, name: &str) -> Result<PathBuf, DaemonError> {
        match self.store.dataset(name).await? {
            Some(_) => Ok(self.home().dataset(name)),
            None => Err(DaemonError::NotFound(format!("no dataset {name:?} is registered"))),
        }
    }

    /// Images per class and per package of a registered dataset's training split, with the tags' keywords.
    pub async fn dataset_overview(&self, name: &str) -> Result<DatasetOverview, DaemonError> {
        let path = self.registered(name).await?;
        let (sets, name) = (self.train_sets.clone(), name.to_string());
        blocking(move || {
            let set = sets.get(&path)?;
            let all = tag_texts(&set);
            let mut by_class: BTreeMap<u16, (usize, Vec<&str>, Option<&Sample>)> = BTreeMap::new();
            let mut by_package: BTreeMap<&str, (usize, Vec<u16>)> = BTreeMap::new();
            for s in &set.samples {
                let c = by_class.entry(s.label()).or_default();
                c.0 += 1;
                c.1.push(&s.package_id);
                c.2.get_or_insert(s);
                let p = by_package.entry(&s.package_id).or_default();
                p.0 += 1;
                p.1.push(s.label());
            }
            let styles = styles(&set);
            let packages = by_package
                .into_iter()
                .map(|(package, (images, mut classes))| {
                    classes.sort_unstable();
                    classes.dedup();
                    let meta = styles.get(package);
                    DatasetPackage {
                        package: package.to_string(),
                        style: meta.map(|m| m.style.clone()).unwrap_or_default(),
                        family: meta.map(|m| m.family.clone()).unwrap_or_default(),
                        split: meta.and_then(|m| m.split).map(|s| {
                            match s {
                                SplitName::Train => "train",
                                SplitName::Valid => "valid",
                            }
                            .to_string()
                        }),
                        images,
                        classes: classes.len(),
                    }
                })
                .collect();
            let classes: Vec<DatasetClass> = by_class
                .into_iter()
                .map(|(id, (images, mut packages, sample))| {
                    packages.sort_unstable();
                    packages.dedup();
                    DatasetClass {
                        tag: all.get(&id).cloned().unwrap_or_else(|| TagText::unnamed(id)),
                        images,
                        packages: packages.len(),
                        sample: sample
                            .map(|s| Sticker { package: s.package_id.clone(), sticker: s.sticker_id.clone() }),
                    }
                })
                .collect();
            Ok(DatasetOverview {
                name,
                images: set.samples.len(),
                languages: languages_of(&all),
                unused_tags: all.keys().filter(|id| !classes.iter().any(|c| c.tag.id == **id)).count(),
                packages,
                classes,
            })
        })
        .await
    }

    /// One class of a registered dataset: its keywords and up to `per_package` stickers from each package.
    pub async fn dataset_tag(&self, name: &str, tag: u16, per_package: usize) -> Result<TagSamples, DaemonError> {
        let path = self.registered(name).await?;
        let (sets, name) = (self.train_sets.clone(), name.to_string());
        blocking(move || {
            let set = sets.get(&path)?;
            let all = tag_texts(&set);
            let mut packages: BTreeMap<&str, (usize, Vec<String>)> = BTreeMap::new();
            for s in set.samples.iter().filter(|s| s.label() == tag) {
                let p = packages.entry(&s.package_id).or_default();
                p.0 += 1;
                if p.1.len() < per_package {
                    p.1.push(s.sticker_id.clone());
                }
            }
            let text = match all.get(&tag) {
                Some(t) => t.clone(),
                None if !packages.is_empty() => TagText::unnamed(tag),
                None => return Err(DaemonError::NotFound(format!("dataset {name} has no tag {tag}"))),
            };
            let styles = styles(&set);
            Ok(TagSamples {
                images: packages.values().map(|p| p.0).sum(),
                packages: packages
                    .into_iter()
                    .map(|(package, (images, stickers))| PackageSamples {
                        package: package.to_string(),
                        style: styles.get(package).map(|p| p.style.clone()).unwrap_or_default(),
                        images,
                        stickers,
                    })
                    .collect(),
                languages: languages_of(&all),
                tag: text,
                dataset: name,
            })
        })
        .await
    }

    /// The PNG of a sticker of a registered dataset's training split: `train/train_data/images/<package>/<sticker>.png`
    /// and nothing else. Ids that are not plain names, and a path that leaves the images folder (a symlink out), are
    /// refused; a missing file is not found.
    pub async fn dataset_image(&self, name: &str, package: &str, sticker: &str) -> Result<PathBuf, DaemonError> {
        if !plain(package) || !plain(sticker) {
            return Err(invalid(format!("{package:?}/{sticker:?} is not a sticker (PACKAGE/STICKER ids)")));
        }
        let root = self.registered(name).await?;
        let (package, sticker) = (package.to_string(), sticker.to_string());
        blocking(move || {
            let train = layout::train_dir(&root);
            let missing = || DaemonError::NotFound(format!("no sticker {package}/{sticker}"));
            let images = train.join("images").canonicalize().map_err(|_| missing())?;
            let file = layout::image_path(&train, &package, &sticker).canonicalize().map_err(|_| missing())?;
            if !file.starts_with(&images) {
                return Err(invalid(format!("{package}/{sticker} leaves the dataset's images")));
            }
            if !file.is_file() {
                return Err(missing());
            }
            Ok(file)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::plain;

    #[test]
    fn only_plain_ids_name_an_image() {
        for ok in ["noto", "1f600", "pkg_3", "a.b", "스티커"] {
            assert!(plain(ok), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "..\\x", "a\0b", "a\nb", &"x".repeat(201)] {
            assert!(!plain(bad), "{bad:?}");
        }
    }
}
