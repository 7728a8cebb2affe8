//! Reads a dataset in the AI RUSH layout (README, "Dataset layout"): `train/train_data/{images/, train_with_valid_tags.csv,
//! tag.tsv, packages.tsv}`, `test/test_data/{images/, test_order.csv}` and, apart from them, `test_labels.csv`.
//!
//! Bad rows and missing images are problems: counted, reported with file and line, skipped. A dataset with no usable
//! image is an error.

use std::path::{Path, PathBuf};

/// Tag ids are 0..NUM_TAGS.
pub const NUM_TAGS: usize = 350;

/// One training sticker. `tags[0]` is the label.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub package_id: String,
    pub sticker_id: String,
    pub tags: Vec<u16>,
    /// Absolute path of the PNG.
    pub path: PathBuf,
}

impl Sample {
    pub fn label(&self) -> u16 {
        self.tags[0]
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub id: u16,
    pub keywords: String,
    pub languages: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitName {
    Train,
    Valid,
}

/// A row of the optional `packages.tsv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Package {
    pub package_id: String,
    pub style: String,
    pub family: String,
    pub source: String,
    pub licence: String,
    pub split: Option<SplitName>,
}

/// Something wrong with one row or one file that was skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<u64>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{file}:{line}: {message}")]
    Malformed { file: PathBuf, line: u64, message: String },
    #[error("{root}: no usable images ({problems} problems; first: {first})")]
    NoUsableImages { root: PathBuf, problems: usize, first: String },
}

#[derive(Debug, Clone)]
pub struct TrainSet {
    /// The dataset folder (holding `train/` and `test/`).
    pub root: PathBuf,
    pub samples: Vec<Sample>,
    pub tags: Vec<Tag>,
    pub packages: Vec<Package>,
    pub problems: Vec<Problem>,
}

/// One test sticker, in submission order.
#[derive(Debug, Clone, PartialEq)]
pub struct TestSample {
    pub index: u64,
    pub package_id: String,
    pub sticker_id: String,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct TestSet {
    pub root: PathBuf,
    pub samples: Vec<TestSample>,
    pub problems: Vec<Problem>,
}

pub fn train_dir(dataset: &Path) -> PathBuf {
    dataset.join("train").join("train_data")
}

pub fn test_dir(dataset: &Path) -> PathBuf {
    dataset.join("test").join("test_data")
}

/// Reads the training part of a dataset.
pub fn read_train(dataset: &Path) -> Result<TrainSet, DataError> {
    let _ = dataset;
    todo!("data layer")
}

/// Reads the test part (order and images, never labels).
pub fn read_test(dataset: &Path) -> Result<TestSet, DataError> {
    let _ = dataset;
    todo!("data layer")
}

/// Reads a `test_labels.csv` (`index,tags`): the scorer's alone.
pub fn read_test_labels(path: &Path) -> Result<Vec<Vec<u16>>, DataError> {
    let _ = path;
    todo!("data layer")
}
