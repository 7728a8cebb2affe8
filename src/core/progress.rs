//! How far a training run is and how long it has left, told from its steps: the trainer's progress line in
//! `train.log` (so `rush logs -f` is never silent for a whole epoch) and the ETA `rush ps` shows share it.

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
}
