//! A dataset's board (`/datasets/{name}/board`): its ranked submissions, private scores once the config reveals them.

use askama::Template;
use axum::extract::{Path, Query, State};
use serde::Deserialize;

use super::{AppState, Chrome, PageError, PageResult, html, session_urls};
use crate::web::view;

#[derive(Template)]
#[template(path = "board.html")]
struct BoardTemplate {
    chrome: Chrome,
    board: crate::daemon::BoardView,
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
pub(super) struct BoardQuery {
    #[serde(default)]
    private: bool,
}

/// A dataset's board: rank, members, public score (private once the daemon's config reveals them), when and who.
pub(super) async fn board_page(
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
            submitted_exact: view::datetime_utc(l.submitted_at),
            user: l.user.clone(),
        })
        .collect();
    html(&BoardTemplate { chrome: Chrome::new(&state, "datasets"), board, lines })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::super::fixture::Fixture;

    #[tokio::test]
    async fn the_board_ranks_scored_submissions_and_keeps_private_scores_hidden() {
        let f = Fixture::new().await;
        let lower = f.scored_submission(false, 0.75).await;
        let higher = f.scored_submission(false, 0.8).await;
        let dry = f.scored_submission(true, 0.9).await;
        let failed = f.failed_submission("out of memory").await;
        let page = f.get("/datasets/emoji/board").await;
        assert_eq!(page.status, StatusCode::OK);
        let line = |id: i64| page.body.find(&format!("#submission-{id}\">{id}</a>"));
        let (first, second) = (line(higher).unwrap(), line(lower).unwrap());
        assert!(first < second, "ranked by public score");
        assert!(line(dry).is_none() && line(failed).is_none(), "dry runs and failures are not on the board");
        assert!(page.body.contains("<td class=\"num\">0.8000</td>") && !page.body.contains("0.5000"), "no private");
        assert!(page.body.contains(&format!("<a class=\"mono\" href=\"/sessions/{0}\">{0}</a>", f.running)));
        assert_eq!(f.get("/datasets/emoji/board?private=true").await.status, StatusCode::FORBIDDEN);
        let unknown = f.get("/datasets/%3Cb%3Enope/board").await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        assert!(unknown.body.contains("nope") && !unknown.body.contains("<b>"), "{}", unknown.body);
    }
}
