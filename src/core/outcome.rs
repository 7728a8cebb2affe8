//! How a training child's end becomes a session's final state: pure, so every case is a plain assert.
//!
//! succeeded = exit 0 and a `finished` event; waiting = exit 0 and a `paused` event (a sweep's trial at an ASHA rung);
//! stopped = the user asked; a daemon shutdown puts the session back in the queue (it resumes from its last
//! checkpoint) unless its spec says `resume: false`; everything else failed, with the child's own reason when it gave
//! one, else the exit code or signal and the tail of its stderr.

use crate::core::session::SessionState;

/// How the child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// The executor lost track of it (e.g. waiting failed).
    Unknown,
    /// Cancelled by the cluster's scheduler at someone's request (`scancel` of a Slurm job): the session is stopped.
    Cancelled,
    /// Ended by the cluster before it finished (a Slurm time limit, node failure or preemption): resumable from the
    /// last checkpoint, like a crash of the machine.
    Interrupted,
    /// Still running without this daemon (a Slurm job while the daemon shuts down): the session waits in the queue
    /// and the next daemon re-attaches to the job.
    Detached,
}

/// What the runner saw while the child ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// A `finished` event arrived.
    pub finished: bool,
    /// A `paused` event arrived: the epoch of the rung the trial reached.
    pub paused: Option<u32>,
    /// The reason of a `failed` event.
    pub failed: Option<String>,
    /// `rush stop` asked for it.
    pub stop_requested: bool,
    /// The daemon is shutting down and ended it.
    pub shutdown: bool,
    /// The last lines of the child's stderr.
    pub stderr_tail: Vec<String>,
}

/// The final state and the reason shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub state: SessionState,
    pub reason: Option<String>,
}

