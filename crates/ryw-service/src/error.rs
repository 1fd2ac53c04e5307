//! [`ApiError`]: every way a request can fail, mapped to RFC 9457
//! `application/problem+json` in one place. Client faults are 4xx and logged
//! at debug; our faults are 5xx and logged with their cause.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Base of the problem `type` URIs; the slug after it is stable.
pub use ryw_axum::PROBLEM_BASE;

/// Everything a handler can answer other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `X-Demo-UserId` is not a UUID.
    #[error("X-Demo-UserId must be a UUID, got {0:?}")]
    BadUserId(String),
    /// A request the `ryw-axum` extractor refused: a bad
    /// `X-Consistency-Token` (rule 4), an unknown or unallowed
    /// `X-Read-Strategy`.
    #[error("{0}")]
    Rejected(ryw_axum::Problem),
    /// The router failed: a node or the session store out of reach (503),
    /// a write whose outcome is unknown (503), or our fault (500).
    #[error("{0}")]
    Router(ryw_axum::Error),
    /// `Idempotency-Key` is empty, too long or not visible ASCII.
    #[error("Idempotency-Key must be 1–128 visible ASCII characters")]
    BadIdempotencyKey,
    /// The body is not JSON.
    #[error("{0}")]
    MalformedJson(String),
    /// The body is not `application/json`.
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    /// The body is larger than the limit.
    #[error("the body is larger than {0} bytes")]
    BodyTooLarge(usize),
    /// `amount_cents` is not an integer in range.
    #[error("{0}")]
    InvalidAmount(String),
    /// A field of the body is invalid.
    #[error("{detail}")]
    InvalidField { field: &'static str, detail: String },
    /// Not enough money for the payment.
    #[error("balance {balance_cents} is less than the amount {amount_cents}")]
    InsufficientFunds {
        balance_cents: i64,
        amount_cents: i64,
    },
    /// The caller has no account (`POST /api/account` first).
    #[error("no account for this user; create it with POST /api/account")]
    NoAccount,
    /// The caller has no profile.
    #[error("no profile for this user; create it with POST /api/me/profile")]
    NoProfile,
    /// The same `Idempotency-Key` was used with another body.
    #[error("this Idempotency-Key was already used for a different payment")]
    IdempotencyKeyReused,
    /// The endpoint needs a local cluster (`--cluster DIR`).
    #[error("{0}")]
    NotAvailable(String),
    /// A node or the session store is unreachable: retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The request took longer than the server's limit.
    #[error("the request took longer than {0:?}")]
    Timeout(std::time::Duration),
    /// The server holds its maximum of connections (`--max-connections`).
    #[error("the server holds its maximum of {0} connections; retry shortly")]
    TooManyConnections(usize),
    /// Anything else: our fault.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The body of every error answer (RFC 9457 `application/problem+json`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `https://ryw.dev/problems/<slug>`; the slug is stable
    /// (`insufficient-funds`, `bad-token`, …).
    #[serde(rename = "type")]
    #[schema(format = "uri")]
    pub kind: String,
    /// A short title of the kind.
    pub title: &'static str,
    /// The HTTP status, repeated.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong, in words a client can act on.
    pub detail: String,
    /// The balance, for `insufficient-funds` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance_cents: Option<i64>,
}

impl ApiError {
    /// HTTP status, stable slug and title.
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            BadUserId(_) => (StatusCode::BAD_REQUEST, "bad-user-id", "Bad user id"),
            Rejected(p) => (p.status, p.slug, p.title),
            Router(e) => {
                let p = e.problem();
                (p.status, p.slug, p.title)
            }
            BadIdempotencyKey => (
                StatusCode::BAD_REQUEST,
                "bad-idempotency-key",
                "Bad idempotency key",
            ),
            MalformedJson(_) => (StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON"),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            BodyTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Body too large",
            ),
            InvalidAmount(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-amount",
                "Invalid amount",
            ),
            InvalidField { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-field",
                "Invalid field",
            ),
            InsufficientFunds { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "insufficient-funds",
                "Insufficient funds",
            ),
            NoAccount => (StatusCode::NOT_FOUND, "no-account", "No account"),
            NoProfile => (StatusCode::NOT_FOUND, "no-profile", "No profile"),
            IdempotencyKeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency key reused",
            ),
            NotAvailable(_) => (StatusCode::NOT_FOUND, "not-available", "Not available"),
            Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            Timeout(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "Request timed out",
            ),
            TooManyConnections(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too-many-connections",
                "Too many connections",
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
            ),
        }
    }

    /// Maps a router error: unreachable nodes and stores are 503 (retry),
    /// a refused token is the client's fault, the rest is ours.
    pub fn from_router(e: ryw_router::Error) -> ApiError {
        ApiError::Router(ryw_axum::Error(e))
    }

    /// Maps a database error from a handler's own statement.
    pub fn from_db(e: tokio_postgres::Error) -> ApiError {
        if ryw_router::connection_lost(&e) {
            ApiError::Unavailable(format!("database: {}", ryw_router::Error::Postgres(e)))
        } else {
            ApiError::Internal(anyhow::Error::new(e).context("database"))
        }
    }

    /// This error as a `ryw-axum` problem (without the extra members some
    /// answers carry, such as `balance_cents`).
    pub fn problem(&self) -> ryw_axum::Problem {
        match self {
            ApiError::Rejected(p) => p.clone(),
            ApiError::Router(e) => e.problem(),
            other => {
                let (status, slug, title) = other.parts();
                ryw_axum::Problem::new(status, slug, title, other.detail())
            }
        }
    }

    /// The `detail` a client sees: never internals (the log has the cause
    /// chain).
    fn detail(&self) -> String {
        match self {
            ApiError::Internal(_) => "an internal error occurred; it was logged".to_owned(),
            ApiError::Router(e) => e.problem().detail,
            other => other.to_string(),
        }
    }
}

impl From<ryw_axum::Problem> for ApiError {
    fn from(p: ryw_axum::Problem) -> ApiError {
        ApiError::Rejected(p)
    }
}

impl From<ryw_router::Error> for ApiError {
    fn from(e: ryw_router::Error) -> ApiError {
        ApiError::from_router(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        if let ApiError::Router(e) = self {
            return e.into_response();
        }
        if let ApiError::Internal(err) = &self {
            tracing::error!(error = ?err, "internal error");
        } else if status.is_server_error() {
            tracing::warn!(slug, detail = %self, "unavailable");
        } else {
            tracing::debug!(%status, slug, detail = %self, "client error");
        }
        let detail = self.detail();
        let balance_cents = match &self {
            ApiError::InsufficientFunds { balance_cents, .. } => Some(*balance_cents),
            _ => None,
        };
        let body = Problem {
            kind: format!("{PROBLEM_BASE}{slug}"),
            title,
            status: status.as_u16(),
            detail,
            balance_cents,
        };
        let mut resp = (status, axum::Json(body)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if matches!(
            self,
            ApiError::Unavailable(_) | ApiError::Timeout(_) | ApiError::TooManyConnections(_)
        ) {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
