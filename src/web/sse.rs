//! Live updates for the dashboard over Server-Sent Events, so pages change without reloading.
//!
//! A session page's stream (`/sessions/{id}/live`) merges three sources into named events: the child's event lines
//! from the daemon's live hub (`step`, `epoch`, `checkpoint`), new lines of `train.log` read from the byte offset the
//! page was drawn at (`log`, so none is lost or shown twice), and the session's row, polled, for state changes
//! (`state`). When the session has ended and its log is drained, an `end` event closes the stream. The sessions
//! list's stream (`/sessions/live`) polls a cheap fingerprint of the store and says `changed` when it moves; the page
//! then fetches its rows and state counts again. Each stream is a task feeding a channel; it ends when the browser
//! goes away.
//!
//! Every event carries a `data:` line: a browser's `EventSource` drops an event without one (the SSE spec's dispatch
//! step), so a bare `event: changed` would never reach the page's listener.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::AppState;
use super::error::PageError;
use super::view::progress_text;
use crate::core::event::{Event, EventLine};
use crate::core::session::{SessionId, SessionState};
use crate::daemon::LiveEvent;
use crate::home::SessionDir;
use crate::store::SessionRow;

/// How often the store and the log file are looked at.
const POLL: Duration = Duration::from_millis(500);
/// How often the sessions list's fingerprint is taken.
const LIST_POLL: Duration = Duration::from_secs(2);
/// The most log bytes read per poll (a flood of output is shown in steps, never all at once).
const LOG_CHUNK: u64 = 256 * 1024;

type Tx = mpsc::Sender<Result<SseEvent, Infallible>>;

/// One named event. Its data is never empty (see the module note): an empty payload is sent as `{}`.
fn event(name: &str, data: String) -> SseEvent {
    SseEvent::default().event(name).data(if data.is_empty() { "{}".to_string() } else { data })
}

async fn send(tx: &Tx, name: &str, data: String) -> bool {
    tx.send(Ok(event(name, data))).await.is_ok()
}

fn stream(rx: mpsc::Receiver<Result<SseEvent, Infallible>>) -> impl IntoResponse {
    Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// `GET /sessions/live`: `changed` whenever sessions are queued, start, progress or end.
pub async fn sessions_live(State(state): State<AppState>) -> impl IntoResponse {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut last: Option<String> = None;
        let mut changes: u64 = 0;
        let mut tick = tokio::time::interval(LIST_POLL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = tx.closed() => return,
                _ = state.daemon.shutdown.cancelled() => return,
            }
            let now = match state.store().activity_fingerprint().await {
                // A cache build's progress changes what the rows show too.
                Ok(f) => format!("{f}|{}", state.daemon.decoding_changes()),
                Err(e) => {
                    tracing::warn!("sessions live stream: {e}");
                    continue;
                }
            };
            if last.as_ref().is_some_and(|l| *l != now) {
                changes += 1;
                if !send(&tx, "changed", json!({ "changes": changes }).to_string()).await {
                    return;
                }
            }
            last = Some(now);
        }
    });
    stream(rx)
}

#[derive(Debug, Default, Deserialize)]
pub struct LiveQuery {
    /// The log byte offset the page showed up to; new lines start here.
    log_offset: Option<u64>,
}

/// The `state` event: what the page's header and facts show (`activity`: what it waits for, or its cache build's
/// progress before its first step).
fn state_json(row: &SessionRow, activity: &str) -> String {
    let running = (row.state == SessionState::Running).then_some(row.started_at).flatten();
    let p = super::view::progress(row.epoch, row.epochs, running, 1, crate::store::now());
    json!({
        "state": row.state.as_str(),
        "terminal": row.state.is_terminal(),
        "percent": p.percent,
        "progress": progress_text(&p),
        "best": super::view::percent(row.best_val_acc),
        "reason": super::view::exit_text(row.state, row.exit_reason.as_deref()),
        "activity": activity,
    })
    .to_string()
}

