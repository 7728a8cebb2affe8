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
pub(super) async fn submissions_page(
    State(state): State<AppState>,
    caller: crate::core::access::Caller,
    Query(q): Query<SubmissionsQuery>,
) -> PageResult {
    let dataset = q.dataset.filter(|d| !d.is_empty()).unwrap_or_default();
    let mut rows = state.store().submissions((!dataset.is_empty()).then_some(dataset.as_str())).await?;
    rows.retain(|r| caller.sees(&r.user));
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
                created_exact: view::datetime_utc(view.created),
                download: view.download.unwrap_or_default(),
            }
        })
        .collect();
    html(&SubmissionsTemplate { chrome: Chrome::new(&state, "submissions"), dataset, submissions })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::super::fixture::Fixture;

    #[tokio::test]
    async fn every_submission_is_listed_newest_first_with_its_error_escaped() {
        let f = Fixture::new().await;
        let ranked = f.scored_submission(false, 0.75).await;
        let dry = f.scored_submission(true, 0.625).await;
        let failed = f.failed_submission("rush infer: <b>out of memory</b>").await;
        let page = f.get("/submissions?dataset=emoji").await;
        assert_eq!(page.status, StatusCode::OK);
        let at = |id: i64| page.body.find(&format!("id=\"submission-{id}\"")).unwrap_or_else(|| panic!("{id}"));
        assert!(at(failed) < at(dry) && at(dry) < at(ranked), "newest first");
        let row = |id: i64| page.body[at(id)..].split("</tr>").next().unwrap().to_string();
        assert!(row(dry).contains("<td>yes</td>") && row(dry).contains("0.6250 (4 samples)"), "{}", row(dry));
        assert!(row(ranked).contains("0.7500") && !row(ranked).contains("0.5000"), "no private score here");
        assert!(row(failed).contains("&#60;b&#62;out of memory&#60;/b&#62;"), "{}", row(failed));
        assert!(!page.body.contains("<b>out"));
        assert!(row(ranked).contains(&format!("href=\"/sessions/{0}\">{0}:2</a>", f.running)), "{}", row(ranked));
        let other = f.get("/submissions?dataset=other").await;
        assert!(other.body.contains("No submissions yet."), "{}", other.body);
    }
}
