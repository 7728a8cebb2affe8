//! The dashboard's HTML pages (askama templates in `templates/`, escaped by default): sessions, one session with its
//! charts, log and checkpoints, compare, the ensemble picked from checkpoints, every submission, rejected specs,
//! datasets, system, the token form, `/metrics` for Prometheus, and the two static files. Pages read through the
//! store; the buttons (stop, fork) go through the daemon, like the JSON API; `/login` and `/logout` keep or forget
//! the token in a cookie. Live updates are in [`super::sse`].

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::Router;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use super::AppState;
use super::chart::{self, Chart, Series};
use super::view::{self, Progress};
use super::{files, gpus, sse};
use crate::core::metric::MAX_POINTS;
use crate::core::session::{SessionId, SessionState};
use crate::daemon::DaemonError;
use crate::home::SessionDir;
use crate::store::pages::SessionPageQuery;
use crate::store::{CheckpointRow, SessionRow, StoreError};

/// Sessions per page of the list.
pub const PAGE_SIZE: i64 = 50;
/// Log lines the session page shows before live ones arrive.
const LOG_TAIL_LINES: usize = 200;

/// The dashboard's routes, merged into the app by [`super::router`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/sessions") }))
        .route("/sessions", get(sessions_page))
        .route("/sessions/live", get(sse::sessions_live))
        .route("/sessions/{user}/{dataset}/{n}", get(session_page))
        .route("/sessions/{user}/{dataset}/{n}/live", get(sse::session_live))
        .route("/sessions/{user}/{dataset}/{n}/charts/{chart}", get(session_chart))
        .route("/sessions/{user}/{dataset}/{n}/files/{*path}", get(session_file))
        .route("/sessions/{user}/{dataset}/{n}/stop", post(stop))
        .route("/sessions/{user}/{dataset}/{n}/fork", post(fork))
        .route("/compare", get(compare_page))
        .route("/ensemble", get(ensemble_page))
        .route("/specs", get(specs_page))
        .route("/datasets", get(datasets_page))
        .route("/datasets/{name}/board", get(board_page))
        .route("/submissions", get(submissions_page))
        .route("/system", get(system_page))
        .route("/metrics", get(prometheus))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route(
            "/static/rush.css",
            get(|| async { asset("text/css; charset=utf-8", include_str!("../../static/rush.css")) }),
        )
        .route(
            "/static/rush.js",
            get(|| async { asset("text/javascript; charset=utf-8", include_str!("../../static/rush.js")) }),
        )
        // The pages link the icon; `/favicon.ico` answers too, for whatever asks for it without a link.
        .route("/static/favicon.svg", get(|| async { asset("image/svg+xml", FAVICON) }))
        .route("/favicon.ico", get(|| async { asset("image/svg+xml", FAVICON) }))
}

const FAVICON: &str = include_str!("../../static/favicon.svg");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

/// A page that could not be shown: a status and a short message (escaped); internals go to the log.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn not_found(message: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, message: message.into() }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownSession(id) => PageError::not_found(format!("unknown session {id}")),
            e => {
                tracing::error!("dashboard: {e}");
                Self { status: StatusCode::INTERNAL_SERVER_ERROR, message: "the database could not be read".into() }
            }
        }
    }
}

impl From<DaemonError> for PageError {
    fn from(e: DaemonError) -> Self {
        let api = super::error::ApiError::from(e);
        Self { status: api.status, message: api.message }
    }
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> Self {
        tracing::error!("dashboard template: {e}");
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, message: "the page could not be drawn".into() }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = format!(
            "<!doctype html><meta charset=utf-8><title>{status}</title><link rel=stylesheet href=/static/rush.css>\
             <link rel=icon type=image/svg+xml href=/static/favicon.svg>\
             <main><div class=\"card error\"><h2>{status}</h2><p>{msg}</p><p><a href=\"/sessions\">Sessions</a></p>\
             </div></main>",
            status = self.status,
            msg = chart::escape(&self.message)
        );
        (self.status, Html(body)).into_response()
    }
}

type PageResult = Result<Response, PageError>;

fn html(t: &impl Template) -> PageResult {
    Ok(Html(t.render()?).into_response())
}

fn session_id(user: &str, dataset: &str, n: &str) -> Result<SessionId, PageError> {
    let raw = format!("{user}/{dataset}/{n}");
    raw.parse().map_err(|_| PageError::bad(format!("{raw:?} is not a session id (USER/DATASET/N)")))
}

/// The header every page shares.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub nav: &'static str,
    pub user: String,
    pub addr: String,
    /// A token is configured: the header offers to log out.
    pub logout: bool,
}

impl Chrome {
    fn new(state: &AppState, nav: &'static str) -> Self {
        Self {
            nav,
            user: state.daemon.config.user.clone(),
            addr: state.daemon.config.bind.to_string(),
            logout: state.daemon.config.access.has_token(),
        }
    }
}

/// The URL of a session's page.
pub fn session_url(id: &str) -> String {
    format!("/sessions/{id}")
}

fn spec_json(row: &SessionRow) -> Value {
    serde_json::from_str(&row.spec).unwrap_or(Value::Null)
}

fn spec_str(spec: &Value, field: &str) -> String {
    match spec.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

/// One session as a table row shows it.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub id: String,
    pub url: String,
    pub state: &'static str,
    pub dataset: String,
    pub model: String,
    pub progress: Progress,
    pub best: String,
    pub where_: String,
    pub memo: String,
    /// Why a session that did not succeed ended (the first line of its reason), or what a fork starts from.
    pub note: String,
    pub queued: String,
    pub queued_exact: String,
}

