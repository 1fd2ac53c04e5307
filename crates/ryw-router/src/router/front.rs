//! Reads and writes for fronts that run statements on connections of their
//! own (a protocol proxy): one typed object per read ([`FrontRead`]) and
//! per write ([`FrontWrite`]), created, fed what the front saw and
//! finished, so a front cannot skip a rule or call the steps out of order.
//!
//! - A read: [`Router::front_read`] plans it (rules 2, 4, 5); the front runs
//!   it on its connection to [`FrontRead::target`] and finishes it with
//!   what it saw: [`FrontRead::finish`] (with the position
//!   read after it on the same connection, if any: rule 7; without, the
//!   tracker's next poll bounds it, see [`Unsettled`]), or
//!   [`FrontRead::lost`] (the connection broke: rule 3).
//! - A write: [`Router::front_write`] notes the leader's position before the
//!   write is sent (its floor, for failover); once the front saw the commit
//!   ([`FrontWrite::committed`]), the router reads the leader's position
//!   on a connection of its own (rule 1), so nothing a client did in its
//!   session (`search_path`, `PREPARE`/`DISCARD`, `SET ROLE`, its own
//!   functions, an open transaction) can change the answer.
//!
//! The leader's position for writes is fetched by [`Router::leader_position`],
//! coalesced: one statement serves every caller that asked before it was
//! sent, so a burst of commits costs one round trip, not one each.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::Router;
use super::request::{Decision, ReadRequest, Unsettled};
use crate::decide::is_absurd;
use crate::view::{ClusterView, NodeId};
use crate::{Error, Lsn, Position, Result, SessionKey};

/// A follower position read by a front on its own connection is believed
/// only up to this far past the leader's last known position: no node can
/// be ahead of the leader, and the tracker's knowledge of the leader is at
/// most a poll old. Anything further is refused and never stored.
pub const PLAUSIBLE_AHEAD: u64 = 64 * 1024 * 1024;

/// Where a front must run a planned read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The node that leads now.
    Leader,
    /// Follower `node`, known to the router under `incarnation` (its
    /// postmaster start time, µs since the epoch): a new connection to it
    /// must find that start time (rule 2: a restarted standby can come
    /// back behind).
    Follower {
        /// The follower.
        node: NodeId,
        /// Its postmaster start time as the tracker knows it; `None` when
        /// the tracker no longer knows a position for it (do not use it).
        incarnation: Option<i64>,
    },
}

/// A read planned for a front, until the front says what it saw.
///
/// Dropped without being finished, it counts as a read that ended with
/// nothing learned (what a read moved elsewhere does).
#[derive(Debug)]
pub struct FrontRead {
    router: Router,
    decision: Decision,
}

impl FrontRead {
    /// Where to run it.
    pub fn target(&self) -> Target {
        match self.decision.follower {
            Some(node) => Target::Follower {
                node,
                incarnation: self.router.inner.tracker.shared.known_incarnation(node),
            },
            None => Target::Leader,
        }
    }

    /// Where and why, as planned.
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// Whether the front should read the node's position after the read,
    /// on the same connection, and pass it to [`FrontRead::finish`]: fresh
    /// reads under strategies that keep tokens, on the leader, or for a
    /// session others read too (`shared`, rule 7 across connections). A
    /// follower read of a session the front keeps itself is bounded by the
    /// tracker's next poll instead ([`FrontRead::finish`] without one).
    pub fn wants_position(&self, shared: bool) -> bool {
        let d = &self.decision;
        d.freshness == crate::Freshness::Fresh
            && d.strategy.tracks_tokens()
            && (shared || d.follower.is_none())
    }

    /// Whether a follower serving this read was forgotten since it was
    /// planned (it broke, stalled or restarted: rule 3): a read still
    /// waiting there, with nothing relayed yet, should move.
    pub fn abandoned(&self, view: &ClusterView) -> bool {
        let Some(id) = self.decision.follower else {
            return false;
        };
        view.node(id)
            .is_none_or(|s| !s.healthy && Some(s.epoch) != self.decision.epoch)
    }

