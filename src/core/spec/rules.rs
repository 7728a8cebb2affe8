//! The spec's value rules, one table: [`super::Spec::validate`] checks them in this order and
//! [`super::json_schema`] writes them into the JSON Schema. A range changed here changes both.

use crate::core::rule::{Bound, Check, Interval, Rule};

use super::{Gpus, MAX_MEMO_BYTES, Mix, Spec};

/// Closed `[0, 1]`.
const UNIT: Interval = Interval { low: Bound::Closed(0.0), high: Bound::Closed(1.0) };
/// Half-open `[0, 1)`.
const UNIT_OPEN_TOP: Interval = Interval { low: Bound::Closed(0.0), high: Bound::Open(1.0) };

/// Open `(0, 1)`.
const OPEN_UNIT: Interval = Interval { low: Bound::Open(0.0), high: Bound::Open(1.0) };
/// `> 0`.
const POSITIVE: Interval = Interval { low: Bound::Open(0.0), high: Bound::Unbounded };

/// What the rules of an absent optional section (`ema`, `augment.mixup`) read: values inside their ranges, so there
/// is nothing to refuse.
const ABSENT_DECAY: f64 = 0.5;
fn mix_alpha(mix: Option<&Mix>) -> f64 {
    mix.map_or(1.0, |m| m.alpha)
}
fn mix_prob(mix: Option<&Mix>) -> f64 {
    mix.map_or(1.0, |m| m.prob)
}

/// A dataset name as [`crate::core::session::validate_name`] takes it: at most 64 ASCII characters (`maxLength`),
/// a letter or digit first, then letters, digits, `-`, `_`, `.`, never two dots in a row.
pub(crate) const DATASET_NAME_PATTERN: &str = r"^[A-Za-z0-9](\.?[A-Za-z0-9_-])*\.?$";

