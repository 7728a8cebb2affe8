//! A dataset's facts: what the daemon needs of a registered dataset's files, computed once and kept in a sidecar file
//! that is memory-mapped, so that no request parses the training CSV (700,000 rows at AI RUSH scale) or lists the
//! images again. The daemon computes them when it registers the dataset (`$RUSH_HOME/facts/<name>.facts`), or at first
//! use for a dataset registered before they existed, and again when the dataset's files change.
//!
//! They hold what [`read_train`] and [`read_test`] find, in their order: each training sticker's package, label
//! (first tag) and sticker id; the tags of `tag.tsv` and the packages with their `packages.tsv` row; the test split's
//! sample keys in `test_order.csv` order and their order digest. From them come, without the files, every validation
//! split a session's spec asks for ([`Facts::split`]: the same stickers, order, labels and order digest as
//! `data::split::split_by_package` on the training set, which the trainer and `rush infer` use) and the test order a
//! submission is checked against ([`Facts::test_keys`]). The test labels are never read here.
//!
//! **Sources.** The facts record the length and modification time of the files they were computed from
//! ([`sources`]: the training CSV, `tag.tsv`, `packages.tsv`, `test_order.csv`). Facts whose sources differ from the
//! files on disk are stale and computed again; but once the training CSV is gone, the facts stand for the dataset as it
//! was registered (a deleted CSV changes nothing the daemon shows).
//!
//! **File layout** (little endian; each part starts at a multiple of 8 bytes): a 64-byte header (`RUSHFACT`, format
//! version u32, 4 reserved bytes, then u64s: the summary's length, training stickers `n`, test stickers `m`, the
//! lengths of the sticker-id and test-key texts, 8 reserved bytes); the [`Summary`] as JSON; the package index of each
//! training sticker (u32 x n); its label (u16 x n); the offsets of its sticker id in the sticker text (u64 x n+1) and
//! that text; the offsets of each test key in the test text (u64 x m+1) and that text.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::data::layout::{self, DataError, SplitName, TestSet, TrainSet, read_test, read_train};
use crate::data::split::{selection_fold, valid_packages};

/// The sidecar's format version: another one is computed again.
pub const FACTS_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"RUSHFACT";
const HEADER: usize = 64;

/// Why facts could not be computed or read.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a facts file of this rush: {message}")]
    Unusable { path: PathBuf, message: String },
}

/// A file the facts were computed from, as it was then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStamp {
    /// Relative to the dataset folder.
    pub file: String,
    pub bytes: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub modified_ns: u64,
}

/// A tag of `tag.tsv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagFacts {
    pub id: u16,
    pub name: String,
    pub keywords: String,
    pub languages: String,
}

/// A package with training stickers, and its `packages.tsv` row (empty fields without one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageFacts {
    pub id: String,
    pub style: String,
    pub family: String,
    /// `train` or `valid` when `packages.tsv` says.
    pub split: Option<String>,
}

/// The small part of the facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// A digest of `sources`.
    pub fingerprint: String,
    /// The training CSV, `tag.tsv`, `packages.tsv` and `test_order.csv` (`None`: absent) when the facts were computed.
    pub sources: Vec<Option<SourceStamp>>,
    pub train_images: usize,
    /// Distinct labels of the training stickers.
    pub classes: usize,
    /// Test stickers with an image (0 without a test split).
    pub test_images: usize,
    /// The order digest of the test split's keys (empty without a test split).
    pub test_order: String,
    pub tags: Vec<TagFacts>,
    /// Every package with training stickers, by id; a sticker's package is an index into this list.
    pub packages: Vec<PackageFacts>,
    /// The packages `packages.tsv` marks `valid` (they alone form the validation side when there is one).
    pub named_valid: Vec<String>,
}

/// A validation split: its stickers (indices of training stickers, ascending), their labels and selection folds, and
/// the order digest of their keys `package_id/sticker_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidSplit {
    pub rows: Vec<u32>,
    pub labels: Vec<u16>,
    pub folds: Vec<u8>,
    pub order: String,
}

