//! The access guard over HTTP: the rule itself is `core::access` (one pure function, `Access::decide`); this module
//! reads a request for it and acts on the decision, as an axum middleware ([`guard`]), plus the login cookie.
//!
//! A request is *mutating* when its method is not GET/HEAD/OPTIONS, so every route that stops, forks, runs, submits or
//! removes is covered without a list to keep in step. The token comes in an `Authorization: Bearer` header (CLI) or
//! the `rush_token` cookie that `POST /login` sets (browser).
//!
//! On a shared daemon (users listed) the guard also says who the request acts as: it puts the [`Caller`] in the
//! request's extensions for the handlers, and answers 404 to a member asking for another user's session by its path
//! (`/sessions/{user}/...`, `/api/sessions/{user}/...`), so every session route is covered here too.
//!
//! Browsers also send cross-site form posts to loopback servers, so a mutating request carrying the browser's
//! cross-site markers (`Sec-Fetch-Site: cross-site`, or an `Origin` whose host is not the `Host`) is refused even on
//! loopback without a token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use crate::core::access::{Access, Admission, Caller, Decision, Kind, Token, Users};

/// The cookie the browser presents the token in.
pub const TOKEN_COOKIE: &str = "rush_token";

/// How the guard classifies a request: GET, HEAD and OPTIONS only read.
pub fn kind_of(method: &Method) -> Kind {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) { Kind::Read } else { Kind::Mutate }
}

/// The token a request presents: `Authorization: Bearer <t>` first, else the `rush_token` cookie.
pub fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer "))
    {
        return Some(t.trim().to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == TOKEN_COOKIE)
        .map(|(_, v)| v.to_string())
}

/// Whether the browser says the request comes from another site.
pub fn is_cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site.eq_ignore_ascii_case("cross-site");
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => {
            let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or(origin);
            !origin_host.trim_end_matches('/').eq_ignore_ascii_case(host)
        }
        (Some(_), None) => true,
        _ => false,
    }
}

tokio::task_local! {
    /// The caller of the request being handled, for what every page shows (the header's "who"): set by [`guard`]
    /// around the handler.
    pub static CALLER: Caller;
}

/// What the guard needs: the access configuration, the users now (read again as they change) and the daemon's own
/// user, whom requests act as on a single-user daemon.
#[derive(Clone)]
pub struct Gate {
    pub access: Arc<Access>,
    pub owner: String,
    pub users: Arc<dyn Fn() -> Arc<Users> + Send + Sync>,
}

impl Gate {
    /// A single-user daemon's gate (no users listed).
    pub fn single(access: Access, owner: &str) -> Gate {
        let none = Arc::new(Users::default());
        Gate { access: Arc::new(access), owner: owner.to_string(), users: Arc::new(move || none.clone()) }
    }

    /// The running daemon's gate.
    pub fn of(daemon: &Arc<crate::daemon::Daemon>) -> Gate {
        let d = daemon.clone();
        Gate {
            access: daemon.config.access.clone(),
            owner: daemon.config.user.clone(),
            users: Arc::new(move || d.users()),
        }
    }
}

