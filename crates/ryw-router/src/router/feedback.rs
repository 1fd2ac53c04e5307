//! The lower level after a read: what the read saw raises the session's
//! token (rule 7), and a read that broke or stalled tells the router, which
//! forgets the follower (rule 3). [`Router::query`] and [`Router::read_on`]
//! call these themselves.

use std::time::Duration;

use tokio::time::Instant;

use super::Router;
use super::request::{Decision, Unsettled};
use crate::decide::is_absurd;
use crate::pg::{Failure, LEADER_POSITION, REPLAY_POSITION, classify, describe_pg, lsn_column};
use crate::reader::ReadConn;
use crate::view::{NodeId, Role};
use crate::{Lsn, Position, Result, SessionKey};

impl Router {
    /// Rule 7: the read of `decision` saw the database up to `lsn`, a
    /// position of its node evaluated *after* the read's snapshot was taken
    /// (selected in the read's own statement with
    /// [`Decision::position_sql`], or read by a later statement on the same
    /// connection). Raises `decision.token` to it and, for the strategies
    /// that promise monotonic reads, the session's stored token: a later
    /// read, on any follower, never sees an older state, also of what other
    /// sessions wrote.
    ///
    /// Without it the token after a read is [`Decision::seen`], what the
    /// node was known to have reached *before* the read: a lower bound. The
    /// session's own writes are safe either way (their tokens are read after
    /// `COMMIT`, [`WriteTx::commit`](crate::WriteTx::commit)); reads of what
    /// others write are not.
    pub async fn raise_token(&self, decision: &mut Decision, lsn: Lsn) {
        if decision.role == Role::Leader {
            self.inner.tracker.shared.note_leader_lsn(lsn);
        }
        decision.token = decision
            .token
            .max(Some(Position::new(decision.timeline, lsn)));
        self.persist_token(decision).await;
    }

    /// The lower level of rule 7 without a statement: the read of
    /// `decision`, served by a follower, ended at `ended_at`. `None` for a
    /// read on the leader (its position is cheap to read after it, and
    /// exact).
    pub(crate) fn unsettled(&self, decision: &Decision, ended_at: Instant) -> Option<Unsettled> {
        Some(Unsettled {
            follower: decision.follower?,
            epoch: decision.epoch?,
            ended_at,
        })
    }

    /// The bound of what an [`Unsettled`] read saw, once the tracker knows
    /// it: the follower's position from a poll sent after the read ended
    /// (same epoch), or else the leader's from such a poll (everything a
    /// follower replays, the leader had written before). `None` until one
    /// of them was polled after the read (within a poll interval).
    pub fn settle(&self, unsettled: &Unsettled) -> Option<Position> {
        let view = self.inner.tracker.shared.view();
        let after = |s: &crate::ObservedNode| s.polled_at.is_some_and(|t| t > unsettled.ended_at);
        let on = |s: &crate::ObservedNode, lsn| {
            Position::new(s.timeline.unwrap_or(view.history.current), lsn)
        };
        if let Some(f) = view.node(unsettled.follower)
            && f.epoch == unsettled.epoch
            && after(f)
            && let Some(lsn) = f.lsn
        {
            return Some(on(f, lsn));
        }
        if after(&view.leader) {
            return view.leader.lsn.map(|lsn| on(&view.leader, lsn));
        }
        None
    }

    /// Rule 7 by hand: the session has seen `pos` (for example a token the
    /// service got elsewhere). Stores `max(token, pos)`, clamped to the
    /// leader when absurd (rule 4); returns the stored token.
    pub async fn observe(&self, session: &SessionKey, pos: Position) -> Result<Position> {
        let inner = &self.inner;
        let view = inner.tracker.shared.view();
        let pos = if is_absurd(&view, pos.lsn, &inner.cfg) {
            inner.metrics.add_absurd_token();
            Position::new(view.history.current, view.leader_lsn().unwrap_or(Lsn::ZERO))
        } else {
            pos
        };
        inner.store.observe(session, pos).await.inspect_err(|e| {
            self.store_failed(session, inner.clock.now_ms(), e);
        })
    }

    /// Tell the router that the connection serving `decision` is gone, for
    /// a reason that is not a `tokio-postgres` error (a front's own socket
    /// closed, a node that gave no position, a read that did not answer in
    /// time): a follower's position is forgotten now (rule 3).
    pub(crate) fn report_lost(&self, decision: &Decision, why: &str) {
        if let Some(id) = decision.follower {
            self.inner.tracker.shared.forget_follower(id, why);
        }
    }

    /// The postmaster start time (µs since the epoch) under which the
    /// tracker knows follower `node`'s position, if it knows one. A front
    /// that opens its own connection to a follower checks the server's
    /// `pg_postmaster_start_time()` against it before serving a read there
    /// (rule 2: a restarted standby can come back behind what made it
    /// eligible).
    pub fn follower_incarnation(&self, node: NodeId) -> Option<i64> {
        self.inner.tracker.shared.known_incarnation(node)
    }

    /// Tell the router that running a read on the connection of `decision`
    /// failed. If the read was on a follower and its connection is gone
    /// ([`connection_lost`](crate::connection_lost)), that follower's
    /// position is forgotten now (rule 3) rather than at the next poll.
    pub fn report_error(&self, decision: &Decision, error: &tokio_postgres::Error) {
        if let Some(id) = decision.follower
            && classify(error, true) == Failure::ConnectionLost
        {
            self.inner
                .tracker
                .shared
                .forget_follower(id, &format!("read failed: {}", describe_pg(error)));
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
            Some(id) => self
                .inner
                .tracker
                .shared
                .forget_follower(id, &format!("read stalled for {after:?}")),
            None => tracing::warn!(
                after_ms = after.as_millis() as u64,
                "a read on the leader stalled"
            ),
        }
    }

    /// Stores the decision's token for the session if it is higher than
    /// what the store holds (rule 7, for the strategies that keep tokens).
    /// A store failure costs nothing but rule 5's detour to the leader.
    pub(super) async fn persist_token(&self, decision: &mut Decision) {
        // A lost write is told once: the store forgets it now.
        if decision.forget_lost
            && let (Some(lost), Some(session)) = (decision.lost, &decision.session)
        {
            decision.forget_lost = false;
            if let Err(e) = self.inner.store.forget_write(session, lost).await {
                self.store_failed(session, self.inner.clock.now_ms(), &e);
            }
        }
        if !decision.persist || decision.token <= decision.stored {
            return;
        }
        let (Some(token), Some(session)) = (decision.token, &decision.session) else {
            return;
        };
        match self.inner.store.observe(session, token).await {
            Ok(stored) => decision.stored = Some(stored),
            Err(e) => self.store_failed(session, self.inner.clock.now_ms(), &e),
        }
    }
}

/// The node's position in a statement of its own (prepared once per shared
/// connection: cheaper for the server than a simple query each time).
pub(super) async fn read_position(
    conn: &ReadConn,
    role: Role,
) -> std::result::Result<Option<Lsn>, tokio_postgres::Error> {
    let sql = match role {
        Role::Leader => LEADER_POSITION,
        Role::Follower => REPLAY_POSITION,
    };
    let stmt = conn.prepare_cached(sql).await?;
    lsn_column(&conn.query_one(&stmt, &[]).await?, 0)
}
