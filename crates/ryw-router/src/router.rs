//! [`Router`]: hands out connections. Writes get the leader; reads get the
//! node [`decide`](crate::decide()) chose from the tracker's published view,
//! after at most a bounded wait, plus a [`Decision`] saying where and why.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::decide::{Choice, Reason, SessionState, decide, is_absurd, least_lagged_caught_up};
use crate::error::describe_pg;
use crate::metrics::Metrics;
use crate::reader::{FollowerGuard, ReadConn, Readers};
use crate::tracker::{Limits, Shared, Tracker, TrackerState};
use crate::view::{ClusterView, Role};
use crate::{
    Clock, Error, Freshness, LEADER_NAME, Lsn, MetricsSnapshot, NodeUrls, Result, RouterConfig,
    SessionKey, SessionStore, StoreHealth, Strategy, SystemClock,
};

/// Per-read overrides of the router's configuration; `Default` changes
/// nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Strategy for this read (else the configured default).
    pub strategy: Option<Strategy>,
    /// Sticky window for this read (`sticky`, `hybrid`).
    pub sticky_window: Option<Duration>,
    /// Wait budget for this read (`causal`, `hybrid`, `per-read-check`).
    pub causal_wait: Option<Duration>,
}

/// Where a read went and why: for `X-Served-By`, `X-Consistency-Token`, logs
/// and the bench.
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
    /// How long the read waited for a follower to catch up (causal).
    pub waited: Duration,
    /// The position the node was known to have reached before the read's
    /// statement starts: everything up to it is visible to the read.
    pub seen: Option<Lsn>,
    /// The session's token after this read: what to send back in
    /// `X-Consistency-Token` (sign it with [`TokenKey`](crate::TokenKey)).
    /// At least `seen`; raised to what the read can have seen by
    /// [`Router::after_read`] (rule 7).
    pub token: Option<Lsn>,
    /// Follower index and the epoch the read was served under, so a failure
    /// can be reported against the right node.
    follower: Option<usize>,
}

impl Decision {
    /// A SQL expression giving the serving node's position, to select in
    /// the read's own statement for [`Router::after_read_with`]:
    /// `pg_last_wal_replay_lsn()` on a follower, `pg_current_wal_lsn()` on
    /// the leader (type `pg_lsn`, NULL if a follower is no longer a
    /// standby).
    pub fn position_sql(&self) -> &'static str {
        match self.role {
            Role::Leader => "pg_current_wal_lsn()",
            Role::Follower => "pg_last_wal_replay_lsn()",
        }
    }
}

/// Remembers when the session store last failed: fresh reads stay on the
/// leader until `store_recovery_grace` after that (rule 5), because writes
/// made during the outage may be missing from it.
#[derive(Debug, Default)]
struct StoreGuard {
    /// Wall-clock ms of the last failure; 0 = never failed.
    last_failure_ms: AtomicU64,
}

impl StoreGuard {
    fn failed(&self, now_ms: u64) {
        self.last_failure_ms
            .fetch_max(now_ms.max(1), Ordering::Relaxed);
    }

    fn trusted(&self, now_ms: u64, grace: Duration) -> bool {
        let last = self.last_failure_ms.load(Ordering::Relaxed);
        last == 0 || u128::from(now_ms.saturating_sub(last)) >= grace.as_millis()
    }
}

struct Inner {
    cfg: RouterConfig,
    clock: Arc<dyn Clock>,
    store: Arc<dyn SessionStore>,
    /// Writes: pooled, one transaction per connection.
    leader: Pool,
    /// Reads: shared, pipelining clients (fresh reads on the leader too).
    leader_reads: Readers,
    followers: Vec<Readers>,
    tracker: Tracker,
    metrics: Arc<Metrics>,
    store_guard: StoreGuard,
}

/// Routes a service's queries across a leader and its followers with
/// read-your-writes consistency. Cheap to clone (one `Arc`); clones share
/// connections, tracker and counters.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("cfg", &self.inner.cfg)
            .field("store", &self.inner.store.backend())
            .field("view", &self.inner.tracker.shared.view())
            .finish_non_exhaustive()
    }
}

