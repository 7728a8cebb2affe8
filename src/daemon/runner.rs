//! The runner: one task per running session. It writes `spec.yaml`, starts the child through the executor, reads its
//! event lines (stored, or for a cache build's progress kept in memory until training starts; fanned out; checkpoint
//! retention applied), appends its stderr to `train.log`, stops it when asked (SIGTERM, then SIGKILL after the grace
//! period) and records the final state the pure `core::outcome` decides.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::executor::{Launch, StopSignal};
use super::live::LiveEvent;
use super::{Daemon, checkpoints};
use crate::core::event::{Event, EventLine};
use crate::core::outcome::{self, Exit, Observed};
use crate::core::progress::DecodeProgress;
use crate::core::queue::SlotKind;
use crate::core::session::{SessionId, SessionState};
use crate::core::spec::{ResolvedSpec, SearchMetric};
use crate::home::SessionDir;
use crate::store::{CheckpointRow, MetricRow, SessionRow};

/// Lines of stderr kept for a failure's reason.
const TAIL_LINES: usize = 20;

/// Runs one session to its end and records the final state.
pub async fn run(daemon: Arc<Daemon>, row: SessionRow, slot: SlotKind, stop: CancellationToken) {
    let id = row.id.clone();
    let (mut state, mut reason, rung) = match run_inner(&daemon, &row, slot, &stop).await {
        Ok((o, rung)) => (o.state, o.reason, rung),
        Err(reason) => (SessionState::Failed, Some(reason), None),
    };
    daemon.metrics.flush().await;
    daemon.record_decoding(&id, None);
    // A sweep's trial that paused at a rung (`waiting` comes only with a `paused` event): its result there is
    // recorded before it waits.
    if let (SessionState::Waiting, Some(RungReached { epoch, metric })) = (state, rung)
        && let Err(e) = daemon.record_rung(&row, epoch, metric).await
    {
        state = SessionState::Failed;
        reason = Some(format!("its result at the rung after epoch {epoch} was not recorded: {e}"));
    }
    match daemon.store.transition(&id, state, None, reason.as_deref()).await {
        Ok(_) => {
            tracing::info!("session {id} {state}{}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())
        }
        Err(e) => tracing::error!("session {id}: recording {state}: {e}"),
    }
    daemon.live.end(&id, state);
    // Its sweep's rungs may decide now: this result arrived, or one trial fewer is left to report.
    if let Some(sweep) = row.sweep.filter(|_| Daemon::searcher_of(&row).is_some()) {
        if let Err(e) = daemon.decide_sweep(sweep).await {
            tracing::error!("sweep {sweep}: deciding its rungs: {e}");
        }
    }
}

/// Where a sweep's trial paused: the rung's epoch and its searcher's metric there.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RungReached {
    epoch: u32,
    metric: Option<f64>,
}

