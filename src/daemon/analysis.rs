//! What a checkpoint gets wrong, and what a dataset holds: the file reading behind the analysis views. A kept
//! checkpoint's validation predictions come from `checkpoints/<epoch>.valid.npy` (`submit::valid`, written by the
//! trainer), or, for a checkpoint saved before that file existed, from the probability cache when a submission
//! predicted it. The labels are the session's validation split, computed from the dataset's facts ([`super::facts`])
//! for its spec as the trainer and `rush infer` compute it from the files, and matched to the predictions by the order
//! digest. The facts also name the tags (`tag.tsv`, in each of its languages) and the packages' styles
//! (`packages.tsv`); no view reads the dataset's CSV or lists its images. The predictions are read from their float16
//! file a block of rows at a time. The computations are `core::analysis`'s.
//!
//! Also the one way to a dataset's images: [`Daemon::dataset_image`] resolves a sticker of a registered dataset's
//! training split by package and sticker id, never any other path.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::facts::DatasetFacts;
use super::{Daemon, DaemonError};
use crate::core::analysis::{self, ClassDelta, ClassRow, Confusion, Outcomes, Ranked, Selection};
use crate::core::checkpoint::{CheckpointError, CheckpointRef};
use crate::core::ensemble::ProbRows;
use crate::core::session::SessionId;
use crate::core::tags::{self, TagText};
use crate::data::facts::{Facts, PackageFacts, ValidSplit};
use crate::data::layout::{self, NUM_TAGS};
use crate::home::SessionDir;
use crate::submit::Tta;
use crate::submit::npy::F16Matrix;
use crate::submit::probs::{self, CacheKey, CacheSplit};
use crate::submit::valid;

/// The confusion view's length: the most confused pairs.
pub const CONFUSIONS: usize = 30;
/// Predicted classes shown per sticker in a gallery.
pub const TOP_K: usize = 3;
/// Where a checkpoint's validation predictions were read from.
pub const FROM_CHECKPOINT: &str = "checkpoint";
pub const FROM_CACHE: &str = "cache";

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
    facts: Arc<DatasetFacts>,
    /// Its session's validation split: the training sticker of each row.
    split: Arc<ValidSplit>,
    probs: F16Matrix,
    outcomes: Outcomes,
}

fn invalid(e: impl std::fmt::Display) -> DaemonError {
    DaemonError::Invalid(e.to_string())
}

