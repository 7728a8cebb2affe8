//! The analysis views as JSON: what a checkpoint gets wrong on its validation split (per class, the most confused
//! pairs, per package), the validation stickers of a class or pair with the top predictions, two checkpoints class by
//! class, and what a dataset holds. The pages (`pages/analysis.rs`, `pages/dataset.rs`) show the same; the daemon
//! reads the files (`Daemon::checkpoint_analysis` and the rest).
//!
//! Routes (under `/api`): `GET /sessions/{id}/checkpoints/{checkpoint}/analysis`,
//! `GET /sessions/{id}/checkpoints/{checkpoint}/gallery?class=C` (or `?truth=T&predicted=P`; `&limit=N`, default
//! [`GALLERY_LIMIT`]), `GET /compare/classes?a=SESSION:CHECKPOINT&b=SESSION:CHECKPOINT`, `GET /datasets/{name}/overview`,
//! `GET /datasets/{name}/tags/{tag}`. A checkpoint without validation predictions is a 404 saying so.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use crate::core::analysis::Selection;
use crate::core::session::SessionId;
use crate::core::tags::TagText;
use crate::daemon::{CheckpointAnalysis, ClassComparison, DatasetOverview, Gallery, TagSamples};

/// What the views say of a checkpoint saved before rush kept validation predictions (and never submitted).
pub const NO_PREDICTIONS: &str = "no validation predictions for this checkpoint";
/// Stickers a gallery shows unless asked for fewer.
pub const GALLERY_LIMIT: usize = 60;
/// The most a gallery shows.
pub const GALLERY_MAX: usize = 500;
/// Stickers of each package the tag view shows.
pub const SAMPLES_PER_PACKAGE: usize = 8;

type ApiResult<T> = Result<Json<T>, ApiError>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/sessions/{user}/{dataset}/{n}/checkpoints/{checkpoint}/analysis", get(analysis))
        .route("/sessions/{user}/{dataset}/{n}/checkpoints/{checkpoint}/gallery", get(gallery))
        .route("/compare/classes", get(compare))
        .route("/datasets/{name}/overview", get(overview))
        .route("/datasets/{name}/tags/{tag}", get(tag))
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn no_predictions(id: &SessionId, checkpoint: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("{id}:{checkpoint}: {NO_PREDICTIONS}"))
}

fn session(user: &str, dataset: &str, n: &str) -> Result<SessionId, String> {
    let raw = format!("{user}/{dataset}/{n}");
    raw.parse().map_err(|e: crate::core::session::SessionError| format!("{raw:?}: {e}"))
}

fn tag_id(what: &str, text: &str) -> Result<u16, String> {
    text.trim().parse().map_err(|_| format!("{what} {text:?} is not a tag id"))
}

/// The stickers a gallery asks for: `class`, or `truth` and `predicted`.
pub fn selection(class: Option<&str>, truth: Option<&str>, predicted: Option<&str>) -> Result<Selection, String> {
    fn given(v: Option<&str>) -> Option<&str> {
        v.filter(|s| !s.trim().is_empty())
    }
    match (given(class), given(truth), given(predicted)) {
        (Some(c), None, None) => Ok(Selection::Class { class: tag_id("class", c)? }),
        (None, Some(t), Some(p)) => {
            let (truth, predicted) = (tag_id("truth", t)?, tag_id("predicted", p)?);
            if truth == predicted {
                return Err(format!("truth and predicted are both {truth}: a confusion pair is two classes"));
            }
            Ok(Selection::Pair { truth, predicted })
        }
        _ => Err("ask for `class=C`, or for `truth=T&predicted=P`".into()),
    }
}

/// `SESSION:CHECKPOINT` (the checkpoint `best` when left out).
pub fn member(text: &str) -> Result<(SessionId, String), String> {
    let (id, checkpoint) = match text.trim().rsplit_once(':') {
        Some((id, c)) => (id, c),
        None => (text.trim(), "best"),
    };
    let id = id.parse().map_err(|e: crate::core::session::SessionError| format!("{text:?}: {e}"))?;
    Ok((id, checkpoint.to_string()))
}

