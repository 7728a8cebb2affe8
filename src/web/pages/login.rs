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
    let known = access.token_matches(&form.token) || state.daemon.users().identify(&form.token).is_some();
    if known && !auth::is_cross_site(&headers) {
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

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::super::fixture::Fixture;
    use crate::web::auth::Access;

    async fn guarded() -> Fixture {
        Fixture::with_access(Some(Access::new("0.0.0.0:8470".parse().unwrap(), Some("s3cret"), false))).await
    }

    #[tokio::test]
    async fn login_keeps_the_token_and_returns_only_to_a_page_of_this_site() {
        let f = guarded().await;
        let form = f.get("/login?next=%2Fdatasets").await;
        assert_eq!(form.status, StatusCode::OK);
        assert!(form.body.contains("name=\"next\" value=\"/datasets\"") && !form.body.contains("not right"));
        let wrong = f.post_form("/login", "token=nope&next=%2Fdatasets", &[]).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
        assert!(wrong.body.contains("That token is not right.") && wrong.body.contains("value=\"/datasets\""));
        assert!(wrong.header("set-cookie").is_empty());
        let right = f.post_form("/login", "token=s3cret&next=%2Fdatasets", &[]).await;
        assert_eq!((right.status, right.header("location")), (StatusCode::SEE_OTHER, "/datasets"));
        let cookie = right.header("set-cookie").to_string();
        assert!(cookie.starts_with("rush_token=s3cret;") && cookie.contains("HttpOnly"), "{cookie}");
        for next in ["%2F%2Fevil.example%2F", "https%3A%2F%2Fevil.example", "%2Flogin"] {
            let a = f.post_form("/login", &format!("token=s3cret&next={next}"), &[]).await;
            assert_eq!(a.header("location"), "/sessions", "{next}");
        }
        // A form posted from another site does not log the browser in, even with the right token.
        let cross = f.post_form("/login", "token=s3cret", &[("sec-fetch-site", "cross-site")]).await;
        assert_eq!(cross.status, StatusCode::UNAUTHORIZED);
        assert!(cross.header("set-cookie").is_empty());
    }

    #[tokio::test]
    async fn logout_forgets_the_token() {
        let f = guarded().await;
        let cookie = "rush_token=s3cret";
        let page =
            f.send(axum::http::Request::get("/datasets").header("cookie", cookie).body(Default::default()).unwrap());
        let page = page.await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.body.contains("action=\"/logout\""), "a logged-in page offers to log out");
        let out = f.post_form("/logout", "", &[("cookie", cookie)]).await;
        assert_eq!((out.status, out.header("location")), (StatusCode::SEE_OTHER, "/login"));
        let cleared = out.header("set-cookie");
        assert!(cleared.starts_with("rush_token=;") && cleared.contains("Max-Age=0"), "{cleared}");
    }
}