/// Every tag of `tag.tsv`, by id.
fn tag_texts(facts: &Facts) -> BTreeMap<u16, TagText> {
    facts.summary().tags.iter().map(|t| (t.id, TagText::new(t.id, &t.name, &t.keywords, &t.languages))).collect()
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

fn styles(facts: &Facts) -> HashMap<&str, &PackageFacts> {
    facts.summary().packages.iter().map(|p| (p.id.as_str(), p)).collect()
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
    /// A kept checkpoint's validation predictions (`7`, `best`, `last`) with the labels of its session's split; `None`
    /// when it has none (saved before they were written, and never submitted).
    async fn predictions(&self, id: &SessionId, checkpoint: &str) -> Result<Option<Loaded>, DaemonError> {
        let row = self.store.session(id).await?.ok_or_else(|| super::unknown(id))?;
        let resolved = row.resolved_spec()?;
        let reference: CheckpointRef = checkpoint.parse().map_err(|e: CheckpointError| invalid(e))?;
        let epoch = self.checkpoint_row(id, reference).await?.epoch.clamp(0, i64::from(u32::MAX)) as u32;
        let facts = self.dataset_facts(&resolved.spec.dataset).await?;
        let (home, id) = (self.home().clone(), id.clone());
        blocking(move || {
            let split = facts.split(resolved.spec.valid_fraction, resolved.spec.seed);
            let session = SessionDir::new(home.session(&id));
            let (probs, source) = match valid::open(&session, epoch, &split.order).map_err(invalid)? {
                Some(p) => (p, FROM_CHECKPOINT),
                None => {
                    let cached = CacheKey { session: id.clone(), epoch, split: CacheSplit::Valid, tta: Tta::None };
                    match probs::open(&home, &cached, &split.order).map_err(invalid)? {
                        Some(p) => (p, FROM_CACHE),
                        None => return Ok(None),
                    }
                }
            };
            if probs.rows() != split.rows.len() || probs.classes() != NUM_TAGS {
                return Err(invalid(format!(
                    "{id}:{epoch}: {} x {} validation probabilities for a split of {} stickers",
                    probs.rows(),
                    probs.classes(),
                    split.rows.len()
                )));
            }
            let outcomes = Outcomes::from_probs(split.labels.clone(), &probs).map_err(invalid)?;
            Ok(Some(Loaded { session: id, epoch, source, facts, split, probs, outcomes }))
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
            let all = tag_texts(&l.facts.facts);
            let classes = l.outcomes.per_class();
            let confusions = l.outcomes.confusions(CONFUSIONS);
            let groups: Vec<&str> =
                l.split.rows.iter().map(|&i| l.facts.facts.package(i as usize).id.as_str()).collect();
            let styles = styles(&l.facts.facts);
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
            let all = tag_texts(&l.facts.facts);
            let chosen = l.outcomes.select(selection);
            let mut row = vec![0f32; l.probs.classes()];
            let items: Vec<GalleryItem> = chosen
                .iter()
                .take(limit)
                .map(|&r| {
                    let sample = l.split.rows[r] as usize;
                    GalleryItem {
                        package: l.facts.facts.package(sample).id.clone(),
                        sticker: l.facts.facts.sticker(sample).to_string(),
                        truth: l.outcomes.labels()[r],
                        predicted: l.outcomes.predicted()[r],
                        correct: l.outcomes.is_right(r),
                        top: analysis::top_k(l.probs.read(r, &mut row), TOP_K),
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
            let mut all = tag_texts(&lb.facts.facts);
            all.extend(tag_texts(&la.facts.facts));
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
        self.registered(name).await?;
        let (facts, name) = (self.dataset_facts(name).await?, name.to_string());
        blocking(move || {
            let facts = &facts.facts;
            let all = tag_texts(facts);
            let packages_of = &facts.summary().packages;
            // per class: images, its packages (indices), its first sticker; per package: images, its classes
            let mut by_class: BTreeMap<u16, (usize, Vec<u32>, usize)> = BTreeMap::new();
            let mut by_package: Vec<(usize, Vec<u16>)> = vec![(0, Vec::new()); packages_of.len()];
            for i in 0..facts.len() {
                let (label, package) = (facts.label(i), facts.package_index(i));
                let c = by_class.entry(label).or_insert((0, Vec::new(), i));
                c.0 += 1;
                c.1.push(package);
                let p = &mut by_package[package as usize];
                p.0 += 1;
                p.1.push(label);
            }
            let packages = packages_of
                .iter()
                .zip(by_package)
                .filter(|(_, (images, _))| *images > 0)
                .map(|(meta, (images, mut classes))| {
                    classes.sort_unstable();
                    classes.dedup();
                    DatasetPackage {
                        package: meta.id.clone(),
                        style: meta.style.clone(),
                        family: meta.family.clone(),
                        split: meta.split.clone(),
                        images,
                        classes: classes.len(),
                    }
                })
                .collect();
            let classes: Vec<DatasetClass> = by_class
                .into_iter()
                .map(|(id, (images, mut packages, first))| {
                    packages.sort_unstable();
                    packages.dedup();
                    DatasetClass {
                        tag: all.get(&id).cloned().unwrap_or_else(|| TagText::unnamed(id)),
                        images,
                        packages: packages.len(),
                        sample: Some(Sticker {
                            package: facts.package(first).id.clone(),
                            sticker: facts.sticker(first).to_string(),
                        }),
                    }
                })
                .collect();
            Ok(DatasetOverview {
                name,
                images: facts.len(),
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
        self.registered(name).await?;
        let (facts, name) = (self.dataset_facts(name).await?, name.to_string());
        blocking(move || {
            let facts = &facts.facts;
            let all = tag_texts(facts);
            let mut packages: BTreeMap<&str, (usize, Vec<String>)> = BTreeMap::new();
            for i in (0..facts.len()).filter(|&i| facts.label(i) == tag) {
                let p = packages.entry(&facts.package(i).id).or_default();
                p.0 += 1;
                if p.1.len() < per_package {
                    p.1.push(facts.sticker(i).to_string());
                }
            }
            let text = match all.get(&tag) {
                Some(t) => t.clone(),
                None if !packages.is_empty() => TagText::unnamed(tag),
                None => return Err(DaemonError::NotFound(format!("dataset {name} has no tag {tag}"))),
            };
            let styles = styles(facts);
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
