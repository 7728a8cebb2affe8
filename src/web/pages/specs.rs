//! The specs page (`/specs`): spec files the daemon rejected, with why, newest first.

use askama::Template;
use axum::extract::State;

use super::{AppState, Chrome, PageResult, html};
use crate::web::view;

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

pub(super) async fn specs_page(State(state): State<AppState>) -> PageResult {
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
