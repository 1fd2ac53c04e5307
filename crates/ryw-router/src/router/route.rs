//! The lower level of a read: which node serves it and why
//! ([`Router::route`]), after at most a bounded wait for a follower to
//! catch up. [`Router::query`] and [`Router::read_on`] build on it; a front
//! that runs statements the router cannot see (a protocol proxy) uses it
//! directly, with the calls in `feedback.rs` after the read.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::Router;
use super::load::{Held, InFlight};
use super::scoped::ScopePosition;
use crate::decide::{Choice, Now, Reason, SessionState, caught_up, decide, is_absurd};
use crate::metrics::MetricSlot;
use crate::pg::{CHECK_POSITION, classify, describe_pg, lsn_column, position_expr};
use crate::reader::ReadConn;
use crate::timeline::Verdict;
use crate::view::{ClusterView, NodeId, Role};
use crate::{
    FollowerChoice, Freshness, Lsn, Position, ReadOptions, Result, RouterConfig, Scope, SessionKey,
    Strategy,
};

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
    /// configured [`RouterConfig::default_scope`]. The read's target is the
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
/// those counts ([`FollowerChoice::Load`]): keep it until the read is done
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

/// Where the plan of a read says it goes, before any connection: what it
/// was planned from and how the choice was carried out. Both planning
/// paths build one (`plan_once`, after at most a bounded wait;
/// [`Router::plan_after_unsettled`], at once) and hand it to `finish`,
/// the one place a [`Decision`] is made.
struct Plan {
    inputs: Inputs,
    outcome: Outcome,
}

/// What a read is planned from: the strategy, and the session as judged
/// against the cluster's history.
struct Inputs {
    strategy: Strategy,
    /// The session's state; its token is the LSN a follower must have
    /// replayed.
    state: SessionState,
    /// The session's tokens as judged against the cluster's history.
    judged: Judged,
    /// The timeline of that history.
    timeline: u32,
    /// The token the session store answered with, if it was read.
    stored: Option<Position>,
}

impl Inputs {
    /// Judges the session's positions and the client's verified token
    /// against `view`'s history, each on its own (rule 4: a lost write
    /// must not hide behind a later token of the other). The scope's
    /// position joins them: the read's target is the highest. Also returns
    /// why only the leader may serve the read, when the scope's position
    /// could not be known.
    fn judge(
        view: &ClusterView,
        strategy: Strategy,
        loaded: Loaded,
        client_token: Option<Position>,
        scope_at: ScopePosition,
    ) -> (Inputs, Option<Reason>) {
        let mut judged = Judged::of(view, [loaded.token, client_token], loaded.write);
        let scope_leader = match scope_at {
            ScopePosition::Nothing => None,
            ScopePosition::At(pos) => {
                judged.raise_to_scope(view, pos);
                None
            }
            ScopePosition::LeaderOnly(reason) => Some(reason),
        };
        let state = match loaded.state {
            SessionState::Known {
                last_write_ms,
                untracked_write_ms,
                ..
            } => SessionState::Known {
                token: judged.holds,
                last_write_ms,
                untracked_write_ms,
            },
            SessionState::Unknown => SessionState::Unknown,
        };
        let inputs = Inputs {
            strategy,
            state,
            judged,
            timeline: view.history.current,
            stored: loaded.stored,
        };
        (inputs, scope_leader)
    }
}

/// The session as loaded, before its positions are judged: its state
/// (with no token yet) and the positions it holds.
struct Loaded {
    state: SessionState,
    /// Its token: the store's or the caller's.
    token: Option<Position>,
    /// The floor of its latest write.
    write: Option<Position>,
    /// The token the session store answered with.
    stored: Option<Position>,
}

impl Loaded {
    /// A session whose store is not read: the caller's own, or a shared
    /// one whose read does not look it up (stale-ok, a strategy that
    /// routes by no token, scope `connection`).
    fn unstored(session: SessionRef<'_>) -> Loaded {
        let (token, write, last_write_ms) = match session {
            SessionRef::Local(local) => (local.token, local.write, local.last_write_ms),
            SessionRef::Shared(_) => (None, None, None),
        };
        Loaded {
            state: SessionState::Known {
                token: None,
                last_write_ms,
                untracked_write_ms: None,
            },
            token,
            write,
            stored: None,
        }
    }

