//! The JSON API of submissions, the board and ensembles (merged under `/api` by [`super::api::routes`]):
//!
//! `POST /submissions` (a [`Submission`]; mutating, so behind the token like stop and fork), `GET /submissions?dataset=`,
//! `GET /submissions/{id}`, `GET /submissions/{id}/predictions.npy`, `GET /datasets/{name}/board?private=`,
//! `GET /datasets/{name}/cache` (cached checkpoints with validation accuracy),
//! `GET /datasets/{name}/ensemble?members=S:E:W,...&tta=` (validation accuracy of a mix) and
//! `GET /datasets/{name}/ensemble/auto?max_members=&tta=` (greedy selection).
//!
//! Private scores appear only for the datasets the daemon's config lists in `reveal_private` (after a deadline; the
//! policy is the daemon's, `daemon::board`): `private=true` on any other is refused (403), so no one sees them early.
//! Nothing here reads or returns test labels or their path: only scores.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::ApiError;
use crate::core::access::Caller;
use crate::daemon::{AutoEnsemble, CachedCheckpoint, MixEval, MixMember};
pub use crate::daemon::{BoardLineView, BoardView};
use crate::store::{StoredMember, SubmissionRow, SubmissionState};
use crate::submit::{Submission, Tta};

type ApiResult<T> = Result<Json<T>, ApiError>;

/// A submission as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmissionView {
    pub id: i64,
    pub dataset: String,
    pub user: String,
    pub members: Vec<StoredMember>,
    pub tta: String,
    pub dry_run: bool,
    pub state: SubmissionState,
    /// The public score (a dry run: its accuracy on the dry-run sample).
    pub public_score: Option<f64>,
    /// Only when revealed.
    pub private_score: Option<f64>,
    /// Test stickers predicted.
    pub samples: Option<i64>,
    pub error: Option<String>,
    pub slot: Option<String>,
    pub created: f64,
    pub started: Option<f64>,
    pub finished: Option<f64>,
    pub infer_seconds: Option<f64>,
    pub score_seconds: Option<f64>,
    /// The prediction file's download path, once written.
    pub download: Option<String>,
    /// A queued submission: what it waits for (`a slot: cpu0 runs local/emoji/2`). Only `GET /submissions/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// A ranked submission: how many more its user may make today on its dataset. Only for one submission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_today: Option<u32>,
    /// The daily limit those are counted against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_day: Option<u32>,
}

impl SubmissionView {
    pub fn new(row: SubmissionRow, revealed: bool) -> Self {
        SubmissionView {
            download: row.npy_path.as_ref().map(|_| format!("/api/submissions/{}/predictions.npy", row.id)),
            id: row.id,
            dataset: row.dataset,
            user: row.user,
            members: row.members,
            tta: row.tta,
            dry_run: row.dry_run,
            state: row.state,
            public_score: row.public_score,
            private_score: if revealed { row.private_score } else { None },
            samples: row.samples,
            error: row.error,
            slot: row.slot,
            created: row.created_at,
            started: row.started_at,
            finished: row.finished_at,
            infer_seconds: row.infer_seconds,
            score_seconds: row.score_seconds,
            waiting_for: None,
            left_today: None,
            per_day: None,
        }
    }

    /// With what only the view of one submission carries: what it waits for, and the ranked submissions left today.
    async fn detailed(row: SubmissionRow, state: &AppState) -> Result<Self, ApiError> {
        let waiting_for = state.daemon.submission_waits_for(&row);
        let left = if row.dry_run { None } else { Some(state.daemon.submissions_left(&row.user, &row.dataset).await?) };
        let shown = state.daemon.reveals(&row.dataset);
        let mut view = SubmissionView::new(row, shown);
        view.waiting_for = waiting_for;
        (view.left_today, view.per_day) = left.unzip();
        Ok(view)
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/submissions", get(list).post(create))
        .route("/submissions/{id}", get(one))
        .route("/submissions/{id}/predictions.npy", get(download))
        .route("/datasets/{name}/board", get(board))
        .route("/datasets/{name}/cache", get(cache))
        .route("/datasets/{name}/ensemble", get(evaluate))
        .route("/datasets/{name}/ensemble/auto", get(auto))
}

#[derive(Debug, Default, Deserialize)]
struct RevealQuery {
    #[serde(default)]
    private: bool,
    dataset: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<Submission>,
) -> ApiResult<SubmissionView> {
    // another user's session is unknown to a member, as everywhere
    if let Some(m) = request.members.iter().find(|m| !caller.sees(&m.session.user)) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("unknown session {}", m.session)));
    }
    let row = state.daemon.queue_submission(&caller.user, &request).await?;
    let mut view = SubmissionView::detailed(row, &state).await?;
    view.private_score = None;
    Ok(Json(view))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<RevealQuery>,
) -> ApiResult<Vec<SubmissionView>> {
    if let Some(d) = &q.dataset {
        state.daemon.check_private_asked(d, q.private)?;
    }
    let rows = state.store().submissions(q.dataset.as_deref()).await?;
    Ok(Json(
        rows.into_iter()
            .filter(|r| caller.sees(&r.user))
            .map(|r| {
                let shown = state.daemon.reveals(&r.dataset);
                SubmissionView::new(r, shown)
            })
            .collect(),
    ))
}

