//! Checkpoint names (`1`, `2`, ... as NSML's `nsml.save(epoch)` made them; `best` and `last` aliases) and the
//! retention policy, which only decides: it returns what to delete and never touches the disk.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a user names a checkpoint: an epoch, or an alias resolved against a session's checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckpointRef {
    Epoch(u32),
    Best,
    Last,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    #[error("invalid checkpoint name {0:?}: expected an epoch number, `best` or `last`")]
    InvalidName(String),
    #[error("no checkpoint {0} in this session")]
    NotFound(String),
}

impl FromStr for CheckpointRef {
    type Err = CheckpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "best" => Ok(CheckpointRef::Best),
            "last" => Ok(CheckpointRef::Last),
            _ => match s.parse::<u32>() {
                Ok(e) if e > 0 && !s.starts_with('0') => Ok(CheckpointRef::Epoch(e)),
                _ => Err(CheckpointError::InvalidName(s.to_string())),
            },
        }
    }
}

impl fmt::Display for CheckpointRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointRef::Epoch(e) => write!(f, "{e}"),
            CheckpointRef::Best => f.write_str("best"),
            CheckpointRef::Last => f.write_str("last"),
        }
    }
}

/// What the policy needs to know of a saved checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    pub epoch: u32,
    pub val_acc: f64,
}

/// Picks the checkpoint an alias or epoch names. `best` is the highest validation accuracy (the earlier epoch wins a
/// tie); `last` the highest epoch.
pub fn resolve(reference: CheckpointRef, saved: &[CheckpointInfo]) -> Result<u32, CheckpointError> {
    let found = match reference {
        CheckpointRef::Epoch(e) => saved.iter().find(|c| c.epoch == e).map(|c| c.epoch),
        CheckpointRef::Last => saved.iter().map(|c| c.epoch).max(),
        CheckpointRef::Best => best(saved),
    };
    found.ok_or_else(|| CheckpointError::NotFound(reference.to_string()))
}

/// The epoch `best` names: the highest validation accuracy, the earliest epoch on a tie. The one rule for every caller
/// (`submit ... best`, `fork ... best`, the dashboard's badge).
pub fn best(saved: &[CheckpointInfo]) -> Option<u32> {
    saved.iter().max_by(|a, b| a.val_acc.total_cmp(&b.val_acc).then(b.epoch.cmp(&a.epoch))).map(|c| c.epoch)
}

/// Seconds of training up to the end of `epoch`: the sum of the durations of epochs 1..=epoch (`(epoch, seconds)`
/// pairs, as the child reports them), so a session resumed after a crash counts the runs before it. `None` when an
/// epoch's duration is missing.
pub fn training_seconds(epoch: u32, epoch_seconds: &[(u32, f64)]) -> Option<f64> {
    (1..=epoch).map(|e| epoch_seconds.iter().rev().find(|(at, _)| *at == e).map(|(_, s)| *s)).sum()
}

/// A checkpoint's "elapsed": the seconds of training up to its `epoch` ([`training_seconds`]), or, when an epoch's
/// duration is missing, the time from the session's start to when the checkpoint was saved, never below zero (a
/// checkpoint of an earlier run, or a clock set back, would make it negative). `None` when neither is known. The one
/// rule for the API's `elapsed` and the session page's column.
pub fn elapsed(epoch: u32, saved_at: f64, started_at: Option<f64>, epoch_seconds: &[(u32, f64)]) -> Option<f64> {
    training_seconds(epoch, epoch_seconds).or_else(|| started_at.map(|start| (saved_at - start).max(0.0)))
}

/// Keep the best `keep_best` by validation accuracy, plus the last when `keep_last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionPolicy {
    pub keep_best: u32,
    pub keep_last: bool,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self { keep_best: 3, keep_last: true }
    }
}

