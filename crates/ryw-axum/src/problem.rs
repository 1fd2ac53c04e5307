//! [`Problem`]: an RFC 9457 `application/problem+json` answer, and
//! [`Error`]: the router's errors as such answers, in one place.

use std::fmt;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Base of the problem `type` URIs; the slug after it is stable.
pub const PROBLEM_BASE: &str = "https://ryw.dev/problems/";

/// An RFC 9457 problem: `{"type", "title", "status", "detail"}`, served as
/// `application/problem+json`. 503s carry `Retry-After: 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable last part of the `type` URI (`bad-token`).
    pub slug: &'static str,
    /// A short, stable title.
    pub title: &'static str,
    /// What happened to this request.
    pub detail: String,
}

impl Problem {
    /// A problem with any status.
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            slug,
            title,
            detail: detail.into(),
        }
    }

    /// A 400: the client's fault.
    pub fn bad_request(
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, slug, title, detail)
    }

    /// The problem's JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "type": format!("{PROBLEM_BASE}{}", self.slug),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        })
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.slug, self.detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(rename = "type")]
            kind: String,
            title: &'a str,
            status: u16,
            detail: &'a str,
        }
        let body = Body {
            kind: format!("{PROBLEM_BASE}{}", self.slug),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// A router error as an HTTP answer: `?` on the router's calls in a
/// handler. A node or the session store out of reach, a read that failed
/// twice, or a write whose outcome is unknown are 503 (retry); a refused
/// token is a 400; the rest is a 500, logged with its cause and not shown
/// to the client.
#[derive(Debug)]
pub struct Error(pub ryw_router::Error);

impl From<ryw_router::Error> for Error {
    fn from(e: ryw_router::Error) -> Error {
        Error(e)
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Error {
        Error(ryw_router::Error::Postgres(e))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl Error {
    /// The problem this error is answered with.
    pub fn problem(&self) -> Problem {
        use ryw_router::Error as E;
        let unavailable = |detail: String| {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                detail,
            )
        };
        match &self.0 {
            E::Token(t) => Problem::bad_request(
                "bad-token",
                "Bad consistency token",
                format!("X-Consistency-Token refused: {t}"),
            ),
            E::LeaderUnavailable(why) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "leader-unavailable",
                "Leader unavailable",
                format!(
                    "{why}; writes resume once a node leads (a failover takes about a second); \
                     a retry with the same Idempotency-Key is safe"
                ),
            ),
            E::Pool { .. }
            | E::Connect { .. }
            | E::StoreTimeout(_)
            | E::Store(_)
            | E::ReadFailed(_) => unavailable(self.0.to_string()),
            E::CommitUnknown(why) => unavailable(format!(
                "the write may have committed ({why}); retry it with the same idempotency key \
                 to learn its outcome"
            )),
            E::Postgres(pg) | E::NotCommitted(pg) | E::Query { source: pg, .. }
                if ryw_router::connection_lost(pg) =>
            {
                unavailable(format!("database: {}", self.0))
            }
            _ => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "an internal error occurred; it was logged",
            ),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let problem = self.problem();
        if problem.status.is_server_error() {
            if problem.status == StatusCode::INTERNAL_SERVER_ERROR {
                tracing::error!(error = %self.0, "internal error");
            } else {
                tracing::warn!(error = %self.0, "unavailable");
            }
        }
        problem.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_errors_map_to_the_status_a_client_can_act_on() {
        let token = Error(ryw_router::Error::Token(ryw_router::TokenError::Malformed));
        assert_eq!(token.problem().status, StatusCode::BAD_REQUEST);
        assert_eq!(token.problem().slug, "bad-token");
        let twice = Error(ryw_router::Error::ReadFailed("f1 stalled".into()));
        assert_eq!(twice.problem().status, StatusCode::SERVICE_UNAVAILABLE);
        let unknown = Error(ryw_router::Error::CommitUnknown("leader gone".into()));
        assert_eq!(unknown.problem().status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(unknown.problem().detail.contains("idempotency key"));
        let ours = Error(ryw_router::Error::NoLeaderLsn);
        assert_eq!(ours.problem().status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            !ours.problem().detail.contains("wal"),
            "internals stay in the log"
        );
    }

    #[test]
    fn a_problem_is_problem_json_and_a_503_says_when_to_retry() {
        let resp = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            "down",
        )
        .into_response();
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        let p = Problem::bad_request("bad-token", "Bad consistency token", "tampered");
        assert_eq!(p.body()["type"], "https://ryw.dev/problems/bad-token");
        assert_eq!(p.body()["status"], 400);
    }
}