/// A submission the caller may see: its own (everything for an admin); another user's is 404 like a missing one.
async fn row(state: &AppState, caller: &Caller, id: i64) -> Result<SubmissionRow, ApiError> {
    state
        .store()
        .submission(id)
        .await?
        .filter(|r| caller.sees(&r.user))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no submission {id}")))
}

async fn one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(q): Query<RevealQuery>,
) -> ApiResult<SubmissionView> {
    let r = row(&state, &caller, id).await?;
    state.daemon.check_private_asked(&r.dataset, q.private)?;
    Ok(Json(SubmissionView::detailed(r, &state).await?))
}

/// The prediction file, as `submission-<id>.npy`.
async fn download(State(state): State<AppState>, caller: Caller, Path(id): Path<i64>) -> Response {
    let r = match row(&state, &caller, id).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    // always the file in the submission's own folder, never a path from elsewhere
    let path = state.home().submission(r.id).join("predictions.npy");
    match (r.npy_path.is_some(), tokio::fs::read(&path).await) {
        (true, Ok(bytes)) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"submission-{id}.npy\"")),
            ],
            Body::from(bytes),
        )
            .into_response(),
        _ => ApiError::new(StatusCode::NOT_FOUND, format!("submission {id} has no prediction file (yet)"))
            .into_response(),
    }
}

async fn board(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<RevealQuery>,
) -> ApiResult<BoardView> {
    Ok(Json(state.daemon.board(&name, q.private).await?))
}

async fn cache(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Vec<CachedCheckpoint>> {
    state.daemon.require_dataset("the cache", &name).await?;
    Ok(Json(state.daemon.cached_checkpoints(&name, caller.only().as_deref()).await?))
}

#[derive(Debug, Deserialize)]
struct MixQuery {
    /// `SESSION:EPOCH:WEIGHT,...`
    members: String,
    tta: Option<String>,
}

fn tta(text: Option<&str>) -> Result<Tta, ApiError> {
    text.unwrap_or("none")
        .parse()
        .map_err(|e: crate::submit::SubmitError| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

/// Parses `SESSION:EPOCH:WEIGHT,...` (the weight may be left out: 1).
pub fn parse_mix(text: &str) -> Result<Vec<MixMember>, String> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|item| {
            let mut parts = item.trim().split(':');
            let (Some(session), Some(epoch)) = (parts.next(), parts.next()) else {
                return Err(format!("{item:?}: expected SESSION:EPOCH:WEIGHT"));
            };
            let session = session.parse().map_err(|e| format!("{item:?}: {e}"))?;
            let epoch = epoch.parse().map_err(|_| format!("{item:?}: epoch {epoch:?} is not a number"))?;
            let weight = match parts.next() {
                Some(w) => w.parse().map_err(|_| format!("{item:?}: weight {w:?} is not a number"))?,
                None => 1.0,
            };
            if parts.next().is_some() {
                return Err(format!("{item:?}: expected SESSION:EPOCH:WEIGHT"));
            }
            Ok(MixMember { session, epoch, weight })
        })
        .collect()
}

async fn evaluate(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<MixQuery>,
) -> ApiResult<MixEval> {
    let members = parse_mix(&q.members).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    if let Some(m) = members.iter().find(|m| !caller.sees(&m.session.user)) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("unknown session {}", m.session)));
    }
    let tta = tta(q.tta.as_deref())?;
    Ok(Json(state.daemon.evaluate_mix(&name, &members, tta).await?))
}

#[derive(Debug, Deserialize)]
struct AutoQuery {
    max_members: Option<usize>,
    tta: Option<String>,
}

async fn auto(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<AutoQuery>,
) -> ApiResult<AutoEnsemble> {
    state.daemon.require_dataset("ensemble auto", &name).await?;
    let tta = tta(q.tta.as_deref())?;
    Ok(Json(state.daemon.auto_ensemble(&name, q.max_members.unwrap_or(10), tta, caller.only().as_deref()).await?))
}