/// The SSE event for one line of the child's stream, if the page shows it.
fn event_for(line: &str) -> Option<(&'static str, String)> {
    let parsed = EventLine::parse(line).ok()?;
    Some(match parsed.event {
        Event::Step { step, epoch, loss, lr, .. } => {
            ("step", json!({"step": step, "epoch": epoch, "loss": loss, "lr": lr}).to_string())
        }
        Event::Epoch { epoch, train_loss, train_acc, val_loss, val_acc, .. } => (
            "epoch",
            json!({"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                   "val_acc": val_acc})
            .to_string(),
        ),
        Event::Checkpoint { name, epoch, val_acc, .. } => {
            ("checkpoint", json!({"name": name, "epoch": epoch, "val_acc": val_acc}).to_string())
        }
        // A code session's `nsml.report`: its charts (drawn from what it reported) are redrawn.
        Event::Report { step, metrics, .. } => ("report", json!({"step": step, "metrics": metrics}).to_string()),
        _ => return None,
    })
}

/// A `checkpoint` event's data plus `saved`: the epochs the store holds now, newest first. The runner fans the line out
/// after recording the checkpoint and applying retention, so this is the list after pruning; the page offers it in the
/// fork box (after `best` and `last`).
async fn with_saved(state: &AppState, id: &SessionId, data: String) -> String {
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&data) else { return data };
    match state.store().checkpoints(id).await {
        Ok(rows) => {
            let mut epochs: Vec<i64> = rows.iter().map(|r| r.epoch).collect();
            epochs.sort_unstable_by(|a, b| b.cmp(a));
            value["saved"] = json!(epochs);
        }
        Err(e) => tracing::warn!("live stream of {id}: {e}"),
    }
    value.to_string()
}

/// The log lines appended since `offset` (whole lines only: a partial last line waits for its end), as a terminal
/// shows them: a progress bar redraws with '\r', so the text after the last one.
async fn read_log(path: &std::path::Path, offset: &mut u64) -> Vec<String> {
    let (lines, next) = super::logs::lines_from(path, *offset, LOG_CHUNK, false).await;
    *offset = next;
    lines.into_iter().map(|l| l.text.rsplit('\r').next().unwrap_or("").to_string()).collect()
}

/// `GET /sessions/{id}/live?log_offset=N`: steps, epochs, checkpoints, log lines and state changes of one session.
pub async fn session_live(
    State(state): State<AppState>,
    Path((user, dataset, n)): Path<(String, String, String)>,
    Query(q): Query<LiveQuery>,
) -> Result<impl IntoResponse, PageError> {
    let id: SessionId = format!("{user}/{dataset}/{n}").parse().map_err(|e: crate::core::session::SessionError| {
        PageError::from(crate::daemon::DaemonError::Invalid(e.to_string()))
    })?;
    let first = state.store().session_required(&id).await?;
    let log = SessionDir::new(state.home().session(&id)).log();
    let mut offset = match q.log_offset {
        Some(o) => o,
        None => tokio::fs::metadata(&log).await.map(|m| m.len()).unwrap_or(0),
    };
    let (tx, rx) = mpsc::channel(256);
    // Subscribe before reading anything, so no event falls between the two.
    let mut hub = (!first.state.is_terminal()).then(|| state.daemon.live.subscribe(&id));
    tokio::spawn(async move {
        let mut last_state = String::new();
        let mut tick = tokio::time::interval(POLL);
        loop {
            let mut check_now = false;
            tokio::select! {
                _ = tick.tick() => check_now = true,
                _ = tx.closed() => return,
                _ = state.daemon.shutdown.cancelled() => return,
                msg = async { hub.as_mut()?.recv().await.ok() }, if hub.is_some() => match msg {
                    Some(LiveEvent::Line(line)) => {
                        if let Some((name, mut data)) = event_for(&line) {
                            if name == "checkpoint" {
                                data = with_saved(&state, &id, data).await;
                            }
                            if !send(&tx, name, data).await {
                                return;
                            }
                        }
                    }
                    // The run ended, or the hub closed its channel (or we lagged): look at the store now.
                    Some(LiveEvent::Ended(_)) | None => {
                        hub = None;
                        check_now = true;
                    }
                },
            }
            if !check_now {
                continue;
            }
            for line in read_log(&log, &mut offset).await {
                if !send(&tx, "log", line).await {
                    return;
                }
            }
            let row = match state.store().session(&id).await {
                Ok(Some(row)) => row,
                Ok(None) => {
                    let _ = send(&tx, "end", "removed".into()).await;
                    return;
                }
                Err(e) => {
                    tracing::warn!("live stream of {id}: {e}");
                    continue;
                }
            };
            let now = state_json(&row, &super::api::activity_of(&state, &row));
            if now != last_state {
                if !send(&tx, "state", now.clone()).await {
                    return;
                }
                last_state = now;
            }
            if row.state.is_terminal() {
                // The runner writes its last log line as it records the end: drain once more, then close.
                tokio::time::sleep(POLL).await;
                for line in read_log(&log, &mut offset).await {
                    if !send(&tx, "log", line).await {
                        return;
                    }
                }
                let _ = send(&tx, "end", row.state.as_str().into()).await;
                return;
            }
            if hub.is_none() && row.state == SessionState::Running {
                hub = Some(state.daemon.live.subscribe(&id));
            }
        }
    });
    Ok(stream(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_events_become_named_sse_events() {
        let step = EventLine::new(
            Event::Step { step: 7, epoch: 1, loss: 2.5, lr: 0.1, img_per_s: 100.0, data_wait: 0.0 },
            0.0,
        );
        let (name, data) = event_for(&step.to_json()).unwrap();
        assert_eq!(name, "step");
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!((v["step"].as_u64(), v["loss"].as_f64()), (Some(7), Some(2.5)));
        let fin = EventLine::new(Event::Finished { epochs: 1, best_val_acc: 0.5 }, 0.0);
        assert_eq!(event_for(&fin.to_json()), None);
        assert_eq!(event_for("garbage"), None);
        let metrics = [("train__Loss".to_string(), 0.5)].into_iter().collect();
        let report = EventLine::new(Event::Report { step: 3, summary: true, metrics }, 0.0);
        let (name, data) = event_for(&report.to_json()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!((name, v["step"].as_u64(), v["metrics"]["train__Loss"].as_f64()), ("report", Some(3), Some(0.5)));
    }

    #[tokio::test]
    async fn every_event_has_a_data_line_a_browser_dispatches() {
        use axum::response::IntoResponse;
        let (tx, rx) = mpsc::channel(4);
        assert!(send(&tx, "changed", String::new()).await);
        assert!(send(&tx, "log", "a line".into()).await);
        drop(tx);
        let body = stream(rx).into_response().into_body();
        let text = String::from_utf8(axum::body::to_bytes(body, 1 << 16).await.unwrap().to_vec()).unwrap();
        assert!(text.contains("event: changed\ndata: {}\n"), "{text:?}");
        assert!(text.contains("event: log\ndata: a line\n"), "{text:?}");
    }

    #[tokio::test]
    async fn the_log_is_read_in_whole_lines_from_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.log");
        std::fs::write(&path, "one\ntwo\nthr").unwrap();
        let mut offset = 0;
        assert_eq!(read_log(&path, &mut offset).await, vec!["one", "two"]);
        assert_eq!(offset, 8);
        assert!(read_log(&path, &mut offset).await.is_empty(), "a partial line waits");
        std::fs::write(&path, "one\ntwo\nthree\r50%\r100%\n").unwrap();
        assert_eq!(read_log(&path, &mut offset).await, vec!["100%"]);
        std::fs::write(&path, "new\n").unwrap();
        assert_eq!(read_log(&path, &mut offset).await, vec!["new"], "a replaced file starts over");
    }
}