    /// A session the store did not answer for, or is not trusted for yet
    /// (rule 5).
    fn unknown() -> Loaded {
        Loaded {
            state: SessionState::Unknown,
            token: None,
            write: None,
            stored: None,
        }
    }
}

/// How a read's [`Choice`] was carried out: the node and why, and the wait
/// or check on the way.
struct Outcome {
    server: Server,
    reason: Reason,
    waited: Duration,
    did_wait: bool,
    waited_for: Option<Arc<str>>,
    /// `per-read-check`: the connection the check ran on (rule 2: the read
    /// must follow on it).
    checked: Option<ReadConn>,
}

impl Outcome {
    /// Served by `server`, with no wait and no check.
    fn at_once(server: Server, reason: Reason) -> Outcome {
        Outcome {
            server,
            reason,
            waited: Duration::ZERO,
            did_wait: false,
            waited_for: None,
            checked: None,
        }
    }
}

/// The node a read's plan ends on, as `finish` reads it off the view.
struct Serving {
    /// `leader` or the follower's name.
    node: Arc<str>,
    role: Role,
    /// The position it was known to have reached.
    seen: Option<Lsn>,
    /// The follower (`None`: the leader).
    follower: Option<NodeId>,
    /// Whose reads in flight it counts among (the leader's, if one is
    /// known).
    in_flight: Option<NodeId>,
    /// Where the metrics count it.
    metric: MetricSlot,
    /// A follower's epoch when the read was planned (rule 2).
    epoch: Option<u64>,
    /// Its timeline: positions read on it are on this one.
    timeline: u32,
}

