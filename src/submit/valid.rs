//! A checkpoint's validation predictions: `checkpoints/<epoch>.valid.npy`, the class probabilities the trainer computed
//! on the validation split when it saved that checkpoint (`<f2`, shape `(valid rows, 350)`, rows in the split's order),
//! and the [`ValidRecord`] in the checkpoint's `<epoch>.json` (its `valid` field) that lines the rows up with
//! stickers: the [`order_digest`](super::probs::order_digest) of the validation keys `package_id/sticker_id`, as
//! `rush infer` reports it in `infer.json`. The trainer writes the `.npy` before the JSON (the JSON completes a
//! checkpoint), so a record never vouches for a missing or half-written file. Retention and `rush model rm` delete the
//! file with the checkpoint.
//!
//! The rows are what `rush infer` predicts on the validation split for the same checkpoint without test-time
//! augmentation: the same split, order, images and pixels, an undecodable image predicted from a blank (white) one.
//! They differ only by float16 rounding and the numerics of another batch size (and, on a GPU, by the precision: the
//! trainer validates in the spec's, `rush infer` autocasts to bf16). So the daemon uses them in place of an inference
//! (`ensemble auto`, the builder) and for the analysis views. A checkpoint saved before this file existed has no record
//! or no file: readers answer `None`, never an error.

use std::fs;

use serde::{Deserialize, Serialize};

use super::npy::{self, F16Matrix, NpyError};
use super::probs::ProbsError;
use crate::core::ensemble::{ProbRows, Probs};
use crate::home::SessionDir;

/// What `<epoch>.json` records of `<epoch>.valid.npy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidRecord {
    /// The validation split's size: one row per sticker.
    pub rows: usize,
    pub classes: usize,
    /// `probs::order_digest` of the validation keys `package_id/sticker_id`, in row order.
    pub order: String,
}

/// The one field of `<epoch>.json` read here (the trainer's `CheckpointMeta` holds it among the others).
#[derive(Deserialize)]
struct MetaValid {
    #[serde(default)]
    valid: Option<ValidRecord>,
}

/// Writes `<epoch>.valid.npy` (atomically) from `rows x classes` probabilities (row-major f32) of the split whose order
/// digest is `order`; returns the record for the checkpoint's JSON, to be written after it.
pub fn write(
    dir: &SessionDir,
    epoch: u32,
    order: &str,
    rows: usize,
    classes: usize,
    values: &[f32],
) -> Result<ValidRecord, NpyError> {
    npy::write_f16_matrix(&dir.checkpoint_valid(epoch), rows, classes, values)?;
    Ok(ValidRecord { rows, classes, order: order.to_string() })
}

/// The record of checkpoint `epoch`, or `None` when it has none: no JSON (deleted, or not complete yet), a JSON from
/// before the record, or a record whose file is gone.
pub fn record(dir: &SessionDir, epoch: u32) -> Result<Option<ValidRecord>, ProbsError> {
    let path = dir.checkpoint_meta(epoch);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ProbsError::Io { path, source }),
    };
    let meta: MetaValid = serde_json::from_slice(&bytes).map_err(|source| ProbsError::Meta { path, source })?;
    Ok(meta.valid.filter(|_| dir.checkpoint_valid(epoch).is_file()))
}

