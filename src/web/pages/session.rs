//! One session's page (`/sessions/{user}/{dataset}/{n}`): its summary, charts, log tail, checkpoints, spec, forks and
//! submissions; its chart images and files; and the stop and fork buttons, which go through the daemon.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::Value;

use super::{
    AppState, Chrome, PageError, PageResult, html, positions_for, progress_of, progress_text, session_id, session_url,
    spec_json, spec_str, where_of,
};
use crate::core::metric::MAX_POINTS;
use crate::core::session::{SessionId, SessionState};
use crate::home::SessionDir;
use crate::store::{CheckpointRow, SessionRow, StoreError};
use crate::web::chart::{self, Chart, Series};
use crate::web::files;
use crate::web::view::{self, Progress};

/// Log lines the session page shows before live ones arrive.
const LOG_TAIL_LINES: usize = 200;

/// A checkpoint as a line of the session page's table shows it (the `model ls` columns), formatted for reading (the
/// API's wire form is [`crate::web::api::CheckpointView`]).
pub struct CheckpointLine {
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

fn checkpoint_lines(
    row: &SessionRow,
    checkpoints: &[CheckpointRow],
    epoch_seconds: &[(u32, f64)],
    home_dir: &SessionDir,
) -> Vec<CheckpointLine> {
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
            CheckpointLine {
                name: c.name.clone(),
                is_best: Some(c.epoch) == best,
                modified: view::ago(now, Some(c.created_at)),
                modified_exact: view::datetime(c.created_at),
                elapsed: crate::core::checkpoint::elapsed(c.info().epoch, c.created_at, row.started_at, epoch_seconds)
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
    checkpoints: Vec<CheckpointLine>,
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
    checkpoints: Vec<CheckpointLine>,
    ended: bool,
}

/// A session's stored spec as the YAML its `spec.yaml` holds (the runner writes it with the same
/// `ResolvedSpec::to_yaml`); a stored spec that does not read as one is still shown as YAML.
fn spec_yaml(row: &SessionRow, raw: &Value) -> String {
    crate::daemon::resolved_spec(row)
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

pub(super) async fn session_page(
    State(state): State<AppState>,
    Path((user, dataset, n)): Path<(String, String, String)>,
    Query(q): Query<SessionQuery>,
) -> PageResult {
    let id = session_id(&user, &dataset, &n)?;
    let row = state.store().session_required(&id).await?;
    let dir = SessionDir::new(state.home().session(&id));
    let checkpoints = state.store().checkpoints(&id).await?;
    let epoch_seconds = state.daemon.epoch_seconds(&id).await?;
    let lines = checkpoint_lines(&row, &checkpoints, &epoch_seconds, &dir);
    let ended = row.state.is_terminal();
    if q.fragment.as_deref() == Some("checkpoints") {
        return html(&CheckpointRowsTemplate { checkpoints: lines, ended });
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
        checkpoints: lines,
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

pub(super) async fn session_chart(
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

pub(super) async fn session_file(
    State(state): State<AppState>,
    Path((user, dataset, n, path)): Path<(String, String, String, String)>,
) -> PageResult {
    let id = session_id(&user, &dataset, &n)?;
    state.store().session_required(&id).await?;
    Ok(files::serve(&state.home().session(&id), &path).await)
}

pub(super) async fn stop(
    State(state): State<AppState>,
    Path((user, dataset, n)): Path<(String, String, String)>,
) -> PageResult {
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

pub(super) async fn fork(
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
