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
use super::judge::{Judged, advance_token};
use super::load::InFlight;
use super::request::{Decision, ReadRequest, SessionRef, Unsettled};
use super::scoped::ScopePosition;
use crate::decide::{Choice, Now, Reason, SessionState, caught_up, decide, is_absurd};
use crate::metrics::MetricSlot;
use crate::pg::{CHECK_POSITION, classify, describe_pg, lsn_column};
use crate::reader::ReadConn;
use crate::view::{ClusterView, NodeId, Role};
use crate::{
    FollowerChoice, Freshness, Lsn, Position, ReadOptions, Result, RouterConfig, Scope, Strategy,
};

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
