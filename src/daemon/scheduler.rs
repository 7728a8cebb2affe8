//! The scheduler loop: on each wake-up (and every few seconds) one `tick` leases free slots to queued sessions, as the
//! pure `core::queue` decides, and spawns a runner for each, which holds its slot's [`Lease`] until it ends. A session
//! whose dataset is still registering waits (and fails if the registration does). Errors are logged and the loop goes
//! on; a panic in a tick is caught, logged with its message and counted (`rush_task_panics_total{task="scheduler"}` in
//! `/metrics`), and the loop goes on too.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::datasets::Readiness;
use super::slots::Lease;
use super::{Daemon, Task, runner};
use crate::core::queue::{self, Waiting};
use crate::core::session::SessionState;

/// A tick happens at least this often, even without a wake-up.
const IDLE_TICK: Duration = Duration::from_secs(2);

pub async fn run(daemon: Arc<Daemon>) {
    loop {
        if daemon.shutdown.is_cancelled() {
            break;
        }
        match AssertUnwindSafe(tick(&daemon)).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("scheduler: {e}"),
            Err(payload) => {
                daemon.panics.caught(Task::Scheduler, payload.as_ref());
            }
        }
        tokio::select! {
            _ = daemon.shutdown.cancelled() => break,
            _ = daemon.wake.notified() => {}
            _ = tokio::time::sleep(IDLE_TICK) => {}
        }
    }
}

/// One round: refuse what can never run here, then start what fits in the free slots.
pub async fn tick(daemon: &Arc<Daemon>) -> Result<(), super::DaemonError> {
    #[cfg(test)]
    if daemon
        .fail_ticks
        .fetch_update(std::sync::atomic::Ordering::SeqCst, std::sync::atomic::Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        panic!("a failure point in the scheduler's tick");
    }
    // The light queue (no specs, off the writer); a session's full row is read only when it gets a slot.
    let queued = daemon.store.queue().await?;
    if queued.is_empty() {
        return Ok(());
    }
    let pool = daemon.slots.snapshot();
    if pool.submission_waiting {
        // A waiting submission takes the next free slot; sessions start on the tick after it.
        return Ok(());
    }
    let mut waiting = Vec::new();
    for (i, row) in queued.iter().enumerate() {
        // A queued session can hold a slot: a Slurm job that waits in Slurm's queue has its runner already.
        if daemon.slots.holds(&row.id) {
            continue;
        }
        if let Some(reason) = queue::refusal(row.device, &pool.slots) {
            daemon.store.transition(&row.id, SessionState::Failed, None, Some(&reason)).await?;
            tracing::warn!("session {} refused: {reason}", row.id);
            continue;
        }
        // Its dataset is still registering (it waits; `ps` says so), or failed to (it fails with that reason).
        match daemon.dataset_readiness(&row.id.dataset) {
            Readiness::Ready => {}
            Readiness::Registering => continue,
            Readiness::Failed(reason) => {
                daemon.store.transition(&row.id, SessionState::Failed, None, Some(&reason)).await?;
                tracing::warn!("session {} failed: {reason}", row.id);
                continue;
            }
        }
        waiting.push(Waiting { key: i, priority: row.priority, seq: row.seq, device: row.device });
    }
    for a in queue::assign(&pool.slots, &waiting) {
        if daemon.shutdown.is_cancelled() {
            break;
        }
        let row = match daemon.store.session(&queued[a.key].id).await? {
            Some(row) if row.state == SessionState::Queued => row,
            // Stopped or removed since the queue was read.
            _ => continue,
        };
        let stop = CancellationToken::new();
        // Leased before the state changes, so a concurrent `stop` always finds the runner's token.
        let Some(lease) = daemon.slots.lease_session(a.slot, row.id.clone(), stop.clone()) else {
            // Taken meanwhile (a submission got it): the next tick tries again.
            continue;
        };
        let kind = lease.kind();
        if let Err(e) = daemon.store.transition(&row.id, SessionState::Running, Some(&kind.to_string()), None).await {
            // Stopped or removed meanwhile: dropping the lease gives the slot back.
            tracing::info!("not starting {}: {e}", row.id);
            continue;
        }
        spawn_runner(daemon, row, lease, stop);
    }
    Ok(())
}

