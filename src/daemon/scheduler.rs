//! The scheduler loop: on each wake-up (and every few seconds) one `tick` leases free slots to queued sessions, as the
//! pure `core::queue` decides, and spawns a runner for each. Errors are logged and the loop goes on.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Daemon, runner};
use crate::core::queue::{self, Slot, Waiting};
use crate::core::session::SessionState;

/// A tick happens at least this often, even without a wake-up.
const IDLE_TICK: Duration = Duration::from_secs(2);

pub async fn run(daemon: Arc<Daemon>) {
    loop {
        if daemon.shutdown.is_cancelled() {
            break;
        }
        if let Err(e) = tick(&daemon).await {
            tracing::error!("scheduler: {e}");
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
    // The light queue (no specs, off the writer); a session's full row is read only when it gets a slot.
    let queued = daemon.store.queue().await?;
    if queued.is_empty() {
        return Ok(());
    }
    let (slots, leased): (Vec<Slot>, Vec<bool>) = {
        let pool = daemon.pool.lock().unwrap_or_else(|e| e.into_inner());
        let slots = daemon
            .config
            .slots
            .iter()
            .zip(pool.busy.iter().zip(&pool.submissions))
            .map(|(&kind, (who, submission))| Slot { kind, busy: who.is_some() || submission.is_some() })
            .collect();
        if pool.submission_waiting {
            // A waiting submission takes the next free slot; sessions start on the tick after it.
            return Ok(());
        }
        // A queued session can hold a slot: a Slurm job that waits in Slurm's queue has its runner already.
        (slots, queued.iter().map(|row| pool.running.contains_key(&row.id)).collect())
    };
    let mut waiting = Vec::new();
    for (i, row) in queued.iter().enumerate() {
        if leased[i] {
            continue;
        }
        if let Some(reason) = queue::refusal(row.device, &slots) {
            daemon.store.transition(&row.id, SessionState::Failed, None, Some(&reason)).await?;
            tracing::warn!("session {} refused: {reason}", row.id);
            continue;
        }
        waiting.push(Waiting { key: i, priority: row.priority, seq: row.seq, device: row.device });
    }
    for a in queue::assign(&slots, &waiting) {
        if daemon.shutdown.is_cancelled() {
            break;
        }
        let row = match daemon.store.session(&queued[a.key].id).await? {
            Some(row) if row.state == SessionState::Queued => row,
            // Stopped or removed since the queue was read.
            _ => continue,
        };
        let kind = slots[a.slot].kind;
        let stop = CancellationToken::new();
        {
            // Registered before the state changes, so a concurrent `stop` always finds the runner's token.
            let mut pool = daemon.pool.lock().unwrap_or_else(|e| e.into_inner());
            pool.busy[a.slot] = Some(row.id.clone());
            pool.running.insert(row.id.clone(), stop.clone());
        }
        if let Err(e) = daemon.store.transition(&row.id, SessionState::Running, Some(&kind.to_string()), None).await {
            // Stopped or removed meanwhile: give the slot back.
            tracing::info!("not starting {}: {e}", row.id);
            release(daemon, a.slot, &row.id);
            continue;
        }
        let d = daemon.clone();
        let slot_index = a.slot;
        daemon.runners.spawn(async move {
            let id = row.id.clone();
            let inner = tokio::spawn(runner::run(d.clone(), row, kind, stop));
            if let Err(e) = inner.await {
                // A runner bug must not leave the session running forever or the slot taken.
                tracing::error!("runner of {id} crashed: {e}");
                let reason = format!("the daemon's runner crashed: {e}");
                if let Err(e) = d.store.transition(&id, SessionState::Failed, None, Some(&reason)).await {
                    tracing::error!("{id}: {e}");
                }
                d.live.end(&id, SessionState::Failed);
            }
            release(&d, slot_index, &id);
            d.wake();
        });
    }
    Ok(())
}

fn release(daemon: &Daemon, slot: usize, id: &crate::core::session::SessionId) {
    let mut pool = daemon.pool.lock().unwrap_or_else(|e| e.into_inner());
    if pool.busy.get(slot).and_then(|s| s.as_ref()) == Some(id) {
        pool.busy[slot] = None;
    }
    pool.running.remove(id);
}
