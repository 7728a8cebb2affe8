//! The API's error: a status and a one-line message for the user, answered as `{"error": "..."}`, and how each daemon
//! and store error maps to a status (internals are logged, not shown). The pages show the same errors as HTML.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
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
