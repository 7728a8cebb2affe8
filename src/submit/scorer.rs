//! The scorer: the one place that reads a dataset's hidden test labels (`$RUSH_HOME/labels/<dataset>/test_labels.csv`).
//! It reads a written `predictions.npy` back as a client's file would be read, checks it, and returns the public and
//! private accuracies (`core::score`) or, for a dry run, the accuracy on the dry-run sample (public stickers only).

use std::path::{Path, PathBuf};

use crate::core::score::{self, BoardSplit, ScoreError, TestLabels};
use crate::data::layout::{DataError, NUM_TAGS, read_test_labels};
use crate::home::Home;

use super::npy::{self, NpyError};

#[derive(Debug, thiserror::Error)]
pub enum ScorerError {
    #[error(
        "dataset {dataset} has no hidden test labels at {path}; push it with `rush dataset push` from a folder holding test/test_labels.csv"
    )]
    NoLabels { dataset: String, path: PathBuf },
    #[error("hidden labels: {0}")]
    Labels(#[from] DataError),
    #[error(transparent)]
    Npy(#[from] NpyError),
    #[error("{path}: {source}")]
    Score { path: PathBuf, source: ScoreError },
}

/// A scored prediction file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scored {
    /// Public and private accuracies over the whole test set.
    Full(score::Scores),
    /// A dry run: the accuracy on the dry-run sample, and its size.
    DryRun { accuracy: f64, samples: usize },
}

/// Whether the dataset's hidden labels exist (checked when a submission is queued).
pub fn has_labels(home: &Home, dataset: &str) -> bool {
    home.labels(dataset).is_file()
}

/// Scores `predictions` (an `.npy` of int64 tag ids in `test_order.csv` order, or of the dry-run sample in its order).
pub fn score_file(
    home: &Home,
    dataset: &str,
    predictions: &Path,
    dry_run: bool,
    public_percent: u8,
) -> Result<Scored, ScorerError> {
    let path = home.labels(dataset);
    if !path.is_file() {
        return Err(ScorerError::NoLabels { dataset: dataset.to_string(), path });
    }
    let tags = read_test_labels(&path)?;
    let labels = TestLabels::from_tags(&tags).map_err(|source| ScorerError::Score { path: path.clone(), source })?;
    let values = npy::read_i64(predictions)?;
    let at = |source| ScorerError::Score { path: predictions.to_path_buf(), source };
    let split = BoardSplit::new(dataset, labels.len(), public_percent).map_err(at)?;
    if dry_run {
        let indices = score::dry_run_indices(&split);
        score::check_predictions(&values, indices.len(), NUM_TAGS).map_err(at)?;
        let accuracy = score::score_subset(&values, &indices, &labels).map_err(at)?;
        return Ok(Scored::DryRun { accuracy, samples: indices.len() });
    }
    score::check_predictions(&values, labels.len(), NUM_TAGS).map_err(at)?;
    Ok(Scored::Full(score::score(&values, &labels, &split).map_err(at)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(labels: &str) -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let path = home.labels("toy");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, labels).unwrap();
        (dir, home)
    }

    #[test]
    fn a_hand_made_case_scores_exactly() {
        // ten stickers; the first tag is the label
        let csv = "index,tags\n0,1\n1,2\n2,3\n3,\"4,9\"\n4,5\n5,6\n6,7\n7,8\n8,9\n9,\"10,1\"\n";
        let (dir, home) = setup(csv);
        let predictions = dir.path().join("p.npy");
        // right on 0, 1, 3 (first tag 4), 9 (first tag 10); wrong elsewhere (7 predicts 9, a later tag of none)
        npy::write_i64(&predictions, &[1, 2, 0, 4, 0, 0, 0, 9, 0, 10]).unwrap();
        let Scored::Full(s) = score_file(&home, "toy", &predictions, false, 30).unwrap() else { panic!("not full") };
        assert_eq!((s.n_public, s.n_private), (3, 7));
        assert_eq!(s.overall, 0.4);
        let split = BoardSplit::new("toy", 10, 30).unwrap();
        let right = [0usize, 1, 3, 9];
        let public_right = right.iter().filter(|&&i| split.part(i) == score::Part::Public).count();
        assert_eq!(s.public, public_right as f64 / 3.0);
        assert_eq!(s.private, (4 - public_right) as f64 / 7.0);

        // predictions for the wrong number of stickers, or not tag ids, are refused with the file named
        npy::write_i64(&predictions, &[1, 2]).unwrap();
        let e = score_file(&home, "toy", &predictions, false, 30).unwrap_err().to_string();
        assert!(e.contains("p.npy") && e.contains("2 predictions for 10"), "{e}");
        npy::write_i64(&predictions, &[1, 2, 0, 4, 0, 0, 0, 9, 0, 350]).unwrap();
        assert!(score_file(&home, "toy", &predictions, false, 30).is_err());
        assert!(matches!(score_file(&home, "other", &predictions, false, 30), Err(ScorerError::NoLabels { .. })));
    }

    #[test]
    fn a_dry_run_scores_exactly_200_samples() {
        let mut csv = String::from("index,tags\n");
        for i in 0..1000 {
            csv.push_str(&format!("{i},{}\n", i % 7));
        }
        let (dir, home) = setup(&csv);
        let split = BoardSplit::new("toy", 1000, 30).unwrap();
        let indices = score::dry_run_indices(&split);
        assert_eq!(indices.len(), 200);
        assert!(indices.iter().all(|&i| split.part(i) == score::Part::Public));
        // right on every other sample of the dry run
        let values: Vec<i64> =
            indices.iter().enumerate().map(|(j, &i)| if j % 2 == 0 { (i % 7) as i64 } else { 300 }).collect();
        let predictions = dir.path().join("p.npy");
        npy::write_i64(&predictions, &values).unwrap();
        assert_eq!(
            score_file(&home, "toy", &predictions, true, 30).unwrap(),
            Scored::DryRun { accuracy: 0.5, samples: 200 }
        );
        npy::write_i64(&predictions, &values[..199]).unwrap();
        assert!(score_file(&home, "toy", &predictions, true, 30).is_err());
    }

    /// `cargo test --release --lib bench_scorer -- --ignored --nocapture`: score a prediction file of 138,343 stickers
    /// (AI RUSH's test set) against its hidden labels, reading both from disk, and print the time per 1,000.
    #[test]
    #[ignore]
    fn bench_scorer_at_airush_scale() {
        let n = 138_343usize;
        let mut csv = String::from("index,tags\n");
        for i in 0..n {
            csv.push_str(&format!("{i},\"{},{}\"\n", (i * 7) % 350, (i * 11) % 350));
        }
        let (dir, home) = setup(&csv);
        let predictions = dir.path().join("p.npy");
        let values: Vec<i64> = (0..n).map(|i| if i % 3 == 0 { ((i * 7) % 350) as i64 } else { 349 }).collect();
        npy::write_i64(&predictions, &values).unwrap();
        let start = std::time::Instant::now();
        let scored = score_file(&home, "toy", &predictions, false, 30).unwrap();
        let seconds = start.elapsed().as_secs_f64();
        let Scored::Full(s) = scored else { panic!("not full") };
        assert!((s.overall - (n.div_ceil(3) as f64 / n as f64)).abs() < 1e-3, "{s:?}");
        println!(
            "score {n} predictions against the hidden labels: {:.1} ms ({:.3} ms per 1,000 test images)",
            seconds * 1e3,
            seconds * 1e6 / n as f64
        );
    }
}
