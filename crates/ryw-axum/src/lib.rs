//! Read-your-writes for any axum service, in a few lines, on top of
//! [`ryw_router`]: mount one layer, take one extractor, return one response
//! part.
//!
//! "Rule N" in comments: the correctness rules, listed in
//! `docs/architecture.md#correctness-rules` with the code and tests of each.
//!
//! ```no_run
//! use axum::{Json, Router as Http, extract::State, routing::get};
//! use ryw_axum::{Error, Ryw, Served, Session};
//! use ryw_router::{Router, TokenKey};
//!
//! async fn balance(State(db): State<Router>, session: Session) -> Result<(Served, Json<i64>), Error> {
//!     let read = db
//!         .query_one(&session.fresh(), "SELECT balance FROM accounts WHERE id = $1", &[&session.key.as_str()])
//!         .await?;
//!     Ok((Served::from(&read.decision), Json(read.value.get(0))))
//! }
//!
//! # fn app(db: Router, key: TokenKey) -> Http {
//! Http::new()
//!     .route("/balance", get(balance))
//!     .layer(Ryw::new(key).session_header("x-user-id").layer())
//!     .with_state(db)
//! # }
//! ```
//!
//! - [`Session`], the extractor: the caller's session (from a header or a
//!   cookie, as configured), the client's `X-Consistency-Token` verified
//!   (a bad one is a 400 problem+json: rule 4), and the per-request strategy
//!   when the service allows one. [`Session::fresh`] and
//!   [`Session::stale_ok`] make the router's [`ReadRequest`].
//! - [`Served`], a response part: what served the request and the session's
//!   token after it (from a read's [`Decision`](ryw_router::Decision), or a
//!   write's token).
//! - [`RywLayer`] (from [`Ryw::layer`]): puts the configuration where
//!   [`Session`] finds it, and turns [`Served`] into `X-Served-By`,
//!   `X-Consistency-Token` (signed) and `X-Waited-Ms` on every response,
//!   also on errors, where it names no node and gives the client's own
//!   token back, so the client loses nothing.
//! - [`Error`] and [`Problem`]: router errors as RFC 9457 problem+json (503
//!   with `Retry-After` when a node or the store is unreachable).
//!
//! # Layout
//!
//! | file | what |
//! | --- | --- |
//! | `lib.rs` | [`Ryw`]: the configuration and its builder; the header names |
//! | `session.rs` | [`Session`]: the extractor |
//! | `layer.rs` | [`RywLayer`], [`Served`]: the consistency headers on responses |
//! | `problem.rs` | [`Problem`], [`Error`]: problem+json answers |

#![warn(missing_docs)]

mod layer;
mod problem;
mod session;

use std::fmt;
use std::sync::Arc;

use axum::http::HeaderName;
use ryw_router::{SessionKey, TokenKey};

pub use layer::{RywLayer, RywService, Served};
pub use problem::{Error, PROBLEM_BASE, Problem};
pub use ryw_router::ReadRequest;
pub use session::Session;

/// `X-Consistency-Token`: the session's signed token, on every response and
/// accepted on requests (to carry causality to another device).
pub const X_CONSISTENCY_TOKEN: HeaderName = HeaderName::from_static("x-consistency-token");
/// `X-Ryw-Scope` (request): the scope of the request's fresh reads
/// (`connection`, `session`, `global`, `cluster`; see
/// [`ryw_router::Scope`]); an unknown scope is a 400.
pub const X_RYW_SCOPE: HeaderName = HeaderName::from_static("x-ryw-scope");
/// `X-Served-By`: `leader`, a follower's name, or `none`.
pub const X_SERVED_BY: HeaderName = HeaderName::from_static("x-served-by");
/// `X-Waited-Ms`: how long a read waited for a follower to catch up, in
/// whole milliseconds rounded up (any wait says at least 1).
pub const X_WAITED_MS: HeaderName = HeaderName::from_static("x-waited-ms");
/// `X-Waited-For`: the follower a `hybrid` read waited for (the one the
/// tracker predicted), when it waited.
pub const X_WAITED_FOR: HeaderName = HeaderName::from_static("x-waited-for");
/// `X-Ryw-Write-Lost`: the position (`X/Y`) of a write of the session that
/// the old leader acknowledged and a failover lost. Sent once, on the
/// session's first request after the failover; its token then starts again
/// on the new timeline.
pub const X_RYW_WRITE_LOST: HeaderName = HeaderName::from_static("x-ryw-write-lost");

