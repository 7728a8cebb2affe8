//! The trainer's progress line: every few seconds (30 by default, `RUSH_PROGRESS_SECS` to change), one line on
//! stderr, which the daemon appends to `train.log`, saying the step, the loss, the speed and the time left
//! (`core::progress`), so `rush logs -f` shows a long epoch moving.

use std::time::{Duration, Instant};

use rush::core::progress::{StepProgress, eta_seconds, progress_line};

/// Seconds between progress lines unless `RUSH_PROGRESS_SECS` says otherwise.
const DEFAULT_EVERY: Duration = Duration::from_secs(30);

/// When the last line went out, and where this run started (for its pace).
#[derive(Debug)]
pub(crate) struct Progress {
    every: Duration,
    started: Instant,
    first_step: u64,
    last: Instant,
}

impl Progress {
    pub(crate) fn new() -> Self {
        let every = std::env::var("RUSH_PROGRESS_SECS")
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(DEFAULT_EVERY, Duration::from_secs_f64);
        let now = Instant::now();
        Progress { every, started: now, first_step: 0, last: now }
    }

    /// The run starts now, at `first_step` (after the steps of the epochs a resume skips).
    pub(crate) fn start(&mut self, first_step: u64) {
        self.started = Instant::now();
        self.last = self.started;
        self.first_step = first_step;
    }

    /// Prints the line when it is due: `done` steps of `total` are done.
    pub(crate) fn tick(&mut self, done: u64, total: u64, mut line: StepProgress) {
        if self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        line.eta = eta_seconds(self.first_step, done, total, self.started.elapsed().as_secs_f64());
        eprintln!("rush train: {}", progress_line(&line));
    }
}