/// Where a read is to be served, once the choice is resolved.
#[derive(Clone, Copy, Debug)]
enum Target {
    Leader,
    /// Follower index, the epoch its position was read under (rule 2), and
    /// that position.
    Follower(usize, u64, Option<Lsn>),
    /// `per-read-check`: follower index and the position it must show.
    Check(usize, Lsn),
}

/// Where a read was finally served: follower index and the position it was
/// known to have reached before the read's statement (rule 2), or the leader.
#[derive(Clone, Copy, Debug)]
enum Served {
    Leader,
    Follower(usize, Option<Lsn>),
}

/// What a read asked for and what was known of its session.
#[derive(Debug)]
struct ReadCtx<'a> {
    session: &'a SessionKey,
    strategy: Strategy,
    freshness: Freshness,
    state: SessionState,
    stored_token: Option<Lsn>,
    client_token: Option<Lsn>,
}

impl Router {
    /// Builds the write pool and the read connections (opened on first
    /// use) and starts the tracker. Does not wait for any node: until the
    /// tracker has seen followers, fresh reads go to the leader.
    /// Fails only on invalid configuration or URLs. Must run inside a tokio
    /// runtime.
    pub async fn connect(
        cfg: RouterConfig,
        urls: NodeUrls,
        store: Arc<dyn SessionStore>,
    ) -> Result<Router> {
        Router::connect_with_clock(cfg, urls, store, Arc::new(SystemClock)).await
    }

