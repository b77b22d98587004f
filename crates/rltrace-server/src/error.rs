//! The REST error shape `{"error": {"code", "message"}}` ([`crate::dto::ErrorBody`]) and its HTTP
//! statuses. One enum maps every handler failure to a status and a stable code.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rltrace_store::StoreError;

use crate::dto::{ErrorBody, ErrorCode, ErrorDetail};

/// A REST API failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (bad query, bad cursor, body not JSON).
    #[error("{0}")]
    BadRequest(String),
    /// The body is JSON but not of the expected shape (unknown field, wrong type, missing field:
    /// the message starts with the field's path) or its values are out of range.
    #[error("{0}")]
    Validation(String),
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with stored state (idempotency key reuse).
    #[error("{0}")]
    Conflict(String),
    /// The body is too large.
    #[error("{0}")]
    TooLarge(String),
    /// No usable key (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The key lacks the route's scope (403).
    #[error("{0}")]
    Forbidden(String),
    /// The server is overloaded; retry later.
    #[error("server is overloaded, retry later")]
    Overloaded,
    /// The server cannot serve yet (the store does not answer).
    #[error("{0}")]
    NotReady(String),
    /// Something failed inside.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status and the stable code of this failure.
    pub fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            ApiError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationFailed),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, ErrorCode::Conflict),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge),
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::PermissionDenied),
            ApiError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Overloaded),
            ApiError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NotReady),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // Only a full queue is overload (503 with Retry-After); a store that failed (its
            // writer gone, the disk full, the database unreachable) is an internal error, so
            // clients do not retry forever against a broken store.
            StoreError::Overloaded => ApiError::Overloaded,
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %self, "request failed");
        }
        let body = ErrorBody { error: ErrorDetail { code, message: self.to_string() } };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
