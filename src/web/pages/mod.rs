//! The dashboard's HTML pages (askama templates in `templates/`, escaped by default), one module per page: sessions,
//! one session with its charts, log and checkpoints, what a checkpoint gets wrong (with its gallery of stickers),
//! compare, the ensemble picked from checkpoints, a dataset (its classes, packages and stickers) and its board, every
//! submission, rejected specs, datasets, system (with `/metrics` for Prometheus), and the token form. This module
//! holds what they share: the routes, the error page, the header, the session table row, and the static files. Pages
//! read through the store; the buttons (stop, fork) go through the daemon, like the JSON API; `/login` and `/logout`
//! keep or forget the token in a cookie. Live updates are in [`super::sse`].

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde_json::Value;

use super::AppState;
use super::api::activity_of;
pub use super::error::PageError;
use super::sse;
pub use super::view::progress_text;
use super::view::{self, Progress};
use crate::core::session::{SessionId, SessionState};
use crate::store::SessionRow;

mod analysis;
mod board;
mod compare;
mod dataset;
mod datasets;
mod ensemble;
#[cfg(test)]
mod fixture;
mod login;
mod session;
mod sessions;
mod specs;
mod submissions;
mod system;

/// The dashboard's routes, merged into the app by [`super::router`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/sessions") }))
        .route("/sessions", get(sessions::sessions_page))
        .route("/sessions/live", get(sse::sessions_live))
        .route("/sessions/{user}/{dataset}/{n}", get(session::session_page))
        .route("/sessions/{user}/{dataset}/{n}/live", get(sse::session_live))
        .route("/sessions/{user}/{dataset}/{n}/charts/{chart}", get(session::session_chart))
        .route("/sessions/{user}/{dataset}/{n}/files/{*path}", get(session::session_file))
        .route("/sessions/{user}/{dataset}/{n}/stop", post(session::stop))
        .route("/sessions/{user}/{dataset}/{n}/fork", post(session::fork))
        .route("/sessions/{user}/{dataset}/{n}/analysis", get(analysis::analysis_page))
        .route("/sessions/{user}/{dataset}/{n}/gallery", get(analysis::gallery_page))
        .route("/compare", get(compare::compare_page))
        .route("/ensemble", get(ensemble::ensemble_page))
        .route("/specs", get(specs::specs_page))
        .route("/datasets", get(datasets::datasets_page))
        .route("/datasets/{name}", get(dataset::dataset_page))
        .route("/datasets/{name}/board", get(board::board_page))
        .route("/datasets/{name}/tags/{tag}", get(dataset::tag_page))
        .route("/datasets/{name}/images/{package}/{sticker}", get(dataset::image))
        .route("/submissions", get(submissions::submissions_page))
        .route("/system", get(system::system_page))
        .route("/metrics", get(system::prometheus))
        .route("/login", get(login::login_page).post(login::login))
        .route("/logout", post(login::logout))
        .route(
            "/static/rush.css",
            get(|| async { asset("text/css; charset=utf-8", include_str!("../../../static/rush.css")) }),
        )
        .route(
            "/static/rush.js",
            get(|| async { asset("text/javascript; charset=utf-8", include_str!("../../../static/rush.js")) }),
        )
        // The pages link the icon; `/favicon.ico` answers too, for whatever asks for it without a link.
        .route("/static/favicon.svg", get(|| async { asset("image/svg+xml", FAVICON) }))
        .route("/favicon.ico", get(|| async { asset("image/svg+xml", FAVICON) }))
}

const FAVICON: &str = include_str!("../../../static/favicon.svg");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
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
    /// A token is configured (or users are): the header offers to log out.
    pub logout: bool,
}

impl Chrome {
    fn new(state: &AppState, nav: &'static str) -> Self {
        // who asks (a shared daemon's user), else the daemon's own user
        let caller = crate::web::auth::CALLER.try_with(|c| c.user.clone()).ok().filter(|u| !u.is_empty());
        Self {
            nav,
            user: caller.unwrap_or_else(|| state.daemon.config.user.clone()),
            addr: state.daemon.config.bind.to_string(),
            logout: state.daemon.config.access.has_token() || !state.daemon.users().is_empty(),
        }
    }
}

/// The URL of a session's page.
pub fn session_url(id: &str) -> String {
    format!("/sessions/{id}")
}