/// The row's note: a failed, stopped or interrupted session's reason, else what a fork starts from.
fn note_of(row: &SessionRow) -> String {
    let reason = match row.state {
        SessionState::Failed | SessionState::Stopped | SessionState::Interrupted => {
            row.exit_reason.as_deref().and_then(|r| r.lines().next()).unwrap_or("").trim().to_string()
        }
        _ => String::new(),
    };
    match (&row.fork_of, reason.is_empty()) {
        (Some(parent), true) => format!("fork of {parent}"),
        _ => reason,
    }
}

fn progress_of(row: &SessionRow, now: f64) -> Progress {
    let running = (row.state == SessionState::Running).then_some(row.started_at).flatten();
    // Epochs this run trained begin after the last one a previous run finished; without a record of it, the first.
    view::progress(row.epoch, row.epochs, running, 1, now)
}

fn where_of(row: &SessionRow, positions: &HashMap<SessionId, usize>) -> String {
    match row.state {
        SessionState::Running => row.slot.clone().unwrap_or_default(),
        SessionState::Queued => positions.get(&row.id).map(|p| format!("queue #{p}")).unwrap_or_default(),
        _ => String::new(),
    }
}

impl SessionView {
    fn new(row: &SessionRow, positions: &HashMap<SessionId, usize>, now: f64) -> Self {
        let spec = spec_json(row);
        let id = row.id.to_string();
        SessionView {
            url: session_url(&id),
            id,
            state: row.state.as_str(),
            dataset: row.id.dataset.clone(),
            model: spec_str(&spec, "model"),
            progress: progress_of(row, now),
            best: view::percent(row.best_val_acc),
            where_: where_of(row, positions),
            memo: row.memo.clone(),
            note: note_of(row),
            queued: view::ago(now, Some(row.queued_at)),
            queued_exact: view::datetime(row.queued_at),
        }
    }
}

async fn positions_for(state: &AppState, rows: &[SessionRow]) -> Result<HashMap<SessionId, usize>, PageError> {
    if rows.iter().any(|r| r.state == SessionState::Queued) {
        Ok(state.daemon.queue_positions().await?)
    } else {
        Ok(HashMap::new())
    }
}

// ---------------------------------------------------------------------------------------------------- sessions

#[derive(Debug, Default, Deserialize)]
pub struct SessionsQuery {
    #[serde(default)]
    dataset: String,
    #[serde(default)]
    state: String,
    before: Option<i64>,
    after: Option<i64>,
    fragment: Option<String>,
}

pub struct StatePill {
    state: &'static str,
    count: i64,
    url: String,
    on: bool,
}

#[derive(Template)]
#[template(path = "sessions.html")]
struct SessionsTemplate {
    chrome: Chrome,
    rows: Vec<SessionView>,
    total: i64,
    count_all: i64,
    dataset: String,
    state: String,
    datasets: Vec<String>,
    state_pills: Vec<StatePill>,
    all_states_url: String,
    filter_text: String,
    newer_url: Option<String>,
    older_url: Option<String>,
}

#[derive(Template)]
#[template(path = "session_rows.html")]
struct SessionRowsTemplate {
    rows: Vec<SessionView>,
}

fn list_url(dataset: &str, state: &str, cursor: Option<(&str, i64)>) -> String {
    let mut params: Vec<(&str, String)> = Vec::new();
    if !dataset.is_empty() {
        params.push(("dataset", dataset.to_string()));
    }
    if !state.is_empty() {
        params.push(("state", state.to_string()));
    }
    if let Some((k, v)) = cursor {
        params.push((k, v.to_string()));
    }
    let query = serde_urlencoded::to_string(&params).unwrap_or_default();
    if query.is_empty() { "/sessions".into() } else { format!("/sessions?{query}") }
}

async fn sessions_page(State(state): State<AppState>, Query(q): Query<SessionsQuery>) -> PageResult {
    let filter_state = match q.state.as_str() {
        "" => None,
        s => Some(s.parse::<SessionState>().map_err(PageError::bad)?),
    };
    let dataset = (!q.dataset.is_empty()).then(|| q.dataset.clone());
    let page = state
        .store()
        .session_page(&SessionPageQuery {
            dataset: dataset.clone(),
            state: filter_state,
            before: q.before,
            after: q.after,
            limit: PAGE_SIZE,
        })
        .await?;
    let positions = positions_for(&state, &page.rows).await?;
    let now = crate::store::now();
    let rows: Vec<SessionView> = page.rows.iter().map(|r| SessionView::new(r, &positions, now)).collect();
    if q.fragment.as_deref() == Some("rows") {
        return html(&SessionRowsTemplate { rows });
    }
    let counts = state.store().session_counts().await?;
    let state_pills = counts
        .iter()
        .map(|(s, c)| StatePill {
            state: s.as_str(),
            count: *c,
            url: list_url(&q.dataset, s.as_str(), None),
            on: Some(*s) == filter_state,
        })
        .collect();
    let mut filter = Vec::new();
    if let Some(d) = &dataset {
        filter.push(format!("dataset {d}"));
    }
    if let Some(s) = filter_state {
        filter.push(format!("status {s}"));
    }
    html(&SessionsTemplate {
        chrome: Chrome::new(&state, "sessions"),
        rows,
        total: page.total,
        count_all: counts.iter().map(|c| c.1).sum(),
        datasets: state.store().session_datasets().await?,
        state_pills,
        all_states_url: list_url(&q.dataset, "", None),
        filter_text: filter.join(", "),
        newer_url: page.newer.map(|s| list_url(&q.dataset, &q.state, Some(("after", s)))),
        older_url: page.older.map(|s| list_url(&q.dataset, &q.state, Some(("before", s)))),
        dataset: q.dataset,
        state: q.state,
    })
}

// ---------------------------------------------------------------------------------------------------- one session

/// A checkpoint row as the table shows it (the `model ls` columns).
pub struct CheckpointView {
    name: String,
    is_best: bool,
    modified: String,
    modified_exact: String,
    elapsed: String,
    summary: String,
    size: String,
    download: Option<String>,
    member: String,
}

