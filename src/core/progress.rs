//! How far a training run is and how long it has left, told from its steps: the trainer's progress line in
//! `train.log` (so `rush logs -f` is never silent for a whole epoch) and the ETA `rush ps` shows share it. Before the
//! first step, a build of the decoded-image cache says how far it is the same way ([`DecodeProgress`]): the trainer's
//! `decoding` events and log lines, and what `rush ps` and the dashboard show while it lasts.

use super::format;

/// Seconds left in a run of `total` steps that started at step `first` (later than 0 after a resume), is at step
/// `done` and has run `elapsed` seconds since it started: the steps still to go at the pace so far. `None` until the
/// run has made a step, or when it is done.
pub fn eta_seconds(first: u64, done: u64, total: u64, elapsed: f64) -> Option<f64> {
    if done <= first || done >= total || !elapsed.is_finite() || elapsed <= 0.0 {
        return None;
    }
    Some(elapsed / (done - first) as f64 * (total - done) as f64)
}

/// Where a run is, for its progress line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepProgress {
    pub epoch: u32,
    pub epochs: u32,
    /// Steps done in this epoch, and in every epoch.
    pub step_in_epoch: u64,
    pub steps_per_epoch: u64,
    /// The mean training loss since the last line.
    pub loss: f64,
    pub img_per_s: f64,
    pub eta: Option<f64>,
}

/// `epoch 2/5 · step 340/1000 · loss 1.2345 · 812 img/s · ETA 3m 10s` (the ETA is the whole run's).
pub fn progress_line(p: &StepProgress) -> String {
    let mut line = format!(
        "epoch {}/{} · step {}/{} · loss {:.4} · {:.0} img/s",
        p.epoch, p.epochs, p.step_in_epoch, p.steps_per_epoch, p.loss, p.img_per_s
    );
    if let Some(eta) = p.eta {
        line.push_str(&format!(" · ETA {}", format::duration(eta)));
    }
    line
}

/// How far a build of the decoded-image cache is: `done` of `total` images decoded in `seconds`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeProgress {
    pub done: u64,
    pub total: u64,
    pub seconds: f64,
}

impl DecodeProgress {
    /// Images decoded per second so far; `None` before the first image, or without time to divide by.
    pub fn rate(&self) -> Option<f64> {
        (self.done > 0 && self.seconds.is_finite() && self.seconds > 0.0).then(|| self.done as f64 / self.seconds)
    }

    /// Seconds left at the rate so far: 0 when every image is decoded, `None` without a rate.
    pub fn eta(&self) -> Option<f64> {
        if self.done >= self.total {
            return Some(0.0);
        }
        self.rate().map(|rate| (self.total - self.done) as f64 / rate)
    }

    /// `decoding 412,000 of 700,000 images (3,200 img/s, ETA 1m 30s)`; once all are: `decoded 700,000 of 700,000
    /// images (3,186 img/s)`.
    pub fn line(&self) -> String {
        let finished = self.done >= self.total;
        let verb = if finished { "decoded" } else { "decoding" };
        let mut line = format!("{verb} {} of {} images", format::count(self.done), format::count(self.total));
        let mut details = Vec::new();
        if let Some(rate) = self.rate() {
            details.push(format!("{} img/s", format::count(rate.round() as u64)));
        }
        if let (false, Some(eta)) = (finished, self.eta()) {
            details.push(format!("ETA {}", format::duration(eta)));
        }
        if !details.is_empty() {
            line.push_str(&format!(" ({})", details.join(", ")));
        }
        line
    }
}

/// When a cache build reports its progress: at its first run of images, then at most once every `every` seconds,
/// and at its last (so a small build reports once, and a long one about once a second).
#[derive(Debug, Clone)]
pub struct DecodeTicker {
    total: u64,
    every: f64,
    last: Option<f64>,
}

impl DecodeTicker {
    pub fn new(total: u64, every: f64) -> Self {
        Self { total, every, last: None }
    }

