//! Submissions: what a user asks to submit (one checkpoint or a weighted ensemble, with optional flip test-time
//! augmentation, or a dry run), the `.npy` prediction file, and the probability cache that lets ensembles of cached
//! members skip inference.
//!
//! A submission job runs inference for every member not in the cache (`probs`), mixes the members with
//! `core::ensemble::Mix`, writes `predictions.npy` (`npy`, int64 `(N,)` in `test_order.csv` order) and hands it to the
//! scorer (`core::score`), which alone reads the hidden labels.

pub mod npy;
pub mod probs;
pub mod report;
pub mod scorer;
pub mod valid;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::core::checkpoint::CheckpointRef;
use crate::core::ensemble::{EnsembleError, check_weights};
use crate::core::session::SessionId;

/// Test-time augmentation: average the probabilities of each image and its horizontal mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tta {
    #[default]
    None,
    Flip,
}

impl FromStr for Tta {
    type Err = SubmitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Tta::None),
            "flip" => Ok(Tta::Flip),
            _ => Err(SubmitError::UnknownTta(s.to_string())),
        }
    }
}

impl fmt::Display for Tta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tta::None => "none",
            Tta::Flip => "flip",
        })
    }
}

/// Why a submission request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    #[error("nothing to submit: give `SESSION CHECKPOINT` or one or more `SESSION:CHECKPOINT`")]
    NoMembers,
    #[error("{0:?}: expected SESSION:CHECKPOINT, e.g. local/emoji/3:best")]
    BadTarget(String),
    #[error("mixed forms {0:?}: give either `SESSION CHECKPOINT` or only `SESSION:CHECKPOINT` arguments")]
    MixedForms(Vec<String>),
    #[error("{target:?}: {reason}")]
    BadMember { target: String, reason: String },
    /// The weights broke `core::ensemble`'s rules (one per member, finite, not negative, not all zero).
    #[error(transparent)]
    Weights(#[from] EnsembleError),
    #[error("members come from datasets {0:?}: an ensemble is scored on one dataset's test set")]
    MixedDatasets(Vec<String>),
    #[error("unknown test-time augmentation {0:?}: expected `flip`")]
    UnknownTta(String),
    #[error("--weights weighs the members of an ensemble (two or more `SESSION:CHECKPOINT`); one member needs none")]
    WeightsOfOne,
}

/// One member of a submission: a checkpoint of a session (an epoch, `best` or `last`) and its weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRef {
    pub session: SessionId,
    #[serde(with = "checkpoint_name")]
    pub checkpoint: CheckpointRef,
    pub weight: f64,
}

impl fmt::Display for MemberRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.session, self.checkpoint)
    }
}

/// What a submission's slot says when it needed none: every member's probabilities were cached.
pub const NO_SLOT: &str = "none (members cached)";

/// What a user asked to submit: checked, ready to queue as a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// One member, or several for an ensemble (the weighted mean of their probabilities, then argmax).
    pub members: Vec<MemberRef>,
    /// `none` when left out, as on the command line.
    #[serde(default)]
    pub tta: Tta,
    /// `-t`: predict the dry-run sample only (`core::score::dry_run_indices`); scored, never ranked or counted. False
    /// when left out.
    #[serde(default)]
    pub dry_run: bool,
}

impl Submission {
    /// From the CLI's arguments: `SESSION CHECKPOINT` (NSML's form) or one or more `SESSION:CHECKPOINT`, optional
    /// weights (one per member; equal when absent).
    pub fn from_args(
        targets: &[String],
        weights: Option<&[f64]>,
        tta: Tta,
        dry_run: bool,
    ) -> Result<Self, SubmitError> {
        let pairs: Vec<(String, &str, &str)> = match targets {
            [] => return Err(SubmitError::NoMembers),
            [session, checkpoint] if !session.contains(':') && !checkpoint.contains(':') => {
                vec![(format!("{session} {checkpoint}"), session.as_str(), checkpoint.as_str())]
            }
            _ => {
                if targets.iter().any(|t| !t.contains(':')) {
                    return Err(if targets.iter().any(|t| t.contains(':')) {
                        SubmitError::MixedForms(targets.to_vec())
                    } else {
                        SubmitError::BadTarget(targets.join(" "))
                    });
                }
                let mut pairs = Vec::with_capacity(targets.len());
                for t in targets {
                    let (session, checkpoint) = t.rsplit_once(':').ok_or_else(|| SubmitError::BadTarget(t.clone()))?;
                    pairs.push((t.clone(), session, checkpoint));
                }
                pairs
            }
        };
        let weights = match weights {
            Some(_) if pairs.len() == 1 => return Err(SubmitError::WeightsOfOne),
            Some(w) => w.to_vec(),
            None => vec![1.0; pairs.len()],
        };
        check_weights(pairs.len(), &weights)?;
        let mut members = Vec::with_capacity(pairs.len());
        for ((target, session, checkpoint), weight) in pairs.into_iter().zip(&weights) {
            let bad = |reason: String| SubmitError::BadMember { target: target.clone(), reason };
            let session = session.parse().map_err(|e: crate::core::session::SessionError| bad(e.to_string()))?;
            let checkpoint =
                checkpoint.parse().map_err(|e: crate::core::checkpoint::CheckpointError| bad(e.to_string()))?;
            members.push(MemberRef { session, checkpoint, weight: *weight });
        }
        let submission = Self { members, tta, dry_run };
        submission.validate()?;
        Ok(submission)
    }

