//! `ApiError`: why an API request failed, and its JSON response.
//!
//! Role: the one error type of the HTTP handlers. Bad parameters are 400, unknown routes 404,
//! an invalid drill-down page token 400, an unreachable HBase raw store 503, other store
//! failures 500; every one is answered as
//! `{"error": "<message>"}` with `Content-Type: application/json`. Touches nothing else.

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, ResponseError};

use crate::store::StoreError;

/// Why an API request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A parameter is missing, malformed or out of range (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such route or object (404).
    #[error("{0}")]
    NotFound(String),
    /// The store failed; an invalid page token is the client's fault (400), an unreachable
    /// HBase raw store 503, anything else 500.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Something else on the server side failed (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 with this message.
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(message.into())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::Store(StoreError::InvalidPageToken(_)) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Store(e) if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        HttpResponse::build(self.status_code())
            .insert_header((CONTENT_TYPE, "application/json"))
            .insert_header((CACHE_CONTROL, "no-store"))
            .body(body)
    }
}
