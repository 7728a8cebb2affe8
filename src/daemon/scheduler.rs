//! The scheduler loop: on each wake-up (and every few seconds) one `tick` leases free slots to queued sessions, as the
//! pure `core::share` decides (fair share among users, then priority and FIFO), at most a searcher's `max_concurrent`
//! trials of one sweep at once, and spawns a runner for each, which holds its slot's [`Lease`] until it ends. A session
//! whose dataset is still registering waits (and fails if the registration does). Errors are logged and the loop goes
//! on; a panic in a tick is caught, logged with its message and counted (`rush_task_panics_total{task="scheduler"}` in
//! `/metrics`), and the loop goes on too.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::datasets::Readiness;
use super::slots::Lease;
use super::{Daemon, Task, runner};
use crate::core::queue::{self, Device, SlotKind};
use crate::core::session::SessionState;
use crate::core::share::{self, Job};

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
    // A sweep's trials waiting at a rung whose decision nothing else triggered (say, the others failed) settle here.
    daemon.decide_waiting_sweeps().await?;
    // The light queue (no specs, off the writer); a session's full row is read only when it gets a slot.
    let queued = daemon.store.queue().await?;
    if queued.is_empty() {
        return Ok(());
    }
    // A searcher's `max_concurrent` caps how many trials of its sweep run at once: the room each sweep has left.
    let running =
        if queued.iter().any(|q| q.sweep.is_some()) { daemon.store.running_per_sweep().await? } else { HashMap::new() };
    let mut room: HashMap<i64, Option<usize>> = HashMap::new();
    let pool = daemon.slots.snapshot();
    if pool.submission_waiting {
        // A waiting submission takes the next free slot; sessions start on the tick after it.
        return Ok(());
    }
    let mut table = ShareTable::new(daemon, &pool);
    let mut jobs = Vec::new();
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
        if let Some(sweep) = row.sweep {
            let left = match room.get(&sweep) {
                Some(left) => *left,
                None => {
                    let limit = daemon.sweep_limit(&row.id).await?;
                    let left = limit.map(|l| (l as usize).saturating_sub(running.get(&sweep).copied().unwrap_or(0)));
                    room.insert(sweep, left);
                    left
                }
            };
            match left {
                Some(0) => continue,
                Some(n) => {
                    room.insert(sweep, Some(n - 1));
                }
                None => {}
            }
        }
        let user = table.index(&row.id.user);
        jobs.push(Job { key: i, user, submission: false, priority: row.priority, seq: row.seq, device: row.device });
    }
    for a in share::assign(&pool.slots, &jobs, &table.users) {
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

/// The users as fair share sees them now: each one's GPU quota (from the daemon's users) and the slots its work
/// holds. A single-user daemon has one user without a quota, and fair share is then the plain queue order.
pub(crate) struct ShareTable {
    pub users: Vec<share::User>,
    quotas: Arc<crate::core::access::Users>,
}

impl ShareTable {
    pub fn new(daemon: &Daemon, pool: &super::slots::Snapshot) -> ShareTable {
        let mut table = ShareTable { users: Vec::new(), quotas: daemon.users() };
        for (slot, owner) in pool.slots.iter().zip(&pool.owners) {
            if let Some(owner) = owner {
                let i = table.index(owner);
                match slot.kind {
                    SlotKind::Gpu(_) => table.users[i].held_gpus += 1,
                    SlotKind::Cpu(_) => table.users[i].held_cpus += 1,
                }
            }
        }
        table
    }

    /// The index of `name` in [`ShareTable::users`], added when new.
    pub fn index(&mut self, name: &str) -> usize {
        if let Some(i) = self.users.iter().position(|u| u.name == name) {
            return i;
        }
        let gpus = self.quotas.get(name).and_then(|u| u.gpus);
        self.users.push(share::User { name: name.to_string(), gpus, ..Default::default() });
        self.users.len() - 1
    }
}

impl Daemon {
    /// Why a queued GPU session of `user` waits although a GPU may be free: its user holds its whole GPU quota
    /// ("team07 holds 2 of its 2 GPUs").
    pub fn quota_wait(&self, user: &str, device: Device) -> Option<String> {
        if device != Device::Gpu {
            return None;
        }
        let gpus = self.users().get(user).and_then(|u| u.gpus)?;
        let held_gpus = self.slots.gpus_held_by(user);
        share::quota_reason(&share::User { name: user.to_string(), gpus: Some(gpus), held_gpus, held_cpus: 0 })
    }
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
        let new = NewSession::plain("local", "emoji", Device::Cpu);
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
        let new = |dataset: &str| NewSession::plain("local", dataset, Device::Cpu);
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

    /// A searcher's `max_concurrent: 1` runs one trial of its sweep at a time although two slots are free; a single
    /// session queued after the sweep takes the other slot.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sweep_runs_at_most_max_concurrent_trials_at_once() {
        let searcher = crate::core::spec::Searcher { max_concurrent: Some(1), ..Default::default() };
        let (daemon, trials, _dir) = crate::daemon::sweeps::tests::sweep_of_three(2, searcher).await;
        let new = NewSession::plain("local", "emoji", Device::Cpu);
        let single = daemon.store.enqueue(None, &[new], |_, _| "{}".into()).await.unwrap().remove(0);
        tick(&daemon).await.unwrap();
        let mut started = Vec::new();
        for id in trials.iter().chain([&single]) {
            if daemon.store.session_required(id).await.unwrap().state != SessionState::Queued {
                started.push(id.clone());
            }
        }
        assert_eq!(started, vec![trials[0].clone(), single], "the first trial and the single session start");
        daemon.shut_down().await;
    }

    /// Three teams share four GPUs: team01 (2 GPUs) queues a burst of 30 sessions first, then team02 (1 GPU) and
    /// team03 (2 GPUs) three each. Every team gets its turn, none ever holds more than its quota, `ps` says why
    /// team01's sessions wait, and a GPU freed by team03 goes back to team03, the only team below its quota.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn quotas_hold_under_a_burst_and_fair_share_gives_each_team_its_turn() {
        use crate::core::access::token_sha256;
        let dir = tempfile::tempdir().unwrap();
        let config_file = dir.path().join("rush.yaml");
        let users: String = [("team01", "2"), ("team02", "1"), ("team03", "2")]
            .iter()
            .map(|(name, gpus)| {
                format!("  - {{name: {name}, token_sha256: {}, gpus: {gpus}}}\n", token_sha256(&format!("{name}-t")))
            })
            .collect();
        std::fs::write(&config_file, format!("users:\n{users}")).unwrap();
        let flags = Flags {
            config: Some(config_file),
            experiments: Some(dir.path().join("exp")),
            gpus: Some(vec![0, 1, 2, 3]),
            cpu_slots: Some(0),
            ..Default::default()
        };
        // four GPUs "detected": the children below never touch them
        let config = DaemonConfig::resolve(Home::new(dir.path().join("home")), flags, 4).unwrap().prepare().unwrap();
        let store = Store::open(&config.db).await.unwrap();
        // A child that runs until it is stopped: a slot stays held as by a training session.
        let program = dir.path().join("child.sh");
        std::fs::write(&program, "#!/bin/sh\nexec sleep 300\n").unwrap();
        std::fs::set_permissions(&program, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let daemon = Daemon::new(config, store, Arc::new(LocalExecutor { program }));
        let new = |user: &str| NewSession::plain(user, "emoji", Device::Gpu);
        let mut queued = Vec::new();
        for (user, n) in [("team01", 30), ("team02", 3), ("team03", 3)] {
            let burst: Vec<NewSession> = (0..n).map(|_| new(user)).collect();
            let spec = crate::core::spec::Spec { dataset: "emoji".into(), ..Default::default() };
            let home = daemon.home().clone();
            let resolve = |id: &crate::core::session::SessionId, _| super::super::resolved_json(&home, id, &spec, None);
            queued.extend(daemon.store.enqueue(None, &burst, resolve).await.unwrap());
        }
        let held = |d: &Daemon| {
            let mut by_user = std::collections::BTreeMap::new();
            for view in d.slots() {
                if let Some(id) = view.session {
                    *by_user.entry(id.split('/').next().unwrap().to_string()).or_insert(0) += 1;
                }
            }
            by_user
        };
        let quota = |user: &str| if user == "team02" { 1 } else { 2 };
        for _ in 0..5 {
            tick(&daemon).await.unwrap();
            for (user, n) in held(&daemon) {
                assert!(n <= quota(&user), "{user} holds {n} GPUs, beyond its quota");
            }
        }
        let now = held(&daemon);
        assert_eq!(now.values().sum::<i32>(), 4, "every GPU is used: {now:?}");
        assert_eq!((now["team01"], now["team02"], now["team03"]), (2, 1, 1), "each team got its turn: {now:?}");
        assert_eq!(daemon.quota_wait("team01", Device::Gpu).as_deref(), Some("team01 holds 2 of its 2 GPUs"));
        assert_eq!(daemon.quota_wait("team02", Device::Gpu).as_deref(), Some("team02 holds 1 of its 1 GPU"));
        assert_eq!(daemon.quota_wait("team03", Device::Gpu), None, "team03 is below its quota");
        assert_eq!(daemon.quota_wait("team01", Device::Cpu), None, "quotas are GPU quotas");

        // team03 stops its running session: the freed GPU goes to team03, not to team01's long queue.
        let running03 = daemon
            .slots()
            .into_iter()
            .find_map(|v| v.session.filter(|s| s.starts_with("team03/")))
            .unwrap()
            .parse()
            .unwrap();
        daemon.stop_session(&running03).await.unwrap();
        for _ in 0..3 {
            tick(&daemon).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let after = held(&daemon);
        assert_eq!((after["team01"], after["team02"], after["team03"]), (2, 1, 1), "{after:?}");
        assert!(daemon.slots().iter().all(|v| v.session.as_deref() != Some(&running03.to_string())));
        daemon.shut_down().await;
    }
}
