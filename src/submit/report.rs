//! `infer.json`, the report `rush infer` writes last in its output folder (with it the folder is complete): what was
//! predicted, in which order, from which images, how fast. The child (`rush_trainer::train::infer`, in `rush-train`)
//! writes it; the submission worker reads it through [`read_report`] without linking anything of the child.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Tta;

/// The report's file name in the output folder.
pub const REPORT: &str = "infer.json";

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
}

/// `infer.json`: what was predicted, in which order, how fast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferReport {
    pub epoch: u32,
    pub tta: Tta,
    pub dry_run: bool,
    pub classes: usize,
    /// Rows of `test.npy`: every test sticker, or the dry-run sample.
    pub test_rows: usize,
    /// `order_digest` of the test stickers predicted (`package_id/sticker_id`, in row order).
    pub test_order: String,
    /// Rows of `valid.npy` (0 on a dry run).
    pub valid_rows: usize,
    /// `order_digest` of the validation stickers in row order (empty on a dry run).
    pub valid_order: String,
    /// Images that could not be decoded (predicted from a blank image).
    pub bad_images: usize,
    pub device: String,
    pub seconds: f64,
    /// Where the test images came from.
    #[serde(default)]
    pub test_images: Option<ImageSource>,
    /// Where the validation images came from (absent on a dry run).
    #[serde(default)]
    pub valid_images: Option<ImageSource>,
}

/// How a split's images were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageOrigin {
    /// From a cache file that was already there (nothing decoded).
    Reused,
    /// From a cache file this run built while predicting.
    Built,
    /// Decoded from the PNGs, no cache file involved.
    Decoded,
}

/// One split's image source, as `infer.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSource {
    pub origin: ImageOrigin,
    /// The cache file read (or built); absent when decoded.
    pub file: Option<PathBuf>,
    /// Why a cache file was rebuilt, or why the images were decoded instead of read from one.
    pub note: Option<String>,
    /// Images decoded from PNG by this run.
    pub decoded: usize,
    /// Seconds spent opening (fingerprinting) or building the cache file, overlapped with prediction when building.
    pub seconds: f64,
}

impl ImageSource {
    /// `count` images decoded from PNG, and why no cache file served them.
    pub fn decoded(count: usize, note: String) -> Self {
        Self { origin: ImageOrigin::Decoded, file: None, note: Some(note), decoded: count, seconds: 0.0 }
    }

    /// Read from an existing cache file, opened in `seconds`.
    pub fn reused(file: PathBuf, seconds: f64) -> Self {
        Self { origin: ImageOrigin::Reused, file: Some(file), note: None, decoded: 0, seconds }
    }
}

/// Reads a finished output folder's report.
pub fn read_report(out: &Path) -> Result<InferReport, ReportError> {
    let path = out.join(REPORT);
    let bytes = std::fs::read(&path).map_err(|source| ReportError::Io { path: path.clone(), source })?;
    serde_json::from_slice(&bytes).map_err(|source| ReportError::Json { path, source })
}
