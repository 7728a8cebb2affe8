//! The errors the web layer answers with: the API's ([`ApiError`], `{"error": "..."}`) and the pages' ([`PageError`], a
//! small HTML page), and how each daemon and store error maps to a status (internals are logged, not shown).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::daemon::DaemonError;
use crate::store::StoreError;

/// An API error: a status and a one-line message for the user.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

/// The error body.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.message })).into_response()
    }
}

impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> Self {
        let status = match &e {
            DaemonError::NotFound(_) | DaemonError::Store(StoreError::UnknownSession(_)) => StatusCode::NOT_FOUND,
            DaemonError::Conflict(_) | DaemonError::Store(StoreError::Session(_)) | DaemonError::Lock(_) => {
                StatusCode::CONFLICT
            }
            DaemonError::Invalid(_) => StatusCode::BAD_REQUEST,
            DaemonError::Limit(_) => StatusCode::TOO_MANY_REQUESTS,
            DaemonError::Forbidden(_) => StatusCode::FORBIDDEN,
            _ => {
                tracing::error!("API: {e}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        DaemonError::Store(e).into()
    }
}

/// A page that could not be shown: a status and a short message (escaped); internals go to the log.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub message: String,
}

impl PageError {
    pub fn not_found(message: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, message: message.into() }
    }
    pub fn bad(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownSession(id) => PageError::not_found(format!("unknown session {id}")),
            e => {
                tracing::error!("dashboard: {e}");
                Self { status: StatusCode::INTERNAL_SERVER_ERROR, message: "the database could not be read".into() }
            }
        }
    }
}

impl From<DaemonError> for PageError {
    fn from(e: DaemonError) -> Self {
        let api = ApiError::from(e);
        Self { status: api.status, message: api.message }
    }
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> Self {
        tracing::error!("dashboard template: {e}");
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, message: "the page could not be drawn".into() }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = format!(
            "<!doctype html><meta charset=utf-8><title>{status}</title><link rel=stylesheet href=/static/rush.css>\
             <link rel=icon type=image/svg+xml href=/static/favicon.svg>\
             <main><div class=\"card error\"><h2>{status}</h2><p>{msg}</p><p><a href=\"/sessions\">Sessions</a></p>\
             </div></main>",
            status = self.status,
            msg = super::chart::escape(&self.message)
        );
        (self.status, Html(body)).into_response()
    }
}
