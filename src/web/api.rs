//! The JSON API the CLI (and later the dashboard) talks to. Reads go to the store; changes go through the daemon,
//! which stays the database's only writer. Errors are `{"error": "..."}` with a fitting status; internals are logged.
//! That holds for every error under `/api`: axum's own rejections (a body that is not JSON or lacks a field, a path or
//! query value of the wrong type) and unknown routes are rewritten into that body by [`json_errors`], and the token
//! guard answers `/api` requests the same way.
//!
//! Routes (a session is `/{user}/{dataset}/{n}`, as its id reads):
//! `GET /info`, `GET /sessions?all=&dataset=`, `GET|DELETE /sessions/{id}`, `POST /sessions/{id}/stop`,
//! `POST /sessions/{id}/fork`, `GET /sessions/{id}/logs?follow=`, `GET /sessions/{id}/events` (server-sent events),
//! `GET /sessions/{id}/metrics?name=`, `GET /sessions/{id}/checkpoints`, `DELETE /sessions/{id}/checkpoints/{name}`,
//! `GET /specs?path=`, `GET /specs/rejected`, `GET /datasets`, `POST /datasets/{name}`; the submissions' routes
//! (`super::submissions`) and the analysis views' (`super::analysis`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use serde::{Deserialize, Serialize};

use super::AppState;
pub use super::error::{ApiError, ErrorBody};
use crate::core::access::Caller;
use crate::core::session::{SessionId, SessionState};
use crate::daemon::LiveEvent;
use crate::daemon::SlotView;
use crate::daemon::{DatasetStatus, Registration};
use crate::store::{CheckpointRow, DatasetRow, MetricRow, SessionFilter, SessionRow, SpecRow};

type ApiResult<T> = Result<Json<T>, ApiError>;

/// `GET /info`: what the CLI needs to know of the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Info {
    pub version: String,
    pub home: String,
    /// The watched intake folder (absolute).
    pub experiments: String,
    /// Who asks: the user its token names on a shared daemon, else the daemon's own user.
    pub user: String,
    /// Whether that user sees and stops everyone's sessions (always, on a single-user daemon).
    #[serde(default)]
    pub admin: bool,
    pub slots: Vec<SlotView>,
    pub pid: u32,
    /// When the daemon started (seconds since the Unix epoch).
    #[serde(default)]
    pub started_at: f64,
    /// A submission waiting for a slot: it takes the next free one, before any queued session.
    #[serde(default)]
    pub waiting_submission: Option<i64>,
}

/// A session as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionView {
    pub id: String,
    pub state: SessionState,
    /// `gpu` or `cpu` (with `resources.gpus: auto` resolved when it was queued).
    pub device: String,
    pub slot: Option<String>,
    /// 1 = the next to run; only for queued sessions.
    pub position: Option<usize>,
    pub memo: String,
    pub priority: i32,
    pub created: f64,
    pub started: Option<f64>,
    pub finished: Option<f64>,
    pub exit_reason: Option<String>,
    pub epoch: Option<i64>,
    pub epochs: i64,
    pub best_val_acc: Option<f64>,
    pub pid: Option<i64>,
    pub fork_of: Option<String>,
    /// The spec file it came from (the points of one sweep share it); none for a fork.
    #[serde(default)]
    pub spec_id: Option<i64>,
    /// The sweep it is a trial of (the sessions queued together from one sweep share it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<i64>,
    /// A trial of a sweep with a searcher: `k/R`, the rung it has reached of its run's `R` rungs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rung: Option<String>,
    /// A running session: the seconds its run has left at the pace of its steps so far.
    #[serde(default)]
    pub eta: Option<f64>,
    /// A queued session: what it waits for besides its turn ("waiting for dataset emoji to register").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// A running session before its first step: how far the build of its decoded-image cache is ("decoding 412,000
    /// of 700,000 images (3,200 img/s, ETA 1m 30s)").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// A code session's summary: the metrics of its latest `nsml.report(summary=True, ...)` (`train__Loss=0.49
    /// valid__Accuracy=0.62`), NSML's Summary column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The resolved spec.
    pub spec: serde_json::Value,
}

impl SessionView {
    pub fn new(row: SessionRow, position: Option<usize>) -> Self {
        let resolved = row.resolved_spec().ok();
        let rung = resolved.as_ref().and_then(|r| row.rung_label_of(&r.spec));
        let spec = resolved.and_then(|r| serde_json::to_value(r).ok()).unwrap_or_default();
        SessionView {
            sweep: row.sweep,
            rung,
            id: row.id.to_string(),
            state: row.state,
            device: row.device.to_string(),
            slot: row.slot,
            position,
            memo: row.memo,
            priority: row.priority,
            created: row.queued_at,
            started: row.started_at,
            finished: row.finished_at,
            exit_reason: row.exit_reason,
            epoch: row.epoch,
            epochs: row.epochs,
            best_val_acc: row.best_val_acc,
            pid: row.pid,
            fork_of: row.fork_of,
            spec_id: row.spec_id,
            eta: None,
            waiting: None,
            progress: None,
            summary: None,
            spec,
        }
    }
}

