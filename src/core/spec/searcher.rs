//! A sweep's searcher (`searcher: {name: asha, metric: val_acc, grace_epochs: 1, reduction_factor: 3}`): the spec's
//! side of ASHA early stopping, whose decisions are `core::asha`'s. Only a spec with a sweep may have one, and its
//! trials must resume (a trial paused at a rung continues from its checkpoint when promoted).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::core::asha::{Asha, Mode};
use crate::core::rule::{Check, Rule};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SearcherName {
    /// Asynchronous successive halving (Li et al., 2018).
    #[default]
    Asha,
}

/// The per-epoch metric a searcher ranks trials by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SearchMetric {
    #[default]
    ValAcc,
    ValLoss,
    TrainAcc,
    TrainLoss,
}

impl SearchMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMetric::ValAcc => "val_acc",
            SearchMetric::ValLoss => "val_loss",
            SearchMetric::TrainAcc => "train_acc",
            SearchMetric::TrainLoss => "train_loss",
        }
    }

    /// Which way is better when the spec does not say: higher for accuracies, lower for losses.
    pub fn natural_mode(self) -> Mode {
        match self {
            SearchMetric::ValAcc | SearchMetric::TrainAcc => Mode::Max,
            SearchMetric::ValLoss | SearchMetric::TrainLoss => Mode::Min,
        }
    }
}

/// `searcher:`: stop a sweep's losing trials early. Rungs sit at `grace_epochs * reduction_factor^k` epochs; a trial
/// reaching one goes on only if it ranks in the top `1 / reduction_factor` of the trials that reached it so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Searcher {
    pub name: SearcherName,
    /// The epoch metric trials are ranked by at each rung.
    pub metric: SearchMetric,
    /// `max` or `min`; left out, the metric's natural direction (accuracies up, losses down).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Epochs every trial trains before the first rung.
    pub grace_epochs: u32,
    /// `rf` (eta in the paper): each rung keeps its top `1 / rf`, and rungs are `rf` times further apart.
    pub reduction_factor: u32,
    /// At most this many of the sweep's trials run at once (left out: as many as there are slots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
}

impl Default for Searcher {
    fn default() -> Self {
        Searcher {
            name: SearcherName::Asha,
            metric: SearchMetric::ValAcc,
            mode: None,
            grace_epochs: 1,
            reduction_factor: 3,
            max_concurrent: None,
        }
    }
}

impl Searcher {
    /// The pure decision's settings.
    pub fn asha(&self) -> Asha {
        Asha {
            grace_epochs: self.grace_epochs,
            reduction_factor: self.reduction_factor,
            mode: self.mode.unwrap_or(self.metric.natural_mode()),
        }
    }

    /// The rung a trial of `epochs` that is at `epoch` stands at (the highest rung at or below it), 1-based as `ps`
    /// shows it; `None` before the first.
    pub fn rung_reached(&self, epoch: u32, epochs: u32) -> Option<usize> {
        let reached = self.asha().rungs(epochs).iter().filter(|&&r| r <= epoch).count();
        (reached > 0).then_some(reached)
    }

    /// `k/R`: the rung a trial at `epoch` has reached, of the `R` rungs of its run of `epochs`, as `ps` and the
    /// sessions list show it.
    pub fn rung_label(&self, epoch: u32, epochs: u32) -> String {
        format!("{}/{}", self.rung_reached(epoch, epochs).unwrap_or(0), self.asha().rungs(epochs).len())
    }

    /// The epoch a run that starts at `start_epoch` pauses after: the first rung at or after it, if one is before
    /// the last epoch.
    pub fn pause_after(&self, start_epoch: u32, epochs: u32) -> Option<u32> {
        self.asha().rungs(epochs).into_iter().find(|&r| r >= start_epoch)
    }
}

impl super::Spec {
    /// `k/R` for a sweep trial with a searcher that has ended `epoch` (see [`Searcher::rung_label`]); `None` without.
    pub fn rung_label(&self, epoch: u32) -> Option<String> {
        self.searcher.as_ref().map(|s| s.rung_label(epoch, self.epochs))
    }
}

/// The searcher's value rules (checked by `Spec::validate` and written into the JSON Schema under `searcher`).
pub const SEARCHER_RULES: &[Rule<Searcher>] = &[
    Rule {
        path: "grace_epochs",
        check: Check::Count { get: |s| Some(s.grace_epochs.into()), min: 1, max: 10000 },
        message: "{value} is out of range {range}",
    },
    Rule {
        path: "reduction_factor",
        check: Check::Count { get: |s| Some(s.reduction_factor.into()), min: 2, max: 100 },
        message: "{value} is out of range {range}",
    },
    Rule {
        path: "max_concurrent",
        check: Check::Count { get: |s| s.max_concurrent.map(u64::from), min: 1, max: 10000 },
        message: "{value} is out of range {range}",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trial_pauses_at_the_first_rung_from_where_it_starts_and_never_at_the_last_epoch() {
        let s = Searcher { grace_epochs: 1, reduction_factor: 3, ..Searcher::default() };
        // rungs of a 9-epoch run: 1 and 3
        assert_eq!(s.pause_after(1, 9), Some(1));
        assert_eq!(s.pause_after(2, 9), Some(3));
        assert_eq!(s.pause_after(3, 9), Some(3));
        assert_eq!(s.pause_after(4, 9), None);
        assert_eq!(s.pause_after(1, 1), None, "a one-epoch run has no rung");
        assert_eq!((s.rung_reached(0, 9), s.rung_reached(2, 9), s.rung_reached(9, 9)), (None, Some(1), Some(2)));
        assert_eq!(
            (s.rung_label(0, 9), s.rung_label(1, 9), s.rung_label(5, 9)),
            ("0/2".into(), "1/2".into(), "2/2".into())
        );
        assert_eq!(s.asha().mode, Mode::Max);
        let loss = Searcher { metric: SearchMetric::ValLoss, ..Searcher::default() };
        assert_eq!(loss.asha().mode, Mode::Min);
        let forced = Searcher { metric: SearchMetric::ValLoss, mode: Some(Mode::Max), ..Searcher::default() };
        assert_eq!(forced.asha().mode, Mode::Max);
    }
}