/// Loads checkpoint `epoch`'s validation predictions, refusing them unless they were written for the sample order
/// `order` (the split the caller's labels are in). `None` when the checkpoint has none.
pub fn read(dir: &SessionDir, epoch: u32, order: &str) -> Result<Option<Probs>, ProbsError> {
    let Some(record) = record(dir, epoch)? else {
        return Ok(None);
    };
    let path = dir.checkpoint_valid(epoch);
    if record.order != order {
        return Err(stale(&path, &record.order, order));
    }
    let (rows, classes, values) = match npy::read_f16_matrix(&path) {
        Ok(read) => read,
        // deleted since the record was read (retention, `rush model rm`)
        Err(NpyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if (rows, classes) != (record.rows, record.classes) {
        let message =
            format!("shape ({rows}, {classes}), but the checkpoint says ({}, {})", record.rows, record.classes);
        return Err(ProbsError::Mismatch { path, message });
    }
    Probs::new(rows, classes, values).map(Some).map_err(|source| ProbsError::Probs { path, source })
}

/// Maps checkpoint `epoch`'s validation predictions ([`F16Matrix`]: read a block of rows at a time), refusing them
/// unless they were written for the sample order `order`. `None` when the checkpoint has none.
pub fn open(dir: &SessionDir, epoch: u32, order: &str) -> Result<Option<F16Matrix>, ProbsError> {
    let Some(record) = record(dir, epoch)? else {
        return Ok(None);
    };
    let path = dir.checkpoint_valid(epoch);
    if record.order != order {
        return Err(stale(&path, &record.order, order));
    }
    let matrix = match F16Matrix::open(&path) {
        Ok(matrix) => matrix,
        // deleted since the record was read (retention, `rush model rm`)
        Err(NpyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if (matrix.rows(), matrix.columns()) != (record.rows, record.classes) {
        let (rows, classes) = (matrix.rows(), matrix.columns());
        let message =
            format!("shape ({rows}, {classes}), but the checkpoint says ({}, {})", record.rows, record.classes);
        return Err(ProbsError::Mismatch { path, message });
    }
    Ok(Some(matrix))
}

fn stale(path: &std::path::Path, recorded: &str, order: &str) -> ProbsError {
    let message = format!(
        "validation predictions of sample order {recorded}, but the split's order is now {order} (the dataset changed \
         since training)"
    );
    ProbsError::Mismatch { path: path.to_path_buf(), message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::submit::probs::order_digest;

    fn meta(dir: &SessionDir, epoch: u32, valid: Option<&ValidRecord>) {
        let mut json = serde_json::json!({"epoch": epoch, "val_acc": 0.5});
        if let Some(v) = valid {
            json["valid"] = serde_json::to_value(v).unwrap();
        }
        fs::write(dir.checkpoint_meta(epoch), serde_json::to_vec(&json).unwrap()).unwrap();
    }

    #[test]
    fn predictions_round_trip_through_the_record_in_the_checkpoint_json() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SessionDir::new(tmp.path());
        fs::create_dir_all(dir.checkpoints()).unwrap();
        let order = order_digest(["p1/a", "p1/b", "p2/c"]);
        let values: Vec<f32> = (0..3 * 4).map(|i| (i % 4) as f32 / 8.0).collect();
        // no JSON yet: nothing, even with the file written
        let record = write(&dir, 2, &order, 3, 4, &values).unwrap();
        assert!(dir.checkpoint_valid(2).ends_with("checkpoints/2.valid.npy"));
        assert_eq!(super::record(&dir, 2).unwrap(), None);
        meta(&dir, 2, Some(&record));
        assert_eq!(super::record(&dir, 2).unwrap(), Some(record.clone()));
        let probs = read(&dir, 2, &order).unwrap().unwrap();
        assert_eq!((probs.rows(), probs.classes()), (3, 4));
        assert_eq!(probs.as_slice(), &values[..], "these values are exact in float16");

        // another split's order is refused, naming the file
        let err = read(&dir, 2, &order_digest(["p1/a"])).unwrap_err().to_string();
        assert!(err.contains("2.valid.npy") && err.contains("dataset changed"), "{err}");
        // a file of another shape than the record says is refused
        npy::write_f16_matrix(&dir.checkpoint_valid(2), 2, 4, &values[..8]).unwrap();
        assert!(matches!(read(&dir, 2, &order), Err(ProbsError::Mismatch { .. })));
        // an older checkpoint: a JSON without the record, or a record whose file is gone
        meta(&dir, 1, None);
        write(&dir, 1, &order, 3, 4, &values).unwrap();
        assert_eq!(read(&dir, 1, &order).unwrap(), None);
        fs::remove_file(dir.checkpoint_valid(2)).unwrap();
        assert_eq!(super::record(&dir, 2).unwrap(), None);
        assert_eq!(read(&dir, 2, &order).unwrap(), None);
        assert_eq!(read(&dir, 9, &order).unwrap(), None, "no checkpoint at all");
        fs::write(dir.checkpoint_meta(3), b"{not json").unwrap();
        assert!(matches!(super::record(&dir, 3), Err(ProbsError::Meta { .. })));
    }
}