/// The files the facts depend on, in [`Summary::sources`] order: each one's length and modification time.
pub fn sources(dataset: &Path) -> Vec<Option<SourceStamp>> {
    let train = Path::new("train").join("train_data");
    let test = Path::new("test").join("test_data");
    [
        train.join(layout::TRAIN_CSV),
        train.join(layout::TAG_TSV),
        train.join(layout::PACKAGES_TSV),
        test.join(layout::TEST_ORDER_CSV),
    ]
    .iter()
    .map(|relative| {
        let meta = std::fs::metadata(dataset.join(relative)).ok()?;
        let modified = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(SourceStamp {
            file: relative.display().to_string(),
            bytes: meta.len(),
            modified_ns: u64::try_from(modified.as_nanos()).unwrap_or(u64::MAX),
        })
    })
    .collect()
}

/// Whether facts computed from `recorded` stand for the dataset whose files are `now`: the same sources, or a
/// training CSV that is gone (the facts then stand for the dataset as registered).
pub fn still_valid(recorded: &[Option<SourceStamp>], now: &[Option<SourceStamp>]) -> bool {
    recorded == now || now.first().is_some_and(Option::is_none)
}

fn fingerprint(sources: &[Option<SourceStamp>]) -> String {
    let json = serde_json::to_vec(sources).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(&json))
}

/// Reads the dataset folder `dataset` (its training CSV and images, and its test order and images when it has a test
/// split) and returns the facts file's bytes. Blocking: it lists every image.
pub fn compute(dataset: &Path) -> Result<Vec<u8>, FactsError> {
    // stamped before reading: a file changed meanwhile makes the facts stale, never newer than their stamps say
    let sources = sources(dataset);
    let train = read_train(dataset)?;
    let test = if layout::test_dir(dataset).is_dir() { Some(read_test(dataset)?) } else { None };
    Ok(encode(&train, test.as_ref(), sources))
}

/// The facts file's bytes for a training set, a test set and the sources they were read from.
pub fn encode(train: &TrainSet, test: Option<&TestSet>, sources: Vec<Option<SourceStamp>>) -> Vec<u8> {
    let mut ids: Vec<&str> = train.samples.iter().map(|s| s.package_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows: std::collections::HashMap<&str, &layout::Package> =
        train.packages.iter().map(|p| (p.package_id.as_str(), p)).collect();
    let packages: Vec<PackageFacts> = ids
        .iter()
        .map(|id| {
            let row = rows.get(id);
            PackageFacts {
                id: id.to_string(),
                style: row.map(|p| p.style.clone()).unwrap_or_default(),
                family: row.map(|p| p.family.clone()).unwrap_or_default(),
                split: row.and_then(|p| p.split).map(|s| split_name(s).to_string()),
            }
        })
        .collect();
    let mut labels: Vec<u16> = train.samples.iter().map(|s| s.label()).collect();
    let test_keys: Vec<String> = test
        .map(|t| t.samples.iter().map(|s| format!("{}/{}", s.package_id, s.sticker_id)).collect())
        .unwrap_or_default();
    let summary = Summary {
        fingerprint: fingerprint(&sources),
        sources,
        train_images: train.samples.len(),
        classes: {
            labels.sort_unstable();
            labels.dedup();
            labels.len()
        },
        test_images: test_keys.len(),
        test_order: if test.is_some() { order_digest(test_keys.iter().map(String::as_str)) } else { String::new() },
        tags: train
            .tags
            .iter()
            .map(|t| TagFacts {
                id: t.id,
                name: t.name.clone(),
                keywords: t.keywords.clone(),
                languages: t.languages.clone(),
            })
            .collect(),
        packages,
        named_valid: train
            .packages
            .iter()
            .filter(|p| p.split == Some(SplitName::Valid))
            .map(|p| p.package_id.clone())
            .collect(),
    };
    let summary = serde_json::to_vec(&summary).unwrap_or_default();
    let n = train.samples.len();
    let index: std::collections::HashMap<&str, u32> = ids.iter().enumerate().map(|(i, id)| (*id, i as u32)).collect();
    let (sticker_offsets, sticker_text) = text_table(train.samples.iter().map(|s| s.sticker_id.as_str()));
    let (test_offsets, test_text) = text_table(test_keys.iter().map(String::as_str));

    let mut out = Vec::with_capacity(HEADER + summary.len() + n * 14 + sticker_text.len() + test_text.len() + 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FACTS_VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    for v in [summary.len(), n, test_keys.len(), sticker_text.len(), test_text.len(), 0] {
        out.extend_from_slice(&(v as u64).to_le_bytes());
    }
    out.extend_from_slice(&summary);
    pad(&mut out);
    for s in &train.samples {
        out.extend_from_slice(&index.get(s.package_id.as_str()).copied().unwrap_or(0).to_le_bytes());
    }
    pad(&mut out);
    for s in &train.samples {
        out.extend_from_slice(&s.label().to_le_bytes());
    }
    pad(&mut out);
    for o in sticker_offsets {
        out.extend_from_slice(&o.to_le_bytes());
    }
    out.extend_from_slice(sticker_text.as_bytes());
    pad(&mut out);
    for o in test_offsets {
        out.extend_from_slice(&o.to_le_bytes());
    }
    out.extend_from_slice(test_text.as_bytes());
    out
}

fn split_name(split: SplitName) -> &'static str {
    match split {
        SplitName::Train => "train",
        SplitName::Valid => "valid",
    }
}

/// The texts joined, and the offset of each (one more offset than texts: the end).
fn text_table<'a>(texts: impl Iterator<Item = &'a str>) -> (Vec<u64>, String) {
    let (mut offsets, mut text) = (vec![0u64], String::new());
    for t in texts {
        text.push_str(t);
        offsets.push(text.len() as u64);
    }
    (offsets, text)
}

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().next_multiple_of(8), 0);
}