/// A code session's summary reports, oldest first: (step, `name=value ...`). Empty for a built-in session.
pub async fn summaries(store: &crate::store::Store, row: &SessionRow) -> Vec<(u64, String)> {
    use crate::core::event::{Event, EventLine};
    if !row.resolved_spec().is_ok_and(|r| r.spec.is_code()) {
        return vec![];
    }
    let Ok(events) = store.events(&row.id).await else { return vec![] };
    events
        .into_iter()
        .filter(|(_, kind, _)| kind == "report")
        .filter_map(|(_, _, body)| match EventLine::parse(&body).ok()?.event {
            Event::Report { step, summary: true, metrics } if !metrics.is_empty() => {
                let text: Vec<String> = metrics.iter().map(|(n, v)| format!("{n}={}", significant(*v))).collect();
                Some((step, text.join(" ")))
            }
            _ => None,
        })
        .collect()
}

/// A reported value, short: 4 significant digits.
fn significant(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e9 { format!("{v}") } else { format!("{v:.4}") }
}

/// The seconds a running session's run has left: the steps still to go at the pace of this run's steps so far
/// (`core::progress`), from its `started` event and its newest step. `None` for a session that is not running or
/// has made no step in this run yet.
pub async fn eta_of(store: &crate::store::Store, row: &SessionRow, now: f64) -> Option<f64> {
    use crate::core::event::{Event, EventLine};
    if row.state != SessionState::Running {
        return None;
    }
    let (started_t, body) = store.last_event(&row.id, "started").await.ok()??;
    let Event::Started { steps_per_epoch, epochs, start_epoch, .. } = EventLine::parse(&body).ok()?.event else {
        return None;
    };
    let (step, t) = store.last_step(&row.id).await.ok()??;
    if t < started_t {
        return None;
    }
    let first = u64::from(start_epoch.saturating_sub(1)) * steps_per_epoch;
    let eta = crate::core::progress::eta_seconds(
        first,
        step.max(0) as u64,
        u64::from(epochs) * steps_per_epoch,
        t - started_t,
    )?;
    Some((eta - (now - t).max(0.0)).max(0.0))
}

/// What a queued session waits for besides its turn ("waiting for dataset emoji to register"), or what a running one
/// does before it starts training (its cache build's progress, [`Daemon::decoding`]); "" for neither. The API's
/// session view, the dashboard's sessions list and session page show it.
///
/// [`Daemon::decoding`]: crate::daemon::Daemon::decoding
pub fn activity_of(state: &AppState, row: &SessionRow) -> String {
    waiting_of(state, row).or_else(|| progress_of(state, row)).unwrap_or_default()
}

fn waiting_of(state: &AppState, row: &SessionRow) -> Option<String> {
    if row.state != SessionState::Queued {
        return None;
    }
    state.daemon.dataset_wait(&row.id.dataset).or_else(|| state.daemon.quota_wait(&row.id.user, row.device))
}

fn progress_of(state: &AppState, row: &SessionRow) -> Option<String> {
    (row.state == SessionState::Running).then(|| state.daemon.decoding(&row.id).map(|p| p.line())).flatten()
}

/// A dataset as `GET /datasets` lists it: registered, with its sizes; registering, while the daemon reads its folder
/// (sessions naming it wait); or failed, with the error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetView {
    pub name: String,
    pub state: DatasetState,
    /// Why its registration failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When its registration began (while registering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<f64>,
    /// The dataset folder (registered).
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub train_images: Option<i64>,
    #[serde(default)]
    pub classes: Option<i64>,
    #[serde(default)]
    pub test_images: Option<i64>,
    #[serde(default)]
    pub registered_at: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetState {
    Registered,
    Registering,
    Failed,
}

impl DatasetState {
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetState::Registered => "registered",
            DatasetState::Registering => "registering",
            DatasetState::Failed => "failed",
        }
    }
}

impl From<DatasetStatus> for DatasetView {
    fn from(d: DatasetStatus) -> Self {
        let (state, error, since) = match d.registration {
            None => (DatasetState::Registered, None, None),
            Some(Registration::Registering { since }) => (DatasetState::Registering, None, Some(since)),
            Some(Registration::Failed { error }) => (DatasetState::Failed, Some(error), None),
        };
        let row = d.row;
        DatasetView {
            name: d.name,
            state: if row.is_some() { DatasetState::Registered } else { state },
            error,
            since,
            path: row.as_ref().map(|r| r.path.clone()),
            train_images: row.as_ref().map(|r| r.train_images),
            classes: row.as_ref().map(|r| r.classes),
            test_images: row.as_ref().map(|r| r.test_images),
            registered_at: row.as_ref().map(|r| r.registered_at),
        }
    }
}

/// A spec file whose current content was rejected, and why (`GET /specs/rejected`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RejectedSpec {
    pub path: String,
    pub error: String,
    pub seen_at: f64,
}