impl Serving {
    /// `server` as `view` shows it.
    fn of(view: &ClusterView, server: Server) -> Serving {
        let observed = match server {
            Server::Leader => &view.leader,
            Server::Follower(id, ..) => &view.nodes[id.index()],
        };
        // Positions read on the node are on its timeline (a follower still
        // on an earlier one is at or before where it ended); while unknown,
        // on the cluster's.
        let timeline = observed.timeline.unwrap_or(view.history.current);
        let node = observed.name.clone();
        match server {
            Server::Leader => Serving {
                node,
                role: Role::Leader,
                seen: view.leader_lsn(),
                follower: None,
                in_flight: view.leader_id,
                metric: MetricSlot::Leader,
                epoch: None,
                timeline,
            },
            Server::Follower(id, seen, epoch) => Serving {
                node,
                role: Role::Follower,
                seen,
                follower: Some(id),
                in_flight: Some(id),
                metric: MetricSlot::Node(id),
                epoch: Some(epoch),
                timeline,
            },
        }
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

/// The node that serves a read: a follower (its id, the position it was
/// known to have reached before the read's statement, and the epoch that
/// position was observed under: rule 2) or the leader.
#[derive(Clone, Copy, Debug)]
enum Server {
    Leader,
    Follower(NodeId, Option<Lsn>, u64),
}

impl Router {
    /// The lower level of a read: a connection on the node that may serve
    /// `req`, and where and why. Keeps rules 2, 4 and 5; the rest is the
    /// caller's (prefer [`Router::query`] or [`Router::read_on`], which do
    /// it all):
    ///
    /// - run single statements on the connection (it is shared with other
    ///   reads of the node and pipelines them, see [`ReadConn`]);
    /// - for a fresh read, raise the session's token to what the read saw
    ///   (rule 7): select [`Decision::position_sql`] in the read's statement
    ///   and pass it to [`Router::raise_token`];
    /// - if the statement fails, pass the error to [`Router::report_error`]
    ///   (a broken follower is forgotten, rule 3); if it does not answer in
    ///   time, call [`Router::report_stall`]; then route again (rule 8).
    pub async fn route(&self, req: &ReadRequest<'_>) -> Result<(ReadConn, Decision)> {
        let (conn, mut decision) = self.route_read(req).await?;
        // The caller may never raise the token: keep what is known now.
        self.persist_token(&mut decision).await;
        Ok((conn, decision))
    }

    /// The lower level for fronts that hold their own connections to the
    /// nodes (a protocol proxy): where `req` goes and why, after at most a
    /// bounded wait, with no connection of the router's. Keeps rules 2, 4
    /// and 5 as [`Router::route`] does; the caller runs the read on its
    /// connection to [`Decision::follower`] (or the leader), having
    /// checked that a new connection to that follower is of the incarnation
    /// the router knows ([`Router::follower_incarnation`]), and then raises
    /// the token ([`Router::raise_token`]) or reports the node lost
    /// ([`Router::report_lost`]) and plans again.
    pub(crate) async fn plan_read(&self, req: &ReadRequest<'_>) -> Result<Decision> {
        let plan = self.plan(req).await;
        Ok(self.finish(req, plan))
    }

    /// The lower level after a read whose bound is not settled yet
    /// ([`Unsettled`]): where the session's next read goes, at once, with no
    /// wait and no router connection. The follower that served the last
    /// read, if the tracker still has it in the same epoch, in rotation and
    /// at the session's token: its replay never goes back within an
    /// incarnation, so it shows at least what the last read saw (rule 7)
    /// and has the session's writes (rule 2). Otherwise the leader, which
    /// has everything ([`Reason::Unsettled`]). For a session the caller keeps
    /// ([`SessionRef::Local`]).
    pub(crate) fn plan_after_unsettled(
        &self,
        req: &ReadRequest<'_>,
        unsettled: &Unsettled,
    ) -> Decision {
        let inner = &self.inner;
        let strategy = req.options.strategy.unwrap_or(inner.cfg.default_strategy);
        let view = inner.tracker.shared.view();
        let loaded = Loaded::unstored(req.session);
        let (inputs, _) = Inputs::judge(
            &view,
            strategy,
            loaded,
            req.client_token,
            ScopePosition::Nothing,
        );
        let judged = &inputs.judged;
        let token = judged.holds;
        // A scope that fetches its position cannot be planned at once: the
        // leader has everything.
        let scope = req.scope.unwrap_or(inner.cfg.default_scope);
        let fetches = scope.fetches() && scope.applies_to(strategy);
        let server = match view.node(unsettled.follower) {
            Some(f)
                if !fetches
                    && judged.leader_only().is_none()
                    && f.epoch == unsettled.epoch
                    && f.in_rotation
                    && f.lsn.is_some_and(|l| Some(l) >= token)
                    && !token.is_some_and(|t| is_absurd(&view, t, &inner.cfg)) =>
            {
                Server::Follower(unsettled.follower, f.lsn, f.epoch)
            }
            _ => Server::Leader,
        };
        let reason = match server {
            Server::Follower(..) => Reason::CaughtUp,
            Server::Leader => judged.leader_only().unwrap_or(Reason::Unsettled),
        };
        let outcome = Outcome::at_once(server, reason);
        self.finish(req, Plan { inputs, outcome })
    }

    /// [`Router::route`] without storing the session's token: the read
    /// protocol stores it once, after the read raised it.
    pub(super) async fn route_read(&self, req: &ReadRequest<'_>) -> Result<(ReadConn, Decision)> {
        let mut plan = self.plan(req).await;
        let outcome = &mut plan.outcome;
        let conn = match (outcome.server, outcome.checked.take()) {
            (Server::Follower(..), Some(conn)) => conn,
            (Server::Follower(id, _, epoch), None) => {
                match self.follower_conn(id, Some(epoch)).await {
                    Ok(conn) => conn,
                    Err(()) => {
                        outcome.server = Server::Leader;
                        outcome.reason = Reason::FollowerUnavailable;
                        self.leader_read_conn().await?
                    }
                }
            }
            (Server::Leader, _) => self.leader_read_conn().await?,
        };
        Ok((conn, self.finish(req, plan)))
    }

    /// Decides where `req` goes (waiting at most its budget), with no
    /// connection but `per-read-check`'s. If the cluster's timeline moved
    /// while it planned (a failover during a wait or a check), the
    /// session's token is judged again against the new history and the
    /// read planned again: a position of the old timeline must not be
    /// compared with the new one's (a lost write would look replayed).
    async fn plan(&self, req: &ReadRequest<'_>) -> Plan {
        let plan = self.plan_once(req).await;
        if plan.inputs.timeline == self.inner.tracker.shared.view().history.current {
            return plan;
        }
        self.plan_once(req).await
    }

    /// One plan of `req`, in the steps `docs/architecture.md` draws ("The
    /// router"): load the session and judge it against the view
    /// (`gather`), [`decide()`] (pure), then wait or check as the choice
    /// says (`carry_out`).
    async fn plan_once(&self, req: &ReadRequest<'_>) -> Plan {
        let inner = &self.inner;
        let strategy = req.options.strategy.unwrap_or(inner.cfg.default_strategy);
        let cfg = read_config(&inner.cfg, &req.options);
        let now_ms = inner.clock.now_ms();
        let (view, inputs, leader_only) = self.gather(req, strategy, now_ms).await;
        let choice = if let Some(reason) = leader_only {
            Choice::Leader(reason)
        } else {
            let mut rng = rand::rng();
            // The monotonic instant is read after the session store
            // answered, so the prediction is measured from now.
            let now = Now {
                wall_ms: now_ms,
                at: Instant::now(),
            };
            decide(
                &view,
                &*inner.in_flight,
                &inputs.state,
                req.freshness,
                strategy,
                now,
                &cfg,
                &mut rng,
            )
        };
        let outcome = self
            .carry_out(choice, &view, strategy, cfg.follower_choice)
            .await;
        Plan { inputs, outcome }
    }

    /// The inputs of a read's plan. Routing reads only what is already in
    /// memory, plus one session store call for strategies that need it
    /// (`load_session`), and for scopes `global` and `cluster` one
    /// coalesced fetch at the same time ([`Router::scope_position`]);
    /// never the database otherwise. Both are judged against the view read
    /// once they answered. Returns that view, the inputs, and why only the
    /// leader may serve the read, if so.
    async fn gather(
        &self,
        req: &ReadRequest<'_>,
        strategy: Strategy,
        now_ms: u64,
    ) -> (Arc<ClusterView>, Inputs, Option<Reason>) {
        let inner = &self.inner;
        let fresh = req.freshness == Freshness::Fresh;
        let scope = req.scope.unwrap_or(inner.cfg.default_scope);
        let (loaded, scope_at) = tokio::join!(
            self.load_session(req, strategy, scope, now_ms),
            self.scope_position(scope, strategy, fresh),
        );
        let view = inner.tracker.shared.view();
        let (inputs, scope_leader) =
            Inputs::judge(&view, strategy, loaded, req.client_token, scope_at);
        let leader_only = inputs
            .judged
            .leader_only()
            .filter(|_| fresh && strategy.uses_session())
            .or(scope_leader);
        (view, inputs, leader_only)
    }

    /// The session as the read sees it: the store's record for a fresh
    /// read of a shared session under a strategy that routes by its token
    /// (scope `connection` leaves the store alone), else as the caller
    /// keeps it ([`Loaded::unstored`]). A store that fails, or a part of it
    /// that failed within the recovery grace, leaves the session unknown
    /// (rule 5).
    async fn load_session(
        &self,
        req: &ReadRequest<'_>,
        strategy: Strategy,
        scope: Scope,
        now_ms: u64,
    ) -> Loaded {
        let inner = &self.inner;
        let key = match req.session {
            SessionRef::Shared(key)
                if req.freshness == Freshness::Fresh
                    && strategy.uses_session()
                    && scope.reads_session_store() =>
            {
                key
            }
            session => return Loaded::unstored(session),
        };
        match inner.store.load(key).await {
            Ok(rec)
                if inner.store_guard.trusted(
                    inner.store.part(key),
                    now_ms,
                    inner.cfg.store_recovery_grace,
                ) =>
            {
                Loaded {
                    state: SessionState::Known {
                        token: None,
                        last_write_ms: rec.last_write_ms,
                        untracked_write_ms: rec.untracked_write_ms,
                    },
                    token: rec.token,
                    write: rec.write,
                    stored: rec.token,
                }
            }
            Ok(_) => Loaded::unknown(),
            Err(e) => {
                self.store_failed(key, now_ms, &e);
                Loaded::unknown()
            }
        }
    }

    /// Carries out `choice`: the leader or a follower at once; `Wait`, the
    /// bounded wait (rule 4); `Check`, `per-read-check`'s own statement
    /// first (rule 2).
    async fn carry_out(
        &self,
        choice: Choice,
        view: &ClusterView,
        strategy: Strategy,
        follower_choice: FollowerChoice,
    ) -> Outcome {
        let inner = &self.inner;
        match choice {
            Choice::Leader(reason) => Outcome::at_once(Server::Leader, reason),
            Choice::Follower { node, reason } => {
                Outcome::at_once(follower_server(view, node), reason)
            }
            Choice::Wait {
                target,
                budget,
                forecast,
            } => {
                let waited_for = forecast.map(|f| view.nodes[f.follower.index()].name.clone());
                let timeline = view.history.current;
                self.wait(
                    target,
                    timeline,
                    budget,
                    waited_for,
                    strategy,
                    follower_choice,
                )
                .await
            }
            Choice::Check { node, target } => {
                inner.metrics.add_read_check();
                match self
                    .check_follower(node, target, view.history.current)
                    .await
                {
                    Ok((conn, seen, epoch)) => Outcome {
                        checked: Some(conn),
                        ..Outcome::at_once(
                            Server::Follower(node, Some(seen), epoch),
                            Reason::CheckPassed,
                        )
                    },
                    Err(reason) => Outcome::at_once(Server::Leader, reason),
                }
            }
        }
    }

    /// `causal` and `hybrid`: waits at most `budget` for a follower in
    /// rotation to replay `target`, a position of `timeline`
    /// ([`wait_for_caught_up`]), then the leader.
    async fn wait(
        &self,
        target: Lsn,
        timeline: u32,
        budget: Duration,
        waited_for: Option<Arc<str>>,
        strategy: Strategy,
        follower_choice: FollowerChoice,
    ) -> Outcome {
        let inner = &self.inner;
        let started = Instant::now();
        let found = wait_for_caught_up(
            inner.tracker.shared.subscribe(),
            target,
            timeline,
            budget,
            (&inner.in_flight, follower_choice),
        )
        .await;
        let waited = started.elapsed();
        inner.metrics.add_wait(waited, found.is_none(), strategy);
        let (server, reason) = match found {
            Some((node, view)) => (follower_server(&view, node), Reason::CaughtUpAfterWait),
            None => (Server::Leader, Reason::WaitBudgetSpent),
        };
        Outcome {
            waited,
            did_wait: true,
            waited_for,
            ..Outcome::at_once(server, reason)
        }
    }

    /// Counts the read, advances the session's token (rule 7: never below
    /// what the node was known to have) and builds the decision: the one
    /// place a [`Decision`] is made.
    fn finish(&self, req: &ReadRequest<'_>, plan: Plan) -> Decision {
        let inner = &self.inner;
        let Plan { inputs, outcome } = plan;
        let view = inner.tracker.shared.view();
        let at = Serving::of(&view, outcome.server);
        let held = inner.in_flight.hold(at.in_flight);
        let lost = inputs.judged.lost.filter(|_| at.role == Role::Leader);
        self.count_read(req, inputs.strategy, &outcome, &at, lost.is_some());
        let seen_at = at.seen.map(|lsn| Position::new(at.timeline, lsn));
        let Inputs {
            strategy,
            state,
            judged,
            stored,
            ..
        } = inputs;
        let (token, clamped) = advance_token(&view, &inner.cfg, &state, &judged, seen_at);
        if clamped {
            inner.metrics.add_absurd_token();
        }
        // Scope `connection` leaves the store alone: neither read nor raised.
        let scope = req.scope.unwrap_or(inner.cfg.default_scope);
        let session = match req.session {
            SessionRef::Shared(key) if scope.reads_session_store() => Some(key.clone()),
            SessionRef::Shared(_) | SessionRef::Local(_) => None,
        };
        let reason = outcome.reason;
        let decision = Decision {
            node: at.node,
            role: at.role,
            strategy,
            freshness: req.freshness,
            reason,
            waited: outcome.waited,
            did_wait: outcome.did_wait,
            waited_for: outcome.waited_for,
            seen: at.seen,
            token,
            lost,
            forget_lost: lost.is_some(),
            timeline: at.timeline,
            follower: at.follower,
            epoch: at.epoch,
            persist: req.freshness == Freshness::Fresh
                && strategy.tracks_tokens()
                && session.is_some()
                && matches!(state, SessionState::Known { .. }),
            session,
            stored,
            held,
        };
        tracing::debug!(
            node = %decision.node,
            strategy = %strategy,
            reason = %reason,
            waited_us = decision.waited.as_micros() as u64,
            "read routed"
        );
        decision
    }

    /// Counts a read served by `at` in the metrics.
    fn count_read(
        &self,
        req: &ReadRequest<'_>,
        strategy: Strategy,
        outcome: &Outcome,
        at: &Serving,
        lost: bool,
    ) {
        let inner = &self.inner;
        if lost {
            inner.metrics.add_write_lost();
        }
        inner.metrics.add_read(at.metric, req.freshness, strategy);
        if req.freshness == Freshness::Fresh {
            inner
                .metrics
                .add_scope_read(req.scope.unwrap_or(inner.cfg.default_scope));
        }
        if at.role == Role::Leader && outcome.reason.is_fallback() {
            inner.metrics.add_fallback();
        }
        if at.role == Role::Leader && outcome.did_wait {
            inner.metrics.add_wasted_wait(strategy);
        }
    }

    /// `per-read-check`: asks follower `id` for its replay position in a
    /// statement of its own, before the read's statement (rule 2).
    /// It must also still be on `timeline` (or an earlier one, at or before
    /// where that ended: the tracker keeps such a follower out of rotation
    /// otherwise): one that already follows a newer leader has positions
    /// that cannot be compared with `target`.
    async fn check_follower(
        &self,
        id: NodeId,
        target: Lsn,
        timeline: u32,
    ) -> Result<(ReadConn, Lsn, u64), Reason> {
        let epoch = self.inner.tracker.shared.view().nodes[id.index()].epoch;
        let conn = self
            .follower_conn(id, Some(epoch))
            .await
            .map_err(|()| Reason::FollowerUnavailable)?;
        let replay = async {
            let stmt = conn.prepare_cached(CHECK_POSITION).await?;
            let row = conn.query_one(&stmt, &[]).await?;
            let received: Option<i32> = row.try_get(1)?;
            Ok::<_, tokio_postgres::Error>((lsn_column(&row, 0)?, received))
        };
        match replay.await {
            Ok((Some(replay), received))
                if replay >= target
                    && received.is_none_or(|t| i64::from(t) <= i64::from(timeline)) =>
            {
                Ok((conn, replay, epoch))
            }
            Ok(_) => Err(Reason::CheckFailed),
            Err(e) => {
                if classify(&e, true) == crate::pg::Failure::ConnectionLost {
                    self.inner
                        .tracker
                        .shared
                        .forget_follower(id, &format!("check failed: {}", describe_pg(&e)));
                }
                Err(Reason::FollowerUnavailable)
            }
        }
    }
}

/// The session's token after a read that saw `seen`, and whether the
/// incoming token had to be clamped.
///
/// Rule 4: a token absurdly beyond the leader is clamped to the leader's
/// position before it is stored or handed back. Rule 7: the session has now
/// seen at least `seen`, so the token never goes below it. The read may see
/// more than `seen` (a lower bound known before it); [`Router::raise_token`]
/// raises the token to an upper bound once it has run. A token that names a
/// lost write is replaced: any position of the current timeline is after it.
pub(super) fn advance_token(
    view: &ClusterView,
    cfg: &RouterConfig,
    state: &SessionState,
    judged: &Judged,
    seen: Option<Position>,
) -> (Option<Position>, bool) {
    let token = match *state {
        SessionState::Known { .. } => judged.keep,
        SessionState::Unknown => judged.client_keep,
    };
    match judged.holds {
        Some(t) if is_absurd(view, t, cfg) => {
            let leader = view
                .leader_lsn()
                .map(|lsn| Position::new(view.history.current, lsn));
            (leader.max(seen), true)
        }
        _ => (token.max(seen), false),
    }
}

/// A session's positions judged against the cluster's timeline history
/// ([`TimelineHistory::judge`](crate::TimelineHistory::judge)).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Judged {
    /// The highest LSN a follower must have replayed: of the positions that
    /// hold as they are.
    pub holds: Option<Lsn>,
    /// The positions to carry on (the highest of those that hold or are on
    /// a timeline not known yet); a lost one is dropped.
    pub keep: Option<Position>,
    /// The client's alone (when the store is not to be trusted).
    pub client_keep: Option<Position>,
    /// The session's write floor, if a failover lost that write.
    pub lost: Option<Position>,
    /// A token past the end of its timeline (a lost write, or a read of
    /// data that went with one).
    pub past_switch: bool,
    /// A position on a timeline the router does not know.
    pub unknown: bool,
}

impl Judged {
    /// Judges `[stored or local, client]` tokens and the session's write
    /// position.
    pub fn of(
        view: &ClusterView,
        [session, client]: [Option<Position>; 2],
        write: Option<Position>,
    ) -> Judged {
        let mut j = Judged {
            lost: write.and_then(|w| view.history.write_lost(w)),
            ..Judged::default()
        };
        for (i, pos) in [session, client].into_iter().enumerate() {
            let Some(pos) = pos else { continue };
            let keep = match view.history.judge(pos) {
                Verdict::Holds(lsn) => {
                    j.holds = j.holds.max(Some(lsn));
                    true
                }
                Verdict::Lost(_) => {
                    j.past_switch = true;
                    false
                }
                Verdict::Unknown(_) => {
                    j.unknown = true;
                    true
                }
            };
            if keep {
                j.keep = j.keep.max(Some(pos));
                if i == 1 {
                    j.client_keep = Some(pos);
                }
            }
        }
        j
    }

