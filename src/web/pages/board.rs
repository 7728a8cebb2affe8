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
    board: crate::web::submissions::BoardView,
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
    let board = crate::web::submissions::board_view(&state, &name, q.private)
        .await
        .map_err(|e| PageError { status: e.status, message: e.message })?;
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