/// A checkpoint as `model ls` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointView {
    pub session: String,
    pub checkpoint: String,
    pub epoch: i64,
    pub path: String,
    pub bytes: i64,
    pub val_acc: f64,
    pub val_loss: Option<f64>,
    pub train_loss: Option<f64>,
    /// When it was saved (seconds since the epoch).
    pub last_modified: f64,
    /// Seconds of training up to this checkpoint, over every run of the session (a resumed one counts the runs
    /// before); from the session's start when epoch durations are missing.
    pub elapsed: Option<f64>,
    /// A code session's checkpoint: what ranks it for `best` (`best by valid__Loss`, or that no validation metric
    /// was reported and the latest is best); absent for a built-in session's, which rank by `val_acc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranking: Option<String>,
    /// A code session's checkpoint: the summary it reported last at or before its epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

impl CheckpointView {
    fn new(row: CheckpointRow, started: Option<f64>, epoch_seconds: &[(u32, f64)]) -> Self {
        let elapsed = crate::core::checkpoint::elapsed(row.info().epoch, row.created_at, started, epoch_seconds);
        let ranking = row.ranking_note();
        CheckpointView {
            summary: None,
            ranking,
            session: row.session,
            checkpoint: row.name,
            epoch: row.epoch,
            path: row.path,
            bytes: row.bytes,
            val_acc: row.val_acc,
            val_loss: row.val_loss,
            train_loss: row.train_loss,
            last_modified: row.created_at,
            elapsed,
        }
    }
}

/// `POST /sessions/{id}/fork`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForkRequest {
    pub checkpoint: String,
    #[serde(default)]
    pub args: Option<String>,
    #[serde(default)]
    pub memo: Option<String>,
}

/// The answer to a change: the session and its state afterwards.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Changed {
    pub session: String,
    pub state: Option<SessionState>,
    pub message: String,
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/info", get(info))
        .route("/sessions", get(list_sessions))
        .route("/sessions/{user}/{dataset}/{n}", get(get_session).delete(remove_session))
        .route("/sessions/{user}/{dataset}/{n}/stop", post(stop_session))
        .route("/sessions/{user}/{dataset}/{n}/fork", post(fork_session))
        .route("/sessions/{user}/{dataset}/{n}/logs", get(logs))
        .route("/sessions/{user}/{dataset}/{n}/events", get(events))
        .route("/sessions/{user}/{dataset}/{n}/metrics", get(metrics))
        .route("/sessions/{user}/{dataset}/{n}/checkpoints", get(checkpoints))
        .route("/sessions/{user}/{dataset}/{n}/checkpoints/{checkpoint}", axum::routing::delete(remove_checkpoint))
        .route("/specs", get(specs))
        // A code session's upload rides in the request: up to the code folder's limit, base64 (4/3) and the spec.
        .route(
            "/runs",
            post(queue_run).layer(axum::extract::DefaultBodyLimit::max(
                (crate::daemon::MAX_CODE_BYTES as usize) * 4 / 3 + (2 << 20),
            )),
        )
        .route("/specs/rejected", get(rejected_specs))
        .route("/datasets", get(datasets))
        .route("/datasets/{name}", post(register_dataset))
        .merge(super::submissions::routes())
        .merge(super::analysis::routes())
        .fallback(no_route)
        .layer(axum::middleware::from_fn(json_errors))
}

/// An `/api` path that names no route.
async fn no_route(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no API route {method} {}", uri.path()))
}

/// Turns an error response that is not JSON (axum's plain-text rejections, an empty 405) into `{"error": "..."}`,
/// keeping its status and its other headers (`Allow`, `WWW-Authenticate`).
pub async fn json_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.extensions().get::<OriginalUri>().map_or_else(|| req.uri().path().to_string(), |u| u.path().into());
    let response = next.run(req).await;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let message =
        if text.is_empty() { format!("{method} {path}: {reason}") } else { format!("{method} {path}: {text}") };
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut out = ApiError::new(status, message).into_response();
    for (name, value) in parts.headers.iter() {
        out.headers_mut().insert(name.clone(), value.clone());
    }
    out
}

