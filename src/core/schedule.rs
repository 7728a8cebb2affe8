//! The learning-rate schedule as a pure function of the step: linear warm-up, then cosine, step decay or constant.

use crate::core::spec::{Schedule, ScheduleName};

/// Learning rate at `step` (0-based) of `total_steps`, with `steps_per_epoch` to convert epoch-based settings.
pub fn learning_rate(base_lr: f64, schedule: &Schedule, step: u64, steps_per_epoch: u64, total_steps: u64) -> f64 {
    let spe = steps_per_epoch.max(1) as f64;
    let warmup = (schedule.warmup_for(total_steps as f64 / spe) * spe).round() as u64;
    if step < warmup {
        return base_lr * (step + 1) as f64 / warmup as f64;
    }
    match schedule.name {
        ScheduleName::Constant => base_lr,
        ScheduleName::Cosine => {
            let span = total_steps.saturating_sub(warmup).max(1) as f64;
            let progress = ((step - warmup) as f64 / span).min(1.0);
            schedule.min_lr + (base_lr - schedule.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
        ScheduleName::Step => {
            let epoch = (step as f64 / spe).floor() as u32;
            let passed = schedule.milestones.iter().filter(|&&m| epoch >= m).count() as i32;
            base_lr * schedule.gamma.powi(passed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(name: ScheduleName, warmup: f64) -> Schedule {
        Schedule { name, warmup_epochs: Some(warmup), milestones: vec![2, 4], gamma: 0.1, min_lr: 0.0 }
    }

    #[test]
    fn warmup_then_cosine_to_zero() {
        let s = sched(ScheduleName::Cosine, 1.0);
        assert!((learning_rate(1.0, &s, 0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((learning_rate(1.0, &s, 9, 10, 100) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, &s, 10, 10, 100) - 1.0).abs() < 1e-12);
        assert!(learning_rate(1.0, &s, 99, 10, 100) < 0.01);
        let mid = learning_rate(1.0, &s, 55, 10, 100);
        assert!((mid - 0.5).abs() < 1e-9, "{mid}");
    }

    #[test]
    fn step_decays_at_milestones() {
        let s = sched(ScheduleName::Step, 0.0);
        assert_eq!(learning_rate(1.0, &s, 19, 10, 100), 1.0);
        assert!((learning_rate(1.0, &s, 20, 10, 100) - 0.1).abs() < 1e-12);
        assert!((learning_rate(1.0, &s, 45, 10, 100) - 0.01).abs() < 1e-12);
        assert_eq!(learning_rate(0.3, &sched(ScheduleName::Constant, 0.0), 77, 10, 100), 0.3);
    }

    #[test]
    fn the_default_warm_up_is_a_tenth_of_the_run_and_at_most_one_epoch() {
        let auto = Schedule { name: ScheduleName::Constant, warmup_epochs: None, ..Schedule::default() };
        // One epoch of 10 steps: one step of warm-up, at the full rate from the second step (not at the last one).
        assert!((learning_rate(1.0, &auto, 0, 10, 10) - 1.0).abs() < 1e-12);
        assert_eq!(learning_rate(1.0, &auto, 1, 10, 10), 1.0);
        // 30 epochs of 10 steps: one epoch.
        assert!((learning_rate(1.0, &auto, 0, 10, 300) - 0.1).abs() < 1e-12);
        assert_eq!(learning_rate(1.0, &auto, 10, 10, 300), 1.0);
        assert_eq!(auto.warmup_for(4.0), 0.4);
        assert_eq!(auto.warmup_for(100.0), 1.0);
        assert_eq!(Schedule { warmup_epochs: Some(3.0), ..auto }.warmup_for(4.0), 3.0);
    }
}
