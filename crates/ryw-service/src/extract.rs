//! Request extractors: the caller (identity from `X-Demo-UserId`, the
//! verified `X-Consistency-Token` and the `X-Read-Strategy` options, through
//! `ryw-axum`'s [`Session`]) and JSON bodies, each refusing bad input with a
//! problem+json 4xx before any database work.

use crate::domain::UserId;
use crate::error::ApiError;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use ryw_axum::Session;

/// The caller: `X-Demo-UserId` (the demo user when absent), and its
/// session as the router sees it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user id, for the handler's SQL.
    pub user: UserId,
    /// The session key, the client's verified token and the request's read
    /// options: [`Session::fresh`] and [`Session::stale_ok`] make the
    /// router's read requests.
    pub session: Session,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let session = Session::from_request_parts(parts, state).await?;
        // The session parser accepted a UUID and keyed it by its text.
        let user = UserId::parse(Some(session.key.as_str()))?;
        Ok(Caller { user, session })
    }
}

/// A JSON body, with problem+json rejections: 400 malformed, 413 too large,
/// 415 not JSON. Fields are parsed into newtypes by the handler.
#[derive(Debug)]
pub struct JsonBody(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(r) if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::BodyTooLarge(crate::BODY_LIMIT))
            }
            Err(r) => Err(ApiError::MalformedJson(format!(
                "the body is not valid JSON: {}",
                r.body_text()
            ))),
        }
    }
}