/// The run itself; an `Err` is a reason to fail the session before or while starting it.
async fn run_inner(
    daemon: &Daemon,
    row: &SessionRow,
    slot: SlotKind,
    stop: &CancellationToken,
) -> Result<(outcome::Outcome, Option<RungReached>), String> {
    let id = &row.id;
    let resolved = row.resolved_spec().map_err(|e| e.to_string())?;
    let dir = SessionDir::new(daemon.home().session(id));
    let mut log = prepare(&dir, &resolved).await?;
    let line =
        format!("[rush] {id} starting on {slot} at {} UTC\n", crate::core::format::datetime(crate::store::now()));
    let _ = log.write_all(line.as_bytes()).await;

    let launch = Launch { session: id.clone(), dir: dir.root().to_path_buf(), slot, shutdown: daemon.shutdown.clone() };
    let mut child = daemon.executor.launch(&launch).map_err(|e| e.to_string())?;
    if let Err(e) = daemon.store.set_child(id, child.id.pid, child.id.start).await {
        tracing::error!("{id}: recording pid: {e}");
    }
    let mut seen = Observed::default();
    let mut state = EventState::default();
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut kill_at: Option<tokio::time::Instant> = None;
    let (mut events_open, mut log_open) = (true, true);
    let shutdown = daemon.shutdown.clone();
    let exit = loop {
        tokio::select! {
            line = child.events.next(), if events_open => match line {
                Some(Ok(line)) => handle_line(daemon, id, &dir, &resolved, &line, &mut seen, &mut state, &mut log).await,
                Some(Err(e)) => tracing::warn!("{id}: reading events: {e}"),
                None => events_open = false,
            },
            line = child.log.next(), if log_open => match line {
                Some(Ok(line)) => {
                    let _ = log.write_all(format!("{line}\n").as_bytes()).await;
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
                Some(Err(e)) => tracing::warn!("{id}: reading stderr: {e}"),
                None => log_open = false,
            },
            _ = stop.cancelled(), if kill_at.is_none() && !seen.shutdown => {
                seen.stop_requested = true;
                let _ = log.write_all(b"[rush] stop requested: SIGTERM\n").await;
                child.control.signal(StopSignal::Term);
                kill_at = Some(tokio::time::Instant::now() + daemon.config.stop_grace);
            }
            _ = shutdown.cancelled(), if kill_at.is_none() && !seen.stop_requested => {
                seen.shutdown = true;
                let _ = log.write_all(b"[rush] daemon shutting down: SIGTERM\n").await;
                child.control.signal(StopSignal::Term);
                kill_at = Some(tokio::time::Instant::now() + daemon.config.stop_grace);
            }
            _ = sleep_until(kill_at) => {
                let _ = log.write_all(b"[rush] grace period over: SIGKILL\n").await;
                child.control.signal(StopSignal::Kill);
                kill_at = Some(tokio::time::Instant::now() + std::time::Duration::from_secs(3600));
            }
            exit = child.control.wait() => break exit,
        }
    };
    // The child is gone: read what it left in the pipes (bounded, in case a grandchild holds them open).
    let drain = async {
        while events_open {
            match child.events.next().await {
                Some(Ok(line)) => {
                    handle_line(daemon, id, &dir, &resolved, &line, &mut seen, &mut state, &mut log).await
                }
                Some(Err(_)) | None => events_open = false,
            }
        }
        while log_open {
            match child.log.next().await {
                Some(Ok(line)) => {
                    let _ = log.write_all(format!("{line}\n").as_bytes()).await;
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
                Some(Err(_)) | None => log_open = false,
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
    seen.stderr_tail = tail.into_iter().collect();
    let decided = outcome::decide(exit, &seen, resolved.spec.resume);
    let exit_text = match exit {
        Exit::Code(c) => format!("exit code {c}"),
        Exit::Signal(s) => format!("signal {s}"),
        Exit::Unknown => "unknown exit".into(),
        Exit::Cancelled => "cancelled".into(),
        Exit::Interrupted => "interrupted by the cluster".into(),
        Exit::Detached => "detached".into(),
    };
    let _ = log.write_all(format!("[rush] {id} ended ({exit_text}): {}\n", decided.state).as_bytes()).await;
    let _ = log.flush().await;
    let rung = seen.paused.map(|epoch| {
        let metric = resolved.spec.searcher.as_ref().and_then(|s| state.metric(epoch, s.metric));
        RungReached { epoch, metric }
    });
    Ok((decided, rung))
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Creates the session folder, writes `spec.yaml` (again, identically, on a resume) and opens `train.log` to append.
async fn prepare(dir: &SessionDir, resolved: &ResolvedSpec) -> Result<tokio::fs::File, String> {
    let io = |what: &std::path::Path, e: std::io::Error| format!("{}: {e}", what.display());
    tokio::fs::create_dir_all(dir.root()).await.map_err(|e| io(dir.root(), e))?;
    let yaml = resolved.to_yaml().map_err(|e| e.to_string())?;
    let spec_path = dir.spec();
    tokio::task::spawn_blocking(move || crate::disk::write_atomic(&spec_path, yaml.as_bytes()))
        .await
        .map_err(|e| format!("writing spec.yaml: {e}"))?
        .map_err(|e| e.to_string())?;
    tokio::fs::OpenOptions::new().create(true).append(true).open(dir.log()).await.map_err(|e| io(&dir.log(), e))
}

/// What the runner remembers between events.
#[derive(Debug, Default)]
struct EventState {
    /// The last step seen (epoch metrics are stored at it).
    step: u64,
    /// (train_loss, val_loss) per ended epoch, for the checkpoint rows.
    losses: HashMap<u32, (f64, f64)>,
    /// (train_acc, val_acc) per ended epoch, for a searcher's rung.
    accuracies: HashMap<u32, (f64, f64)>,
}

impl EventState {
    /// An ended epoch's value of a searcher's metric.
    fn metric(&self, epoch: u32, metric: SearchMetric) -> Option<f64> {
        let (train_loss, val_loss) = self.losses.get(&epoch).copied()?;
        let (train_acc, val_acc) = self.accuracies.get(&epoch).copied()?;
        Some(match metric {
            SearchMetric::ValAcc => val_acc,
            SearchMetric::ValLoss => val_loss,
            SearchMetric::TrainAcc => train_acc,
            SearchMetric::TrainLoss => train_loss,
        })
    }
}

/// Stores one event line, fans it out and acts on it. A bad line is logged, never fatal.
#[allow(clippy::too_many_arguments)]
async fn handle_line(
    daemon: &Daemon,
    id: &SessionId,
    dir: &SessionDir,
    resolved: &ResolvedSpec,
    line: &str,
    seen: &mut Observed,
    state: &mut EventState,
    log: &mut tokio::fs::File,
) {
    let line = line.trim();
    if line.is_empty() {
        return;
    }
    let parsed = match EventLine::parse(line) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("{id}: {e}");
            let _ = log.write_all(format!("[rush] ignored event line: {e}\n").as_bytes()).await;
            return;
        }
    };
    let t = parsed.t;
    let metric = |step: u64, epoch: u32, name: &str, value: f64| MetricRow {
        session: id.to_string(),
        step: step as i64,
        epoch: epoch as i64,
        name: name.to_string(),
        value,
        t,
    };
    let result = match &parsed.event {
        Event::Step { step, epoch, loss, lr, img_per_s, data_wait } => {
            state.step = *step;
            daemon.metrics.send(vec![
                metric(*step, *epoch, "loss", *loss),
                metric(*step, *epoch, "lr", *lr),
                metric(*step, *epoch, "img_per_s", *img_per_s),
                metric(*step, *epoch, "data_wait", *data_wait),
            ]);
            daemon.live.publish(id, LiveEvent::Line(Arc::from(line)));
            return;
        }
        Event::Decoding { done, total, seconds } => {
            // Kept in memory only, the newest: what `ps` and the dashboard show until the child starts training.
            daemon.record_decoding(id, Some(DecodeProgress { done: *done, total: *total, seconds: *seconds }));
            daemon.live.publish(id, LiveEvent::Line(Arc::from(line)));
            return;
        }
        Event::Epoch { epoch, train_loss, train_acc, val_loss, val_acc, seconds, data_wait, data_wait_s } => {
            let s = state.step;
            let mut rows = vec![
                metric(s, *epoch, "train_loss", *train_loss),
                metric(s, *epoch, "train_acc", *train_acc),
                metric(s, *epoch, "val_loss", *val_loss),
                metric(s, *epoch, "val_acc", *val_acc),
                metric(s, *epoch, "epoch_seconds", *seconds),
                metric(s, *epoch, "epoch_data_wait", *data_wait),
            ];
            rows.extend(data_wait_s.map(|w| metric(s, *epoch, "epoch_data_wait_s", w)));
            daemon.metrics.send(rows);
            state.losses.insert(*epoch, (*train_loss, *val_loss));
            state.accuracies.insert(*epoch, (*train_acc, *val_acc));
            daemon.store.set_progress(id, *epoch, *val_acc).await
        }
        Event::Checkpoint { name, path, epoch, val_acc, bytes, score, best_by } => {
            let (train_loss, val_loss) = state.losses.get(epoch).copied().unzip();
            let row = CheckpointRow {
                session: id.to_string(),
                epoch: *epoch as i64,
                name: name.clone(),
                path: checkpoints::absolute(dir, path).display().to_string(),
                val_acc: *val_acc,
                val_loss,
                train_loss,
                bytes: *bytes as i64,
                created_at: t,
                score: *score,
                best_by: best_by.clone(),
            };
            match daemon.store.add_checkpoint(&row).await {
                Ok(()) => checkpoints::retain(&daemon.store, dir, id, &resolved.spec.checkpoints).await.map(|_| ()),
                Err(e) => Err(e),
            }
        }
        Event::Finished { .. } => {
            seen.finished = true;
            Ok(())
        }
        Event::Paused { epoch } => {
            seen.paused = Some(*epoch);
            Ok(())
        }
        Event::Failed { reason } => {
            seen.failed = Some(reason.clone());
            Ok(())
        }
        Event::Started { .. } => {
            daemon.record_decoding(id, None);
            Ok(())
        }
        Event::Report { step, metrics, .. } => {
            // A code session's metrics, under its own names and, where one stands for a rush metric, under that too.
            let epoch = u32::try_from(*step).unwrap_or(u32::MAX);
            let mut rows = Vec::new();
            for (name, value) in metrics.iter().filter(|(_, v)| v.is_finite()) {
                rows.push(metric(*step, epoch, name, *value));
                if let Some(standard) = crate::core::event::standard_metric(name) {
                    rows.push(metric(*step, epoch, standard, *value));
                }
            }
            daemon.metrics.send(rows);
            let standard = |want: &str| {
                metrics
                    .iter()
                    .find(|(n, v)| v.is_finite() && crate::core::event::standard_metric(n) == Some(want))
                    .map(|(_, v)| *v)
            };
            if let (Some(tl), Some(vl)) = (standard("train_loss"), standard("val_loss")) {
                state.losses.insert(epoch, (tl, vl));
            }
            match standard("val_acc") {
                Some(acc) => daemon.store.set_progress(id, epoch, acc).await,
                None => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::error!("{id}: storing {} event: {e}", parsed.event.name());
    }
    // Fanned out once acted on: a watcher that reads the store on a checkpoint event finds the new row and none that
    // retention deleted for it.
    daemon.live.publish(id, LiveEvent::Line(Arc::from(line)));
    if let Err(e) = daemon.store.add_event(id, t, parsed.event.name(), line).await {
        tracing::error!("{id}: storing event: {e}");
    }
}