/// Where a request names its session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionSource {
    /// A request header (e.g. `X-Demo-UserId`).
    Header(HeaderName),
    /// A cookie of the `Cookie` header.
    Cookie(String),
}

type SessionParser = Arc<dyn Fn(&str) -> Result<SessionKey, Problem> + Send + Sync>;

/// How a service's requests map to sessions and tokens. Build it once, then
/// mount [`Ryw::layer`] on the routes that use [`Session`].
#[derive(Clone)]
pub struct Ryw {
    pub(crate) key: TokenKey,
    pub(crate) source: SessionSource,
    pub(crate) default_session: Option<SessionKey>,
    pub(crate) parse: SessionParser,
    /// `(header, allowed)`: a per-request strategy header; when not
    /// allowed, a request that sends it is refused.
    pub(crate) strategy_header: Option<(HeaderName, bool)>,
}

impl fmt::Debug for Ryw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ryw")
            .field("source", &self.source)
            .field("default_session", &self.default_session)
            .field("strategy_header", &self.strategy_header)
            .finish_non_exhaustive()
    }
}

impl Ryw {
    /// Sessions from the `X-Ryw-Session` header, tokens signed and verified
    /// with `key` (share it between instances), no default session (a
    /// request without one is a 400), no per-request strategy.
    pub fn new(key: TokenKey) -> Ryw {
        Ryw {
            key,
            source: SessionSource::Header(HeaderName::from_static("x-ryw-session")),
            default_session: None,
            parse: Arc::new(|text| {
                SessionKey::new(text).map_err(|_| {
                    Problem::bad_request(
                        "bad-session",
                        "Bad session",
                        "the session must be 1–128 visible characters",
                    )
                })
            }),
            strategy_header: None,
        }
    }

    /// The session comes from this request header.
    pub fn session_header(mut self, name: &'static str) -> Ryw {
        self.source = SessionSource::Header(HeaderName::from_static(name));
        self
    }

    /// The session comes from this cookie.
    pub fn session_cookie(mut self, name: impl Into<String>) -> Ryw {
        self.source = SessionSource::Cookie(name.into());
        self
    }

    /// A request that names no session gets this one (a demo's fixed user).
    pub fn default_session(mut self, session: SessionKey) -> Ryw {
        self.default_session = Some(session);
        self
    }

    /// Parses (and validates) the header's or cookie's text into a session:
    /// e.g. "must be a UUID", answered with the service's own problem.
    pub fn parse_session(
        mut self,
        parse: impl Fn(&str) -> Result<SessionKey, Problem> + Send + Sync + 'static,
    ) -> Ryw {
        self.parse = Arc::new(parse);
        self
    }

    /// Lets a request pick its strategy with this header
    /// (`name[:duration]`, see [`ryw_router::ReadOptions`]) when `allowed`;
    /// when not, a request that sends it gets a 400 (so a client never
    /// believes it chose a strategy that was not applied).
    pub fn strategy_header(mut self, name: &'static str, allowed: bool) -> Ryw {
        self.strategy_header = Some((HeaderName::from_static(name), allowed));
        self
    }

    /// The token key.
    pub fn key(&self) -> &TokenKey {
        &self.key
    }

    /// The layer to mount on the routes that use [`Session`].
    pub fn layer(&self) -> RywLayer {
        RywLayer::new(Arc::new(self.clone()))
    }
}