    /// The read is done (its last reply arrived): rule 7 with what the
    /// front learned. `position` is the node's position read after the
    /// read on the same connection (when [`FrontRead::wants_position`]
    /// asked for it and the node answered): the session's token rises to
    /// it, and, for a shared session, the stored token. A position no node
    /// could have (past the leader's by more than [`PLAUSIBLE_AHEAD`]) is
    /// refused: it reaches neither the tracker nor the store nor a token.
    /// Without a usable position, a fresh follower read of a strategy that
    /// keeps tokens ends [`Unsettled`]: its bound comes from the tracker's
    /// next poll ([`Router::settle`]).
    pub async fn finish(mut self, position: Option<Lsn>) -> Finished {
        let ended_at = Instant::now();
        let mut refused = false;
        let lsn = position.filter(|&lsn| {
            let view = self.router.inner.tracker.shared.view();
            let bad = implausible(&view, lsn);
            if bad {
                refused = true;
                self.router.inner.metrics.add_absurd_token();
                tracing::warn!(
                    node = %self.decision.node,
                    %lsn,
                    leader = ?view.leader_lsn(),
                    "refused a position read after a read: no node can be that far ahead"
                );
            }
            !bad
        });
        let d = &mut self.decision;
        if let Some(lsn) = lsn {
            d.token = d.token.max(Some(Position::new(d.timeline, lsn)));
        }
        self.router.persist_token(d).await;
        let d = &self.decision;
        let unsettled =
            (lsn.is_none() && d.freshness == crate::Freshness::Fresh && d.strategy.tracks_tokens())
                .then(|| self.router.unsettled(d, ended_at))
                .flatten();
        Finished {
            decision: self.decision,
            unsettled,
            refused,
        }
    }

    /// The connection serving the read broke, or stopped answering, before
    /// it finished (rule 3): a follower's position is forgotten now.
    pub fn lost(self, why: &str) {
        self.router.report_lost(&self.decision, why);
    }
}

/// What a finished [`FrontRead`] leaves the front.
#[derive(Debug)]
pub struct Finished {
    /// Where it went and why, with the session's token after it.
    pub decision: Decision,
    /// Its bound, when the front could not read one (settle it later).
    pub unsettled: Option<Unsettled>,
    /// The position the front read was refused as impossible.
    pub refused: bool,
}

/// A write on the leader by a front, from before it is sent until its
/// commit was seen.
#[derive(Debug)]
pub struct FrontWrite {
    router: Router,
    floor: Option<Position>,
}

/// Whose write a [`FrontWrite`] is.
#[derive(Clone, Copy, Debug)]
pub enum Writer<'a> {
    /// A session in the store: its token and write floor are stored.
    Shared(&'a SessionKey),
    /// A session the front keeps, whose latest write had this floor.
    Local(Option<Position>),
}

impl FrontWrite {
    /// The leader's position before the write was sent: a failover that
    /// loses the write is told from it.
    pub fn floor(&self) -> Option<Position> {
        self.floor
    }

    /// The front saw the write commit (`COMMIT`, or an autocommit statement
    /// whose `ReadyForQuery` says idle). Rule 1: the leader's position is
    /// read now, on the router's own connection, by a statement sent after
    /// the commit returned, and becomes the session's token. `Err` when the
    /// leader could not be asked: the write's position is unknown, and the
    /// session's fresh reads must go to the leader until one is known.
    pub async fn committed(self, writer: Writer<'_>) -> Result<crate::Committed> {
        let pos = self.router.leader_position().await?;
        Ok(match writer {
            Writer::Shared(key) => {
                self.router
                    .record_write_position(key, pos, self.floor)
                    .await
            }
            Writer::Local(written) => {
                self.router.note_leader_position(pos.lsn);
                // Scope `global`: before the write is acknowledged.
                self.router.raise_mark(pos).await;
                crate::Committed {
                    token: pos,
                    lost: written.and_then(|w| self.router.lost_write(w)),
                }
            }
        })
    }
}

fn implausible(view: &ClusterView, lsn: Lsn) -> bool {
    view.leader_lsn()
        .is_some_and(|leader| lsn > leader.saturating_add(PLAUSIBLE_AHEAD))
}

/// The coalescing fetcher behind [`Router::leader_position`].
#[derive(Debug)]
pub(crate) struct LeaderFetch {
    state: Mutex<FetchState>,
    done: watch::Sender<Done>,
}

#[derive(Debug, Default)]
struct FetchState {
    /// Fetches started so far (the generation of the latest).
    started: u64,
    /// A fetch is under way.
    running: bool,
}

/// The latest fetch that ended: its generation and what it found (`None`:
/// abandoned half way).
#[derive(Clone, Debug, Default)]
struct Done {
    generation: u64,
    result: Option<std::result::Result<Position, String>>,
}

impl Default for LeaderFetch {
    fn default() -> Self {
        LeaderFetch {
            state: Mutex::new(FetchState::default()),
            done: watch::channel(Done::default()).0,
        }
    }
}

/// Ends a fetch (also when its future is dropped half way: the waiters
/// then start another).
struct Running<'a> {
    fetch: &'a LeaderFetch,
    generation: u64,
    result: Option<std::result::Result<Position, String>>,
}

impl LeaderFetch {
    fn lock(&self) -> std::sync::MutexGuard<'_, FetchState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut st = self.fetch.lock();
        st.running = false;
        // `None`: abandoned half way; its waiters start another.
        self.fetch.done.send_replace(Done {
            generation: self.generation,
            result: self.result.take(),
        });
    }
}