/// sha256 over `key\n` for each key, in order: `submit::probs::order_digest` (which `data` cannot name; the tests
/// check that they agree).
fn order_digest<'a>(keys: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = sha2::Sha256::new();
    for key in keys {
        hasher.update(key.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

/// Where each part of a facts file starts.
#[derive(Debug, Clone, Copy)]
struct Layout {
    n: usize,
    m: usize,
    packages: usize,
    labels: usize,
    sticker_offsets: usize,
    sticker_text: usize,
    test_offsets: usize,
    test_text: usize,
}

/// A facts file, memory-mapped: the [`Summary`] parsed, the per-sticker arrays read in place.
pub struct Facts {
    path: PathBuf,
    map: memmap2::Mmap,
    layout: Layout,
    summary: Summary,
}

impl std::fmt::Debug for Facts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Facts({}, {} training stickers)", self.path.display(), self.layout.n)
    }
}

impl Facts {
    /// Writes facts bytes ([`compute`]) to `path`, atomically and durably.
    pub fn write(path: &Path, bytes: &[u8]) -> Result<(), FactsError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| FactsError::Io { path: parent.into(), source })?;
        }
        crate::disk::write_atomic(path, bytes).map_err(|e| FactsError::Io { path: e.path, source: e.source })
    }

    /// Maps a facts file and checks it whole (header, lengths, offsets, texts); `Unusable` when it is not what this
    /// rush writes.
    pub fn open(path: &Path) -> Result<Self, FactsError> {
        let file = std::fs::File::open(path).map_err(|source| FactsError::Io { path: path.into(), source })?;
        // SAFETY: facts files are only ever replaced by a rename (`disk::write_atomic`), never changed in place, so
        // the mapping cannot shrink under the reader; every offset read from it is checked before use.
        let map =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|source| FactsError::Io { path: path.into(), source })?;
        let unusable = |message: &str| FactsError::Unusable { path: path.into(), message: message.to_string() };
        if map.len() < HEADER || &map[..8] != MAGIC {
            return Err(unusable("no RUSHFACT header"));
        }
        let version = u32::from_le_bytes([map[8], map[9], map[10], map[11]]);
        if version != FACTS_VERSION {
            return Err(unusable(&format!("format version {version}, this rush reads {FACTS_VERSION}")));
        }
        let field = |k: usize| usize::try_from(u64_at(&map, 16 + 8 * k)).unwrap_or(usize::MAX);
        let (summary_len, n, m, sticker_len, test_len) = (field(0), field(1), field(2), field(3), field(4));
        let total = |parts: &[(usize, usize)]| -> Option<Vec<usize>> {
            let mut at = HEADER;
            let mut starts = Vec::new();
            for &(count, size) in parts {
                at = at.next_multiple_of(8);
                starts.push(at);
                at = at.checked_add(count.checked_mul(size)?)?;
            }
            starts.push(at);
            Some(starts)
        };
        let starts = total(&[
            (summary_len, 1),
            (n, 4),
            (n, 2),
            (n.saturating_add(1), 8),
            (sticker_len, 1),
            (m.saturating_add(1), 8),
            (test_len, 1),
        ])
        .ok_or_else(|| unusable("impossible lengths"))?;
        if starts[7] != map.len() {
            return Err(unusable(&format!("{} bytes, the header says {}", map.len(), starts[7])));
        }
        let layout = Layout {
            n,
            m,
            packages: starts[1],
            labels: starts[2],
            sticker_offsets: starts[3],
            sticker_text: starts[4],
            test_offsets: starts[5],
            test_text: starts[6],
        };
        let summary: Summary = serde_json::from_slice(&map[starts[0]..starts[0] + summary_len])
            .map_err(|e| unusable(&format!("its summary: {e}")))?;
        if summary.train_images != n || summary.test_images != m {
            return Err(unusable("its summary disagrees with its arrays"));
        }
        let facts = Facts { path: path.to_path_buf(), map, layout, summary };
        facts.check(sticker_len, test_len).map_err(|m| unusable(&m))?;
        Ok(facts)
    }

    /// Every package index is in range; every offset table runs from 0 to its text's length, ascending, on character
    /// boundaries of valid UTF-8.
    fn check(&self, sticker_len: usize, test_len: usize) -> Result<(), String> {
        let packages = self.summary.packages.len();
        if (0..self.layout.n).any(|i| self.package_index(i) as usize >= packages) {
            return Err("a sticker's package is out of range".into());
        }
        for (what, offsets, text, count, len) in [
            ("sticker ids", self.layout.sticker_offsets, self.layout.sticker_text, self.layout.n, sticker_len),
            ("test keys", self.layout.test_offsets, self.layout.test_text, self.layout.m, test_len),
        ] {
            let text = std::str::from_utf8(&self.map[text..text + len]).map_err(|_| format!("{what}: not UTF-8"))?;
            let mut last = 0usize;
            for k in 0..=count {
                let at = usize::try_from(u64_at(&self.map, offsets + 8 * k)).unwrap_or(usize::MAX);
                if (k == 0 && at != 0) || at < last || at > len || !text.is_char_boundary(at) {
                    return Err(format!("{what}: bad offset {at} at {k}"));
                }
                last = at;
            }
            if last != len {
                return Err(format!("{what}: the offsets end at {last}, the text at {len}"));
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Training stickers.
    pub fn len(&self) -> usize {
        self.layout.n
    }

    pub fn is_empty(&self) -> bool {
        self.layout.n == 0
    }

    /// The index into [`Summary::packages`] of training sticker `i` (panics when `i >= len()`, like indexing).
    pub fn package_index(&self, i: usize) -> u32 {
        assert!(i < self.layout.n, "sticker {i} of {}", self.layout.n);
        let at = self.layout.packages + 4 * i;
        u32::from_le_bytes([self.map[at], self.map[at + 1], self.map[at + 2], self.map[at + 3]])
    }

    /// The package of training sticker `i`.
    pub fn package(&self, i: usize) -> &PackageFacts {
        &self.summary.packages[self.package_index(i) as usize]
    }

    /// The label (first tag) of training sticker `i`.
    pub fn label(&self, i: usize) -> u16 {
        assert!(i < self.layout.n, "sticker {i} of {}", self.layout.n);
        let at = self.layout.labels + 2 * i;
        u16::from_le_bytes([self.map[at], self.map[at + 1]])
    }

    /// The sticker id of training sticker `i`.
    pub fn sticker(&self, i: usize) -> &str {
        assert!(i < self.layout.n, "sticker {i} of {}", self.layout.n);
        self.text(self.layout.sticker_offsets, self.layout.sticker_text, i)
    }

    /// `package_id/sticker_id` of training sticker `i`: the key of order digests.
    pub fn key(&self, i: usize) -> String {
        format!("{}/{}", self.package(i).id, self.sticker(i))
    }

    /// The test split's keys `package_id/sticker_id`, in `test_order.csv` order.
    pub fn test_keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.layout.m).map(|j| self.text(self.layout.test_offsets, self.layout.test_text, j))
    }

    /// Test key `j`.
    pub fn test_key(&self, j: usize) -> &str {
        assert!(j < self.layout.m, "test sticker {j} of {}", self.layout.m);
        self.text(self.layout.test_offsets, self.layout.test_text, j)
    }

    fn text(&self, offsets: usize, text: usize, k: usize) -> &str {
        let (a, b) = (u64_at(&self.map, offsets + 8 * k) as usize, u64_at(&self.map, offsets + 8 * k + 8) as usize);
        // checked when the file was opened (UTF-8, character boundaries); a file changed in place reads as empty
        std::str::from_utf8(&self.map[text + a..text + b]).unwrap_or_default()
    }

    /// The validation split `data::split::split_by_package(set, valid_fraction, seed)` gives on this dataset's
    /// training set: the packages `packages.tsv` names `valid` when it names any, else the seeded choice.
    pub fn split(&self, valid_fraction: f64, seed: u64) -> ValidSplit {
        let named = self.summary.named_valid.iter().map(String::as_str);
        let ids = self.summary.packages.iter().map(|p| p.id.as_str());
        let chosen: HashSet<&str> = valid_packages(named, ids, valid_fraction, seed);
        let valid: Vec<bool> = self.summary.packages.iter().map(|p| chosen.contains(p.id.as_str())).collect();
        let rows: Vec<u32> =
            (0..self.layout.n).filter(|&i| valid[self.package_index(i) as usize]).map(|i| i as u32).collect();
        let mut hasher = sha2::Sha256::new();
        let mut folds = Vec::with_capacity(rows.len());
        for &i in &rows {
            let (package, sticker) = (self.package(i as usize).id.as_str(), self.sticker(i as usize));
            hasher.update(package.as_bytes());
            hasher.update(b"/");
            hasher.update(sticker.as_bytes());
            hasher.update(b"\n");
            folds.push(selection_fold(package, sticker, SELECTION_FOLDS));
        }
        let labels = rows.iter().map(|&i| self.label(i as usize)).collect();
        ValidSplit { rows, labels, folds, order: hex::encode(hasher.finalize()) }
    }

    /// Whether a split depends on the spec's `valid_fraction` and `seed` (it does not when `packages.tsv` names the
    /// validation packages).
    pub fn split_is_seeded(&self) -> bool {
        self.summary.named_valid.is_empty()
    }
}