    /// `done` images are decoded, `seconds` after the build began: the progress to report now, if it is due.
    pub fn tick(&mut self, done: u64, seconds: f64) -> Option<DecodeProgress> {
        let due = match self.last {
            None => true,
            Some(last) => done >= self.total || seconds - last >= self.every,
        };
        if !due {
            return None;
        }
        self.last = Some(seconds);
        Some(DecodeProgress { done, total: self.total, seconds })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_is_the_steps_left_at_the_pace_so_far() {
        assert_eq!(eta_seconds(0, 100, 1000, 50.0), Some(450.0));
        // Resumed at step 500: only this run's steps set the pace.
        assert_eq!(eta_seconds(500, 600, 1000, 10.0), Some(40.0));
        assert_eq!(eta_seconds(0, 0, 1000, 10.0), None, "no step yet");
        assert_eq!(eta_seconds(0, 1000, 1000, 10.0), None, "done");
        assert_eq!(eta_seconds(0, 10, 1000, 0.0), None);
        assert_eq!(eta_seconds(0, 10, 1000, f64::NAN), None);
    }

    #[test]
    fn the_line_says_step_loss_speed_and_time_left() {
        let p = StepProgress {
            epoch: 2,
            epochs: 5,
            step_in_epoch: 340,
            steps_per_epoch: 1000,
            loss: 1.23456,
            img_per_s: 811.6,
            eta: Some(190.0),
        };
        assert_eq!(progress_line(&p), "epoch 2/5 · step 340/1000 · loss 1.2346 · 812 img/s · ETA 3m 10s");
        assert_eq!(
            progress_line(&StepProgress { eta: None, ..p }),
            "epoch 2/5 · step 340/1000 · loss 1.2346 · 812 img/s"
        );
    }

    #[test]
    fn a_cache_build_says_how_many_images_how_fast_and_how_long_it_has_left() {
        let p = DecodeProgress { done: 412_000, total: 700_000, seconds: 128.75 };
        assert_eq!(p.rate(), Some(3200.0));
        assert_eq!(p.eta(), Some(90.0));
        assert_eq!(p.line(), "decoding 412,000 of 700,000 images (3,200 img/s, ETA 1m 30s)");
        let done = DecodeProgress { done: 700_000, total: 700_000, seconds: 219.7 };
        assert_eq!(done.eta(), Some(0.0));
        assert_eq!(done.line(), "decoded 700,000 of 700,000 images (3,186 img/s)");
        // No image yet, or no time: no rate, no ETA.
        let none = DecodeProgress { done: 0, total: 1000, seconds: 2.0 };
        assert_eq!((none.rate(), none.eta()), (None, None));
        assert_eq!(none.line(), "decoding 0 of 1,000 images");
        assert_eq!(DecodeProgress { done: 10, total: 20, seconds: 0.0 }.rate(), None);
        assert_eq!(DecodeProgress { done: 10, total: 20, seconds: f64::NAN }.eta(), None);
    }

    #[test]
    fn a_build_reports_first_then_at_most_once_a_second_and_last() {
        let mut ticker = DecodeTicker::new(5000, 1.0);
        let first = ticker.tick(1024, 0.3).expect("the first run is reported");
        assert_eq!(first, DecodeProgress { done: 1024, total: 5000, seconds: 0.3 });
        assert_eq!(ticker.tick(2048, 0.6), None, "0.3 s after the last report");
        assert_eq!(ticker.tick(3072, 1.2), None, "0.9 s after the last report");
        assert_eq!(ticker.tick(4096, 1.3).map(|p| p.done), Some(4096), "1 s after the last report");
        assert_eq!(ticker.tick(5000, 1.4).map(|p| p.done), Some(5000), "the last run is always reported");
        // A build done in one run reports once.
        let mut small = DecodeTicker::new(300, 1.0);
        assert_eq!(small.tick(300, 0.05).map(|p| p.line()), Some("decoded 300 of 300 images (6,000 img/s)".into()));
    }
}