    /// [`Router::connect`] with an injected wall clock (tests of the sticky
    /// window).
    pub async fn connect_with_clock(
        cfg: RouterConfig,
        urls: NodeUrls,
        store: Arc<dyn SessionStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Router> {
        cfg.validate()?;
        urls.validate()?;
        let leader_pg = parse_url(LEADER_NAME, &urls.leader, &cfg)?;
        let mut follower_pgs = Vec::with_capacity(urls.followers.len());
        for (name, url) in &urls.followers {
            follower_pgs.push(parse_url(name, url, &cfg)?);
        }
        let names: Vec<Arc<str>> = urls
            .followers
            .iter()
            .map(|(n, _)| Arc::from(n.as_str()))
            .collect();
        let metrics = Arc::new(Metrics::new(
            std::iter::once(Arc::from(LEADER_NAME))
                .chain(names.iter().cloned())
                .collect(),
        ));
        let shared = Arc::new(Shared::new(
            TrackerState::new(&names, Limits::from_config(&cfg)),
            metrics.clone(),
        ));

        let leader = build_pool(leader_pg.clone(), &cfg)?;
        let leader_reads = Readers::new(
            leader_pg.clone(),
            cfg.read_connections,
            cfg.connect_timeout,
            None,
        );
        let followers = follower_pgs
            .iter()
            .enumerate()
            .map(|(index, pg)| {
                let guard = FollowerGuard {
                    shared: shared.clone(),
                    index,
                };
                Readers::new(
                    pg.clone(),
                    cfg.read_connections,
                    cfg.connect_timeout,
                    Some(guard),
                )
            })
            .collect();

        let tracker_pg = |mut pg: tokio_postgres::Config| {
            if pg.get_application_name().is_none() {
                pg.application_name("ryw-tracker");
            }
            pg
        };
        let tracker = Tracker::start(
            shared,
            tracker_pg(leader_pg),
            follower_pgs.into_iter().map(tracker_pg).collect(),
            &cfg,
        );
        Ok(Router {
            inner: Arc::new(Inner {
                cfg,
                clock,
                store,
                leader,
                leader_reads,
                followers,
                tracker,
                metrics,
                store_guard: StoreGuard::default(),
            }),
        })
    }

    /// A connection to the leader for a write (rule 6: writes only ever go
    /// there). After the transaction commits, call [`Router::record_write`].
    pub async fn write(&self) -> Result<Object> {
        self.inner.metrics.add_write();
        self.leader_conn().await
    }

    /// Records a committed write of `session` and returns its token: the
    /// leader's WAL position read by a statement of its own.
    ///
    /// Rule 1: call it only after `COMMIT` returned. With `tokio-postgres`
    /// the borrow checker helps: a live `Transaction` holds the client
    /// mutably, so `&client` is only available once it committed (or was
    /// dropped). A position read inside the transaction would be before its
    /// commit record.
    ///
    /// If the session store fails, the write is not undone and the token is
    /// still returned (the client can carry it); the store is marked
    /// degraded so fresh reads go to the leader (rule 5).
    pub async fn record_write(
        &self,
        session: &SessionKey,
        client: &tokio_postgres::Client,
    ) -> Result<Lsn> {
        // One round trip: the simple protocol needs no prepare.
        let rows = client.simple_query("SELECT pg_current_wal_lsn()").await?;
        let lsn: Lsn = first_value(&rows).ok_or(Error::NoLeaderLsn)?.parse()?;
        let inner = &self.inner;
        inner.tracker.shared.note_leader_lsn(lsn);
        let now_ms = inner.clock.now_ms();
        if let Err(e) = inner.store.record_write(session, lsn, now_ms).await {
            self.store_failed(now_ms, &e);
        }
        Ok(lsn)
    }

    /// A connection for a read of `session`, and where and why it was routed.
    ///
    /// `strategy` overrides the configured default for this read;
    /// `client_token` is the position from the client's
    /// `X-Consistency-Token`, already verified with
    /// [`TokenKey::verify`](crate::TokenKey::verify) (rule 4).
    ///
    /// The connection is shared with other concurrent reads of the node and
    /// pipelines them (see [`ReadConn`]): run single statements on it. If
    /// running the read fails, pass the error to [`Router::report_error`] so
    /// a broken follower is forgotten at once; if it does not answer in
    /// time, call [`Router::report_stall`].
    /// Once it has run, [`Router::after_read`] raises the session's token to
    /// all the read can have seen (rule 7).
    pub async fn read(
        &self,
        session: &SessionKey,
        freshness: Freshness,
        strategy: Option<Strategy>,
        client_token: Option<Lsn>,
    ) -> Result<(ReadConn, Decision)> {
        let opts = ReadOptions {
            strategy,
            ..ReadOptions::default()
        };
        self.read_with(session, freshness, opts, client_token).await
    }

    /// [`Router::read`] with per-read overrides of the strategy, the sticky
    /// window and the causal wait budget (the bench compares `sticky` at 2 s
    /// and 5 s on one router; a service may let a request choose).
    pub async fn read_with(
        &self,
        session: &SessionKey,
        freshness: Freshness,
        opts: ReadOptions,
        client_token: Option<Lsn>,
    ) -> Result<(ReadConn, Decision)> {
        let inner = &self.inner;
        let strategy = opts.strategy.unwrap_or(inner.cfg.default_strategy);
        // Overrides apply to this read only; the common path borrows.
        let overridden;
        let cfg = if opts.sticky_window.is_some() || opts.causal_wait.is_some() {
            overridden = RouterConfig {
                sticky_window: opts.sticky_window.unwrap_or(inner.cfg.sticky_window),
                causal_wait: opts.causal_wait.unwrap_or(inner.cfg.causal_wait),
                ..inner.cfg.clone()
            };
            &overridden
        } else {
            &inner.cfg
        };
        let now_ms = inner.clock.now_ms();
        let fresh = freshness == Freshness::Fresh;

        // Routing reads only what is already in memory, plus one session
        // store call for strategies that need it; never the database.
        let mut stored_token = None;
        let state = if fresh && strategy.uses_session() {
            match inner.store.load(session).await {
                Ok(rec)
                    if inner
                        .store_guard
                        .trusted(now_ms, inner.cfg.store_recovery_grace) =>
                {
                    stored_token = rec.token;
                    SessionState::Known {
                        // Rule 4: the client's verified token joins the stored one.
                        token: rec.token.max(client_token),
                        last_write_ms: rec.last_write_ms,
                    }
                }
                Ok(_) => SessionState::Unknown,
                Err(e) => {
                    self.store_failed(now_ms, &e);
                    SessionState::Unknown
                }
            }
        } else {
            SessionState::Known {
                token: client_token,
                last_write_ms: None,
            }
        };

        let view = inner.tracker.shared.view();
        let choice = {
            let mut rng = rand::rng();
            decide(&view, &state, freshness, strategy, now_ms, cfg, &mut rng)
        };

        let mut waited = Duration::ZERO;
        let (target, reason) = match choice {
            Choice::Leader(reason) => (Target::Leader, reason),
            Choice::Follower { index, reason } => (follower_target(&view, index), reason),
            Choice::Wait { target } => {
                let started = Instant::now();
                let found =
                    wait_for_caught_up(inner.tracker.shared.subscribe(), target, cfg.causal_wait)
                        .await;
                waited = started.elapsed();
                inner.metrics.add_wait(waited, found.is_none());
                match found {
                    Some((index, view)) => {
                        (follower_target(&view, index), Reason::CaughtUpAfterWait)
                    }
                    None => (Target::Leader, Reason::WaitBudgetSpent),
                }
            }
            Choice::Check { index, target } => (Target::Check(index, target), Reason::CheckPassed),
        };

        let (conn, served, reason) = match target {
            Target::Follower(index, epoch, seen) => {
                match self.follower_conn(index, Some(epoch)).await {
                    Ok(conn) => (conn, Served::Follower(index, seen), reason),
                    Err(()) => (
                        self.leader_read_conn().await?,
                        Served::Leader,
                        Reason::FollowerUnavailable,
                    ),
                }
            }
            Target::Check(index, lsn) => {
                inner.metrics.add_read_check();
                match self.check_follower(index, lsn).await {
                    Ok((conn, seen)) => (conn, Served::Follower(index, Some(seen)), reason),
                    Err(reason) => (self.leader_read_conn().await?, Served::Leader, reason),
                }
            }
            Target::Leader => (self.leader_read_conn().await?, Served::Leader, reason),
        };
        let ctx = ReadCtx {
            session,
            strategy,
            freshness,
            state,
            stored_token,
            client_token,
        };
        Ok(self.finish(&ctx, conn, served, reason, waited).await)
    }

    /// Counts the read, advances the session's token (rule 7) and builds the
    /// decision.
    async fn finish(
        &self,
        ctx: &ReadCtx<'_>,
        conn: ReadConn,
        served: Served,
        reason: Reason,
        waited: Duration,
    ) -> (ReadConn, Decision) {
        let ReadCtx {
            session,
            strategy,
            freshness,
            ref state,
            stored_token,
            client_token,
        } = *ctx;
        let inner = &self.inner;
        let view = inner.tracker.shared.view();
        let (node, role, seen, follower, metric_node) = match served {
            Served::Leader => (
                view.leader.name.clone(),
                Role::Leader,
                view.leader_lsn(),
                None,
                0,
            ),
            Served::Follower(i, seen) => (
                view.followers[i].name.clone(),
                Role::Follower,
                seen,
                Some(i),
                i + 1,
            ),
        };
        inner.metrics.add_read(metric_node, freshness, strategy);
        if role == Role::Leader && reason.is_fallback() {
            inner.metrics.add_fallback();
        }

        let (token, clamped) = advance_token(&view, &inner.cfg, state, client_token, seen);
        if clamped {
            inner.metrics.add_absurd_token();
        }

        let store_known = matches!(state, SessionState::Known { .. });
        if freshness == Freshness::Fresh
            && strategy.tracks_tokens()
            && store_known
            && token > stored_token
            && let Some(t) = token
            && let Err(e) = inner.store.observe(session, t).await
        {
            self.store_failed(inner.clock.now_ms(), &e);
        }

        let decision = Decision {
            node,
            role,
            strategy,
            freshness,
            reason,
            waited,
            seen,
            token,
            follower,
        };
        tracing::debug!(
            node = %decision.node,
            strategy = %strategy,
            reason = %reason,
            waited_us = waited.as_micros() as u64,
            "read routed"
        );
        (conn, decision)
    }

    /// Rule 7 by hand: the session has seen `lsn` (for example a token the
    /// service got elsewhere). Stores `max(token, lsn)`, clamped to the
    /// leader when absurd (rule 4); returns the stored token.
    pub async fn observe(&self, session: &SessionKey, lsn: Lsn) -> Result<Lsn> {
        let inner = &self.inner;
        let view = inner.tracker.shared.view();
        let lsn = if is_absurd(&view, lsn, &inner.cfg) {
            inner.metrics.add_absurd_token();
            view.leader_lsn().unwrap_or(Lsn::ZERO)
        } else {
            lsn
        };
        inner.store.observe(session, lsn).await.inspect_err(|e| {
            self.store_failed(inner.clock.now_ms(), e);
        })
    }

    /// Rule 7 for data that other sessions write: call once the read's
    /// statements have run, with the connection `decision` came with. It
    /// reads that node's position in a statement of its own, *after* the
    /// read's snapshot (a follower's replay position, the leader's WAL
    /// position), so the result bounds from above everything the read can
    /// have seen. The session's token is raised to it: in
    /// `decision.token` (for the response) and, for the strategies that
    /// track tokens, in the session store. Returns that position.
    ///
    /// Without it the token after a read is [`Decision::seen`], what the node
    /// was known to have reached *before* the read: a lower bound. The read
    /// may see more (positions are polled every `poll_interval`), and a later
    /// read on a follower between the two would then see an older state. The
    /// session's own writes are safe either way (their tokens come from
    /// [`Router::record_write`]); reads of what others write are not. One
    /// round trip, pipelined behind the read if sent before its answer is
    /// awaited. Cheaper still: read the position in the read's own statement
    /// ([`Decision::position_sql`]) and pass it to
    /// [`Router::after_read_with`].
    pub async fn after_read(
        &self,
        session: &SessionKey,
        decision: &mut Decision,
        conn: &ReadConn,
    ) -> Result<Lsn> {
        let sql = match decision.role {
            Role::Leader => LEADER_POSITION,
            Role::Follower => REPLAY_POSITION,
        };
        // Prepared once per shared connection: on every fresh read, the
        // extended protocol's bind/execute costs the server less than
        // parsing and planning a simple query each time.
        let lsn = match position(conn, sql).await {
            Ok(lsn) => lsn,
            Err(e) => {
                self.report_error(decision, &e);
                return Err(e.into());
            }
        };
        let lsn = lsn.ok_or_else(|| Error::NoPosition(decision.node.to_string()))?;
        self.after_read_with(session, decision, lsn).await;
        Ok(lsn)
    }

    /// [`Router::after_read`] with the node's position already read by the
    /// caller, in the read's own statement or a later one on the same
    /// connection: `SELECT …, <decision.position_sql()> FROM …`. Saves the
    /// server a statement per fresh read. A statement's snapshot is taken
    /// before it executes, so the position it returns bounds what it saw,
    /// as a statement of its own would.
    pub async fn after_read_with(&self, session: &SessionKey, decision: &mut Decision, lsn: Lsn) {
        let inner = &self.inner;
        if decision.role == Role::Leader {
            inner.tracker.shared.note_leader_lsn(lsn);
        }
        if decision.token < Some(lsn) {
            decision.token = Some(lsn);
            if decision.freshness == Freshness::Fresh
                && decision.strategy.tracks_tokens()
                && let Err(e) = inner.store.observe(session, lsn).await
            {
                self.store_failed(inner.clock.now_ms(), &e);
            }
        }
    }

    /// Tell the router that running a read on the connection of `decision`
    /// failed. If the read was on a follower and the failure is the
    /// connection's (closed, I/O, admin shutdown), that follower's position
    /// is forgotten now (rule 3) rather than at the next poll.
    pub fn report_error(&self, decision: &Decision, error: &tokio_postgres::Error) {
        if let Some(i) = decision.follower
            && connection_lost(error)
        {
            self.inner
                .tracker
                .shared
                .forget_follower(i, &format!("read failed: {}", describe_pg(error)));
        }
    }

    /// Tell the router that a read on `conn` (handed out with `decision`)
    /// did not answer in time: the node may be stalled (stopped, swapping,
    /// a network partition that drops packets). The shared connection is
    /// retired, since every read queued behind the stalled one waits too,
    /// and a follower is forgotten (rule 3) until its polls answer again.
    pub fn report_stall(&self, decision: &Decision, conn: &ReadConn, after: Duration) {
        conn.retire();
        self.inner.metrics.add_stall();
        match decision.follower {
            Some(i) => self
                .inner
                .tracker
                .shared
                .forget_follower(i, &format!("read stalled for {after:?}")),
            None => tracing::warn!(
                after_ms = after.as_millis() as u64,
                "a read on the leader stalled"
            ),
        }
    }

    /// What the tracker knows of every node now.
    pub fn cluster_view(&self) -> ClusterView {
        (*self.inner.tracker.shared.view()).clone()
    }

    /// A receiver of every view the tracker publishes (for a dashboard's
    /// live updates).
    pub fn watch_cluster(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.inner.tracker.shared.subscribe()
    }

    /// Whether fresh reads may rely on the session store: degraded while it
    /// fails and for `store_recovery_grace` after (rule 5).
    pub fn store_health(&self) -> StoreHealth {
        let inner = &self.inner;
        match inner.store.health() {
            StoreHealth::Ok
                if !inner
                    .store_guard
                    .trusted(inner.clock.now_ms(), inner.cfg.store_recovery_grace) =>
            {
                StoreHealth::Degraded("recovering: fresh reads stay on the leader".to_owned())
            }
            health => health,
        }
    }

    /// `"memory"` or `"redis"`.
    pub fn store_backend(&self) -> &'static str {
        self.inner.store.backend()
    }