/// Every rule of a spec's own fields, in the order `validate` reports them (the first broken one is the error).
/// Sweeps (`grid:`, `random:`) are checked by `sweep::validate`, Slurm overrides by their own table.
pub(crate) const RULES: &[Rule<Spec>] = &[
    Rule {
        path: "dataset",
        check: Check::Required { get: |s| s.dataset.as_str() },
        message: "is required (a registered dataset name, see `rush dataset ls`)",
    },
    Rule {
        path: "dataset",
        check: Check::Text {
            get: |s| Some(s.dataset.as_str()),
            valid: |name| crate::core::session::validate_name(name).map_err(|e| e.to_string()),
            pattern: DATASET_NAME_PATTERN,
            max_chars: Some(64),
            beyond: None,
        },
        message: "{value} is not a dataset name (letters, digits, '-', '_', '.'; no paths)",
    },
    Rule {
        path: "image_size",
        check: Check::Count { get: |s| Some(s.image_size.into()), min: 8, max: 1024 },
        message: "{value} is out of range {range}",
    },
    Rule {
        path: "batch_size",
        check: Check::Count { get: |s| Some(s.batch_size.into()), min: 1, max: 65536 },
        message: "{value} is out of range {range}",
    },
    Rule {
        path: "epochs",
        check: Check::Count { get: |s| Some(s.epochs.into()), min: 1, max: 10000 },
        message: "{value} is out of range {range}",
    },
    Rule {
        path: "optimizer.lr",
        check: Check::Number {
            get: |s| s.optimizer.lr,
            range: Interval { low: Bound::Open(0.0), high: Bound::Closed(10.0) },
        },
        message: "{value} must be a number {range}",
    },
    Rule {
        path: "optimizer.weight_decay",
        check: Check::Number { get: |s| s.optimizer.weight_decay, range: UNIT },
        message: "{value} must be {range}",
    },
    Rule {
        path: "optimizer.momentum",
        check: Check::Number { get: |s| s.optimizer.momentum, range: UNIT_OPEN_TOP },
        message: "{value} must be {range}",
    },
    Rule {
        path: "schedule.warmup_epochs",
        check: Check::NumberBelow {
            get: |s| s.schedule.warmup_epochs.unwrap_or(0.0),
            range: Interval { low: Bound::Closed(0.0), high: Bound::Unbounded },
            limit: "epochs",
            limit_of: |s| f64::from(s.epochs),
        },
        message: "{value} must be {range} and below {limit}: a warm-up that long takes the whole run (leave it out \
                  for a tenth of the run, at most one epoch)",
    },
    Rule {
        path: "schedule.gamma",
        check: Check::Number {
            get: |s| s.schedule.gamma,
            range: Interval { low: Bound::Open(0.0), high: Bound::Closed(1.0) },
        },
        message: "{value} must be {range}",
    },
    Rule {
        path: "loss.label_smoothing",
        check: Check::Number { get: |s| s.loss.label_smoothing, range: UNIT_OPEN_TOP },
        message: "{value} must be {range}",
    },
    Rule {
        path: "augment.random_resized_crop",
        check: Check::Pair {
            get: |s| s.augment.random_resized_crop,
            range: Interval { low: Bound::Open(0.0), high: Bound::Closed(1.0) },
        },
        message: "{value} must satisfy 0 < min <= max <= 1",
    },
    Rule {
        path: "augment.color_jitter",
        check: Check::Number { get: |s| s.augment.color_jitter, range: UNIT },
        message: "{value} must be {range}",
    },
    Rule {
        path: "augment.rotate",
        check: Check::Number {
            get: |s| s.augment.rotate,
            range: Interval { low: Bound::Closed(0.0), high: Bound::Closed(180.0) },
        },
        message: "{value} must be {range} (degrees each way)",
    },
    Rule {
        path: "augment.grayscale",
        check: Check::Number { get: |s| s.augment.grayscale, range: UNIT },
        message: "{value} must be {range} (a probability)",
    },
    Rule {
        path: "augment.random_erasing",
        check: Check::Number { get: |s| s.augment.random_erasing, range: UNIT },
        message: "{value} must be {range} (a probability)",
    },
    Rule {
        path: "resources.gpus",
        check: Check::Count {
            get: |s| match s.resources.gpus {
                Gpus::Auto => None,
                Gpus::Count(n) => Some(n.into()),
            },
            min: 0,
            max: 1,
        },
        message: "{value}: multi-GPU sessions are not supported (use auto, 0 or 1)",
    },
    Rule {
        path: "valid_fraction",
        check: Check::Number {
            get: |s| s.valid_fraction,
            range: Interval { low: Bound::Open(0.0), high: Bound::Open(1.0) },
        },
        message: "{value} must be {range}",
    },
    Rule {
        path: "schedule.min_lr",
        check: Check::NumberAtMost {
            get: |s| s.schedule.min_lr,
            range: Interval { low: Bound::Closed(0.0), high: Bound::Unbounded },
            limit: "optimizer.lr",
            limit_of: |s| s.optimizer.lr,
        },
        message: "{value} must be in [0, {limit}]",
    },
    Rule {
        path: "schedule.milestones",
        check: Check::Increasing { get: |s| s.schedule.milestones.as_slice(), min: 1 },
        message: "{value} must be epochs >= 1 in increasing order",
    },
    Rule {
        path: "ema.decay",
        check: Check::Number { get: |s| s.ema.as_ref().map_or(ABSENT_DECAY, |e| e.decay), range: OPEN_UNIT },
        message: "{value} must be {range} (0.999 averages over about the last thousand steps)",
    },
    Rule {
        path: "augment.mixup.alpha",
        check: Check::Number { get: |s| mix_alpha(s.augment.mixup.as_ref()), range: POSITIVE },
        message: "{value} must be {range} (λ ~ Beta(alpha, alpha); 0.2 mixes lightly, 1 uniformly)",
    },
    Rule {
        path: "augment.mixup.prob",
        check: Check::Number { get: |s| mix_prob(s.augment.mixup.as_ref()), range: UNIT },
        message: "{value} must be {range} (the share of batches mixed)",
    },
    Rule {
        path: "augment.cutmix.alpha",
        check: Check::Number { get: |s| mix_alpha(s.augment.cutmix.as_ref()), range: POSITIVE },
        message: "{value} must be {range} (λ ~ Beta(alpha, alpha); 1 draws the box's area uniformly)",
    },
    Rule {
        path: "augment.cutmix.prob",
        check: Check::Number { get: |s| mix_prob(s.augment.cutmix.as_ref()), range: UNIT },
        message: "{value} must be {range} (the share of batches cut and mixed)",
    },
    Rule {
        path: "memo",
        check: Check::Bytes { get: |s| s.memo.as_str(), max: MAX_MEMO_BYTES as u64 },
        message: "is {value} bytes; at most {max}",
    },
    Rule {
        path: "grid",
        check: Check::NotBoth { other: "random", both: |s| s.grid.is_some() && s.random.is_some() },
        message: "a spec may have `grid` or `random`, not both",
    },
];