fn checkpoint_views(
    row: &SessionRow,
    checkpoints: &[CheckpointRow],
    epoch_seconds: &[(u32, f64)],
    home_dir: &SessionDir,
) -> Vec<CheckpointView> {
    let now = crate::store::now();
    let infos: Vec<_> = checkpoints.iter().map(CheckpointRow::info).collect();
    let best = crate::core::checkpoint::best(&infos).map(i64::from);
    let id = row.id.to_string();
    checkpoints
        .iter()
        .map(|c| {
            let mut summary = format!("val acc {}", view::percent(Some(c.val_acc)));
            if let Some(l) = c.val_loss {
                summary.push_str(&format!(", val loss {}", view::number(l)));
            }
            if let Some(l) = c.train_loss {
                summary.push_str(&format!(", train loss {}", view::number(l)));
            }
            // Offer the download only for a file inside the session folder (the safe file route serves no other).
            let download = std::path::Path::new(&c.path)
                .strip_prefix(home_dir.root())
                .ok()
                .and_then(|p| p.to_str())
                .map(|rel| format!("{}/files/{rel}", session_url(&id)));
            CheckpointView {
                name: c.name.clone(),
                is_best: Some(c.epoch) == best,
                modified: view::ago(now, Some(c.created_at)),
                modified_exact: view::datetime(c.created_at),
                elapsed: crate::core::checkpoint::training_seconds(c.info().epoch, epoch_seconds)
                    .or_else(|| row.started_at.map(|s| c.created_at - s))
                    .map(view::duration)
                    .unwrap_or_default(),
                summary,
                size: view::bytes(c.bytes),
                download,
                member: format!("{id}:{}", c.name),
            }
        })
        .collect()
}

#[derive(Template)]
#[template(path = "session.html")]
struct SessionTemplate {
    chrome: Chrome,
    /// Sessions forked from this one: (url, "id from checkpoint E").
    forks: Vec<(String, String)>,
    /// Submissions with this session among their members: (url, "#id state score").
    submissions: Vec<(String, String)>,
    id: String,
    base: String,
    live_url: String,
    state: &'static str,
    terminal: bool,
    memo: String,
    error: Option<String>,
    dataset: String,
    dataset_q: String,
    model: String,
    progress: Progress,
    progress_text: String,
    best: String,
    where_: String,
    queued: String,
    queued_exact: String,
    started: String,
    elapsed: String,
    /// Seconds a running session has run (empty otherwise): the live script keeps "Run time" ticking from it.
    running_for: String,
    last_step: String,
    fork_of: Option<(String, String)>,
    reason: String,
    chart_loss: String,
    chart_accuracy: String,
    log_tail: String,
    checkpoints: Vec<CheckpointView>,
    /// The session has ended: its empty checkpoint table says so without promising more.
    ended: bool,
    fork_choices: Vec<String>,
    spec_text: String,
    has_spec_file: bool,
    has_log: bool,
}

#[derive(Template)]
#[template(path = "checkpoint_rows.html")]
struct CheckpointRowsTemplate {
    checkpoints: Vec<CheckpointView>,
    ended: bool,
}

/// A session's stored spec as the YAML its `spec.yaml` holds (the runner writes it with the same
/// `ResolvedSpec::to_yaml`); a stored spec that does not read as one is still shown as YAML.
fn spec_yaml(row: &SessionRow, raw: &Value) -> String {
    row.resolved_spec()
        .ok()
        .and_then(|r| r.to_yaml().ok())
        .or_else(|| serde_saphyr::to_string(raw).ok())
        .unwrap_or_default()
}

/// What the fork box offers: `best` and `last` first (the default; resolved when the fork is made, so they never name
/// a checkpoint retention has deleted since the page was drawn), then the saved checkpoints, newest first. The live
/// script rebuilds it the same way from each `checkpoint` event.
fn fork_choices(checkpoints: &[CheckpointRow]) -> Vec<String> {
    if checkpoints.is_empty() {
        return Vec::new();
    }
    let mut epochs: Vec<&CheckpointRow> = checkpoints.iter().collect();
    epochs.sort_by_key(|c| std::cmp::Reverse(c.epoch));
    ["best".to_string(), "last".to_string()].into_iter().chain(epochs.iter().map(|c| c.name.clone())).collect()
}

/// The live summary the session page shows (also sent as the SSE `state` event).
pub fn progress_text(p: &Progress) -> String {
    let mut s = format!("epoch {} of {}", p.done, p.total);
    if !p.eta.is_empty() {
        s.push_str(" · ");
        s.push_str(&p.eta);
    }
    s
}

/// The last `lines` lines of a log file and its length (where a live tail continues from).
pub async fn log_tail(path: &std::path::Path, lines: usize) -> (String, u64) {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    const WINDOW: u64 = 64 * 1024;
    let Ok(mut file) = tokio::fs::File::open(path).await else { return (String::new(), 0) };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(WINDOW);
    if file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return (String::new(), 0);
    }
    let mut buf = Vec::with_capacity((len - start) as usize);
    if (&mut file).take(len - start).read_to_end(&mut buf).await.is_err() {
        return (String::new(), 0);
    }
    let text = String::from_utf8_lossy(&buf);
    // A window that starts mid-line drops its first, partial line.
    let text = if start > 0 { text.split_once('\n').map(|(_, rest)| rest).unwrap_or("") } else { &text };
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    (if tail.is_empty() { tail } else { tail + "\n" }, len)
}