impl Router {
    /// Plans a read for a front that runs it on its own connection.
    pub async fn front_read(&self, req: &ReadRequest<'_>) -> Result<FrontRead> {
        Ok(FrontRead {
            router: self.clone(),
            decision: self.plan_read(req).await?,
        })
    }

    /// Plans the next read of a session whose last read is
    /// [`Unsettled`]: at once, on that follower or the leader.
    pub fn front_read_unsettled(&self, req: &ReadRequest<'_>, unsettled: &Unsettled) -> FrontRead {
        FrontRead {
            router: self.clone(),
            decision: self.plan_after_unsettled(req, unsettled),
        }
    }

    /// A write about to be sent to the leader by a front.
    pub fn front_write(&self) -> FrontWrite {
        FrontWrite {
            router: self.clone(),
            floor: self.leader_floor(),
        }
    }

    /// A write whose commit was seen but whose position could not be read
    /// then, with its floor: [`FrontWrite::committed`] reads one now (any
    /// position read after the commit covers it).
    pub fn front_write_after(&self, floor: Option<Position>) -> FrontWrite {
        FrontWrite {
            router: self.clone(),
            floor,
        }
    }

    /// A client's token, verified, made safe to keep: one absurdly far
    /// beyond the leader (rule 4) is clamped to the leader's position.
    pub fn clamp_token(&self, pos: Position) -> Position {
        let view = self.inner.tracker.shared.view();
        if is_absurd(&view, pos.lsn, &self.inner.cfg) {
            self.inner.metrics.add_absurd_token();
            Position::new(view.history.current, view.leader_lsn().unwrap_or(Lsn::ZERO))
        } else {
            pos
        }
    }

    /// A position the leader reached *after* this call began, read on the
    /// router's own connection (so nothing a client did can change it).
    /// Coalesced: one statement answers every caller that asked before it
    /// was sent; at most one is under way at a time. Times out after the
    /// configured read timeout.
    pub(crate) async fn leader_position(&self) -> Result<Position> {
        let timeout = self.inner.cfg.read_timeout;
        match tokio::time::timeout(timeout, self.leader_position_inner()).await {
            Ok(r) => r,
            Err(_) => Err(Error::LeaderUnavailable(format!(
                "the leader's position did not come within {timeout:?}"
            ))),
        }
    }

    async fn leader_position_inner(&self) -> Result<Position> {
        let fetch = &self.inner.leader_fetch;
        let mut rx = fetch.done.subscribe();
        // A fetch answers this caller only if it starts after now.
        let need = fetch.lock().started + 1;
        loop {
            // Start the next fetch, or learn which one is under way.
            let (start, generation) = {
                let mut st = fetch.lock();
                let start = !st.running;
                if start {
                    st.running = true;
                    st.started += 1;
                }
                (start, st.started)
            };
            if start {
                // Started after `need` was taken: it answers this caller.
                let mut run = Running {
                    fetch,
                    generation,
                    result: None,
                };
                let result = self.fetch_leader_position().await;
                run.result = Some(result.as_ref().copied().map_err(|e| e.to_string()));
                drop(run);
                return result;
            }
            // Another caller's fetch is under way: wait for it to end.
            let done = rx
                .wait_for(|d| d.generation >= generation)
                .await
                .map(|d| d.clone())
                .map_err(|_| Error::LeaderUnavailable("the router stopped".to_owned()))?;
            if done.generation >= need
                && let Some(result) = done.result
            {
                return result.map_err(|e| {
                    Error::LeaderUnavailable(format!("reading the leader's position: {e}"))
                });
            }
            // It started before this caller asked, or was abandoned: start
            // or wait for the next one.
        }
    }

    /// One statement on the leader's shared read connection: its position
    /// and timeline (the timeline is the server's own, from the name of
    /// its current WAL segment).
    pub(super) async fn fetch_leader_position(&self) -> Result<Position> {
        let started = Instant::now();
        let conn = self.leader_read_conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT l::text, substr(pg_catalog.pg_walfile_name(l), 1, 8) \
                 FROM pg_catalog.pg_current_wal_lsn() AS l",
            )
            .await?;
        let row = conn.query_one(&stmt, &[]).await?;
        let lsn: Lsn = row.try_get::<_, String>(0)?.parse()?;
        let timeline = u32::from_str_radix(&row.try_get::<_, String>(1)?, 16)
            .map_err(|_| Error::NoLeaderLsn)?;
        if started.elapsed() > Duration::from_millis(50) {
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                "the leader's position was slow to come"
            );
        }
        Ok(Position::new(timeline, lsn))
    }
}
