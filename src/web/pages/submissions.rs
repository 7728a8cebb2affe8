//! The submissions page (`/submissions?dataset=`): every submission, dry runs and failed ones too, newest first.

use askama::Template;
use axum::extract::{Query, State};
use serde::Deserialize;

use super::{AppState, Chrome, PageResult, html, session_urls};
use crate::web::view;

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
pub(super) struct SubmissionsQuery {
    dataset: Option<String>,
}

/// Every submission (or a dataset's), newest first: dry runs, queued, running and failed ones too, which the board
/// never shows. Private scores are not shown here: the board shows them once revealed.
pub(super) async fn submissions_page(State(state): State<AppState>, Query(q): Query<SubmissionsQuery>) -> PageResult {
    let dataset = q.dataset.filter(|d| !d.is_empty()).unwrap_or_default();
    let rows = state.store().submissions((!dataset.is_empty()).then_some(dataset.as_str())).await?;
    let sessions = rows.iter().flat_map(|r| r.members.iter().map(|m| m.session.clone())).collect();
    let urls = session_urls(&state, sessions).await?;
    let now = crate::store::now();
    let submissions = rows
        .into_iter()
        .map(|r| {
            let view = crate::web::submissions::SubmissionView::new(r, false);
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