fn session_id(user: &str, dataset: &str, n: &str) -> Result<SessionId, ApiError> {
    format!("{user}/{dataset}/{n}")
        .parse()
        .map_err(|e: crate::core::session::SessionError| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

type IdPath = Path<(String, String, String)>;

async fn info(State(state): State<AppState>, caller: Caller) -> ApiResult<Info> {
    let d = &state.daemon;
    Ok(Json(Info {
        version: env!("CARGO_PKG_VERSION").to_string(),
        home: d.home().root().display().to_string(),
        experiments: d.config.experiments.display().to_string(),
        user: if caller.user.is_empty() { d.config.user.clone() } else { caller.user.clone() },
        admin: caller.is_admin(),
        slots: d.slots(),
        pid: std::process::id(),
        started_at: d.started_at,
        waiting_submission: d.waiting_submission(),
    }))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    #[serde(default)]
    all: bool,
    dataset: Option<String>,
}

async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> ApiResult<Vec<SessionView>> {
    let rows = state.store().sessions(&SessionFilter { all: q.all, dataset: q.dataset, user: caller.only() }).await?;
    let positions = state.daemon.queue_positions().await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(view(&state, r, &positions).await);
    }
    Ok(Json(out))
}

async fn view(state: &AppState, row: SessionRow, positions: &HashMap<SessionId, usize>) -> SessionView {
    let pos = positions.get(&row.id).copied();
    let eta = eta_of(state.store(), &row, crate::store::now()).await;
    let (waiting, progress) = (waiting_of(state, &row), progress_of(state, &row));
    let summary = summaries(state.store(), &row).await.pop().map(|(_, text)| text);
    let mut view = SessionView::new(row, pos);
    view.summary = summary;
    view.eta = eta;
    view.waiting = waiting;
    view.progress = progress;
    view
}

async fn get_session(State(state): State<AppState>, Path((u, d, n)): IdPath) -> ApiResult<SessionView> {
    let id = session_id(&u, &d, &n)?;
    let row = state.store().session_required(&id).await?;
    let positions = state.daemon.queue_positions().await?;
    Ok(Json(view(&state, row, &positions).await))
}

async fn stop_session(State(state): State<AppState>, Path((u, d, n)): IdPath) -> ApiResult<Changed> {
    let id = session_id(&u, &d, &n)?;
    let after = state.daemon.stop_session(&id).await?;
    Ok(Json(Changed { session: id.to_string(), state: Some(after), message: format!("{id} {after}") }))
}

async fn remove_session(State(state): State<AppState>, Path((u, d, n)): IdPath) -> ApiResult<Changed> {
    let id = session_id(&u, &d, &n)?;
    state.daemon.remove_session(&id).await?;
    Ok(Json(Changed { session: id.to_string(), state: None, message: format!("{id} removed") }))
}

async fn fork_session(
    State(state): State<AppState>,
    caller: Caller,
    Path((u, d, n)): IdPath,
    Json(req): Json<ForkRequest>,
) -> ApiResult<Changed> {
    let id = session_id(&u, &d, &n)?;
    let new = state.daemon.fork(&caller.user, &id, &req.checkpoint, req.args.as_deref(), req.memo.as_deref()).await?;
    Ok(Json(Changed {
        session: new.to_string(),
        state: Some(SessionState::Queued),
        message: format!("{new} forked from {id} checkpoint {}", req.checkpoint),
    }))
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    #[serde(default)]
    follow: bool,
}

/// `train.log` as plain text; with `follow`, the response stays open and grows until the session ends.
async fn logs(State(state): State<AppState>, Path((u, d, n)): IdPath, Query(q): Query<LogQuery>) -> Response {
    let id = match session_id(&u, &d, &n) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = state.store().session_required(&id).await {
        return ApiError::from(e).into_response();
    }
    let path = crate::home::SessionDir::new(state.home().session(&id)).log();
    let stream = log_stream(state, id, path, q.follow);
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(stream)).into_response()
}

struct Tail {
    state: AppState,
    id: SessionId,
    path: std::path::PathBuf,
    offset: u64,
    follow: bool,
    finishing: bool,
}

fn log_stream(
    state: AppState,
    id: SessionId,
    path: std::path::PathBuf,
    follow: bool,
) -> impl Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let tail = Tail { state, id, path, offset: 0, follow, finishing: false };
    futures::stream::unfold(tail, |mut t| async move {
        loop {
            // Whole lines while the session runs; once it has ended (or without follow), the last one too.
            let partial = !t.follow || t.finishing;
            let (lines, next) = super::logs::lines_from(&t.path, t.offset, 1 << 20, partial).await;
            if next != t.offset || !lines.is_empty() {
                t.offset = next;
                let mut chunk = Vec::new();
                for line in lines {
                    chunk.extend_from_slice(line.text.as_bytes());
                    if line.complete {
                        chunk.push(b'\n');
                    }
                }
                if !chunk.is_empty() {
                    return Some((Ok(chunk), t));
                }
                continue;
            }
            if !t.follow || t.finishing || t.state.daemon.shutdown.is_cancelled() {
                return None;
            }
            match t.state.store().session(&t.id).await {
                // Ended (the runner writes its last line before recording the state): one last read.
                Ok(Some(row)) if row.state.is_terminal() => t.finishing = true,
                Ok(Some(_)) => tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = t.state.daemon.shutdown.cancelled() => {}
                },
                _ => return None,
            }
        }
    })
}