    /// All counters now.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// The configuration in force.
    pub fn config(&self) -> &RouterConfig {
        &self.inner.cfg
    }

    /// Stops the tracker and closes the pool and the read connections:
    /// connections already handed out finish their work; new requests fail.
    pub fn shutdown(&self) {
        let inner = &self.inner;
        inner.tracker.shutdown();
        inner.leader.close();
        inner.leader_reads.close();
        for readers in &inner.followers {
            readers.close();
        }
    }

    fn store_failed(&self, now_ms: u64, error: &Error) {
        self.inner.metrics.add_store_error();
        self.inner.store_guard.failed(now_ms);
        tracing::debug!(error = %error, "session store call failed");
    }

    async fn leader_conn(&self) -> Result<Object> {
        self.inner.leader.get().await.map_err(|source| Error::Pool {
            node: LEADER_NAME.to_owned(),
            source,
        })
    }

    /// A shared read connection to the leader.
    async fn leader_read_conn(&self) -> Result<ReadConn> {
        self.inner
            .leader_reads
            .get()
            .await
            .map_err(|reason| Error::Connect {
                node: LEADER_NAME.to_owned(),
                reason,
            })
    }

    /// A shared read connection to follower `i`. With `epoch`, refuses it if
    /// the tracker forgot the follower since the decision was taken (rule 2:
    /// the position that made it eligible must still stand). On a
    /// connection failure the follower is forgotten (rule 3, in
    /// [`Readers`]). `Err` means "use the leader".
    async fn follower_conn(&self, i: usize, epoch: Option<u64>) -> Result<ReadConn, ()> {
        let shared = &self.inner.tracker.shared;
        let conn = self.inner.followers[i].get().await.map_err(|_| ())?;
        if epoch.is_some_and(|e| shared.view().followers[i].epoch != e) {
            return Err(());
        }
        Ok(conn)
    }