/// The two charts of a session: loss per step (with validation loss at each epoch's end), accuracy per epoch.
pub async fn session_charts(state: &AppState, id: &SessionId, limit: usize) -> Result<(Chart, Chart), StoreError> {
    let store = state.store();
    let loss = store.metric_series(id, "loss", false, limit).await?;
    let val_loss = store.metric_series(id, "val_loss", false, limit).await?;
    let train_acc = store.metric_series(id, "train_acc", true, limit).await?;
    let val_acc = store.metric_series(id, "val_acc", true, limit).await?;
    let line = |label: &str, key: &str, points, dashed| Series { label: label.into(), key: key.into(), points, dashed };
    let loss_chart = Chart::new("Loss", "step", "loss").series(line("train loss", "loss", loss, false)).series(line(
        "val loss (epoch end)",
        "val_loss",
        val_loss,
        true,
    ));
    let mut acc_chart = Chart::new("Accuracy", "epoch", "accuracy")
        .series(line("train acc", "train_acc", train_acc, false))
        .series(line("val acc", "val_acc", val_acc, true));
    acc_chart.y_range = Some((0.0, 1.0));
    Ok((loss_chart, acc_chart))
}

#[derive(Debug, Default, Deserialize)]
pub struct SessionQuery {
    fragment: Option<String>,
    error: Option<String>,
}

