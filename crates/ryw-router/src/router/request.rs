//! What a front asks of a read ([`ReadRequest`], for a [`SessionRef`]
//! or a [`LocalSession`]) and what the router answers ([`Decision`]; an
//! [`Unsettled`] follower read until its bound is known). The planning
//! itself is in `route.rs`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

#[allow(unused_imports)] // the docs' links
use super::Router;
use super::load::Held;
use crate::decide::Reason;
use crate::pg::position_expr;
use crate::view::{NodeId, Role};
use crate::{Freshness, Lsn, Position, ReadOptions, Scope, SessionKey, Strategy};

/// Whose writes a read must see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionRef<'a> {
    /// A session kept in the router's session store (memory or Redis): the
    /// same key on any instance, any device, any front.
    Shared(&'a SessionKey),
    /// A session the caller keeps itself (a proxy's client connection):
    /// the store is neither read nor written.
    Local(LocalSession),
}

/// What a caller keeps of a session of its own ([`SessionRef::Local`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalSession {
    /// The highest position the session has written or seen.
    pub token: Option<Position>,
    /// The floor of the session's latest write (the leader's position
    /// before its commit record): a lost write is told from it.
    pub write: Option<Position>,
    /// Wall-clock ms of its last write (the sticky window).
    pub last_write_ms: Option<u64>,
}

/// One read to route: whose, how fresh, with which overrides, and the
/// client's verified token.
///
/// ```
/// # use ryw_router::{ReadOptions, ReadRequest, SessionKey, Strategy};
/// let session = SessionKey::new("3f2c9c1e-8a53-4a53-9b55-0c8f1b3f5a11").unwrap();
/// let req = ReadRequest::fresh(&session).options(ReadOptions::strategy(Strategy::Causal));
/// assert!(req.client_token.is_none());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ReadRequest<'a> {
    /// The session whose writes the read must see.
    pub session: SessionRef<'a>,
    /// Fresh (routed by the strategy) or stale-ok (any follower in rotation).
    pub freshness: Freshness,
    /// Per-read overrides of the strategy, window and wait budget.
    pub options: ReadOptions,
    /// The position from the client's `X-Consistency-Token`, already
    /// verified with [`TokenKey::verify`](crate::TokenKey::verify)
    /// (rule 4).
    pub client_token: Option<Position>,
    /// Whose writes the read must see ([`Scope`]); `None`: the
    /// configured [`RouterConfig::default_scope`](crate::RouterConfig::default_scope). The read's target is the
    /// highest of the scope's position and the tokens above.
    pub scope: Option<Scope>,
}

impl<'a> ReadRequest<'a> {
    /// A read that must reflect the session's own writes.
    pub fn fresh(session: &'a SessionKey) -> ReadRequest<'a> {
        ReadRequest {
            session: SessionRef::Shared(session),
            freshness: Freshness::Fresh,
            options: ReadOptions::default(),
            client_token: None,
            scope: None,
        }
    }

    /// A read that may lag (a catalogue): any follower in rotation.
    pub fn stale_ok(session: &'a SessionKey) -> ReadRequest<'a> {
        ReadRequest {
            freshness: Freshness::StaleOk,
            ..ReadRequest::fresh(session)
        }
    }

    /// A fresh read of a session the caller keeps itself.
    pub fn fresh_local(session: LocalSession) -> ReadRequest<'static> {
        ReadRequest {
            session: SessionRef::Local(session),
            freshness: Freshness::Fresh,
            options: ReadOptions::default(),
            client_token: None,
            scope: None,
        }
    }

    /// With this freshness.
    pub fn freshness(self, freshness: Freshness) -> ReadRequest<'a> {
        ReadRequest { freshness, ..self }
    }

    /// With these per-read overrides.
    pub fn options(self, options: ReadOptions) -> ReadRequest<'a> {
        ReadRequest { options, ..self }
    }

    /// With this scope ([`Scope`]): whose writes the read must see.
    ///
    /// ```
    /// # use ryw_router::{ReadRequest, Scope, SessionKey};
    /// let session = SessionKey::new("alice").unwrap();
    /// let req = ReadRequest::fresh(&session).scope(Scope::Global);
    /// assert_eq!(req.scope, Some(Scope::Global));
    /// ```
    pub fn scope(self, scope: Scope) -> ReadRequest<'a> {
        ReadRequest {
            scope: Some(scope),
            ..self
        }
    }

    /// With the client's verified token.
    pub fn client_token(self, client_token: Option<Position>) -> ReadRequest<'a> {
        ReadRequest {
            client_token,
            ..self
        }
    }
}