    /// The read's scope must see `pos` too ([`Scope`]): the target rises
    /// to it, and so does the token the session carries on (the read sees
    /// at least that). A position past the end of its timeline (a mark
    /// from before a failover that lost writes) or on a timeline not known
    /// yet sends the read to the leader, as a token would.
    pub fn raise_to_scope(&mut self, view: &ClusterView, pos: Option<Position>) {
        let Some(pos) = pos else { return };
        match view.history.judge(pos) {
            Verdict::Holds(lsn) => {
                self.holds = self.holds.max(Some(lsn));
                self.keep = self.keep.max(Some(pos));
                self.client_keep = self.client_keep.max(Some(pos));
            }
            Verdict::Lost(_) => self.past_switch = true,
            Verdict::Unknown(_) => self.unknown = true,
        }
    }

    /// Why only the leader may serve the session's fresh read, if so.
    pub fn leader_only(&self) -> Option<Reason> {
        if self.lost.is_some() {
            Some(Reason::WriteLost)
        } else if self.past_switch {
            Some(Reason::TokenPastSwitch)
        } else if self.unknown {
            Some(Reason::TimelineUnknown)
        } else {
            None
        }
    }
}

fn follower_server(view: &ClusterView, id: NodeId) -> Server {
    let f = &view.nodes[id.index()];
    Server::Follower(id, f.lsn, f.epoch)
}
/// The configuration a read is planned under: its `options` override the
/// router's for this read only; the common read, with none, borrows.
fn read_config<'a>(cfg: &'a RouterConfig, options: &ReadOptions) -> Cow<'a, RouterConfig> {
    if options.sticky_window.is_none()
        && options.wait_budget.is_none()
        && options.follower_choice.is_none()
    {
        return Cow::Borrowed(cfg);
    }
    Cow::Owned(RouterConfig {
        sticky_window: options.sticky_window.unwrap_or(cfg.sticky_window),
        causal_wait: options.wait_budget.unwrap_or(cfg.causal_wait),
        hybrid_wait: options.wait_budget.unwrap_or(cfg.hybrid_wait),
        follower_choice: options.follower_choice.unwrap_or(cfg.follower_choice),
        ..cfg.clone()
    })
}

/// Waits until a follower in rotation is known to have replayed `target`,
/// a position of `timeline`, for at most `budget` (rule 4: nothing a client
/// sends can make it longer). Wakes on every view the tracker publishes,
/// and ends on the first that shows one (or several, caught up in the same
/// poll: then chosen as `choice` says, by the reads in flight). Gives up
/// early when no follower is left in rotation, or when the cluster's
/// timeline moves on (a failover: `target` must be judged again). Returns
/// the follower and the view it was chosen from.
pub(super) async fn wait_for_caught_up(
    mut rx: watch::Receiver<Arc<ClusterView>>,
    target: Lsn,
    timeline: u32,
    budget: Duration,
    (load, choice): (&InFlight, FollowerChoice),
) -> Option<(NodeId, Arc<ClusterView>)> {
    let deadline = Instant::now() + budget;
    loop {
        let view = rx.borrow_and_update().clone();
        if view.history.current != timeline {
            return None;
        }
        let found = {
            let mut rng = rand::rng();
            caught_up(&view, load, target, choice, &mut rng)
        };
        if let Some(i) = found {
            return Some((i, view));
        }
        if view.followers_in_rotation() == 0 {
            return None;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            // Budget spent, or the tracker is gone.
            _ => return None,
        }
    }
}