/// Decides the state a running session goes to when its child ends.
pub fn decide(exit: Exit, seen: &Observed, resume: bool) -> Outcome {
    let done = |state, reason: Option<String>| Outcome { state, reason };
    if seen.stop_requested {
        return done(SessionState::Stopped, Some("stopped by the user".into()));
    }
    if exit == Exit::Cancelled {
        return done(SessionState::Stopped, Some("its Slurm job was cancelled (scancel)".into()));
    }
    if exit == Exit::Detached {
        let reason =
            "the daemon shut down; its Slurm job goes on and the daemon re-attaches to it when it starts again";
        return done(SessionState::Queued, Some(reason.into()));
    }
    if exit == Exit::Code(0) && seen.finished {
        return done(SessionState::Succeeded, None);
    }
    if let (Exit::Code(0), Some(epoch)) = (exit, seen.paused) {
        return done(SessionState::Waiting, Some(format!("reached a rung at epoch {epoch}; waits for the sweep")));
    }
    if seen.shutdown {
        let state = if resume { SessionState::Queued } else { SessionState::Interrupted };
        return done(state, Some("the daemon shut down while it ran".into()));
    }
    if exit == Exit::Interrupted {
        let why = "the cluster ended its job before it finished (time limit, node failure or preemption)";
        return if resume {
            done(SessionState::Queued, Some(format!("{why}; it resumes from its last checkpoint")))
        } else {
            done(SessionState::Interrupted, Some(format!("{why} (resume: false)")))
        };
    }
    let tail = if seen.stderr_tail.is_empty() {
        String::new()
    } else {
        format!("\n--- last lines of stderr ---\n{}", seen.stderr_tail.join("\n"))
    };
    let reason = match (&seen.failed, exit) {
        (Some(reason), _) => reason.clone(),
        (None, Exit::Code(0)) => "the trainer exited without a `finished` event".to_string(),
        (None, Exit::Code(code)) => format!("the trainer exited with code {code}"),
        (None, Exit::Signal(sig)) => format!("the trainer was killed by signal {sig}{}", signal_name(sig)),
        (None, Exit::Unknown | Exit::Cancelled | Exit::Interrupted | Exit::Detached) => {
            "the trainer's exit status was lost".to_string()
        }
    };
    done(SessionState::Failed, Some(format!("{reason}{tail}")))
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        6 => " (SIGABRT)",
        9 => " (SIGKILL, e.g. out of memory)",
        11 => " (SIGSEGV)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_needs_exit_zero_and_finished() {
        let seen = Observed { finished: true, ..Default::default() };
        assert_eq!(decide(Exit::Code(0), &seen, true).state, SessionState::Succeeded);
        let o = decide(Exit::Code(0), &Observed::default(), true);
        assert_eq!(o.state, SessionState::Failed);
        assert!(o.reason.unwrap().contains("without a `finished` event"));
        let o = decide(Exit::Code(1), &seen, true);
        assert_eq!(o.state, SessionState::Failed);
    }

    #[test]
    fn a_trial_that_paused_at_a_rung_waits_unless_stopped_or_crashed() {
        let seen = Observed { paused: Some(3), ..Default::default() };
        let o = decide(Exit::Code(0), &seen, true);
        assert_eq!(o.state, SessionState::Waiting);
        assert!(o.reason.unwrap().contains("epoch 3"));
        assert_eq!(decide(Exit::Code(1), &seen, true).state, SessionState::Failed);
        let stopped = Observed { stop_requested: true, ..seen };
        assert_eq!(decide(Exit::Code(0), &stopped, true).state, SessionState::Stopped);
    }

    #[test]
    fn failure_reason_prefers_the_childs_own_then_code_and_stderr_tail() {
        let seen = Observed {
            failed: Some("loss is NaN at step 7".into()),
            stderr_tail: vec!["boom".into()],
            ..Default::default()
        };
        let o = decide(Exit::Code(1), &seen, true);
        let reason = o.reason.unwrap();
        assert!(reason.starts_with("loss is NaN at step 7") && reason.ends_with("boom"), "{reason}");
        let seen = Observed { stderr_tail: vec!["a".into(), "b".into()], ..Default::default() };
        let reason = decide(Exit::Code(3), &seen, true).reason.unwrap();
        assert!(reason.starts_with("the trainer exited with code 3") && reason.ends_with("a\nb"), "{reason}");
        let reason = decide(Exit::Signal(9), &Observed::default(), true).reason.unwrap();
        assert!(reason.contains("signal 9 (SIGKILL"), "{reason}");
    }

    #[test]
    fn stop_wins_and_shutdown_requeues_only_with_resume() {
        let seen = Observed { stop_requested: true, finished: true, ..Default::default() };
        assert_eq!(decide(Exit::Signal(15), &seen, true).state, SessionState::Stopped);
        let seen = Observed { shutdown: true, ..Default::default() };
        assert_eq!(decide(Exit::Signal(15), &seen, true).state, SessionState::Queued);
        assert_eq!(decide(Exit::Signal(15), &seen, false).state, SessionState::Interrupted);
        // A child that finished just as the daemon stopped still succeeded.
        let seen = Observed { shutdown: true, finished: true, ..Default::default() };
        assert_eq!(decide(Exit::Code(0), &seen, true).state, SessionState::Succeeded);
    }

    #[test]
    fn cluster_ends_cancel_interrupt_or_detach() {
        let none = Observed::default();
        let o = decide(Exit::Cancelled, &none, true);
        assert_eq!(o.state, SessionState::Stopped);
        assert!(o.reason.unwrap().contains("scancel"));
        let o = decide(Exit::Interrupted, &none, true);
        assert_eq!(o.state, SessionState::Queued);
        assert!(o.reason.unwrap().contains("resumes from its last checkpoint"));
        assert_eq!(decide(Exit::Interrupted, &none, false).state, SessionState::Interrupted);
        // A detached job is re-attached later whatever the spec says about resuming.
        let seen = Observed { shutdown: true, ..Default::default() };
        assert_eq!(decide(Exit::Detached, &seen, false).state, SessionState::Queued);
        let seen = Observed { stop_requested: true, ..Default::default() };
        assert_eq!(decide(Exit::Cancelled, &seen, true).reason.as_deref(), Some("stopped by the user"));
    }
}