/// Runs a session's runner on its slot; the slot is handed back when the runner ends, however it ends.
fn spawn_runner(daemon: &Arc<Daemon>, row: crate::store::SessionRow, lease: Lease, stop: CancellationToken) {
    let d = daemon.clone();
    daemon.runners.spawn(async move {
        let id = row.id.clone();
        let inner = tokio::spawn(runner::run(d.clone(), row, lease.kind(), stop));
        if let Err(e) = inner.await {
            // A runner bug must not leave the session running forever.
            tracing::error!("runner of {id} crashed: {e}");
            let reason = format!("the daemon's runner crashed: {e}");
            if let Err(e) = d.store.transition(&id, SessionState::Failed, None, Some(&reason)).await {
                tracing::error!("{id}: {e}");
            }
            d.live.end(&id, SessionState::Failed);
        }
        drop(lease);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::queue::Device;
    use crate::daemon::config::{DaemonConfig, Flags};
    use crate::daemon::executor::LocalExecutor;
    use crate::home::Home;
    use crate::store::{NewSession, Store};

    /// A failure point makes two ticks panic: the loop logs and counts both, then starts the queued session on the
    /// next tick.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_tick_is_caught_counted_and_scheduling_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let flags = Flags { experiments: Some(dir.path().join("exp")), cpu_slots: Some(1), ..Default::default() };
        let config = DaemonConfig::resolve(Home::new(dir.path().join("home")), flags, 0).unwrap().prepare().unwrap();
        let store = Store::open(&config.db).await.unwrap();
        // The child exits at once: all that matters here is that it is started.
        let daemon = Daemon::new(config, store, Arc::new(LocalExecutor { program: "/bin/true".into() }));
        daemon.fail_ticks.store(2, std::sync::atomic::Ordering::SeqCst);
        let new = NewSession {
            user: "local".into(),
            dataset: "emoji".into(),
            memo: String::new(),
            priority: 0,
            device: Device::Cpu,
            epochs: 1,
            fork_of: None,
        };
        let id = daemon.store.enqueue(None, &[new], |_, _| "{}".into()).await.unwrap().remove(0);
        let scheduler = tokio::spawn(run(daemon.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let row = daemon.store.session_required(&id).await.unwrap();
            if row.state != SessionState::Queued {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the scheduler stopped scheduling after a panic");
            daemon.wake();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(daemon.panics.count(Task::Scheduler), 2);
        assert_eq!(daemon.panics.count(Task::Submissions), 0);
        assert!(!scheduler.is_finished(), "the loop is still running");
        daemon.shut_down().await;
        scheduler.await.unwrap();
    }

    /// A session whose dataset is still registering waits; once the registration succeeds it runs, and when another
    /// fails, that dataset's session fails with the registration's error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_wait_for_their_dataset_to_register_and_fail_with_a_failed_registration() {
        let dir = tempfile::tempdir().unwrap();
        let flags = Flags { experiments: Some(dir.path().join("exp")), cpu_slots: Some(1), ..Default::default() };
        let config = DaemonConfig::resolve(Home::new(dir.path().join("home")), flags, 0).unwrap().prepare().unwrap();
        let store = Store::open(&config.db).await.unwrap();
        let daemon = Daemon::new(config, store, Arc::new(LocalExecutor { program: "/bin/true".into() }));
        let new = |dataset: &str| NewSession {
            user: "local".into(),
            dataset: dataset.into(),
            memo: String::new(),
            priority: 0,
            device: Device::Cpu,
            epochs: 1,
            fork_of: None,
        };
        daemon.registrations.begin("emoji");
        daemon.registrations.begin("bad");
        let bad = daemon.store.enqueue(None, &[new("bad")], |_, _| "{}".into()).await.unwrap().remove(0);
        let emoji = daemon.store.enqueue(None, &[new("emoji")], |_, _| "{}".into()).await.unwrap().remove(0);
        let state = |id| {
            let d = daemon.clone();
            async move { d.store.session_required(&id).await.unwrap() }
        };
        tick(&daemon).await.unwrap();
        assert_eq!(state(emoji.clone()).await.state, SessionState::Queued);
        assert_eq!(state(bad.clone()).await.state, SessionState::Queued);
        assert!(daemon.slots().iter().all(|s| s.session.is_none()), "no slot leased while both wait");

        daemon.registrations.failed("bad", "no usable images".into());
        daemon.registrations.succeeded("emoji");
        tick(&daemon).await.unwrap();
        let failed = state(bad).await;
        assert_eq!(failed.state, SessionState::Failed);
        assert_eq!(failed.exit_reason.as_deref(), Some("dataset bad could not be registered: no usable images"));
        assert_ne!(state(emoji).await.state, SessionState::Queued, "its dataset registered: it started");
        daemon.shut_down().await;
    }
}