    /// `per-read-check`: asks follower `i` for its replay position in a
    /// statement of its own, before the read's statement (rule 2).
    async fn check_follower(&self, i: usize, target: Lsn) -> Result<(ReadConn, Lsn), Reason> {
        let conn = self
            .follower_conn(i, None)
            .await
            .map_err(|()| Reason::FollowerUnavailable)?;
        match position(&conn, REPLAY_POSITION).await {
            Ok(Some(replay)) if replay >= target => Ok((conn, replay)),
            Ok(_) => Err(Reason::CheckFailed),
            Err(e) => {
                if connection_lost(&e) {
                    self.inner
                        .tracker
                        .shared
                        .forget_follower(i, &format!("check failed: {}", describe_pg(&e)));
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
/// more than `seen` (a lower bound known before it); [`Router::after_read`]
/// raises the token to an upper bound once it has run.
fn advance_token(
    view: &ClusterView,
    cfg: &RouterConfig,
    state: &SessionState,
    client_token: Option<Lsn>,
    seen: Option<Lsn>,
) -> (Option<Lsn>, bool) {
    let token = match *state {
        SessionState::Known { token, .. } => token,
        SessionState::Unknown => client_token,
    };
    match token {
        Some(t) if is_absurd(view, t, cfg) => (view.leader_lsn().max(seen), true),
        _ => (token.max(seen), false),
    }
}

fn follower_target(view: &ClusterView, i: usize) -> Target {
    let f = &view.followers[i];
    Target::Follower(i, f.epoch, f.lsn)
}

/// Waits until a follower in rotation is known to have replayed `target`,
/// for at most `budget` (rule 4: nothing a client sends can make it longer).
/// Wakes on every view the tracker publishes. Gives up early when no follower
/// is left in rotation. Returns the follower and the view it was chosen from.
pub(crate) async fn wait_for_caught_up(
    mut rx: watch::Receiver<Arc<ClusterView>>,
    target: Lsn,
    budget: Duration,
) -> Option<(usize, Arc<ClusterView>)> {
    let deadline = Instant::now() + budget;
    loop {
        let view = rx.borrow_and_update().clone();
        let found = {
            let mut rng = rand::rng();
            least_lagged_caught_up(&view, target, &mut rng)
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

/// Whether a query error means the connection (not the statement) failed:
/// closed, I/O, or SQLSTATE class 08 (connection) / 57 (operator
/// intervention, e.g. 57P01 admin shutdown).
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        None => true,
        Some(db) => matches!(&db.code().code()[..2], "08" | "57"),
    }
}

/// A follower's replay position (NULL on a leader).
const REPLAY_POSITION: &str = "SELECT pg_last_wal_replay_lsn()";
/// The leader's WAL write position.
const LEADER_POSITION: &str = "SELECT pg_current_wal_lsn()";

/// Runs one of the position queries as a cached prepared statement.
async fn position(
    conn: &ReadConn,
    sql: &str,
) -> std::result::Result<Option<Lsn>, tokio_postgres::Error> {
    let stmt = conn.prepare_cached(sql).await?;
    let row = conn.query_one(&stmt, &[]).await?;
    let lsn: Option<tokio_postgres::types::PgLsn> = row.try_get(0)?;
    Ok(lsn.map(Lsn::from))
}

pub(crate) fn first_value(rows: &[SimpleQueryMessage]) -> Option<&str> {
    rows.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0),
        _ => None,
    })
}

fn parse_url(name: &str, url: &str, cfg: &RouterConfig) -> Result<tokio_postgres::Config> {
    let mut pg: tokio_postgres::Config = url.parse().map_err(|source| Error::Url {
        node: name.to_owned(),
        source,
    })?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(cfg.connect_timeout);
    }
    Ok(pg)
}

/// The leader's pool, for writes (a transaction needs a connection of its
/// own).
fn build_pool(pg: tokio_postgres::Config, cfg: &RouterConfig) -> Result<Pool> {
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            // `is_closed()` only: validating with a query on every checkout
            // would add a round trip to every write.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(cfg.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(cfg.pool_timeout))
        .create_timeout(Some(cfg.connect_timeout))
        .recycle_timeout(Some(cfg.pool_timeout))
        .build()
        .map_err(|e| Error::Config(format!("pool: {e}")))
}

#[cfg(test)]
mod tests;
