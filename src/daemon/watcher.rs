//! The watcher: notify (debounced, recursive) on `experiments/`, feeding the intake task.
//!
//! notify runs its own threads; its handler only forwards paths (or "rescan") down a channel, and one intake task
//! handles them in order. A rescan happens at start-up, whenever notify reports that events were lost (inotify's
//! queue overflowed) or failed, when a folder appears (files moved in with it raise no events of their own), and once
//! a minute as a safety net. Rescans are cheap: each file is only read and hashed unless its content is new.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::sync::mpsc;

use super::intake::{intake_file, is_spec_file, scan};
use super::{Daemon, DaemonError};

/// How long notify gathers events for one file before reporting it.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// The safety-net rescan interval.
const RESCAN_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
enum Job {
    File(PathBuf),
    Rescan,
}

/// Starts watching the experiments folder; the first job is a full scan.
pub fn start(daemon: Arc<Daemon>) -> Result<(), DaemonError> {
    let (tx, rx) = mpsc::unbounded_channel::<Job>();
    let _ = tx.send(Job::Rescan);
    let handler_tx = tx.clone();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| match result {
        Ok(events) => {
            for event in events {
                if event.need_rescan() {
                    let _ = handler_tx.send(Job::Rescan);
                    continue;
                }
                if matches!(event.kind, EventKind::Remove(_) | EventKind::Access(_)) {
                    continue;
                }
                for path in &event.paths {
                    if path.is_dir() {
                        let _ = handler_tx.send(Job::Rescan);
                    } else if is_spec_file(path) {
                        let _ = handler_tx.send(Job::File(path.clone()));
                    }
                }
            }
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!("watcher: {e}; rescanning");
            }
            let _ = handler_tx.send(Job::Rescan);
        }
    })
    .map_err(|e| DaemonError::Invalid(format!("cannot start the file watcher: {e}")))?;
    debouncer
        .watch(&daemon.config.experiments, RecursiveMode::Recursive)
        .map_err(|e| DaemonError::Invalid(format!("cannot watch {}: {e}", daemon.config.experiments.display())))?;
    tokio::spawn(run(daemon, rx, tx, debouncer));
    Ok(())
}

async fn run<D: Send + 'static>(
    daemon: Arc<Daemon>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    tx: mpsc::UnboundedSender<Job>,
    debouncer: D,
) {
    let mut tick = tokio::time::interval(RESCAN_EVERY);
    tick.tick().await;
    loop {
        let job = tokio::select! {
            _ = daemon.shutdown.cancelled() => break,
            _ = tick.tick() => Job::Rescan,
            job = rx.recv() => match job {
                Some(job) => job,
                None => break,
            },
        };
        match job {
            Job::Rescan => {
                // Coalesce: a burst of overflow reports needs one scan, and a file job taken here is covered by it.
                while let Ok(Job::Rescan) = rx.try_recv() {}
                scan(&daemon).await;
            }
            Job::File(path) => {
                if let Err(e) = intake_file(&daemon, &path).await {
                    tracing::error!("{}: {e}; rescanning later", path.display());
                    let _ = tx.send(Job::Rescan);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    drop(debouncer);
}
