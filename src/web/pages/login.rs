//! The token form (`/login`), which keeps the token in a cookie and returns to the page first asked for, and
//! `/logout`, which forgets it.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::{AppState, Chrome, PageResult, html};
use crate::web::auth;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginTemplate {
    chrome: Chrome,
    failed: bool,
    /// Where to go once logged in (a path of this site).
    next: String,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

pub(super) async fn login_page(State(state): State<AppState>, Query(q): Query<LoginQuery>) -> PageResult {
    let next = auth::safe_next(q.next.as_deref());
    html(&LoginTemplate { chrome: Chrome::new(&state, ""), failed: false, next })
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

/// Checks the token, keeps it in a cookie and returns to the page first asked for (a path of this site only).
pub(super) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> PageResult {
    let access: &Arc<auth::Access> = &state.daemon.config.access;
    let next = auth::safe_next(form.next.as_deref());
    if access.token_matches(&form.token) && !auth::is_cross_site(&headers) {
        return Ok((
            StatusCode::SEE_OTHER,
            [(header::LOCATION, next), (header::SET_COOKIE, auth::token_cookie(&form.token))],
        )
            .into_response());
    }
    let page = LoginTemplate { chrome: Chrome::new(&state, ""), failed: true, next }.render()?;
    Ok((StatusCode::UNAUTHORIZED, Html(page)).into_response())
}

/// Forgets the browser's token and shows the login form.
pub(super) async fn logout() -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, "/login".to_string()), (header::SET_COOKIE, auth::cleared_cookie())])
        .into_response()
}
