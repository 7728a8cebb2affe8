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
    AppState, Chrome, PageError, PageResult, activity_of, html, positions_for, progress_of, progress_text, session_id,
    session_url, spec_json, spec_str, where_of,
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
    /// Its per-class, confusion and per-package views.
    analysis: String,
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
            let mut summary = match c.ranking_note() {
                Some(note) if c.best_by.is_none() => note,
                _ => format!("val acc {}", view::percent(Some(c.val_acc))),
            };
            if let Some(l) = c.val_loss {
                summary.push_str(&format!(", val loss {}", view::number(l)));
            }
            if let Some(l) = c.train_loss {
                summary.push_str(&format!(", train loss {}", view::number(l)));
            }
            if let Some(name) = &c.best_by {
                summary.push_str(&format!(", best by {name}"));
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
                modified_exact: view::datetime_utc(c.created_at),
                elapsed: crate::core::checkpoint::elapsed(c.info().epoch, c.created_at, row.started_at, epoch_seconds)
                    .map(view::duration)
                    .unwrap_or_default(),
                summary,
                size: view::bytes(c.bytes),
                download,
                member: format!("{id}:{}", c.name),
                analysis: format!("{}/analysis?checkpoint={}", session_url(&id), c.epoch),
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
    /// A sweep trial's ASHA rungs: "rung 1 (epoch 1): 0.4123, promoted at rung 1 ...", one per rung reached.
    rungs: Vec<String>,
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
    /// What it waits for besides its turn, or does before its first step; the live stream keeps it current.
    activity: String,
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
    chart_lr: String,
    chart_throughput: String,
    /// The chart options as a query string, which the live redraws of the charts keep.
    chart_query: String,
    /// The smoothing weights offered, and whether each is the one shown.
    smooth_choices: Vec<(String, bool)>,
    log_y: bool,
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

/// The last `lines` lines of a log file and its length (where a live tail continues from).
pub async fn log_tail(path: &std::path::Path, lines: usize) -> (String, u64) {
    crate::web::logs::last(path, lines).await
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

/// How the per-step charts are drawn: smoothed (an exponential moving average of this weight, 0 for none) and with a
/// logarithmic y axis (loss and learning rate). From the page's `?smooth=0.9&log=1`, kept by its live redraws.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ChartOptions {
    pub smooth: f64,
    pub log_y: bool,
}

/// The smoothing weights the page offers.
const SMOOTHING: [&str; 5] = ["0", "0.6", "0.8", "0.9", "0.99"];

impl ChartOptions {
    fn from_query(smooth: Option<&str>, log: Option<&str>) -> Self {
        let smooth = smooth.and_then(|s| s.trim().parse::<f64>().ok()).filter(|s| s.is_finite()).unwrap_or(0.0);
        ChartOptions {
            smooth: smooth.clamp(0.0, crate::core::metric::MAX_SMOOTHING),
            log_y: matches!(log.map(str::trim), Some("1" | "true" | "on")),
        }
    }

    /// The query string that asks for these options (`""` for the defaults).
    fn query(&self) -> String {
        let mut params = Vec::new();
        if self.smooth > 0.0 {
            params.push(("smooth", self.smooth.to_string()));
        }
        if self.log_y {
            params.push(("log", "1".to_string()));
        }
        serde_urlencoded::to_string(&params).unwrap_or_default()
    }

    /// Smooths every series of a per-step chart and, for `log`, draws it on a log axis.
    fn apply(&self, chart: &mut Chart, log: bool) {
        for s in &mut chart.series {
            s.points = crate::core::metric::ema(&s.points, self.smooth);
        }
        chart.log_y = log && self.log_y;
    }
}

/// The per-step charts beside loss and accuracy: the learning rate and the training throughput (img/s), as every
/// `step` event records them.
pub async fn rate_charts(state: &AppState, id: &SessionId, limit: usize) -> Result<(Chart, Chart), StoreError> {
    let store = state.store();
    let lr = store.metric_series(id, "lr", false, limit).await?;
    let speed = store.metric_series(id, "img_per_s", false, limit).await?;
    let line = |label: &str, key: &str, points| Series { label: label.into(), key: key.into(), points, dashed: false };
    let lr_chart = Chart::new("Learning rate", "step", "lr").series(line("lr", "lr", lr));
    let speed_chart = Chart::new("Throughput", "step", "img/s").series(line("train img/s", "img_per_s", speed));
    Ok((lr_chart, speed_chart))
}

/// The most metrics a code session's "Reported" chart draws.
const MAX_REPORTED: usize = 8;

/// A code session's charts: loss and accuracy per epoch from what it reported (`train__Loss` shown as `train/Loss`),
/// and every other metric it reported (by step) in place of the learning rate, which it does not report.
async fn code_charts(state: &AppState, id: &SessionId, limit: usize) -> Result<(Chart, Chart, Chart), StoreError> {
    let store = state.store();
    let line = |label: &str, key: &str, points, dashed| Series { label: label.into(), key: key.into(), points, dashed };
    let names = store.metric_names(id).await?;
    let shown = |name: &str| name.replace("__", "/");
    // Each rush metric under the name the code reported it by.
    let reported_as = |standard: &str| {
        names.iter().find(|n| crate::core::event::standard_metric(n) == Some(standard)).map(|n| shown(n))
    };
    let mut loss = Chart::new("Loss", "epoch", "loss");
    let mut acc = Chart::new("Accuracy", "epoch", "accuracy");
    for (is_loss, key, dashed) in
        [(true, "train_loss", false), (true, "val_loss", true), (false, "train_acc", false), (false, "val_acc", true)]
    {
        if let Some(label) = reported_as(key) {
            let points = store.metric_series(id, key, false, limit).await?;
            let chart = if is_loss { &mut loss } else { &mut acc };
            chart.series.push(line(&label, key, points, dashed));
        }
    }
    acc.y_range = Some((0.0, 1.0));
    let mut other = Chart::new("Reported", "step", "value");
    let standard = ["train_loss", "train_acc", "val_loss", "val_acc"];
    let rest = names
        .iter()
        .filter(|n| !standard.contains(&n.as_str()) && crate::core::event::standard_metric(n).is_none())
        .take(MAX_REPORTED);
    for name in rest {
        let points = store.metric_series(id, name, false, limit).await?;
        other.series.push(line(&shown(name), name, points, false));
    }
    Ok((loss, acc, other))
}

/// All four charts of a session, drawn as `opts` asks.
async fn all_charts(
    state: &AppState,
    id: &SessionId,
    limit: usize,
    opts: ChartOptions,
) -> Result<[Chart; 4], StoreError> {
    let is_code =
        state.store().session(id).await?.and_then(|r| r.resolved_spec().ok()).is_some_and(|r| r.spec.is_code());
    if is_code {
        let (loss, acc, mut other) = code_charts(state, id, limit).await?;
        let (_, mut speed) = rate_charts(state, id, limit).await?;
        opts.apply(&mut other, false);
        opts.apply(&mut speed, false);
        return Ok([loss, acc, other, speed]);
    }
    let (mut loss, acc) = session_charts(state, id, limit).await?;
    let (mut lr, mut speed) = rate_charts(state, id, limit).await?;
    opts.apply(&mut loss, true);
    opts.apply(&mut lr, true);
    opts.apply(&mut speed, false);
    Ok([loss, acc, lr, speed])
}

#[derive(Debug, Default, Deserialize)]
pub struct SessionQuery {
    fragment: Option<String>,
    error: Option<String>,
    smooth: Option<String>,
    log: Option<String>,
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
    let chart_options = ChartOptions::from_query(q.smooth.as_deref(), q.log.as_deref());
    let [loss, acc, lr, speed] = all_charts(&state, &id, MAX_POINTS, chart_options).await?;
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
    let rungs = state
        .store()
        .session_rungs(&id)
        .await?
        .into_iter()
        .map(|r| {
            let metric = r.metric.map(|m| format!("{m:.4}")).unwrap_or_else(|| "not a number".into());
            let decision = r.reason.unwrap_or_else(|| "waiting for the rung's decision".into());
            format!("rung {} (epoch {}): {metric}; {decision}", r.rung + 1, r.epoch)
        })
        .collect();
    html(&SessionTemplate {
        chrome: Chrome::new(&state, "sessions"),
        forks,
        submissions,
        rungs,
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
        activity: activity_of(&state, &row),
        queued: view::ago(now, Some(row.queued_at)),
        queued_exact: view::datetime_utc(row.queued_at),
        started: row.started_at.map(view::datetime_utc).unwrap_or_default(),
        elapsed,
        running_for: running_for.map(|r| format!("{:.0}", r.max(0.0))).unwrap_or_default(),
        last_step,
        fork_of: row.fork_of.as_ref().map(|f| {
            let session = f.rsplit_once(':').map(|(s, _)| s).unwrap_or(f);
            (session_url(session), f.clone())
        }),
        reason: view::exit_text(row.state, row.exit_reason.as_deref()),
        chart_loss: chart::render(&loss),
        chart_accuracy: chart::render(&acc),
        chart_lr: chart::render(&lr),
        chart_throughput: chart::render(&speed),
        chart_query: chart_options.query(),
        smooth_choices: SMOOTHING
            .iter()
            .map(|s| (s.to_string(), s.parse::<f64>().is_ok_and(|v| (v - chart_options.smooth).abs() < 1e-9)))
            .collect(),
        log_y: chart_options.log_y,
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
    smooth: Option<String>,
    log: Option<String>,
}

pub(super) async fn session_chart(
    State(state): State<AppState>,
    Path((user, dataset, n, which)): Path<(String, String, String, String)>,
    Query(q): Query<ChartQuery>,
) -> PageResult {
    let id = session_id(&user, &dataset, &n)?;
    state.store().session_required(&id).await?;
    let limit = q.points.unwrap_or(MAX_POINTS).clamp(2, MAX_POINTS);
    let opts = ChartOptions::from_query(q.smooth.as_deref(), q.log.as_deref());
    let [loss, acc, lr, speed] = all_charts(&state, &id, limit, opts).await?;
    let chart = match which.as_str() {
        "loss.svg" => loss,
        "accuracy.svg" => acc,
        "lr.svg" => lr,
        "throughput.svg" => speed,
        other => {
            return Err(PageError::not_found(format!(
                "no chart {other:?} (loss.svg, accuracy.svg, lr.svg, throughput.svg)"
            )));
        }
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
    caller: crate::core::access::Caller,
    Path((user, dataset, n)): Path<(String, String, String)>,
    Form(form): Form<ForkForm>,
) -> PageResult {
    let id = session_id(&user, &dataset, &n)?;
    let url = session_url(&id.to_string());
    let memo = (!form.memo.is_empty()).then_some(form.memo.as_str());
    Ok(match state.daemon.fork(&caller.user, &id, &form.checkpoint, Some(&form.args), memo).await {
        Ok(new) => Redirect::to(&session_url(&new.to_string())).into_response(),
        Err(e) => back_with_error(&url, &PageError::from(e).message),
    })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::super::fixture::{ESCAPED_MEMO, Fixture, HOSTILE_LOG_LINE, HOSTILE_MEMO};
    use super::*;
    use crate::store::MetricRow;

    #[tokio::test]
    async fn the_page_shows_the_session_with_its_log_and_checkpoint_escaped() {
        let f = Fixture::new().await;
        let base = session_url(&f.running.to_string());
        let page = f.get(&base).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains(ESCAPED_MEMO) && !page.body.contains(HOSTILE_MEMO), "the memo, escaped");
        assert!(page.body.contains("&#60;img src=x onerror=alert(2)&#62;"), "the log's line, escaped");
        assert!(!page.body.contains(HOSTILE_LOG_LINE));
        // The checkpoint: its summary, a download of its file (inside the session folder), a fork choice.
        let sdir = SessionDir::new(f.state.home().session(&f.running));
        let file = sdir.checkpoint_weights(2);
        let rel = file.strip_prefix(sdir.root()).unwrap().display().to_string();
        assert!(page.body.contains(&format!("href=\"{base}/files/{rel}\">download</a>")), "{}", page.body);
        assert!(page.body.contains("val acc 50.00%, val loss 1.2, train loss 1.1"), "{}", page.body);
        assert!(page.body.contains("<option value=\"best\""), "the fork box");
        assert!(page.body.contains(&format!("{base}/live?log_offset=")), "the live stream continues the log");
        // `?error=` (a button's refusal) is shown, escaped.
        let page = f.get(&format!("{base}?error=%3Cb%3Eno%3C%2Fb%3E")).await;
        assert!(page.body.contains("<div class=\"card error\">&#60;b&#62;no&#60;/b&#62;</div>"), "{}", page.body);
    }

    #[tokio::test]
    async fn a_succeeded_session_s_exit_says_so_and_times_name_their_zone() {
        let f = Fixture::new().await;
        f.state.store().transition(&f.running, SessionState::Succeeded, None, None).await.unwrap();
        let page = f.get(&session_url(&f.running.to_string())).await;
        let exit = page.body.split("<span>Exit</span><b id=\"reason\">").nth(1).and_then(|r| r.split("</b>").next());
        assert_eq!(exit, Some("succeeded: every epoch trained (exit code 0)"), "{}", page.body);
        let started = page.body.split("<span>Started</span><b>").nth(1).and_then(|r| r.split("</b>").next());
        assert!(started.is_some_and(|s| s.ends_with(" UTC")), "{started:?}");
        assert!(page.body.contains(" UTC\">"), "the exact times in titles name the zone too");
    }

    #[tokio::test]
    async fn lr_and_throughput_are_charted_smoothed_and_on_a_log_axis_when_asked() {
        let f = Fixture::new().await;
        let row = |step: i64, name: &str, value: f64| MetricRow {
            session: f.running.to_string(),
            step,
            epoch: 1,
            name: name.into(),
            value,
            t: 0.0,
        };
        let mut rows = Vec::new();
        for step in 1..=40 {
            rows.push(row(step, "loss", if step % 2 == 0 { 1.0 } else { 3.0 }));
            rows.push(row(step, "lr", 0.1 * 0.8f64.powi(step as i32)));
            rows.push(row(step, "img_per_s", 500.0 + step as f64));
        }
        f.state.store().insert_metrics(&rows).await.unwrap();
        let base = session_url(&f.running.to_string());
        let page = f.get(&base).await;
        for (id, title) in [("chart-lr", "Learning rate"), ("chart-throughput", "Throughput")] {
            let chart = page.body.split(&format!("<div id=\"{id}\" class=\"chart-box\">")).nth(1).unwrap_or("");
            assert!(chart.starts_with("<svg class=\"chart\"") && chart.contains(title), "{id}");
            let points = chart.split("points=\"").nth(1).and_then(|p| p.split('"').next()).unwrap_or("");
            assert_eq!(points.split(' ').count(), 40, "{id}: one point per step");
        }
        assert!(page.body.contains("<select id=\"smooth\" name=\"smooth\""), "the smoothing choice");
        // The chart routes take the same options: a smoothed loss swings less; a log axis says so.
        let f = &f;
        let svg = |q: &'static str, which: &'static str| {
            let uri = format!("{base}/charts/{which}{q}");
            async move { f.get(&uri).await }
        };
        let ys = |svg: &str| -> Vec<f64> {
            let p = svg.split("points=\"").nth(1).and_then(|p| p.split('"').next()).unwrap_or("");
            p.split(' ').filter_map(|xy| xy.split_once(',')?.1.parse().ok()).collect()
        };
        let spread =
            |v: Vec<f64>| v.iter().copied().fold(f64::MIN, f64::max) - v.iter().copied().fold(f64::MAX, f64::min);
        let raw = svg("", "loss.svg").await.body;
        let smooth = svg("?smooth=0.9", "loss.svg").await.body;
        assert!(spread(ys(&smooth)[5..].to_vec()) < spread(ys(&raw)[5..].to_vec()) / 2.0, "smoothed");
        let lr = svg("?log=1", "lr.svg").await;
        assert_eq!(lr.status, StatusCode::OK);
        assert!(lr.body.contains("data-log-y=\"1\"") && lr.body.contains("(log scale)"), "{}", lr.body);
        let page = f.get(&format!("{base}?smooth=0.9&log=1")).await;
        assert!(page.body.contains("data-chart-query=\"smooth=0.9&#38;log=1\""), "the live redraws keep the options");
        assert!(page.body.contains("<option value=\"0.9\" selected>"), "the choice shown");
    }

    #[tokio::test]
    async fn a_checkpoint_elapsed_is_training_time_else_time_since_the_start_never_negative() {
        let f = Fixture::new().await;
        let row = f.state.store().session_required(&f.running).await.unwrap();
        let started = row.started_at.unwrap();
        // Checkpoint 3 of an earlier run: saved before this run started, and epoch 3's duration is unknown.
        let earlier = CheckpointRow {
            session: f.running.to_string(),
            epoch: 3,
            name: "3".into(),
            path: "/elsewhere/3.safetensors".into(),
            val_acc: 0.25,
            val_loss: None,
            train_loss: None,
            bytes: 8,
            created_at: started - 100.0,
            score: None,
            best_by: None,
        };
        f.state.store().add_checkpoint(&earlier).await.unwrap();
        let seconds = |epoch: i64, value: f64| MetricRow {
            session: f.running.to_string(),
            step: epoch * 10,
            epoch,
            name: "epoch_seconds".into(),
            value,
            t: 0.0,
        };
        f.state.store().insert_metrics(&[seconds(1, 10.0), seconds(2, 20.0)]).await.unwrap();
        let rows = f.get(&format!("/sessions/{}?fragment=checkpoints", f.running)).await;
        assert_eq!(rows.status, StatusCode::OK);
        let elapsed = |name: &str| {
            let row = rows.body.split(&format!("<td class=\"mono\">{name}")).nth(1).unwrap_or_else(|| panic!("{name}"));
            row.split("<td class=\"num\">").nth(1).and_then(|c| c.split("</td>").next()).unwrap_or("?").to_string()
        };
        assert_eq!(elapsed("2"), "30s", "epochs 1 and 2 trained 10 s and 20 s");
        assert_eq!(elapsed("3"), "0s", "saved before the start: zero, not blank");
        assert!(!rows.body.contains("/elsewhere/"), "no download for a file outside the session folder");
    }

    #[tokio::test]
    async fn unknown_sessions_bad_ids_and_charts_are_error_pages() {
        let f = Fixture::new().await;
        let page = f.get("/sessions/tester/emoji/77").await;
        assert_eq!(page.status, StatusCode::NOT_FOUND);
        assert!(page.body.contains("unknown session tester/emoji/77"), "{}", page.body);
        let page = f.get("/sessions/%3Cb%3E/emoji/1").await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
        assert!(page.body.contains("is not a session id") && !page.body.contains("<b>"), "{}", page.body);
        for uri in ["/sessions/tester/emoji/77/charts/loss.svg", "/sessions/tester/emoji/1/charts/x.svg"] {
            assert_eq!(f.get(uri).await.status, StatusCode::NOT_FOUND, "{uri}");
        }
        let chart = f.get(&format!("/sessions/{}/charts/accuracy.svg", f.running)).await;
        assert_eq!((chart.status, chart.header("content-type")), (StatusCode::OK, "image/svg+xml"));
        assert_eq!(f.get("/sessions/tester/emoji/77/files/train.log").await.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_stop_button_goes_back_to_the_page_with_the_daemon_s_answer() {
        let f = Fixture::new().await;
        let url = session_url(&f.queued.to_string());
        let stopped = f.post_form(&format!("{url}/stop"), "", &[]).await;
        assert_eq!((stopped.status, stopped.header("location")), (StatusCode::SEE_OTHER, url.as_str()));
        assert_eq!(f.state.store().session_required(&f.queued).await.unwrap().state, SessionState::Stopped);
        let again = f.post_form(&format!("{url}/stop"), "", &[]).await;
        assert_eq!(again.status, StatusCode::SEE_OTHER);
        let back = again.header("location");
        assert!(back.starts_with(&format!("{url}?error=")) && back.contains("already+stopped"), "{back}");
        let fork = f.post_form(&format!("{url}/fork"), "checkpoint=best", &[]).await;
        assert!(fork.header("location").starts_with(&format!("{url}?error=")), "no checkpoint to fork from");
    }

    #[test]
    fn the_fork_box_offers_best_and_last_then_the_epochs_newest_first() {
        let checkpoint = |epoch: i64| CheckpointRow {
            session: "tester/emoji/1".into(),
            epoch,
            name: epoch.to_string(),
            path: String::new(),
            val_acc: 0.5,
            val_loss: None,
            train_loss: None,
            bytes: 1,
            created_at: 0.0,
            score: None,
            best_by: None,
        };
        assert!(fork_choices(&[]).is_empty());
        assert_eq!(fork_choices(&[checkpoint(1), checkpoint(3), checkpoint(2)]), ["best", "last", "3", "2", "1"]);
    }

    #[tokio::test]
    async fn the_log_tail_is_the_last_whole_lines_and_the_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.log");
        assert_eq!(log_tail(&path, 3).await, (String::new(), 0), "no log yet");
        let text: String = (0..10_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        assert_eq!(log_tail(&path, 3).await, ("line 9997\nline 9998\nline 9999\n".to_string(), text.len() as u64));
        // Longer than the 64 KiB window: every line shown is whole.
        let (tail, _) = log_tail(&path, 100_000).await;
        assert!(tail.starts_with("line ") && tail.len() <= 64 * 1024, "{}", &tail[..20]);
        assert!(tail.lines().all(|l| l.strip_prefix("line ").is_some_and(|n| n.parse::<u32>().is_ok())));
    }
}