/// A session's resolved spec as JSON (flat: the spec's fields beside `session` and `dataset_path`), for the
/// tables' columns and the compare page's differences; `null` when the stored spec is unreadable.
fn spec_json(row: &SessionRow) -> Value {
    row.resolved_spec().ok().and_then(|r| serde_json::to_value(r).ok()).unwrap_or(Value::Null)
}

fn spec_str(spec: &Value, field: &str) -> String {
    match spec.get(field) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

/// One session as a line of the sessions and compare tables shows it, formatted for reading (the API's wire form is
/// [`super::api::SessionView`]).
#[derive(Debug, Clone)]
pub struct SessionLine {
    pub id: String,
    pub url: String,
    pub state: &'static str,
    pub dataset: String,
    pub model: String,
    pub progress: Progress,
    pub best: String,
    pub where_: String,
    /// What a queued session waits for besides its turn, or what a running one does before its first step (see
    /// [`activity_of`]); "" for neither. The sessions table fills it in.
    pub activity: String,
    pub memo: String,
    /// Why a session that did not succeed ended (the first line of its reason), or what a fork starts from.
    pub note: String,
    pub queued: String,
    pub queued_exact: String,
    /// Values the table sorts by where the text would not: the session's number, the best accuracy as a number
    /// ("" for none), the time it was queued.
    pub n: u32,
    pub best_value: String,
    pub queued_at: String,
    /// The hyperparameter columns the sessions table shows (its `col` choice), in order.
    pub params: Vec<String>,
    /// A trial of a sweep with a searcher: `k/R`, the rung it has reached ("" for any other session).
    pub rung: String,
    /// The sweep the session is a point of on the sessions table ("" for none), and, on its first row there, the
    /// sweep's header.
    pub group: String,
    pub sweep: Option<SweepHead>,
}

/// The row heading a sweep's points on the sessions table.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepHead {
    /// The spec file's name.
    pub name: String,
    pub path: String,
    /// Points queued, and shown on this page.
    pub points: i64,
    pub shown: usize,
    /// The best point's validation accuracy.
    pub best: String,
}