/// Folds of the validation stickers for cross-fitting `ensemble auto`.
pub const SELECTION_FOLDS: u8 = 2;

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    match bytes.get(at..at + 8) {
        Some(b) => u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        None => u64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::split::split_by_package;
    use crate::data::synth::{SynthOptions, generate};

    fn synth(dir: &Path, valid_fraction: f64) -> PathBuf {
        let out = dir.join("d");
        let opts = SynthOptions {
            out: out.clone(),
            train: 240,
            test: 37,
            seed: 9,
            per_package: 7,
            classes: 12,
            width: 16,
            height: 16,
            valid_fraction,
            threads: Some(1),
        };
        generate(&opts, &indicatif::ProgressBar::hidden()).unwrap();
        out
    }

    /// The facts give what reading the files gives: the training stickers, every split (named by packages.tsv, or
    /// seeded), the test order; and they stand after the training CSV is deleted.
    #[test]
    fn facts_equal_what_the_files_say_and_outlive_the_csv() {
        for named in [0.2, 0.0] {
            let dir = tempfile::tempdir().unwrap();
            let root = synth(dir.path(), named);
            // a row whose image is missing is left out, as read_train leaves it out
            let set = read_train(&root).unwrap();
            std::fs::remove_file(&set.samples[5].path).unwrap();
            let set = read_train(&root).unwrap();
            let test = read_test(&root).unwrap();
            let path = dir.path().join("facts/d.facts");
            Facts::write(&path, &compute(&root).unwrap()).unwrap();
            let facts = Facts::open(&path).unwrap();
            assert_eq!(facts.len(), set.samples.len());
            assert_eq!(facts.summary().train_images, 239);
            assert_eq!(facts.summary().tags.len(), set.tags.len());
            for (i, s) in set.samples.iter().enumerate() {
                assert_eq!(
                    (facts.package(i).id.as_str(), facts.sticker(i), facts.label(i)),
                    (s.package_id.as_str(), s.sticker_id.as_str(), s.label())
                );
            }
            let keys: Vec<String> = test.samples.iter().map(|s| format!("{}/{}", s.package_id, s.sticker_id)).collect();
            assert_eq!(facts.test_keys().collect::<Vec<_>>(), keys);
            assert_eq!(facts.summary().test_order, crate::submit::probs::order_digest(keys.iter().map(String::as_str)));
            assert_eq!(facts.split_is_seeded(), named == 0.0);
            for (fraction, seed) in [(0.1, 1), (0.25, 7), (0.5, 0)] {
                let split = split_by_package(&set, fraction, seed);
                let got = facts.split(fraction, seed);
                assert_eq!(got.rows, split.valid.iter().map(|&i| i as u32).collect::<Vec<_>>());
                assert_eq!(got.labels, split.valid.iter().map(|&i| set.samples[i].label()).collect::<Vec<_>>());
                let keys: Vec<String> = split
                    .valid
                    .iter()
                    .map(|&i| format!("{}/{}", set.samples[i].package_id, set.samples[i].sticker_id))
                    .collect();
                assert_eq!(got.order, crate::submit::probs::order_digest(keys.iter().map(String::as_str)));
                let folds: Vec<u8> = split
                    .valid
                    .iter()
                    .map(|&i| selection_fold(&set.samples[i].package_id, &set.samples[i].sticker_id, SELECTION_FOLDS))
                    .collect();
                assert_eq!(got.folds, folds);
                assert!(!got.rows.is_empty());
            }

            let recorded = facts.summary().sources.clone();
            assert!(recorded.iter().all(Option::is_some), "{recorded:?}");
            assert!(still_valid(&recorded, &sources(&root)));
            let csv = layout::train_dir(&root).join(layout::TRAIN_CSV);
            let text = std::fs::read_to_string(&csv).unwrap();
            std::fs::write(&csv, format!("{text}\n")).unwrap();
            assert!(!still_valid(&recorded, &sources(&root)), "a changed CSV makes the facts stale");
            std::fs::remove_file(&csv).unwrap();
            assert!(still_valid(&recorded, &sources(&root)), "a deleted CSV leaves the facts standing");
        }
    }

    #[test]
    fn a_damaged_or_foreign_file_is_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let root = synth(dir.path(), 0.2);
        let bytes = compute(&root).unwrap();
        let path = dir.path().join("x.facts");
        let unusable = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            match Facts::open(&path) {
                Err(FactsError::Unusable { message, .. }) => message,
                other => panic!("{other:?}"),
            }
        };
        assert!(unusable(b"not facts").contains("header"));
        assert!(unusable(&bytes[..bytes.len() - 1]).contains("bytes"));
        let mut version = bytes.clone();
        version[8] = 9;
        assert!(unusable(&version).contains("version 9"));
        // a sticker id's end offset moved past the next one's
        let n = u64_at(&bytes, 24) as usize;
        let facts_start = {
            std::fs::write(&path, &bytes).unwrap();
            Facts::open(&path).unwrap().layout.sticker_offsets
        };
        let mut offsets = bytes.clone();
        offsets[facts_start + 8..facts_start + 16].copy_from_slice(&(10_000u64).to_le_bytes());
        assert!(unusable(&offsets).contains("sticker ids"), "{n}");
        assert!(matches!(Facts::open(&dir.path().join("missing")), Err(FactsError::Io { .. })));
    }
}