/// Live events of a session as server-sent events: `event` lines as the child wrote them, then `end` with the state.
async fn events(
    State(state): State<AppState>,
    Path((u, d, n)): IdPath,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let id = session_id(&u, &d, &n)?;
    let row = state.store().session_required(&id).await?;
    let rx = state.daemon.live.subscribe(&id);
    let ended = row.state.is_terminal().then_some(row.state);
    let stream = futures::stream::unfold((rx, ended, false), |(mut rx, ended, done)| async move {
        if done {
            return None;
        }
        if let Some(s) = ended {
            return Some((Ok(SseEvent::default().event("end").data(s.as_str())), (rx, None, true)));
        }
        loop {
            match rx.recv().await {
                Ok(LiveEvent::Line(line)) => {
                    return Some((Ok(SseEvent::default().event("event").data(line.as_ref())), (rx, None, false)));
                }
                Ok(LiveEvent::Ended(s)) => {
                    return Some((Ok(SseEvent::default().event("end").data(s.as_str())), (rx, None, true)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Debug, Deserialize)]
struct MetricQuery {
    name: Option<String>,
}

async fn metrics(
    State(state): State<AppState>,
    Path((u, d, n)): IdPath,
    Query(q): Query<MetricQuery>,
) -> ApiResult<Vec<MetricRow>> {
    let id = session_id(&u, &d, &n)?;
    state.store().session_required(&id).await?;
    Ok(Json(state.store().metrics(&id, q.name.as_deref()).await?))
}

async fn checkpoints(State(state): State<AppState>, Path((u, d, n)): IdPath) -> ApiResult<Vec<CheckpointView>> {
    let id = session_id(&u, &d, &n)?;
    let row = state.store().session_required(&id).await?;
    let rows = state.store().checkpoints(&id).await?;
    let seconds = state.daemon.epoch_seconds(&id).await?;
    let summaries = summaries(state.store(), &row).await;
    let views = rows.into_iter().map(|c| {
        let epoch = u64::try_from(c.epoch).unwrap_or(0);
        // The summary reported last at or before the checkpoint's epoch (AI RUSH reports, then saves, each epoch).
        let summary = summaries.iter().rev().find(|(step, _)| *step <= epoch).map(|(_, text)| text.clone());
        CheckpointView { summary, ..CheckpointView::new(c, row.started_at, &seconds) }
    });
    Ok(Json(views.collect()))
}

async fn remove_checkpoint(
    State(state): State<AppState>,
    Path((u, d, n, checkpoint)): Path<(String, String, String, String)>,
) -> ApiResult<Changed> {
    let id = session_id(&u, &d, &n)?;
    let epoch = state.daemon.remove_checkpoint(&id, &checkpoint).await?;
    Ok(Json(Changed { session: id.to_string(), state: None, message: format!("{id}: checkpoint {epoch} removed") }))
}

#[derive(Debug, Deserialize)]
struct SpecQuery {
    path: Option<String>,
    limit: Option<i64>,
}

async fn specs(State(state): State<AppState>, Query(q): Query<SpecQuery>) -> ApiResult<Vec<SpecRow>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    Ok(Json(state.store().specs(q.path.as_deref(), limit).await?))
}

/// `POST /api/runs`: what `rush run` sends, a spec and what the user typed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRequest {
    /// What the user typed (or the spec file's name): refusals name it.
    pub source: String,
    /// The spec, YAML.
    pub spec: String,
    /// A code session's folder (`code::upload::pack`), base64: `rush run` in a folder with a `main.py`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// The sessions a run queued.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Queued {
    pub sessions: Vec<String>,
}

/// Queues a spec sent by `rush run` as the caller's sessions.
async fn queue_run(State(state): State<AppState>, caller: Caller, Json(req): Json<RunRequest>) -> ApiResult<Queued> {
    use base64::Engine;
    let code = match &req.code {
        Some(text) => Some(base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| {
            crate::daemon::DaemonError::Invalid(format!("{}: the uploaded code is not base64: {e}", req.source))
        })?),
        None => None,
    };
    let ids = state.daemon.queue_spec(&caller.user, &req.source, req.spec.as_bytes(), code).await?;
    Ok(Json(Queued { sessions: ids.iter().map(|i| i.to_string()).collect() }))
}

/// The spec files whose current content was rejected and that are still there, newest first.
async fn rejected_specs(State(state): State<AppState>) -> ApiResult<Vec<RejectedSpec>> {
    let mut out = Vec::new();
    for (path, error, seen_at) in state.store().rejected_specs(500).await? {
        if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
            out.push(RejectedSpec { path, error, seen_at });
        }
    }
    Ok(Json(out))
}

async fn datasets(State(state): State<AppState>) -> ApiResult<Vec<DatasetView>> {
    Ok(Json(state.daemon.dataset_statuses().await?.into_iter().map(DatasetView::from).collect()))
}

async fn register_dataset(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<DatasetRow> {
    Ok(Json(state.daemon.register_dataset(&name).await?))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::core::queue::{Device, SlotKind};
    use crate::daemon::Daemon;
    use crate::daemon::config::{DaemonConfig, Flags};
    use crate::daemon::executor::LocalExecutor;
    use crate::disk::write_atomic;
    use crate::home::Home;
    use crate::store::{NewSession, Store};

    async fn app() -> (AppState, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let flags = Flags {
            experiments: Some(dir.path().join("exp")),
            user: Some("tester".into()),
            gpus: Some(vec![0, 1]),
            cpu_slots: Some(1),
            ..Default::default()
        };
        // two GPUs detected, so the listed ids are accepted on this machine (no child ever starts here)
        let config = DaemonConfig::resolve(Home::new(dir.path().join("home")), flags, 2).unwrap().prepare().unwrap();
        let store = Store::open(&config.db).await.unwrap();
        let daemon = Daemon::new(config, store, Arc::new(LocalExecutor { program: "/bin/false".into() }));
        (AppState::new(daemon), dir)
    }

    async fn call(state: &AppState, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, serde_json::Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.unwrap_or("").to_string()))
            .unwrap();
        let resp = super::super::router(state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or(serde_json::Value::String(String::from_utf8_lossy(&bytes).to_string()));
        (status, json)
    }

    async fn queue(state: &AppState, priority: i32, device: Device) -> SessionId {
        let new = NewSession {
            user: "tester".into(),
            dataset: "emoji".into(),
            memo: "m".into(),
            priority,
            device,
            epochs: 1,
            fork_of: None,
        };
        state.store().enqueue(None, &[new], |_, _| "{}".into()).await.unwrap().remove(0)
    }

    /// Sends `body` with `content_type` (none when `None`), and, with `token`, a bearer token; returns the status and
    /// the body, which must be JSON.
    async fn raw(
        state: &AppState,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        let resp = super::super::router(state.clone()).oneshot(req.body(Body::from(body.to_string())).unwrap());
        let resp = resp.await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {uri}: {status} with a body that is not JSON ({e}): {bytes:?}"));
        (status, json)
    }

    #[tokio::test]
    async fn every_api_error_is_json_naming_the_field_or_value() {
        let (state, _dir) = app().await;
        let json_type = Some("application/json");
        /// (method, uri, content type, body, status, words the error names)
        type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a str, StatusCode, &'a [&'a str]);
        let cases: [Case; 8] = [
            ("POST", "/api/submissions", json_type, "{}", StatusCode::UNPROCESSABLE_ENTITY, &["members"]),
            (
                "POST",
                "/api/submissions",
                json_type,
                r#"{"members":[{"session":"tester/emoji/1","checkpoint":"best","weight":1}],"tta":"bogus"}"#,
                StatusCode::UNPROCESSABLE_ENTITY,
                &["tta", "bogus"],
            ),
            ("POST", "/api/submissions", None, "{}", StatusCode::UNSUPPORTED_MEDIA_TYPE, &["Content-Type"]),
            ("POST", "/api/submissions", json_type, "{", StatusCode::BAD_REQUEST, &["JSON"]),
            ("GET", "/api/submissions/abc", None, "", StatusCode::BAD_REQUEST, &["abc"]),
            ("GET", "/api/datasets/emoji/ensemble", None, "", StatusCode::BAD_REQUEST, &["members"]),
            ("GET", "/api/sessions?all=yes", None, "", StatusCode::BAD_REQUEST, &["all"]),
            ("GET", "/api/nope", None, "", StatusCode::NOT_FOUND, &["/api/nope"]),
        ];
        for (method, uri, content_type, body, want, words) in cases {
            let (status, json) = raw(&state, method, uri, content_type, body).await;
            assert_eq!(status, want, "{method} {uri}: {json}");
            let error = json["error"].as_str().unwrap_or_else(|| panic!("{method} {uri}: {json}"));
            for word in words {
                assert!(error.contains(word), "{method} {uri}: {error:?} does not name {word:?}");
            }
        }
        let (status, json) = raw(&state, "PUT", "/api/info", None, "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(json["error"].as_str().unwrap().contains("PUT /api/info"), "{json}");

        // tta and dry_run may be left out, as on the command line: the request reaches the daemon's own checks
        let member = r#"{"members":[{"session":"tester/emoji/1","checkpoint":"best","weight":1}]}"#;
        let (status, json) = raw(&state, "POST", "/api/submissions", json_type, member).await;
        assert_ne!(status, StatusCode::UNPROCESSABLE_ENTITY, "{json}");
        assert!(json["error"].as_str().unwrap().contains("emoji"), "{json}");
    }

    #[tokio::test]
    async fn the_token_guard_answers_the_api_in_json() {
        let dir = tempfile::tempdir().unwrap();
        let flags = Flags { experiments: Some(dir.path().join("exp")), cpu_slots: Some(1), ..Default::default() };
        let mut config =
            DaemonConfig::resolve(Home::new(dir.path().join("home")), flags, 0).unwrap().prepare().unwrap();
        config.access = Arc::new(crate::web::auth::Access::new("0.0.0.0:1".parse().unwrap(), Some("T"), false));
        let store = Store::open(&config.db).await.unwrap();
        let state = AppState::new(Daemon::new(config, store, Arc::new(LocalExecutor { program: "/bin/false".into() })));
        for (method, uri) in [("GET", "/api/info"), ("POST", "/api/submissions"), ("GET", "/api/nope")] {
            let (status, json) = raw(&state, method, uri, None, "").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
            assert!(json["error"].as_str().unwrap().contains("token"), "{json}");
        }
    }

    #[tokio::test]
    async fn info_lists_slots_and_experiments() {
        let (state, dir) = app().await;
        let (status, json) = call(&state, "GET", "/api/info", None).await;
        assert_eq!(status, StatusCode::OK);
        let info: Info = serde_json::from_value(json).unwrap();
        assert_eq!(info.user, "tester");
        assert_eq!(info.experiments, dir.path().join("exp").canonicalize().unwrap().display().to_string());
        let slots: Vec<&str> = info.slots.iter().map(|s| s.slot.as_str()).collect();
        assert_eq!(slots, vec!["gpu0", "gpu1", "cpu0"]);
        assert_eq!(state.daemon.config.slots[2], SlotKind::Cpu(0));
    }

    #[tokio::test]
    async fn sessions_show_queue_positions_and_stop_a_queued_one() {
        let (state, _dir) = app().await;
        let a = queue(&state, 0, Device::Gpu).await;
        let b = queue(&state, 5, Device::Cpu).await;
        let (status, json) = call(&state, "GET", "/api/sessions", None).await;
        assert_eq!(status, StatusCode::OK);
        let list: Vec<SessionView> = serde_json::from_value(json).unwrap();
        let pos: HashMap<String, Option<usize>> = list.iter().map(|s| (s.id.clone(), s.position)).collect();
        assert_eq!(pos[&b.to_string()], Some(1));
        assert_eq!(pos[&a.to_string()], Some(2));
        let (status, json) = call(&state, "POST", &format!("/api/sessions/{a}/stop"), None).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert_eq!(json["state"], "stopped");
        let (status, json) = call(&state, "POST", &format!("/api/sessions/{a}/stop"), None).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(json["error"].as_str().unwrap().contains("already stopped"), "{json}");
        // ps without -a hides it; with -a it shows.
        let (_, json) = call(&state, "GET", "/api/sessions", None).await;
        assert_eq!(json.as_array().unwrap().len(), 1);
        let (_, json) = call(&state, "GET", "/api/sessions?all=true&dataset=emoji", None).await;
        assert_eq!(json.as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_dataset_still_registering_is_listed_and_its_sessions_wait_without_a_position() {
        let (state, _dir) = app().await;
        // A folder the store lacks, as a daemon finds it at start-up: registering until its registration ends.
        std::fs::create_dir_all(state.home().dataset("emoji")).unwrap();
        assert_eq!(crate::daemon::datasets::start_up(&state.daemon).await, vec!["emoji".to_string()]);
        let (status, json) = call(&state, "GET", "/api/datasets", None).await;
        assert_eq!(status, StatusCode::OK);
        let list: Vec<DatasetView> = serde_json::from_value(json).unwrap();
        assert_eq!(
            (list[0].name.as_str(), list[0].state, list[0].train_images),
            ("emoji", DatasetState::Registering, None)
        );
        assert!(list[0].since.is_some());
        // Its session waits, with no queue position; another dataset's is next.
        let waiting = queue(&state, 5, Device::Cpu).await;
        let other = NewSession {
            user: "tester".into(),
            dataset: "other".into(),
            memo: String::new(),
            priority: 0,
            device: Device::Cpu,
            epochs: 1,
            fork_of: None,
        };
        let other = state.store().enqueue(None, &[other], |_, _| "{}".into()).await.unwrap().remove(0);
        let (_, json) = call(&state, "GET", "/api/sessions", None).await;
        let list: Vec<SessionView> = serde_json::from_value(json).unwrap();
        let shown = |id: &SessionId| list.iter().find(|s| s.id == id.to_string()).unwrap().clone();
        assert_eq!(shown(&waiting).position, None);
        assert_eq!(shown(&waiting).waiting.as_deref(), Some("waiting for dataset emoji to register"));
        assert_eq!((shown(&other).position, shown(&other).waiting.clone()), (Some(1), None));
        // Its registration fails (an empty folder): listed as failed with the error; the session waits no longer.
        let error = state.daemon.register_dataset("emoji").await.unwrap_err().to_string();
        let (_, json) = call(&state, "GET", "/api/datasets", None).await;
        assert_eq!(json[0]["state"], "failed", "{json}");
        assert_eq!(json[0]["error"], error.as_str(), "{json}");
        let (_, json) = call(&state, "GET", &format!("/api/sessions/{waiting}"), None).await;
        assert!(json["waiting"].is_null(), "{json}");
        // A spec naming it is refused with the error.
        let refused = state.daemon.accept_dataset("x.yaml", "emoji").await.unwrap_err().to_string();
        assert!(refused.contains("could not be registered") && refused.contains(&error), "{refused}");
    }

    #[tokio::test]
    async fn a_running_session_shows_its_cache_build_until_training_starts() {
        use crate::core::progress::DecodeProgress;
        let (state, _dir) = app().await;
        let id = queue(&state, 0, Device::Cpu).await;
        let build = DecodeProgress { done: 412_000, total: 700_000, seconds: 128.75 };
        state.daemon.record_decoding(&id, Some(build));
        let (_, json) = call(&state, "GET", &format!("/api/sessions/{id}"), None).await;
        assert!(json["progress"].is_null(), "a queued session shows none: {json}");
        state.store().transition(&id, SessionState::Running, Some("cpu0"), None).await.unwrap();
        let (_, json) = call(&state, "GET", &format!("/api/sessions/{id}"), None).await;
        assert_eq!(json["progress"], "decoding 412,000 of 700,000 images (3,200 img/s, ETA 1m 30s)", "{json}");
        let changes = state.daemon.decoding_changes();
        state.daemon.record_decoding(&id, Some(build));
        assert_eq!(state.daemon.decoding_changes(), changes, "the same progress again is no change");
        // Training started: the runner forgets it.
        state.daemon.record_decoding(&id, None);
        assert_eq!(state.daemon.decoding_changes(), changes + 1);
        let (_, json) = call(&state, "GET", &format!("/api/sessions/{id}"), None).await;
        assert!(json["progress"].is_null(), "training has started: {json}");
    }

    #[tokio::test]
    async fn unknown_and_invalid_sessions_are_errors_with_messages() {
        let (state, _dir) = app().await;
        let (status, json) = call(&state, "GET", "/api/sessions/tester/emoji/9", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(json["error"], "unknown session tester/emoji/9");
        let (status, _) = call(&state, "GET", "/api/sessions/tester/emoji/x", None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = call(&state, "DELETE", "/api/sessions/tester/emoji/9", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, json) = call(&state, "POST", "/api/datasets/nope", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{json}");
    }

    #[tokio::test]
    async fn events_stream_live_lines_then_the_end() {
        let (state, _dir) = app().await;
        let id = queue(&state, 0, Device::Cpu).await;
        let live = {
            let state = state.clone();
            let uri = format!("/api/sessions/{id}/events");
            tokio::spawn(async move { call(&state, "GET", &uri, None).await })
        };
        // Publish once the stream has subscribed.
        for _ in 0..500 {
            if state.daemon.live.subscribers(&id) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        state.daemon.live.publish(&id, LiveEvent::Line(r#"{"v":1,"t":0,"event":"finished"}"#.into()));
        state.daemon.live.end(&id, SessionState::Stopped);
        let (status, body) = live.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        let body = body.as_str().unwrap().to_string();
        assert!(body.contains("event: event\ndata: {\"v\":1"), "{body}");
        assert!(body.contains("event: end\ndata: stopped"), "{body}");
        // A session that ended already answers with its end at once.
        state.store().transition(&id, SessionState::Stopped, None, None).await.unwrap();
        let (_, body) = call(&state, "GET", &format!("/api/sessions/{id}/events"), None).await;
        assert_eq!(body.as_str().unwrap().trim(), "event: end\ndata: stopped");
    }

    #[tokio::test]
    async fn rm_refuses_active_sessions_and_removes_finished_ones_with_their_files() {
        let (state, _dir) = app().await;
        let id = queue(&state, 0, Device::Cpu).await;
        let (status, json) = call(&state, "DELETE", &format!("/api/sessions/{id}"), None).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(json["error"].as_str().unwrap().contains("stop it first"), "{json}");
        state.store().transition(&id, SessionState::Stopped, None, None).await.unwrap();
        let dir = state.home().session(&id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("train.log"), "x").unwrap();
        let (status, _) = call(&state, "DELETE", &format!("/api/sessions/{id}"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!dir.exists());
        assert!(state.store().session(&id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn checkpoints_list_and_remove_by_alias_and_logs_read_the_file() {
        let (state, _dir) = app().await;
        let id = queue(&state, 0, Device::Cpu).await;
        let sdir = crate::home::SessionDir::new(state.home().session(&id));
        std::fs::create_dir_all(sdir.checkpoints()).unwrap();
        for (epoch, acc) in [(1u32, 0.3), (2, 0.7), (3, 0.5)] {
            write_atomic(&sdir.checkpoint_weights(epoch), b"w").unwrap();
            state
                .store()
                .add_checkpoint(&CheckpointRow {
                    session: id.to_string(),
                    epoch: epoch as i64,
                    name: epoch.to_string(),
                    path: sdir.checkpoint_weights(epoch).display().to_string(),
                    val_acc: acc,
                    val_loss: Some(1.0),
                    train_loss: Some(2.0),
                    bytes: 1,
                    created_at: 100.0,
                    score: None,
                    best_by: None,
                })
                .await
                .unwrap();
        }
        let (_, json) = call(&state, "GET", &format!("/api/sessions/{id}/checkpoints"), None).await;
        let list: Vec<CheckpointView> = serde_json::from_value(json).unwrap();
        assert_eq!(list.iter().map(|c| c.epoch).collect::<Vec<_>>(), vec![1, 2, 3]);
        let (status, json) = call(&state, "DELETE", &format!("/api/sessions/{id}/checkpoints/best"), None).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert!(!sdir.checkpoint_weights(2).exists());
        let (_, json) = call(&state, "GET", &format!("/api/sessions/{id}/checkpoints"), None).await;
        assert_eq!(json.as_array().unwrap().len(), 2);
        let (status, _) = call(&state, "DELETE", &format!("/api/sessions/{id}/checkpoints/9"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = call(&state, "DELETE", &format!("/api/sessions/{id}/checkpoints/x"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        std::fs::write(sdir.log(), "line one\nline two\n").unwrap();
        let (status, body) = call(&state, "GET", &format!("/api/sessions/{id}/logs"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, serde_json::Value::String("line one\nline two\n".into()));
    }
}