/// The row's note: a failed, stopped, interrupted or pruned session's reason (a pruned one's names its rung and rank),
/// or a waiting one's, else what a fork starts from.
fn note_of(row: &SessionRow) -> String {
    let reason = match row.state {
        SessionState::Failed
        | SessionState::Stopped
        | SessionState::Interrupted
        | SessionState::Pruned
        | SessionState::Waiting => {
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

impl SessionLine {
    fn new(row: &SessionRow, positions: &HashMap<SessionId, usize>, now: f64) -> Self {
        let spec = spec_json(row);
        let id = row.id.to_string();
        SessionLine {
            url: session_url(&id),
            id,
            state: row.state.as_str(),
            dataset: row.id.dataset.clone(),
            model: spec_str(&spec, "model"),
            progress: progress_of(row, now),
            best: view::percent(row.best_val_acc),
            where_: where_of(row, positions),
            activity: String::new(),
            memo: row.memo.clone(),
            note: note_of(row),
            queued: view::ago(now, Some(row.queued_at)),
            queued_exact: view::datetime_utc(row.queued_at),
            n: row.id.n,
            best_value: row.best_val_acc.map(|b| b.to_string()).unwrap_or_default(),
            queued_at: format!("{:.3}", row.queued_at),
            params: Vec::new(),
            rung: row.rung_label().unwrap_or_default(),
            group: String::new(),
            sweep: None,
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

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::fixture::Fixture;
    use super::*;
    use crate::daemon::DaemonError;
    use crate::store::StoreError;

    async fn shown(e: PageError) -> (StatusCode, String) {
        let response = e.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn page_errors_carry_their_status_and_show_no_internals() {
        let conflict = DaemonError::Conflict("session tester/emoji/1 is already stopped".into());
        let cases = [
            (
                PageError::from(StoreError::UnknownSession("tester/emoji/9".into())),
                404,
                "unknown session tester/emoji/9",
            ),
            (
                PageError::from(DaemonError::Store(StoreError::UnknownSession("a/b/1".into()))),
                404,
                "unknown session a/b/1",
            ),
            (PageError::from(DaemonError::NotFound("no checkpoint 9".into())), 404, "no checkpoint 9"),
            (PageError::from(conflict), 409, "already stopped"),
            (PageError::from(DaemonError::Invalid("bad args".into())), 400, "bad args"),
            (PageError::from(DaemonError::Limit("no submissions left today".into())), 429, "no submissions left"),
            (PageError::not_found("no chart"), 404, "no chart"),
            (PageError::bad("not a session id"), 400, "not a session id"),
        ];
        for (error, status, message) in cases {
            let (got, body) = shown(error).await;
            assert_eq!(got.as_u16(), status, "{body}");
            assert!(body.contains(message), "{status}: {body}");
            assert!(body.contains(&format!("<title>{got}</title>")) && body.contains("href=\"/sessions\""), "{body}");
        }
        // Internals go to the log, not to the page.
        let corrupt = StoreError::Corrupt { table: "sessions", message: "secret detail".into() };
        let (status, body) = shown(PageError::from(corrupt)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains("the database could not be read") && !body.contains("secret detail"), "{body}");
        let (status, body) = shown(PageError::from(askama::Error::Fmt)).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains("the page could not be drawn"), "{body}");
        // The message is escaped.
        let (_, body) = shown(PageError::bad("\"<b>x</b>\" is not a session id")).await;
        assert!(
            body.contains("&quot;&lt;b&gt;x&lt;/b&gt;&quot; is not a session id") && !body.contains("<b>x"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_session_line_says_where_the_session_is_and_why_it_ended() {
        let f = Fixture::new().await;
        let store = f.state.store();
        let running = store.session_required(&f.running).await.unwrap();
        let queued = store.session_required(&f.queued).await.unwrap();
        let positions = positions_for(&f.state, &[running.clone(), queued.clone()]).await.unwrap();
        let now = crate::store::now();
        let line = SessionLine::new(&running, &positions, now);
        assert_eq!((line.where_.as_str(), line.state, line.model.as_str()), ("cpu0", "running", "baseline_cnn"));
        assert_eq!((line.progress.done, line.progress.total, line.best.as_str()), (2, 5, "50.00%"));
        assert_eq!(line.url, format!("/sessions/{}", f.running));
        let line = SessionLine::new(&queued, &positions, now);
        assert_eq!((line.where_.as_str(), line.note.as_str()), ("queue #1", ""));
        // An ended session: the first line of why; a fork that has not failed: what it starts from.
        let mut failed = queued.clone();
        failed.state = SessionState::Failed;
        failed.exit_reason = Some("  CUDA out of memory \nTraceback ...".into());
        failed.fork_of = Some(format!("{}:2", f.running));
        let line = SessionLine::new(&failed, &positions, now);
        assert_eq!((line.where_.as_str(), line.note.as_str()), ("", "CUDA out of memory"));
        let mut fork = queued.clone();
        fork.fork_of = Some(format!("{}:2", f.running));
        assert_eq!(SessionLine::new(&fork, &positions, now).note, format!("fork of {}:2", f.running));
    }

    #[test]
    fn repeated_parameters_and_id_lists_are_read_in_order() {
        let raw = "s=a%2Fb%2F1&x=zz&ids=c%2Fd%2F2%2C+e%2Fd%2F3&s=&s=f%2Fd%2F4";
        assert_eq!(repeated(Some(raw), "s"), ["a/b/1", "c/d/2", "e/d/3", "f/d/4"]);
        assert_eq!(repeated(Some(raw), "x"), ["zz", "c/d/2", "e/d/3"]);
        assert!(repeated(None, "s").is_empty());
    }

    #[tokio::test]
    async fn every_page_route_answers_and_the_root_opens_the_sessions() {
        let f = Fixture::new().await;
        let root = f.get("/").await;
        assert_eq!((root.status, root.header("location")), (StatusCode::SEE_OTHER, "/sessions"));
        for (uri, content_type) in [
            ("/static/rush.css", "text/css; charset=utf-8"),
            ("/static/rush.js", "text/javascript; charset=utf-8"),
            ("/static/favicon.svg", "image/svg+xml"),
            ("/favicon.ico", "image/svg+xml"),
        ] {
            let a = f.get(uri).await;
            assert_eq!((a.status, a.header("content-type")), (StatusCode::OK, content_type), "{uri}");
            assert_eq!(a.header("cache-control"), "max-age=300", "{uri}");
            assert!(!a.body.is_empty(), "{uri}");
        }
    }
}
