-- A code session's checkpoints rank by their own metric (core::event::Event::Checkpoint's `score`): the spec's
-- best_metric (negated for mode: min), or the epoch when no validation metric was reported (the latest is best).
-- NULL for a built-in session's checkpoints, which rank by val_acc.
ALTER TABLE checkpoints ADD COLUMN score REAL;
-- The metric `score` is; NULL with a score: no validation metric was reported.
ALTER TABLE checkpoints ADD COLUMN best_by TEXT;