/// Where a read went and why: for `X-Served-By`, `X-Consistency-Token`, logs
/// and the bench.
///
/// While a decision (or a clone of it) is alive, its read counts as in
/// flight on its node, and followers that may serve a read are chosen by
/// those counts ([`FollowerChoice::Load`](crate::FollowerChoice::Load)): keep it until the read is done
/// and drop it then. [`Router::query`] and [`Router::read_on`] stop
/// counting by themselves once the read answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// `leader` or the follower's name.
    pub node: Arc<str>,
    /// Whether that node is the leader or a follower.
    pub role: Role,
    /// The strategy applied (the override, or the configured default).
    pub strategy: Strategy,
    /// Fresh or stale-ok.
    pub freshness: Freshness,
    /// Why this node.
    pub reason: Reason,
    /// How long the read waited for a follower to catch up.
    pub waited: Duration,
    /// Whether the read waited at all (a wait can end within a microsecond).
    /// A read that waited and is served by the leader anyway is a *wasted
    /// wait* (counted per strategy in [`MetricsSnapshot`](crate::MetricsSnapshot)).
    pub did_wait: bool,
    /// `hybrid`: the follower the read waited for (the prediction's), when
    /// it waited.
    pub waited_for: Option<Arc<str>>,
    /// The position the node was known to have reached before the read's
    /// statement starts: everything up to it is visible to the read.
    pub seen: Option<Lsn>,
    /// The session's token after this read: what to send back in
    /// `X-Consistency-Token` (sign it with
    /// [`TokenKey::sign`](crate::TokenKey::sign)). At
    /// least `seen`; raised to what the read can have seen by
    /// [`Router::raise_token`] (rule 7), which [`Router::query`] does itself.
    pub token: Option<Position>,
    /// A write of the session that a failover lost: the position the
    /// leader had reached before it (its floor) was on an earlier
    /// timeline, at or past where that timeline ended, so the write the old
    /// leader acknowledged is in no node of the new history. The read was
    /// served by the new leader, and the session's token starts again on
    /// the new timeline. Tell the user (`X-Ryw-Write-Lost`, the floor's
    /// LSN). Known from the session store's (or a [`LocalSession`]'s) write
    /// floor: a client token alone cannot tell a write from a read.
    pub lost: Option<Position>,
    /// The serving node's timeline when the read was planned: positions
    /// read on it are on this timeline.
    pub(crate) timeline: u32,
    /// `lost` is still to be cleared from the session store (once told).
    pub(crate) forget_lost: bool,
    /// The follower serving the read, so a failure can be reported against
    /// the right node.
    pub(crate) follower: Option<NodeId>,
    /// The follower's epoch when the read was planned (rule 2).
    pub(crate) epoch: Option<u64>,
    /// The shared session whose stored token the read raises (`None` for a
    /// session the caller keeps).
    pub(crate) session: Option<SessionKey>,
    /// The token the session store is known to hold: a raised token is
    /// stored only when it is higher.
    pub(crate) stored: Option<Position>,
    /// Whether the session's token is kept in the store after this read
    /// (fresh reads under strategies that promise monotonic reads, with the
    /// store answering).
    pub(crate) persist: bool,
    /// The read's place in its node's reads in flight, until this decision
    /// and its clones are dropped.
    pub(crate) held: Held,
}

impl Decision {
    /// [`Decision::waited`] in whole milliseconds, rounded up, so that a
    /// read that waited at all says at least 1 (`X-Waited-Ms`).
    pub fn waited_ms(&self) -> u64 {
        if !self.did_wait {
            return 0;
        }
        let us = self.waited.as_micros();
        u64::try_from(us.div_ceil(1000)).unwrap_or(u64::MAX).max(1)
    }

    /// Whether the read waited for a follower and was served by the leader
    /// anyway.
    pub fn wasted_wait(&self) -> bool {
        self.did_wait && self.role == Role::Leader
    }

    /// A SQL expression giving the serving node's position, for callers of
    /// the lower level that select it in their read's own statement and
    /// pass it to [`Router::raise_token`]: `pg_last_wal_replay_lsn()` on a
    /// follower, `pg_current_wal_lsn()` on the leader (type `pg_lsn`, NULL
    /// if a follower is no longer a standby). [`Router::query`] adds it by
    /// itself.
    pub fn position_sql(&self) -> &'static str {
        position_expr(self.role)
    }

    /// The follower that serves the read, or `None` for the leader: for
    /// fronts that hold their own connections to the nodes.
    pub fn follower(&self) -> Option<NodeId> {
        self.follower
    }
}

/// A read on a follower whose bound is not known yet: a front that skips
/// the position statement after a read (rule 7's upper bound of what it
/// saw) learns it from the tracker's next poll of that follower
/// ([`Router::settle`]); until then the session reads only on that
/// follower or the leader ([`Router::front_read_unsettled`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unsettled {
    /// The follower that served the read.
    pub follower: NodeId,
    /// Its epoch then: a position from another epoch proves nothing.
    pub epoch: u64,
    /// When the read had ended (its last reply arrived): the follower had
    /// replayed at least what the read saw by then.
    pub ended_at: Instant,
}
