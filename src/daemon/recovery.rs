//! Start-up reconciliation: "running" is never believed from disk. A session the store says is running belonged to a
//! daemon that died; its child (if it outlived the parent-death signal) is found by pid and start time and killed, so
//! there are never two writers for one session folder. Its checkpoint rows are squared with the files, metrics of
//! epochs it will train again are dropped, and it is queued again (`resume: true`: the trainer continues from its last
//! checkpoint) or marked interrupted. A running submission's `rush infer` child is killed the same way before the
//! submission goes back to the queue, so a member is never inferred twice side by side.

use std::time::Duration;

use super::launcher::{kill_stale, recorded};
use super::{Daemon, DaemonError, checkpoints};
use crate::core::event::{Event, EventLine};
use crate::core::session::{SessionId, SessionState};
use crate::home::SessionDir;
use crate::store::{MetricRow, SessionFilter};

/// What reconciliation did, for the log and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub requeued: Vec<String>,
    pub interrupted: Vec<String>,
    pub killed: Vec<u32>,
    /// Submissions that were running, queued again.
    pub submissions: u64,
}

pub async fn reconcile(daemon: &Daemon) -> Result<Report, DaemonError> {
    let mut report = Report::default();
    for row in daemon.store.sessions_in(SessionState::Running).await? {
        let id = row.id.clone();
        let slurm = daemon.store.slurm_record(&id).await?;
        if slurm.attempt > 0 {
            // Its Slurm job outlives the daemon: queue the session so the executor re-attaches to the job (or finds
            // it by name) and catches up on its events from where they were read; nothing is killed or resubmitted.
            let dir = SessionDir::new(daemon.home().session(&id));
            let read = last_epoch_before(&dir, slurm.events_offset).await;
            restore_epoch_metrics(daemon, &dir, &id, read).await?;
            let reason = "the daemon restarted; re-attaching to its Slurm job";
            daemon.store.transition(&id, SessionState::Queued, None, Some(reason)).await?;
            report.requeued.push(id.to_string());
            continue;
        }
        if let Some(child) = recorded(row.pid, row.pid_start)
            && kill_stale(child, Duration::from_secs(10)).await
        {
            tracing::warn!("killed a training child left by the previous daemon: {id} (pid {})", child.pid);
            report.killed.push(child.pid);
        }
        let dir = SessionDir::new(daemon.home().session(&id));
        checkpoints::reconcile(&daemon.store, &dir, &id).await?;
        let resume = row.resolved_spec().map(|r| r.spec.resume).unwrap_or(false);
        if resume {
            let last = daemon.store.checkpoints(&id).await?.iter().map(|c| c.epoch).max().unwrap_or(0);
            daemon.store.delete_metrics_after(&id, last).await?;
            restore_epoch_metrics(daemon, &dir, &id, last).await?;
            if daemon.rung_missed(&row, last).await? {
                let reason = format!("the daemon restarted; reached a rung at epoch {last}; waits for the sweep");
                daemon.store.transition(&id, SessionState::Waiting, None, Some(&reason)).await?;
                report.requeued.push(id.to_string());
                continue;
            }
            let reason = if last > 0 {
                format!("the daemon restarted; resumes from checkpoint {last}")
            } else {
                "the daemon restarted; starts again (no checkpoint yet)".to_string()
            };
            daemon.store.transition(&id, SessionState::Queued, None, Some(&reason)).await?;
            report.requeued.push(id.to_string());
        } else {
            let reason = "the daemon restarted while it ran (resume: false)";
            daemon.store.transition(&id, SessionState::Interrupted, None, Some(reason)).await?;
            report.interrupted.push(id.to_string());
        }
    }
    for (submission, pid, start) in daemon.store.running_submission_children().await? {
        if let Some(child) = recorded(pid, start)
            && kill_stale(child, Duration::from_secs(10)).await
        {
            tracing::warn!(
                "killed an inference child left by the previous daemon: submission {submission} (pid {})",
                child.pid
            );
            report.killed.push(child.pid);
        }
    }
    report.submissions = daemon.store.requeue_running_submissions().await?;
    if report.submissions > 0 {
        tracing::info!("{} interrupted submission(s) queued again", report.submissions);
    }
    // A deletion cut short (files gone, row not yet) can have happened in any session.
    for row in daemon.store.sessions(&SessionFilter { all: true, ..Default::default() }).await? {
        let dir = SessionDir::new(daemon.home().session(&row.id));
        for c in daemon.store.checkpoints(&row.id).await? {
            if !std::path::Path::new(&c.path).exists() {
                checkpoints::delete(&daemon.store, &dir, &c).await?;
            }
        }
    }
    if !report.requeued.is_empty() || !report.interrupted.is_empty() {
        tracing::info!(
            "reconciled sessions left running: queued again {:?}, interrupted {:?}",
            report.requeued,
            report.interrupted
        );
    }
    Ok(report)
}

/// The last epoch whose `epoch` event lies in the first `offset` bytes of `events.jsonl` (the part already read).
async fn last_epoch_before(dir: &SessionDir, offset: u64) -> i64 {
    let Ok(bytes) = tokio::fs::read(dir.events()).await else { return 0 };
    let read = &bytes[..bytes.len().min(offset as usize)];
    String::from_utf8_lossy(read)
        .lines()
        .filter_map(|line| match EventLine::parse(line).ok()?.event {
            Event::Epoch { epoch, .. } => Some(epoch as i64),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// Epoch metrics of epochs up to `last` that the child reported (in `events.jsonl`) but the store never committed
/// (the batch in flight when the daemon died): inserted from the file, so a resumed session keeps every epoch's row.
async fn restore_epoch_metrics(
    daemon: &Daemon,
    dir: &SessionDir,
    id: &SessionId,
    last: i64,
) -> Result<(), DaemonError> {
    let Ok(text) = tokio::fs::read_to_string(dir.events()).await else { return Ok(()) };
    let have: std::collections::BTreeSet<i64> =
        daemon.store.metrics(id, Some("val_acc")).await?.iter().map(|m| m.epoch).collect();
    let mut step = 0u64;
    let mut found = std::collections::BTreeMap::new();
    for line in text.lines() {
        let Ok(parsed) = EventLine::parse(line) else { continue };
        match parsed.event {
            Event::Step { step: s, .. } => step = s,
            Event::Epoch { epoch, train_loss, train_acc, val_loss, val_acc, seconds, data_wait, .. }
                if (epoch as i64) <= last && !have.contains(&(epoch as i64)) =>
            {
                let values = [
                    ("train_loss", train_loss),
                    ("train_acc", train_acc),
                    ("val_loss", val_loss),
                    ("val_acc", val_acc),
                    ("epoch_seconds", seconds),
                    ("epoch_data_wait", data_wait),
                ];
                let rows: Vec<MetricRow> = values
                    .iter()
                    .map(|(name, value)| MetricRow {
                        session: id.to_string(),
                        step: step as i64,
                        epoch: epoch as i64,
                        name: name.to_string(),
                        value: *value,
                        t: parsed.t,
                    })
                    .collect();
                found.insert(epoch, rows);
            }
            _ => {}
        }
    }
    let rows: Vec<MetricRow> = found.into_values().flatten().collect();
    if !rows.is_empty() {
        tracing::info!("{id}: restored {} epoch metric rows from events.jsonl", rows.len());
        daemon.store.insert_metrics(&rows).await?;
    }
    Ok(())
}