async fn session_page(
    State(state): State<AppState>,
    Path((user, dataset, n)): Path<(String, String, String)>,
    Query(q): Query<SessionQuery>,
) -> PageResult {
    let id = session_id(&user, &dataset, &n)?;
    let row = state.store().session_required(&id).await?;
    let dir = SessionDir::new(state.home().session(&id));
    let checkpoints = state.store().checkpoints(&id).await?;
    let epoch_seconds = state.daemon.epoch_seconds(&id).await?;
    let views = checkpoint_views(&row, &checkpoints, &epoch_seconds, &dir);
    let ended = row.state.is_terminal();
    if q.fragment.as_deref() == Some("checkpoints") {
        return html(&CheckpointRowsTemplate { checkpoints: views, ended });
    }
    let now = crate::store::now();
    let positions = positions_for(&state, std::slice::from_ref(&row)).await?;
    let spec = spec_json(&row);
    let (loss, acc) = session_charts(&state, &id, MAX_POINTS).await?;
    let (log, offset) = log_tail(&dir.log(), LOG_TAIL_LINES).await;
    // The spec as the session runs it: `spec.yaml` once the runner wrote it, else the stored spec, as the same YAML
    // (a session that never started has no folder). Links go only to files that exist.
    let spec_file = tokio::fs::read_to_string(dir.spec()).await.ok();
    let has_log = tokio::fs::metadata(dir.log()).await.is_ok_and(|m| m.is_file());
    let spec_text = match &spec_file {
        Some(text) => text.clone(),
        None => spec_yaml(&row, &spec),
    };
    let last_step = match state.store().last_metric(&id, "loss").await? {
        Some((step, _, loss)) => format!("step {step} · loss {loss:.4}"),
        None => String::new(),
    };
    let progress = progress_of(&row, now);
    let running_for = (row.state == SessionState::Running).then_some(row.started_at).flatten().map(|s| now - s);
    let elapsed = match (row.started_at, row.finished_at, running_for) {
        (Some(s), Some(f), _) => view::duration(f - s),
        (_, _, Some(r)) => view::duration(r),
        _ => String::new(),
    };
    let base = session_url(&id.to_string());
    let parent = format!("{id}:");
    let forks = state
        .store()
        .forks_of(&id)
        .await?
        .into_iter()
        .map(|s| {
            let epoch = s.fork_of.as_deref().and_then(|f| f.strip_prefix(&parent)).unwrap_or("?").to_string();
            (session_url(&s.id.to_string()), format!("{} from checkpoint {epoch}", s.id))
        })
        .collect();
    let submissions = state
        .store()
        .submissions_of(&id)
        .await?
        .into_iter()
        .map(|s| {
            let score = s.public_score.map(|p| format!(" {}", view::percent(Some(p)))).unwrap_or_default();
            let kind = if s.dry_run { " (dry run)" } else { "" };
            (
                format!("/submissions?dataset={}#submission-{}", id.dataset, s.id),
                format!("#{} {}{score}{kind}", s.id, s.state),
            )
        })
        .collect();
    html(&SessionTemplate {
        chrome: Chrome::new(&state, "sessions"),
        forks,
        submissions,
        live_url: format!("{base}/live?log_offset={offset}"),
        id: id.to_string(),
        state: row.state.as_str(),
        terminal: row.state.is_terminal(),
        memo: row.memo.clone(),
        error: q.error,
        dataset_q: serde_urlencoded::to_string([("", &id.dataset)])
            .map(|s| s.trim_start_matches('=').to_string())
            .unwrap_or_default(),
        dataset: id.dataset.clone(),
        model: spec_str(&spec, "model"),
        progress_text: progress_text(&progress),
        progress,
        best: view::percent(row.best_val_acc),
        where_: where_of(&row, &positions),
        queued: view::ago(now, Some(row.queued_at)),
        queued_exact: view::datetime(row.queued_at),
        started: row.started_at.map(view::datetime).unwrap_or_default(),
        elapsed,
        running_for: running_for.map(|r| format!("{:.0}", r.max(0.0))).unwrap_or_default(),
        last_step,
        fork_of: row.fork_of.as_ref().map(|f| {
            let session = f.rsplit_once(':').map(|(s, _)| s).unwrap_or(f);
            (session_url(session), f.clone())
        }),
        reason: row.exit_reason.clone().unwrap_or_default(),
        chart_loss: chart::render(&loss),
        chart_accuracy: chart::render(&acc),
        log_tail: log,
        fork_choices: fork_choices(&checkpoints),
        checkpoints: views,
        ended,
        spec_text,
        has_spec_file: spec_file.is_some(),
        has_log,
        base,
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct ChartQuery {
    /// At most this many points per line (capped at 1,000).
    points: Option<usize>,
}

async fn session_chart(
    State(state): State<AppState>,
    Path((user, dataset, n, which)): Path<(String, String, String, String)>,
    Query(q): Query<ChartQuery>,
) -> PageResult {
    let id = session_id(&user, &dataset, &n)?;
    state.store().session_required(&id).await?;
    let limit = q.points.unwrap_or(MAX_POINTS).clamp(2, MAX_POINTS);
    let (loss, acc) = session_charts(&state, &id, limit).await?;
    let chart = match which.as_str() {
        "loss.svg" => loss,
        "accuracy.svg" => acc,
        other => return Err(PageError::not_found(format!("no chart {other:?} (loss.svg, accuracy.svg)"))),
    };
    Ok(([(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "no-store")], chart::render(&chart))
        .into_response())
}

async fn session_file(
    State(state): State<AppState>,
    Path((user, dataset, n, path)): Path<(String, String, String, String)>,
) -> PageResult {
    let id = session_id(&user, &dataset, &n)?;
    state.store().session_required(&id).await?;
    Ok(files::serve(&state.home().session(&id), &path).await)
}

async fn stop(State(state): State<AppState>, Path((user, dataset, n)): Path<(String, String, String)>) -> PageResult {
    let id = session_id(&user, &dataset, &n)?;
    let url = session_url(&id.to_string());
    Ok(match state.daemon.stop_session(&id).await {
        Ok(_) => Redirect::to(&url).into_response(),
        Err(e) => back_with_error(&url, &PageError::from(e).message),
    })
}

fn back_with_error(url: &str, message: &str) -> Response {
    let q = serde_urlencoded::to_string([("error", message)]).unwrap_or_default();
    Redirect::to(&format!("{url}?{q}")).into_response()
}

#[derive(Debug, Deserialize)]
pub struct ForkForm {
    checkpoint: String,
    #[serde(default)]
    args: String,
    #[serde(default)]
    memo: String,
}

async fn fork(
    State(state): State<AppState>,
    Path((user, dataset, n)): Path<(String, String, String)>,
    Form(form): Form<ForkForm>,
) -> PageResult {
    let id = session_id(&user, &dataset, &n)?;
    let url = session_url(&id.to_string());
    let memo = (!form.memo.is_empty()).then_some(form.memo.as_str());
    Ok(match state.daemon.fork(&id, &form.checkpoint, Some(&form.args), memo).await {
        Ok(new) => Redirect::to(&session_url(&new.to_string())).into_response(),
        Err(e) => back_with_error(&url, &PageError::from(e).message),
    })
}

// ---------------------------------------------------------------------------------------------------- compare

#[derive(Template)]
#[template(path = "compare.html")]
struct CompareTemplate {
    chrome: Chrome,
    ids_text: String,
    errors: Vec<String>,
    sessions: Vec<SessionView>,
    chart_loss: String,
    chart_val: String,
    differing: Vec<(String, Vec<String>)>,
}

/// The values of a repeated query parameter (`s=a&s=b`), plus whitespace/comma separated ones in `ids`.
fn repeated(raw: Option<&str>, key: &str) -> Vec<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or("")).unwrap_or_default();
    pairs
        .into_iter()
        .filter(|(k, _)| k == key || k == "ids")
        .flat_map(|(_, v)| v.split([' ', ',', '\n', '\t']).map(str::to_string).collect::<Vec<_>>())
        .filter(|v| !v.is_empty())
        .collect()
}

async fn compare_page(State(state): State<AppState>, RawQuery(raw): RawQuery) -> PageResult {
    let wanted = repeated(raw.as_deref(), "s");
    let mut errors = Vec::new();
    let mut ids = Vec::new();
    for w in wanted.iter().take(10) {
        match w.parse::<SessionId>() {
            Ok(id) if !ids.contains(&id) => ids.push(id),
            Ok(_) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    if wanted.len() > 10 {
        errors.push(format!("{} sessions asked; the first 10 are compared", wanted.len()));
    }
    let rows = state.store().sessions_by_id(&ids).await?;
    for id in &ids {
        if !rows.iter().any(|r| &r.id == id) {
            errors.push(format!("unknown session {id}"));
        }
    }
    let now = crate::store::now();
    let positions = positions_for(&state, &rows).await?;
    let mut loss = Chart::new("Train loss", "step", "loss");
    let mut val = Chart::new("Validation accuracy", "epoch", "accuracy");
    val.y_range = Some((0.0, 1.0));
    for r in &rows {
        let label = format!("{} {}", r.id, spec_str(&spec_json(r), "model"));
        let key = r.id.to_string();
        let points = state.store().metric_series(&r.id, "loss", false, MAX_POINTS).await?;
        loss.series.push(Series { label: label.clone(), key: key.clone(), points, dashed: false });
        let points = state.store().metric_series(&r.id, "val_acc", true, MAX_POINTS).await?;
        val.series.push(Series { label, key, points, dashed: false });
    }
    let flat: Vec<_> = rows.iter().map(|r| view::flatten(&spec_json(r))).collect();
    html(&CompareTemplate {
        chrome: Chrome::new(&state, "compare"),
        ids_text: ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" "),
        errors,
        sessions: rows.iter().map(|r| SessionView::new(r, &positions, now)).collect(),
        chart_loss: chart::render(&loss),
        chart_val: chart::render(&val),
        differing: if rows.len() > 1 { view::differing(&flat) } else { Vec::new() },
    })
}

// ---------------------------------------------------------------------------------------------------- ensemble

pub struct MemberView {
    member: String,
    session: String,
    url: String,
    model: String,
    name: String,
    epoch: i64,
    val_acc: String,
    val_loss: String,
    size: String,
}

/// A checkpoint with cached probabilities, offered to the builder.
pub struct CachedView {
    member: String,
    add_url: String,
    tta: String,
    val_acc: String,
}

#[derive(Template)]
#[template(path = "ensemble.html")]
struct EnsembleTemplate {
    chrome: Chrome,
    errors: Vec<String>,
    members: Vec<MemberView>,
    command: String,
    /// The dataset of the members (or `?d=`), whose cache is offered.
    dataset: String,
    cached: Vec<CachedView>,
    /// With no dataset yet: the registered ones, to pick from.
    datasets: Vec<String>,
}

/// The ensemble builder: the members chosen on session pages or from the cached checkpoints of the dataset, a weight
/// each, the validation accuracy of the mix (asked of `/api/datasets/{d}/ensemble` as the weights change) and a submit
/// button (`POST /api/submissions`, behind the token like every mutating route).
async fn ensemble_page(State(state): State<AppState>, RawQuery(raw): RawQuery) -> PageResult {
    let mut errors = Vec::new();
    let mut members = Vec::new();
    let chosen = repeated(raw.as_deref(), "m");
    for m in chosen.iter().take(50) {
        let Some((sid, name)) = m.rsplit_once(':') else {
            errors.push(format!("{m:?} is not SESSION:CHECKPOINT"));
            continue;
        };
        let Ok(id) = sid.parse::<SessionId>() else {
            errors.push(format!("{sid:?} is not a session id"));
            continue;
        };
        let Some(row) = state.store().session(&id).await? else {
            errors.push(format!("unknown session {id}"));
            continue;
        };
        // `7`, `best` or `last`, resolved as everywhere else
        let c = match name.parse::<crate::core::checkpoint::CheckpointRef>() {
            Ok(reference) => match state.daemon.checkpoint_row(&id, reference).await {
                Ok(c) => c,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            },
            Err(e) => {
                errors.push(format!("{m:?}: {e}"));
                continue;
            }
        };
        members.push(MemberView {
            member: m.clone(),
            session: id.to_string(),
            url: session_url(&id.to_string()),
            model: spec_str(&spec_json(&row), "model"),
            name: name.to_string(),
            epoch: c.epoch,
            val_acc: view::percent(Some(c.val_acc)),
            val_loss: c.val_loss.map(view::number).unwrap_or_default(),
            size: view::bytes(c.bytes),
        });
    }
    let command = format!("rush submit {}", members.iter().map(|m| m.member.as_str()).collect::<Vec<_>>().join(" "));
    let asked: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
    let dataset = members
        .first()
        .and_then(|m| m.session.parse::<SessionId>().ok())
        .map(|id| id.dataset)
        .or_else(|| asked.into_iter().find(|(k, _)| k == "d").map(|(_, v)| v))
        .unwrap_or_default();
    let mut cached = Vec::new();
    let registered: Vec<String> = state.store().datasets().await?.into_iter().map(|d| d.name).collect();
    let dataset = if dataset.is_empty() || registered.contains(&dataset) {
        dataset
    } else {
        errors.push(format!("unknown dataset {dataset:?} (registered: {})", registered.join(", ")));
        String::new()
    };
    if !dataset.is_empty() {
        match state.daemon.cached_checkpoints(&dataset).await {
            Ok(list) => {
                let resolved: Vec<String> = members.iter().map(|m| format!("{}:{}", m.session, m.epoch)).collect();
                for c in list {
                    let member = format!("{}:{}", c.session, c.epoch);
                    if chosen.contains(&member) || resolved.contains(&member) {
                        continue;
                    }
                    let mut params: Vec<(&str, &str)> = chosen.iter().map(|m| ("m", m.as_str())).collect();
                    params.push(("m", &member));
                    cached.push(CachedView {
                        add_url: format!("/ensemble?{}", serde_urlencoded::to_string(&params).unwrap_or_default()),
                        member,
                        tta: c.tta.to_string(),
                        val_acc: view::percent(c.val_acc),
                    });
                }
            }
            Err(e) => errors.push(format!("cached checkpoints of {dataset}: {e}")),
        }
    }
    let datasets = if dataset.is_empty() { registered } else { Vec::new() };
    html(&EnsembleTemplate {
        chrome: Chrome::new(&state, "ensemble"),
        errors,
        members,
        command,
        dataset,
        cached,
        datasets,
    })
}

#[derive(Template)]
#[template(path = "board.html")]
struct BoardTemplate {
    chrome: Chrome,
    board: super::submissions::BoardView,
    lines: Vec<BoardLineRow>,
}

pub struct BoardLineRow {
    rank: usize,
    id: i64,
    members: Vec<(String, String, String)>,
    public: String,
    private: String,
    submitted: String,
    submitted_exact: String,
    user: String,
}

#[derive(Debug, Deserialize)]
struct BoardQuery {
    #[serde(default)]
    private: bool,
}

/// A dataset's board: rank, members, public score (private once the daemon's config reveals them), when and who.
async fn board_page(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<BoardQuery>,
) -> PageResult {
    state.daemon.require_dataset("the board", &name).await.map_err(|e| PageError::not_found(e.to_string()))?;
    let board = state.daemon.board(&name, q.private).await?;
    let now = crate::store::now();
    let sessions = board.lines.iter().flat_map(|l| l.sessions.clone()).collect();
    let urls = session_urls(&state, sessions).await?;
    let lines = board
        .lines
        .iter()
        .map(|l| BoardLineRow {
            rank: l.rank,
            id: l.id,
            members: l
                .sessions
                .iter()
                .zip(&l.checkpoints)
                .map(|(s, c)| (s.clone(), urls.get(s).cloned().unwrap_or_default(), c.clone()))
                .collect(),
            public: format!("{:.4}", l.public_score),
            private: l.private_score.map(|p| format!("{p:.4}")).unwrap_or_default(),
            submitted: view::ago(now, Some(l.submitted_at)),
            submitted_exact: view::datetime(l.submitted_at),
            user: l.user.clone(),
        })
        .collect();
    html(&BoardTemplate { chrome: Chrome::new(&state, "datasets"), board, lines })
}

/// The page URL of each of `sessions` that still exists; a removed session has none (its board lines stay, unlinked).
async fn session_urls(state: &AppState, mut sessions: Vec<String>) -> Result<HashMap<String, String>, PageError> {
    sessions.sort();
    sessions.dedup();
    let mut urls = HashMap::new();
    for s in sessions {
        if let Ok(id) = s.parse::<SessionId>()
            && state.store().session(&id).await?.is_some()
        {
            urls.insert(s.clone(), session_url(&s));
        }
    }
    Ok(urls)
}

pub struct SubmissionRowView {
    id: i64,
    dataset: String,
    user: String,
    /// (session:checkpoint, the session's page or empty once removed, weight)
    members: Vec<(String, String, String)>,
    tta: String,
    dry_run: bool,
    state: &'static str,
    score: String,
    error: String,
    created: String,
    created_exact: String,
    download: String,
}

#[derive(Template)]
#[template(path = "submissions.html")]
struct SubmissionsTemplate {
    chrome: Chrome,
    dataset: String,
    submissions: Vec<SubmissionRowView>,
}

#[derive(Debug, Deserialize)]
struct SubmissionsQuery {
    dataset: Option<String>,
}

/// Every submission (or a dataset's), newest first: dry runs, queued, running and failed ones too, which the board
/// never shows. Private scores are not shown here: the board shows them once revealed.
async fn submissions_page(State(state): State<AppState>, Query(q): Query<SubmissionsQuery>) -> PageResult {
    let dataset = q.dataset.filter(|d| !d.is_empty()).unwrap_or_default();
    let rows = state.store().submissions((!dataset.is_empty()).then_some(dataset.as_str())).await?;
    let sessions = rows.iter().flat_map(|r| r.members.iter().map(|m| m.session.clone())).collect();
    let urls = session_urls(&state, sessions).await?;
    let now = crate::store::now();
    let submissions = rows
        .into_iter()
        .map(|r| {
            let view = super::submissions::SubmissionView::new(r, false);
            let score = match (view.public_score, view.samples) {
                (Some(p), Some(n)) if view.dry_run => format!("{p:.4} ({n} samples)"),
                (Some(p), _) => format!("{p:.4}"),
                (None, _) => String::new(),
            };
            SubmissionRowView {
                id: view.id,
                members: view
                    .members
                    .iter()
                    .map(|m| {
                        let url = urls.get(&m.session).cloned().unwrap_or_default();
                        (format!("{}:{}", m.session, m.checkpoint), url, view::number(m.weight))
                    })
                    .collect(),
                dataset: view.dataset,
                user: view.user,
                tta: view.tta,
                dry_run: view.dry_run,
                state: view.state.as_str(),
                score,
                error: view.error.unwrap_or_default(),
                created: view::ago(now, Some(view.created)),
                created_exact: view::datetime(view.created),
                download: view.download.unwrap_or_default(),
            }
        })
        .collect();
    html(&SubmissionsTemplate { chrome: Chrome::new(&state, "submissions"), dataset, submissions })
}

// ---------------------------------------------------------------------------------------------------- specs, datasets

pub struct RejectedView {
    path: String,
    error: String,
    seen: String,
    seen_exact: String,
}

#[derive(Template)]
#[template(path = "specs.html")]
struct SpecsTemplate {
    chrome: Chrome,
    specs: Vec<RejectedView>,
}

async fn specs_page(State(state): State<AppState>) -> PageResult {
    let now = crate::store::now();
    let specs = state
        .store()
        .rejected_specs(500)
        .await?
        .into_iter()
        .map(|(path, error, seen)| RejectedView {
            path,
            error,
            seen: view::ago(now, Some(seen)),
            seen_exact: view::datetime(seen),
        })
        .collect();
    html(&SpecsTemplate { chrome: Chrome::new(&state, "specs"), specs })
}

pub struct DatasetView {
    name: String,
    train: i64,
    classes: i64,
    test: i64,
    registered: String,
    registered_exact: String,
    sessions_url: String,
    board_url: String,
}

#[derive(Template)]
#[template(path = "datasets.html")]
struct DatasetsTemplate {
    chrome: Chrome,
    datasets: Vec<DatasetView>,
}

async fn datasets_page(State(state): State<AppState>) -> PageResult {
    let now = crate::store::now();
    let datasets = state
        .store()
        .datasets()
        .await?
        .into_iter()
        .map(|d| DatasetView {
            sessions_url: list_url(&d.name, "", None),
            board_url: format!("/datasets/{}/board", d.name),
            train: d.train_images,
            classes: d.classes,
            test: d.test_images,
            registered: view::ago(now, Some(d.registered_at)),
            registered_exact: view::datetime(d.registered_at),
            name: d.name,
        })
        .collect();
    html(&DatasetsTemplate { chrome: Chrome::new(&state, "datasets"), datasets })
}

// ---------------------------------------------------------------------------------------------------- system

pub struct SlotRow {
    slot: String,
    session: String,
    url: Option<String>,
    state: &'static str,
    progress: String,
}

pub struct GpuView {
    index: u32,
    name: String,
    util: u32,
    mem_percent: u64,
    memory: String,
    temperature: String,
}

#[derive(Template)]
#[template(path = "system.html")]
struct SystemTemplate {
    chrome: Chrome,
    home: String,
    experiments: String,
    queue_depth: i64,
    slots: Vec<SlotRow>,
    counts: Vec<(&'static str, i64)>,
    gpus: Vec<GpuView>,
    gpu_note: Option<String>,
}

async fn system_page(State(state): State<AppState>) -> PageResult {
    let now = crate::store::now();
    let mut slots = Vec::new();
    for s in state.daemon.slots() {
        let row = match s.session.as_deref().and_then(|id| id.parse::<SessionId>().ok()) {
            Some(id) => state.store().session(&id).await?,
            None => None,
        };
        slots.push(SlotRow {
            slot: s.slot,
            url: s.session.as_deref().map(session_url),
            session: s.session.unwrap_or_default(),
            state: row.as_ref().map(|r| r.state.as_str()).unwrap_or(""),
            progress: row.as_ref().map(|r| progress_text(&progress_of(r, now))).unwrap_or_default(),
        });
    }
    let counts = state.store().session_counts().await?;
    let queue_depth = counts.iter().find(|c| c.0 == SessionState::Queued).map(|c| c.1).unwrap_or(0);
    let (gpus, gpu_note) = match tokio::task::spawn_blocking(gpus::sample).await {
        Ok(gpus::GpuReport::Gpus(list)) => (list, None),
        Ok(gpus::GpuReport::Unavailable(why)) => (Vec::new(), Some(why)),
        Err(e) => (Vec::new(), Some(format!("GPU probe failed: {e}"))),
    };
    html(&SystemTemplate {
        chrome: Chrome::new(&state, "system"),
        home: state.home().root().display().to_string(),
        experiments: state.daemon.config.experiments.display().to_string(),
        queue_depth,
        slots,
        counts: counts.into_iter().map(|(s, c)| (s.as_str(), c)).collect(),
        gpus: gpus
            .into_iter()
            .map(|g| GpuView {
                index: g.index,
                name: g.name,
                util: g.util_percent,
                mem_percent: (g.memory_used * 100).checked_div(g.memory_total).unwrap_or(0),
                memory: format!("{} / {}", view::bytes(g.memory_used as i64), view::bytes(g.memory_total as i64)),
                temperature: g.temperature_c.map(|t| format!("{t} °C")).unwrap_or_default(),
            })
            .collect(),
        gpu_note,
    })
}

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

async fn prometheus(State(state): State<AppState>) -> PageResult {
    use std::fmt::Write;
    let counts = state.store().session_counts().await?;
    let rows = state.store().metric_rows_written().await?;
    let slots = state.daemon.slots();
    let mut out = String::new();
    out.push_str("# HELP rush_sessions Sessions by state.\n# TYPE rush_sessions gauge\n");
    for (s, c) in &counts {
        let _ = writeln!(out, "rush_sessions{{state=\"{s}\"}} {c}");
    }
    let queued = counts.iter().find(|c| c.0 == SessionState::Queued).map(|c| c.1).unwrap_or(0);
    let _ = writeln!(
        out,
        "# HELP rush_queue_depth Sessions waiting for a slot.\n# TYPE rush_queue_depth gauge\nrush_queue_depth {queued}"
    );
    let _ = writeln!(
        out,
        "# HELP rush_metric_rows_written_total Metric rows written to the store.\n\
         # TYPE rush_metric_rows_written_total counter\nrush_metric_rows_written_total {rows}"
    );
    out.push_str("# HELP rush_slot_busy Whether a worker slot runs a session.\n# TYPE rush_slot_busy gauge\n");
    for s in &slots {
        let _ = writeln!(out, "rush_slot_busy{{slot=\"{}\"}} {}", label(&s.slot), u8::from(s.session.is_some()));
    }
    if let Ok(gpus::GpuReport::Gpus(list)) = tokio::task::spawn_blocking(gpus::sample).await {
        out.push_str("# HELP rush_gpu_utilization_percent GPU utilisation (NVML).\n");
        out.push_str("# TYPE rush_gpu_utilization_percent gauge\n");
        for g in &list {
            let _ = writeln!(
                out,
                "rush_gpu_utilization_percent{{gpu=\"{}\",name=\"{}\"}} {}",
                g.index,
                label(&g.name),
                g.util_percent
            );
        }
        out.push_str("# HELP rush_gpu_memory_used_bytes GPU memory in use (NVML).\n");
        out.push_str("# TYPE rush_gpu_memory_used_bytes gauge\n");
        for g in &list {
            let _ = writeln!(out, "rush_gpu_memory_used_bytes{{gpu=\"{}\"}} {}", g.index, g.memory_used);
        }
        out.push_str("# HELP rush_gpu_memory_total_bytes GPU memory installed (NVML).\n");
        out.push_str("# TYPE rush_gpu_memory_total_bytes gauge\n");
        for g in &list {
            let _ = writeln!(out, "rush_gpu_memory_total_bytes{{gpu=\"{}\"}} {}", g.index, g.memory_total);
        }
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response())
}

// ---------------------------------------------------------------------------------------------------- login

#[derive(Template)]
#[template(path = "login.html")]
struct LoginTemplate {
    chrome: Chrome,
    failed: bool,
    /// Where to go once logged in (a path of this site).
    next: String,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

async fn login_page(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> PageResult {
    let next = super::auth::safe_next(q.next.as_deref());
    html(&LoginTemplate { chrome: Chrome::new(&state, ""), failed: false, next })
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

/// Checks the token, keeps it in a cookie and returns to the page first asked for (a path of this site only).
async fn login(State(state): State<AppState>, headers: HeaderMap, Form(form): Form<LoginForm>) -> PageResult {
    let access: &Arc<super::auth::Access> = &state.daemon.config.access;
    let next = super::auth::safe_next(form.next.as_deref());
    if access.token_matches(&form.token) && !super::auth::is_cross_site(&headers) {
        return Ok((
            StatusCode::SEE_OTHER,
            [(header::LOCATION, next), (header::SET_COOKIE, super::auth::token_cookie(&form.token))],
        )
            .into_response());
    }
    let page = LoginTemplate { chrome: Chrome::new(&state, ""), failed: true, next }.render()?;
    Ok((StatusCode::UNAUTHORIZED, Html(page)).into_response())
}

/// Forgets the browser's token and shows the login form.
async fn logout() -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, "/login".to_string()), (header::SET_COOKIE, super::auth::cleared_cookie())],
    )
        .into_response()
}