/// The axum middleware: `router.layer(axum::middleware::from_fn_with_state(Gate::of(&daemon), auth::guard))`.
///
/// `/login` passes through (it is where the browser presents the token; its handler checks the token itself), and so
/// do the static files (the login form needs its style sheet). A browser asking for a page without the token is sent
/// to `/login?next=<the page>`; the API and everything else gets a 401.
pub async fn guard(State(gate): State<Gate>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path == "/login" || path.starts_with("/static/") {
        req.extensions_mut().insert(Caller::anonymous());
        return next.run(req).await;
    }
    let kind = kind_of(req.method());
    let token = presented_token(req.headers());
    let api = is_api(&path);
    let users = (gate.users)();
    let cross_site = is_cross_site(req.headers());
    match crate::core::access::admit(
        &gate.access,
        &users,
        &gate.owner,
        kind,
        token.as_deref(),
        cross_site,
        is_public(&path),
    ) {
        Admission::Allow(caller) => {
            if let Some(id) = session_in_path(&path)
                && !caller.sees(id.0)
            {
                let message = format!("unknown session {}/{}/{}", id.0, id.1, id.2);
                return refusal(api, StatusCode::NOT_FOUND, &message);
            }
            req.extensions_mut().insert(caller.clone());
            CALLER.scope(caller, next.run(req)).await
        }
        Admission::NeedToken => {
            let message = if users.is_empty() {
                "this daemon needs its API token (Authorization: Bearer ..., or log in at /login)"
            } else {
                "this daemon is shared: present your token (`rush login`, RUSH_TOKEN, Authorization: Bearer ..., \
                 or log in at /login)"
            };
            if wants_page(req.headers()) && kind == Kind::Read && !api {
                // A person in a browser: send them to the token form, which sends them back here.
                let asked = req.uri().path_and_query().map_or("/", |p| p.as_str());
                let location = format!("/login?{}", serde_urlencoded::to_string([("next", asked)]).unwrap_or_default());
                (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
            } else {
                let mut response = refusal(api, StatusCode::UNAUTHORIZED, message);
                response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
                response
            }
        }
        Admission::Refuse => refusal(
            api,
            StatusCode::FORBIDDEN,
            "refused: mutating requests need a configured token when the daemon is bound beyond loopback, \
             and are never accepted from another site",
        ),
    }
}

/// The routes anyone may read on a shared daemon: the boards (page and API).
fn is_public(path: &str) -> bool {
    let path = path.strip_prefix("/api").unwrap_or(path);
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    matches!(parts.as_slice(), ["datasets", _, "board"]) || path == "/favicon.ico"
}

/// The session a path names (`/sessions/{user}/{dataset}/{n}/...`, under `/api` too), as (user, dataset, n).
fn session_in_path(path: &str) -> Option<(&str, &str, &str)> {
    let path = path.strip_prefix("/api").unwrap_or(path);
    let rest = path.strip_prefix("/sessions/")?;
    let mut parts = rest.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(user), Some(dataset), Some(n)) if !user.is_empty() && !dataset.is_empty() && !n.is_empty() => {
            Some((user, dataset, n))
        }
        _ => None,
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    /// The caller the guard admitted; nobody (sees no session) where no guard ran.
    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Caller>().cloned().unwrap_or_else(Caller::anonymous))
    }
}

/// Whether a browser asks for a page to show (a navigation), not data for a script or a client.
fn wants_page(headers: &HeaderMap) -> bool {
    let value = |name| headers.get(name).and_then(|v: &header::HeaderValue| v.to_str().ok()).unwrap_or("");
    value(header::ACCEPT.as_str()).contains("text/html")
        || value("sec-fetch-dest").eq_ignore_ascii_case("document")
        || value("sec-fetch-mode").eq_ignore_ascii_case("navigate")
}

/// Where the login form may send the browser afterwards: a path of this site (`/...`, not `//host` nor `/\host`,
/// which browsers read as another site), else the sessions list.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control)
                && n != "/login"
                && !n.starts_with("/login?") =>
        {
            n.to_string()
        }
        _ => "/sessions".to_string(),
    }
}

/// Whether `path` is the JSON API's, whose every answer is JSON.
fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// A refusal: `{"error": ...}` for the API, a line of text elsewhere.
fn refusal(api: bool, status: StatusCode, message: &str) -> Response {
    if api {
        (status, axum::Json(super::error::ErrorBody { error: message.to_string() })).into_response()
    } else {
        (status, format!("{message}\n")).into_response()
    }
}

/// The `Set-Cookie` value that stores a (checked) token in the browser.
pub fn token_cookie(token: &str) -> String {
    format!("{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")
}