impl RetentionPolicy {
    /// The epochs to delete, ascending, never one in `pinned` (a checkpoint a queued submission or fork still needs).
    /// Pure: the caller deletes files first, rows after.
    pub fn to_delete(&self, saved: &[CheckpointInfo], pinned: &[u32]) -> Vec<u32> {
        let mut ranked: Vec<&CheckpointInfo> = saved.iter().collect();
        ranked.sort_by(|a, b| b.val_acc.total_cmp(&a.val_acc).then(a.epoch.cmp(&b.epoch)));
        let mut keep: Vec<u32> = ranked.iter().take(self.keep_best as usize).map(|c| c.epoch).collect();
        if self.keep_last {
            keep.extend(saved.iter().map(|c| c.epoch).max());
        }
        keep.extend_from_slice(pinned);
        let mut delete: Vec<u32> = saved.iter().map(|c| c.epoch).filter(|e| !keep.contains(e)).collect();
        delete.sort_unstable();
        delete.dedup();
        delete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infos(accs: &[f64]) -> Vec<CheckpointInfo> {
        accs.iter().enumerate().map(|(i, &a)| CheckpointInfo { epoch: i as u32 + 1, val_acc: a }).collect()
    }

    #[test]
    fn names_parse() {
        assert_eq!("12".parse(), Ok(CheckpointRef::Epoch(12)));
        assert_eq!("best".parse(), Ok(CheckpointRef::Best));
        assert_eq!("last".parse(), Ok(CheckpointRef::Last));
        for bad in ["0", "01", "-1", "x", "", "../1"] {
            assert!(bad.parse::<CheckpointRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn aliases_resolve() {
        let saved = infos(&[0.1, 0.5, 0.5, 0.2]);
        assert_eq!(resolve(CheckpointRef::Best, &saved), Ok(2));
        assert_eq!(resolve(CheckpointRef::Last, &saved), Ok(4));
        assert_eq!(resolve(CheckpointRef::Epoch(3), &saved), Ok(3));
        assert!(resolve(CheckpointRef::Epoch(9), &saved).is_err());
        assert!(resolve(CheckpointRef::Best, &[]).is_err());
    }

    #[test]
    fn retention_keeps_best_k_and_last() {
        let saved = infos(&[0.1, 0.9, 0.3, 0.8, 0.2, 0.05]);
        let policy = RetentionPolicy { keep_best: 2, keep_last: true };
        assert_eq!(policy.to_delete(&saved, &[]), vec![1, 3, 5]);
        let policy = RetentionPolicy { keep_best: 0, keep_last: true };
        assert_eq!(policy.to_delete(&saved, &[]), vec![1, 2, 3, 4, 5]);
        let policy = RetentionPolicy { keep_best: 10, keep_last: false };
        assert!(policy.to_delete(&saved, &[]).is_empty());
    }

    #[test]
    fn training_seconds_sum_every_epoch_up_to_the_checkpoint() {
        let seconds = [(1, 10.0), (2, 12.0), (3, 11.0), (2, 13.0)];
        // a repeated epoch (a resumed run) counts once, its latest duration
        assert_eq!(training_seconds(3, &seconds), Some(34.0));
        assert_eq!(training_seconds(1, &seconds), Some(10.0));
        assert_eq!(training_seconds(0, &seconds), Some(0.0));
        assert_eq!(training_seconds(4, &seconds), None);
    }

    #[test]
    fn elapsed_is_training_time_else_time_since_the_start_never_negative() {
        let seconds = [(1, 10.0), (2, 12.0)];
        // every epoch's duration known: their sum, whatever the clock says
        assert_eq!(elapsed(2, 500.0, Some(100.0), &seconds), Some(22.0));
        // a duration missing: from the session's start to the save
        assert_eq!(elapsed(3, 500.0, Some(100.0), &seconds), Some(400.0));
        // saved before the (latest) start: zero, not a negative time
        assert_eq!(elapsed(3, 90.0, Some(100.0), &seconds), Some(0.0));
        assert_eq!(elapsed(3, 500.0, None, &seconds), None);
    }

    #[test]
    fn retention_never_deletes_a_pinned_checkpoint() {
        let saved = infos(&[0.1, 0.9, 0.3, 0.8, 0.2, 0.05]);
        let policy = RetentionPolicy { keep_best: 1, keep_last: false };
        assert_eq!(policy.to_delete(&saved, &[]), vec![1, 3, 4, 5, 6]);
        assert_eq!(policy.to_delete(&saved, &[1, 5, 9]), vec![3, 4, 6]);
    }
}
