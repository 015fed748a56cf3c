//! The one API error type, mapped in one place to an HTTP status and an RFC 9457
//! `application/problem+json` body with a stable `code`. Internal failures are logged here and
//! never described to clients.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::engine::WriteError;
use crate::ingest::Refusal;
use crate::store::StoreError;

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (`bad_signature`, `unknown_server`, ...).
    pub code: &'static str,
    /// Human-readable explanation of this occurrence.
    pub detail: String,
    /// Seconds to wait before retrying (429, 503).
    pub retry_after: Option<u64>,
}

/// An RFC 9457 problem, as every error of this API is answered
/// (`Content-Type: application/problem+json`); the access-log middleware adds `request_id`
/// (the `X-Request-Id` of the answer).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem<'a> {
    /// `https://vigil.dev/problems/<code>`.
    #[serde(rename = "type")]
    kind: String,
    /// The HTTP reason phrase.
    title: &'a str,
    /// The HTTP status.
    status: u16,
    /// What went wrong this time.
    detail: &'a str,
    /// The stable machine-readable code (`bad_signature`, `unknown_server`, ...).
    code: &'a str,
}

impl ApiError {
    /// An error with a status, code and detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 404 `not_found` for a resource.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{} does not exist", what.into()),
        )
    }

    /// 422 for a bad field or parameter.
    pub fn invalid(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    /// 500: logs the cause, tells the client nothing about it.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the host log",
        )
    }
}

impl ApiError {
    fn problem_of(&self) -> Problem<'_> {
        Problem {
            kind: format!("https://vigil.dev/problems/{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
        }
    }

    /// The RFC 9457 problem object this error is answered with (a batch item's `body`).
    pub fn problem(&self) -> serde_json::Value {
        serde_json::to_value(self.problem_of()).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem_of()).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{what} already exists"),
            ),
            other => Self::internal(&other),
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
        Self {
            retry_after: refusal.retry_after,
            ..Self::new(status, refusal.code, refusal.detail)
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Replay(detail) => Self::new(StatusCode::CONFLICT, "replay", detail),
            WriteError::UnknownServer(id) => Self::new(
                StatusCode::NOT_FOUND,
                "unknown_server",
                format!("server `{id}` is not registered"),
            ),
            WriteError::Conflict(id) => Self::new(
                StatusCode::CONFLICT,
                "server_exists",
                format!("server `{id}` is already registered"),
            ),
            WriteError::Retired(id) => Self::new(
                StatusCode::CONFLICT,
                "server_retired",
                format!("server `{id}` is retired"),
            ),
            WriteError::KeyVersion(detail) => {
                Self::new(StatusCode::CONFLICT, "key_version_mismatch", detail)
            }
            WriteError::Overloaded => Self {
                retry_after: Some(1),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "the host is at capacity; retry shortly",
                )
            },
            WriteError::Closed => Self {
                retry_after: Some(5),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    "the host is shutting down",
                )
            },
            WriteError::Storage(cause) => Self {
                retry_after: Some(1),
                ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", {
                    tracing::error!(%cause, "write failed");
                    "the heartbeat was not stored; retry"
                })
            },
        }
    }
}

/// `axum::extract::Path` whose refusal is a problem+json 422 `invalid_path` (an id that is not
/// a number, or out of range, or not UTF-8 once decoded) instead of axum's plain-text 400.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(e) => {
                let detail: String = e.body_text().chars().take(200).collect();
                tracing::debug!(detail = ?detail, "path refused");
                Err(ApiError::invalid("invalid_path", detail))
            }
        }
    }
}