/// A tag's label in `language`, from the texts a view carries.
pub fn label(tags: &[TagText], id: u16, language: &str) -> String {
    tags.iter().find(|t| t.id == id).map_or_else(|| format!("tag {id}"), |t| t.label(language))
}

type CheckpointPath = Path<(String, String, String, String)>;

async fn analysis(
    State(state): State<AppState>,
    Path((u, d, n, checkpoint)): CheckpointPath,
) -> ApiResult<CheckpointAnalysis> {
    let id = session(&u, &d, &n).map_err(bad)?;
    match state.daemon.checkpoint_analysis(&id, &checkpoint).await? {
        Some(a) => Ok(Json(a)),
        None => Err(no_predictions(&id, &checkpoint)),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct GalleryQuery {
    pub class: Option<String>,
    pub truth: Option<String>,
    pub predicted: Option<String>,
    pub limit: Option<usize>,
}

async fn gallery(
    State(state): State<AppState>,
    Path((u, d, n, checkpoint)): CheckpointPath,
    Query(q): Query<GalleryQuery>,
) -> ApiResult<Gallery> {
    let id = session(&u, &d, &n).map_err(bad)?;
    let chosen = selection(q.class.as_deref(), q.truth.as_deref(), q.predicted.as_deref()).map_err(bad)?;
    let limit = q.limit.unwrap_or(GALLERY_LIMIT).min(GALLERY_MAX);
    match state.daemon.validation_gallery(&id, &checkpoint, chosen, limit).await? {
        Some(g) => Ok(Json(g)),
        None => Err(no_predictions(&id, &checkpoint)),
    }
}

#[derive(Debug, Deserialize)]
struct CompareQuery {
    a: String,
    b: String,
}

async fn compare(
    State(state): State<AppState>,
    caller: crate::core::access::Caller,
    Query(q): Query<CompareQuery>,
) -> ApiResult<ClassComparison> {
    let (a, ca) = member(&q.a).map_err(bad)?;
    let (b, cb) = member(&q.b).map_err(bad)?;
    if let Some(id) = [&a, &b].into_iter().find(|id| !caller.sees(&id.user)) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("unknown session {id}")));
    }
    Ok(Json(state.daemon.compare_classes((&a, &ca), (&b, &cb)).await?))
}

async fn overview(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<DatasetOverview> {
    Ok(Json(state.daemon.dataset_overview(&name).await?))
}

async fn tag(State(state): State<AppState>, Path((name, tag)): Path<(String, String)>) -> ApiResult<TagSamples> {
    let tag = tag_id("tag", &tag).map_err(bad)?;
    Ok(Json(state.daemon.dataset_tag(&name, tag, SAMPLES_PER_PACKAGE).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_and_members_are_read_or_refused_with_why() {
        assert_eq!(selection(Some("3"), None, None), Ok(Selection::Class { class: 3 }));
        assert_eq!(selection(None, Some("3"), Some("4")), Ok(Selection::Pair { truth: 3, predicted: 4 }));
        assert_eq!(selection(Some(""), Some("3"), Some("4")), Ok(Selection::Pair { truth: 3, predicted: 4 }));
        for (c, t, p) in [(None, None, None), (Some("1"), Some("2"), Some("3")), (None, Some("2"), None)] {
            assert!(selection(c, t, p).unwrap_err().contains("class=C"), "{c:?} {t:?} {p:?}");
        }
        assert!(selection(Some("x<"), None, None).unwrap_err().contains("is not a tag id"));
        assert!(selection(None, Some("5"), Some("5")).unwrap_err().contains("two classes"));
        let (id, c) = member("a/emoji/3:last").unwrap();
        assert_eq!((id.to_string(), c.as_str()), ("a/emoji/3".to_string(), "last"));
        assert_eq!(member("a/emoji/3").unwrap().1, "best");
        assert!(member("nope:1").is_err());
    }
}
