//! [`Session`]: the extractor that gives a handler its caller's session,
//! the client's verified token and the request's read options, refusing bad
//! input with a 400 problem+json before any database work.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use ryw_router::{Position, ReadOptions, ReadRequest, Scope, SessionKey};

use crate::{Problem, Ryw, SessionSource, X_CONSISTENCY_TOKEN, X_RYW_SCOPE};

/// The caller's session, as the [`Ryw`] layer's configuration reads it from
/// the request:
///
/// - `key`: from the configured header or cookie (or the default session);
/// - `client_token`: the position of the client's `X-Consistency-Token`,
///   verified (rule 4: a malformed, tampered or foreign token is a 400,
///   never a silent stale read);
/// - `options`: the request's strategy, when the service allows a
///   strategy header;
/// - `scope`: the request's `X-Ryw-Scope` (whose writes its fresh reads
///   must see; an unknown scope is a 400).
#[derive(Clone, Debug)]
pub struct Session {
    /// Whose writes the reads must see.
    pub key: SessionKey,
    /// The client's verified token, if it sent one.
    pub client_token: Option<Position>,
    /// Per-request read options (default: the router's).
    pub options: ReadOptions,
    /// The request's scope (`X-Ryw-Scope`); `None`: the router's default.
    pub scope: Option<Scope>,
}

impl Session {
    /// A fresh read for this session: [`Router::query`](ryw_router::Router::query) and co.
    pub fn fresh(&self) -> ReadRequest<'_> {
        let req = ReadRequest::fresh(&self.key)
            .client_token(self.client_token)
            .options(self.options);
        match self.scope {
            Some(scope) => req.scope(scope),
            None => req,
        }
    }

    /// A stale-ok read (a catalogue): any follower in rotation.
    pub fn stale_ok(&self) -> ReadRequest<'_> {
        ReadRequest::stale_ok(&self.key)
            .client_token(self.client_token)
            .options(self.options)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Session, Problem> {
        let Some(cfg) = parts.extensions.get::<Arc<Ryw>>().cloned() else {
            return Err(Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "the Ryw layer is not mounted on this route",
            ));
        };
        let key = session_key(&cfg, &parts.headers)?;
        let client_token = client_token(&cfg, &parts.headers)?;
        let options = read_options(&cfg, &parts.headers)?;
        let scope = scope(&parts.headers)?;
        Ok(Session {
            key,
            client_token,
            options,
            scope,
        })
    }
}

fn session_key(cfg: &Ryw, headers: &HeaderMap) -> Result<SessionKey, Problem> {
    let text = match &cfg.source {
        SessionSource::Header(name) => headers.get(name).map(|v| {
            v.to_str()
                .map_err(|_| (cfg.parse)("(not visible ASCII)").err())
        }),
        SessionSource::Cookie(name) => cookie(headers, name).map(Ok),
    };
    match text {
        Some(Ok(text)) => (cfg.parse)(text),
        // Not visible ASCII: the parser's own problem for it.
        Some(Err(problem)) => Err(problem.unwrap_or_else(|| {
            Problem::bad_request(
                "bad-session",
                "Bad session",
                "the session is not visible ASCII",
            )
        })),
        None => cfg.default_session.clone().ok_or_else(|| {
            let from = match &cfg.source {
                SessionSource::Header(name) => format!("header {name}"),
                SessionSource::Cookie(name) => format!("cookie {name}"),
            };
            Problem::bad_request(
                "no-session",
                "No session",
                format!("the request has no {from}"),
            )
        }),
    }
}

/// The value of cookie `name` in the `Cookie` headers, if any.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

fn client_token(cfg: &Ryw, headers: &HeaderMap) -> Result<Option<Position>, Problem> {
    let Some(v) = headers.get(X_CONSISTENCY_TOKEN) else {
        return Ok(None);
    };
    let bad = |why: String| {
        Problem::bad_request(
            "bad-token",
            "Bad consistency token",
            format!("X-Consistency-Token refused: {why}"),
        )
    };
    let text = v.to_str().map_err(|_| bad("not visible ASCII".into()))?;
    cfg.key
        .verify(text.trim())
        .map(Some)
        .map_err(|e| bad(e.to_string()))
}

/// `X-Ryw-Scope`: `connection`, `session`, `global` or `cluster`.
fn scope(headers: &HeaderMap) -> Result<Option<Scope>, Problem> {
    let Some(v) = headers.get(X_RYW_SCOPE) else {
        return Ok(None);
    };
    let unknown = |text: &str| {
        Problem::bad_request(
            "unknown-scope",
            "Unknown read scope",
            format!(
                "unknown X-Ryw-Scope {:?}; use one of connection, session, global, cluster",
                text.chars().take(64).collect::<String>()
            ),
        )
    };
    let text = v.to_str().map_err(|_| unknown("(not visible ASCII)"))?;
    text.parse().map(Some).map_err(|_| unknown(text))
}