/// The `Set-Cookie` value that makes the browser forget the token (logging out).
pub fn cleared_cookie() -> String {
    format!("{TOKEN_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    fn addr(s: &str) -> std::net::SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_login_form_returns_only_to_pages_of_this_site() {
        for ok in ["/sessions/alice/synth/2", "/datasets/synth/board?private=true", "/"] {
            assert_eq!(safe_next(Some(ok)), ok);
        }
        for bad in [
            "//evil.example/x",
            "/\\evil.example",
            "https://evil.example/",
            "evil",
            "",
            "/login",
            "/login?next=/x",
            "/a\nb",
        ] {
            assert_eq!(safe_next(Some(bad)), "/sessions", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/sessions");
    }

    #[test]
    fn tokens_come_from_bearer_or_cookie() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_token(&h), None);
        h.insert(header::COOKIE, "a=b; rush_token=abc; c=d".parse().unwrap());
        assert_eq!(presented_token(&h).as_deref(), Some("abc"));
        h.insert(header::AUTHORIZATION, "Bearer xyz".parse().unwrap());
        assert_eq!(presented_token(&h).as_deref(), Some("xyz"));
    }

    #[test]
    fn cross_site_markers() {
        let mut h = HeaderMap::new();
        assert!(!is_cross_site(&h), "curl and the CLI send no Origin");
        h.insert(header::HOST, "127.0.0.1:8470".parse().unwrap());
        h.insert(header::ORIGIN, "http://127.0.0.1:8470".parse().unwrap());
        assert!(!is_cross_site(&h));
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(is_cross_site(&h));
        h.insert("sec-fetch-site", "same-origin".parse().unwrap());
        assert!(!is_cross_site(&h), "Sec-Fetch-Site is the browser's own word");
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(is_cross_site(&h));
    }

    fn app(access: Access) -> Router {
        Router::new()
            .route("/page", get(|| async { "page" }).post(|| async { "mutated" }))
            .route("/login", axum::routing::post(|| async { "login handler" }))
            .route("/static/rush.css", get(|| async { "css" }))
            .layer(axum::middleware::from_fn_with_state(Gate::single(access, "local"), guard))
    }

    async fn status(app: &Router, method: &str, path: &str, headers: &[(&str, &str)]) -> StatusCode {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap().status()
    }

    #[tokio::test]
    async fn the_middleware_applies_the_rule() {
        let app = app(Access::new(addr("0.0.0.0:8470"), Some("tok"), false));
        assert_eq!(status(&app, "GET", "/page", &[]).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&app, "GET", "/page", &[("accept", "text/html")]).await, StatusCode::SEE_OTHER);
        assert_eq!(status(&app, "GET", "/page", &[("sec-fetch-mode", "navigate")]).await, StatusCode::SEE_OTHER);
        assert_eq!(status(&app, "GET", "/static/rush.css", &[]).await, StatusCode::OK, "style sheets are public");
        assert_eq!(status(&app, "POST", "/page", &[]).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&app, "POST", "/page", &[("authorization", "Bearer nope")]).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&app, "POST", "/page", &[("authorization", "Bearer tok")]).await, StatusCode::OK);
        assert_eq!(
            status(&app, "DELETE", "/page", &[("cookie", "rush_token=tok")]).await,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(status(&app, "GET", "/page", &[("cookie", "rush_token=tok")]).await, StatusCode::OK);
        assert_eq!(status(&app, "POST", "/login", &[]).await, StatusCode::OK, "the login form is reachable");

        let app = super::tests::app(Access::new(addr("0.0.0.0:8470"), None, true));
        assert_eq!(status(&app, "GET", "/page", &[]).await, StatusCode::OK);
        assert_eq!(status(&app, "POST", "/page", &[]).await, StatusCode::FORBIDDEN);

        let app = super::tests::app(Access::local());
        assert_eq!(status(&app, "POST", "/page", &[]).await, StatusCode::OK);
        assert_eq!(
            status(&app, "POST", "/page", &[("origin", "http://evil.example"), ("host", "127.0.0.1:1")]).await,
            StatusCode::FORBIDDEN
        );
    }
}
