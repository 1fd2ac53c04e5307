//! Request extractors: identity, read strategy, consistency token and JSON
//! bodies, each refusing bad input with a problem+json 4xx before any
//! database work.

use crate::domain::UserId;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use ryw_router::{Lsn, SessionKey, Strategy};
use std::time::Duration;

/// The caller: `X-Demo-UserId`, or the demo user when absent.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user id.
    pub user: UserId,
    /// The router's session key for this user (stickiness is per user, not
    /// per browser, so it holds across devices and instances).
    pub session: SessionKey,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let header = match parts.headers.get("x-demo-userid") {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| ApiError::BadUserId("(not visible ASCII)".into()))?,
            ),
        };
        let user = UserId::parse(header)?;
        let session =
            SessionKey::new(user.0.to_string()).map_err(|e| ApiError::Internal(e.into()))?;
        Ok(Caller { user, session })
    }
}

/// `X-Read-Strategy: <name>[:<duration>]`, when the server allows it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadPrefs {
    /// The strategy for this request; `None` = the server's default.
    pub strategy: Option<Strategy>,
    /// Sticky window (`sticky`, `hybrid`) or wait budget (`causal`,
    /// `per-read-check`) for this request.
    pub param: Option<Duration>,
}

impl ReadPrefs {
    /// Parses the header value.
    pub fn parse(text: &str) -> Result<ReadPrefs, ApiError> {
        let unknown = || {
            ApiError::UnknownStrategy(format!(
                "unknown X-Read-Strategy {:?}; use one of leader, legacy, sticky, causal, hybrid, per-read-check, \
                 optionally with :<duration> (e.g. sticky:2s, causal:0ms)",
                text.chars().take(64).collect::<String>()
            ))
        };
        let (name, param) = match text.trim().split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (text.trim(), None),
        };
        let strategy: Strategy = name.parse().map_err(|_| unknown())?;
        let param = match param {
            None => None,
            Some(p) => {
                let d = if p.trim() == "0" {
                    Duration::ZERO
                } else {
                    humantime::parse_duration(p.trim()).map_err(|_| unknown())?
                };
                if d > Duration::from_secs(60)
                    || matches!(strategy, Strategy::Leader | Strategy::Legacy)
                {
                    return Err(unknown());
                }
                Some(d)
            }
        };
        Ok(ReadPrefs {
            strategy: Some(strategy),
            param,
        })
    }

    /// The router's per-read options.
    pub fn options(self) -> ryw_router::ReadOptions {
        let mut o = ryw_router::ReadOptions {
            strategy: self.strategy,
            ..Default::default()
        };
        match self.strategy {
            Some(Strategy::Sticky | Strategy::Hybrid) => o.sticky_window = self.param,
            Some(Strategy::Causal | Strategy::PerReadCheck) => o.causal_wait = self.param,
            _ => {}
        }
        o
    }
}

impl FromRequestParts<AppState> for ReadPrefs {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(v) = parts.headers.get("x-read-strategy") else {
            return Ok(ReadPrefs::default());
        };
        if !state.cfg.allow_strategy_header {
            return Err(ApiError::StrategyHeaderNotAllowed);
        }
        ReadPrefs::parse(
            v.to_str()
                .map_err(|_| ApiError::UnknownStrategy("X-Read-Strategy is not ASCII".into()))?,
        )
    }
}

/// The verified position from `X-Consistency-Token` (rule 4: signed, so a
/// client can neither forge nor raise it).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientToken(pub Option<Lsn>);

impl FromRequestParts<AppState> for ClientToken {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(v) = parts.headers.get("x-consistency-token") else {
            return Ok(ClientToken(None));
        };
        let text = v
            .to_str()
            .map_err(|_| ApiError::BadToken("not visible ASCII".into()))?;
        state
            .key
            .verify(text.trim())
            .map(|l| ClientToken(Some(l)))
            .map_err(|e| ApiError::BadToken(e.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_header_takes_an_optional_duration() {
        let p = ReadPrefs::parse("sticky:2s").unwrap();
        assert_eq!(p.strategy, Some(Strategy::Sticky));
        assert_eq!(p.options().sticky_window, Some(Duration::from_secs(2)));
        assert_eq!(
            ReadPrefs::parse("causal:0ms")
                .unwrap()
                .options()
                .causal_wait,
            Some(Duration::ZERO)
        );
        assert_eq!(
            ReadPrefs::parse("per-read-check").unwrap().strategy,
            Some(Strategy::PerReadCheck)
        );
        for bad in [
            "bogus",
            "sticky:forever",
            "legacy:1s",
            "causal:10m",
            "",
            "CAUSAL:",
        ] {
            assert!(ReadPrefs::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