    /// Checks a request (also one that arrived over the API): members, weights, one dataset.
    pub fn validate(&self) -> Result<(), SubmitError> {
        if self.members.is_empty() {
            return Err(SubmitError::NoMembers);
        }
        if let Some(m) = self.members.iter().find(|m| !m.weight.is_finite() || m.weight < 0.0) {
            return Err(SubmitError::BadMember {
                target: m.to_string(),
                reason: format!("weight {} must be finite and not negative", m.weight),
            });
        }
        let weights: Vec<f64> = self.members.iter().map(|m| m.weight).collect();
        check_weights(weights.len(), &weights)?;
        let mut datasets: Vec<String> = self.members.iter().map(|m| m.session.dataset.clone()).collect();
        datasets.sort();
        datasets.dedup();
        if datasets.len() > 1 {
            return Err(SubmitError::MixedDatasets(datasets));
        }
        Ok(())
    }

    /// The dataset whose test set scores this submission.
    pub fn dataset(&self) -> &str {
        self.members.first().map_or("", |m| m.session.dataset.as_str())
    }

    /// More than one member.
    pub fn is_ensemble(&self) -> bool {
        self.members.len() > 1
    }
}

/// Serialises a [`CheckpointRef`] as its name (`"7"`, `"best"`, `"last"`).
mod checkpoint_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::core::checkpoint::CheckpointRef;

    pub fn serialize<S: Serializer>(c: &CheckpointRef, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(c)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CheckpointRef, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nsml_form_submits_one_checkpoint() {
        let s = Submission::from_args(&args(&["local/emoji/3", "best"]), None, Tta::None, true).unwrap();
        assert_eq!(s.members.len(), 1);
        assert_eq!(s.members[0].session.to_string(), "local/emoji/3");
        assert_eq!(s.members[0].checkpoint, CheckpointRef::Best);
        assert_eq!(s.members[0].weight, 1.0);
        assert!(s.dry_run && !s.is_ensemble());
        assert_eq!(s.dataset(), "emoji");
    }

    #[test]
    fn colon_form_makes_a_weighted_ensemble() {
        let targets = args(&["local/emoji/3:best", "bob/emoji/1:12", "local/emoji/4:last"]);
        let s = Submission::from_args(&targets, Some(&[2.0, 1.0, 0.5]), Tta::Flip, false).unwrap();
        assert!(s.is_ensemble());
        assert_eq!(s.members.iter().map(|m| m.to_string()).collect::<Vec<_>>(), targets);
        assert_eq!(s.members[1].checkpoint, CheckpointRef::Epoch(12));
        assert_eq!(s.members.iter().map(|m| m.weight).collect::<Vec<_>>(), vec![2.0, 1.0, 0.5]);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""checkpoint":"best""#) && json.contains(r#""tta":"flip""#), "{json}");
        assert_eq!(serde_json::from_str::<Submission>(&json).unwrap(), s);
        // a single SESSION:CHECKPOINT is a one-member submission
        assert_eq!(
            Submission::from_args(&args(&["local/emoji/3:2"]), None, Tta::None, false).unwrap().members.len(),
            1
        );
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        let err = |a: &[&str], w: Option<&[f64]>| Submission::from_args(&args(a), w, Tta::None, false).unwrap_err();
        assert_eq!(err(&[], None), SubmitError::NoMembers);
        assert_eq!(err(&["local/emoji/3", "best"], Some(&[2.0])), SubmitError::WeightsOfOne);
        assert!(matches!(err(&["local/emoji/3:best", "local/emoji/4"], None), SubmitError::MixedForms(_)));
        assert!(matches!(err(&["local/emoji/3"], None), SubmitError::BadTarget(_)));
        assert!(matches!(err(&["local/emoji:best"], None), SubmitError::BadMember { .. }));
        let bad = err(&["local/emoji/3:0"], None);
        assert!(bad.to_string().contains("local/emoji/3:0"), "{bad}");
        assert_eq!(
            err(&["a/emoji/1:1", "a/emoji/2:1"], Some(&[1.0])),
            SubmitError::Weights(EnsembleError::WeightCount { members: 2, weights: 1 })
        );
        assert_eq!(
            err(&["a/emoji/1:1", "a/emoji/2:1"], Some(&[1.0, -1.0])),
            SubmitError::Weights(EnsembleError::BadWeight { index: 1, value: -1.0 })
        );
        assert_eq!(
            err(&["a/emoji/1:1", "a/emoji/2:1"], Some(&[0.0, 0.0])),
            SubmitError::Weights(EnsembleError::ZeroWeights)
        );
        assert_eq!(
            err(&["a/emoji/1:1", "a/synth/2:1", "a/emoji/3:1"], None),
            SubmitError::MixedDatasets(vec!["emoji".into(), "synth".into()])
        );
        assert_eq!("flip".parse(), Ok(Tta::Flip));
        assert!("mirror".parse::<Tta>().is_err());
        assert!(serde_json::from_str::<MemberRef>(r#"{"session":"a/b/1","checkpoint":"01","weight":1}"#).is_err());
    }
}