fn read_options(cfg: &Ryw, headers: &HeaderMap) -> Result<ReadOptions, Problem> {
    let Some((name, allowed)) = &cfg.strategy_header else {
        return Ok(ReadOptions::default());
    };
    let Some(v) = headers.get(name) else {
        return Ok(ReadOptions::default());
    };
    if !allowed {
        return Err(Problem::bad_request(
            "strategy-header-not-allowed",
            "Read strategy header not allowed",
            format!("this server does not accept {name} (start it with --allow-strategy-header)"),
        ));
    }
    let unknown = |text: &str| {
        Problem::bad_request(
            "unknown-strategy",
            "Unknown read strategy",
            format!(
                "unknown {name} {:?}; use one of leader, legacy, sticky, causal, hybrid, \
                 per-read-check, optionally with :<duration> (e.g. sticky:2s, causal:0ms)",
                text.chars().take(64).collect::<String>()
            ),
        )
    };
    let text = v.to_str().map_err(|_| unknown("(not visible ASCII)"))?;
    text.parse().map_err(|_| unknown(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use ryw_router::{Strategy, TokenKey};

    fn cfg() -> Ryw {
        Ryw::new(TokenKey::from_secret("sixteen bytes at least!").unwrap())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_session_comes_from_the_configured_header_or_cookie() {
        let c = cfg().session_header("x-user");
        let key = session_key(&c, &headers(&[("x-user", "alice")])).unwrap();
        assert_eq!(key.as_str(), "alice");
        let missing = session_key(&c, &headers(&[])).unwrap_err();
        assert_eq!((missing.status.as_u16(), missing.slug), (400, "no-session"));
        let c = c.default_session(SessionKey::new("demo").unwrap());
        assert_eq!(session_key(&c, &headers(&[])).unwrap().as_str(), "demo");

        let c = cfg().session_cookie("sid");
        let h = headers(&[("cookie", "theme=dark; sid=\"s-42\""), ("cookie", "x=1")]);
        assert_eq!(session_key(&c, &h).unwrap().as_str(), "s-42");
        assert_eq!(
            session_key(&c, &headers(&[("cookie", "sidx=1")]))
                .unwrap_err()
                .slug,
            "no-session"
        );
    }

    #[test]
    fn a_custom_parser_answers_with_the_services_own_problem() {
        let c = cfg().session_header("x-user").parse_session(|t| {
            if t.len() == 36 {
                SessionKey::new(t)
                    .map_err(|_| Problem::bad_request("bad-user-id", "Bad user id", t))
            } else {
                Err(Problem::bad_request("bad-user-id", "Bad user id", t))
            }
        });
        assert_eq!(
            session_key(&c, &headers(&[("x-user", "short")]))
                .unwrap_err()
                .slug,
            "bad-user-id"
        );
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        assert_eq!(session_key(&c, &h).unwrap_err().slug, "bad-user-id");
    }

    #[test]
    fn the_scope_header_is_parsed_and_an_unknown_scope_refused() {
        assert_eq!(scope(&headers(&[])).unwrap(), None);
        assert_eq!(
            scope(&headers(&[("x-ryw-scope", "global")])).unwrap(),
            Some(Scope::Global)
        );
        let p = scope(&headers(&[("x-ryw-scope", "everything")])).unwrap_err();
        assert_eq!((p.status.as_u16(), p.slug), (400, "unknown-scope"));
    }

    #[test]
    fn tokens_are_verified_and_bad_ones_refused() {
        let c = cfg();
        let pos = Position::new(3, ryw_router::Lsn::from_u64(4096));
        let good = c.key.sign(pos);
        assert_eq!(
            client_token(&c, &headers(&[("x-consistency-token", &good)])).unwrap(),
            Some(pos)
        );
        assert_eq!(client_token(&c, &headers(&[])).unwrap(), None);
        let other = TokenKey::from_secret("another sixteen bytes!")
            .unwrap()
            .sign(ryw_router::Lsn::from_u64(1));
        for bad in ["garbage", other.as_str(), ""] {
            let p = client_token(&c, &headers(&[("x-consistency-token", bad)])).unwrap_err();
            assert_eq!((p.status.as_u16(), p.slug), (400, "bad-token"), "{bad:?}");
        }
    }

    #[test]
    fn the_strategy_header_is_parsed_when_allowed_and_refused_when_not() {
        let h = headers(&[("x-read-strategy", "causal:0ms")]);
        assert_eq!(
            read_options(&cfg(), &h).unwrap(),
            ReadOptions::default(),
            "not configured: ignored"
        );
        let allowed = cfg().strategy_header("x-read-strategy", true);
        let o = read_options(&allowed, &h).unwrap();
        assert_eq!(o.strategy, Some(Strategy::Causal));
        assert_eq!(o.wait_budget, Some(std::time::Duration::ZERO));
        let p = read_options(&allowed, &headers(&[("x-read-strategy", "bogus")])).unwrap_err();
        assert_eq!(p.slug, "unknown-strategy");
        let refused = cfg().strategy_header("x-read-strategy", false);
        assert_eq!(
            read_options(&refused, &h).unwrap_err().slug,
            "strategy-header-not-allowed"
        );
    }
}
