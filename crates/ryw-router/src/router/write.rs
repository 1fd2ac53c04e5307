//! The write protocol: every write goes to the leader (rule 6), and its
//! token is the leader's position read after `COMMIT` returned (rule 1).
//!
//! - [`Router::begin`] gives a [`WriteTx`], a transaction on a connection of
//!   the leader's pool; [`WriteTx::commit`] commits it and only then records
//!   the write's position for the session, so no caller can record it
//!   inside the transaction. Dropped without `commit`, it rolls back.
//! - [`Router::write_query`]: one autocommit statement, then the position.
//! - [`Router::record_write`], [`Router::record_write_position`]: the lower
//!   level, for fronts that commit by themselves (a protocol proxy, through
//!   [`FrontWrite`](crate::FrontWrite)).

use std::fmt;
use std::ops::Deref;

use deadpool_postgres::Object;

use super::Router;
use super::query::Params;
use crate::pg::{connection_lost, describe_pg};
use crate::{Error, Lsn, Position, Result, SessionKey};

/// A committed write's token, and what the session learns with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The write's position: the leader's, read after `COMMIT` returned
    /// (rule 1), on the leader's timeline. The session's new token.
    pub token: Position,
    /// An earlier write of the session that a failover lost (its token was
    /// past where its timeline ended): tell the user, as a read would
    /// ([`Decision::lost`](crate::Decision::lost)). This write's token
    /// replaces it.
    pub lost: Option<Position>,
}

/// What a write returned, and its token: the leader's position after it
/// committed (for `X-Consistency-Token`; the session store has it too).
#[derive(Debug)]
pub struct Written<T> {
    /// The rows, or the caller's value.
    pub value: T,
    /// The write's position (rule 1).
    pub token: Position,
    /// An earlier write of the session that a failover lost, if any
    /// ([`Committed::lost`]).
    pub lost: Option<Position>,
}

impl<T> Written<T> {
    /// The write's token and what the session learns with it.
    pub fn committed(&self) -> Committed {
        Committed {
            token: self.token,
            lost: self.lost,
        }
    }
}

/// A write transaction on the leader, open until [`WriteTx::commit`].
/// Derefs to [`tokio_postgres::Client`] to run its statements.
///
/// Dropped without `commit` (an early return, an error, a panic), the
/// transaction is rolled back: nothing of it is left (rule 6), and the
/// connection goes back to the pool once the `ROLLBACK` has run.
pub struct WriteTx {
    router: Router,
    session: SessionKey,
    /// `None` once committed or rolled back.
    conn: Option<Object>,
}

impl fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteTx")
            .field("session", &self.session)
            .field("open", &self.conn.is_some())
            .finish()
    }
}

impl Deref for WriteTx {
    type Target = tokio_postgres::Client;

    fn deref(&self) -> &tokio_postgres::Client {
        self.conn
            .as_ref()
            .expect("a WriteTx is open until consumed")
    }
}

impl WriteTx {
    /// A prepared statement for `sql`, cached per pooled connection.
    pub async fn prepare_cached(
        &self,
        sql: &str,
    ) -> std::result::Result<tokio_postgres::Statement, tokio_postgres::Error> {
        self.conn
            .as_ref()
            .expect("a WriteTx is open until consumed")
            .prepare_cached(sql)
            .await
    }

    /// Commits, then reads the write's position on the leader in a
    /// statement of its own and records it for the session (rule 1: a
    /// position read inside the transaction would be before its commit
    /// record). Returns that position, the session's new token. The
    /// position read just before `COMMIT`, in the same message, is kept as
    /// the write's floor: what a failover is judged against
    /// ([`TimelineHistory::write_lost`](crate::TimelineHistory::write_lost)).
    ///
    /// Errors: [`Error::NotCommitted`] when the transaction did not commit (a
    /// statement of it had failed, a deferred constraint, a serialization
    /// failure); [`Error::CommitUnknown`] when the leader went away during
    /// `COMMIT` or before the position could be read: the write may have
    /// committed, and only a retry that is safe to repeat can tell.
    pub async fn commit(mut self) -> Result<Committed> {
        let conn = self.conn.take().expect("a WriteTx is open until consumed");
        // A SELECT first: in a transaction that already failed, PostgreSQL
        // answers a bare COMMIT with "ROLLBACK" and no error, which would
        // pass for a commit. The SELECT fails there instead (25P02), and the
        // whole string with it. It reads the write's floor: the commit
        // record comes after it. One round trip, as a bare COMMIT.
        let answer = conn
            .simple_query(
                "SELECT l::text, substr(pg_walfile_name(l), 1, 8) FROM pg_current_wal_insert_lsn() AS l; COMMIT",
            )
            .await;
        let floor = match &answer {
            Ok(rows) => position_row(rows).ok(),
            Err(_) => None,
        };
        if let Err(e) = answer {
            if connection_lost(&e) {
                return Err(Error::CommitUnknown(format!(
                    "the leader's connection broke during COMMIT: {}",
                    describe_pg(&e)
                )));
            }
            // Still open (failed): roll back before the pool reuses it.
            self.conn = Some(conn);
            return Err(Error::NotCommitted(e));
        }
        self.router
            .record_committed(&self.session, &conn, floor)
            .await
    }

    /// Rolls back now, waiting for it (a drop rolls back in the background).
    pub async fn rollback(mut self) -> Result<()> {
        let conn = self.conn.take().expect("a WriteTx is open until consumed");
        conn.batch_execute("ROLLBACK").await?;
        Ok(())
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // The connection returns to the pool once this has run; if the
            // runtime is gone, the connection closes and the server rolls
            // back by itself.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    if let Err(e) = conn.batch_execute("ROLLBACK").await {
                        tracing::debug!(error = %describe_pg(&e), "rollback of a dropped write failed");
                    }
                });
            }
        }
    }
}

impl Router {
    /// Opens a write transaction of `session` on the leader (rule 6: writes
    /// only ever go there). Run its statements through the [`WriteTx`]
    /// (it derefs to `tokio_postgres::Client`), then
    /// [`WriteTx::commit`] for the session's new token.
    pub async fn begin(&self, session: &SessionKey) -> Result<WriteTx> {
        self.inner.metrics.add_write();
        let conn = self.leader_conn().await?;
        conn.batch_execute("BEGIN").await?;
        Ok(WriteTx {
            router: self.clone(),
            session: session.clone(),
            conn: Some(conn),
        })
    }

    /// One write statement of `session` on the leader, committed on its own
    /// (autocommit), then its position recorded (rule 1). For a write that
    /// is one statement (`INSERT … ON CONFLICT … RETURNING`); use
    /// [`Router::begin`] for more.
    pub async fn write_query(
        &self,
        session: &SessionKey,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Written<Vec<tokio_postgres::Row>>> {
        self.inner.metrics.add_write();
        let conn = self.leader_conn().await?;
        // The leader was at least here before the statement ran.
        let floor = self.leader_floor();
        let stmt = conn.prepare_cached(sql).await?;
        let rows = match conn.query(&stmt, params).await {
            Ok(rows) => rows,
            // The statement may have committed before the connection broke.
            Err(e) if connection_lost(&e) => {
                return Err(Error::CommitUnknown(format!(
                    "the leader's connection broke during the write: {}",
                    describe_pg(&e)
                )));
            }
            Err(e) => return Err(Error::NotCommitted(e)),
        };
        let committed = self.record_committed(session, &conn, floor).await?;
        Ok(Written {
            value: rows,
            token: committed.token,
            lost: committed.lost,
        })
    }

    /// The lower level of rule 1: records a committed write of `session`
    /// and returns its token, the leader's WAL position (and timeline) read
    /// by a statement of its own on `client`. Call it only after `COMMIT`
    /// returned, on the connection that committed. ([`WriteTx::commit`]
    /// and [`Router::write_query`] call it themselves.)
    ///
    /// If the session store fails, the write is not undone and the token is
    /// still returned (the client can carry it); the store is marked
    /// degraded so fresh reads go to the leader (rule 5).
    ///
    /// `floor` is a position the leader had reached before the write's
    /// commit record ([`Router::leader_floor`] read before the write was
    /// sent, or `pg_current_wal_insert_lsn()` read inside its transaction);
    /// without one, a failover that loses this write cannot tell the
    /// session so.
    pub(crate) async fn record_write(
        &self,
        session: &SessionKey,
        client: &tokio_postgres::Client,
        floor: Option<Position>,
    ) -> Result<Committed> {
        // One round trip: the simple protocol needs no prepare. The
        // timeline is the server's own (`pg_walfile_name` names the segment
        // on its current timeline), so a write is labelled right even if
        // the tracker has not seen a promotion yet.
        let rows = client
            .simple_query(
                "SELECT l::text, substr(pg_walfile_name(l), 1, 8) FROM pg_current_wal_lsn() AS l",
            )
            .await?;
        let pos = position_row(&rows)?;
        Ok(self.record_write_position(session, pos, floor).await)
    }

    /// A floor for a write about to be sent to the leader: its position as
    /// the tracker last knew it (never ahead of the leader's WAL), on its
    /// timeline. `None` before the leader's first poll.
    pub(crate) fn leader_floor(&self) -> Option<Position> {
        let view = self.inner.tracker.shared.view();
        let lsn = view.leader.lsn?;
        Some(Position::new(
            view.leader.timeline.unwrap_or(view.history.current),
            lsn,
        ))
    }

    /// The lowest level of rule 1: `pos` is the leader's position (on its
    /// timeline) read after a write of `session` committed, by a front that
    /// reads it itself. Stores it as the session's token and last write
    /// time. `floor`: a position the leader had reached before the write's
    /// commit record ([`FrontWrite::floor`](crate::FrontWrite::floor));
    /// without one, a failover that loses this write cannot tell the
    /// session so. Also raises the fleet-wide mark of scope `global`
    /// ([`crate::Scope`]).
    pub async fn record_write_position(
        &self,
        session: &SessionKey,
        pos: Position,
        floor: Option<Position>,
    ) -> Committed {
        let inner = &self.inner;
        self.note_leader_position(pos.lsn);
        let now_ms = inner.clock.now_ms();
        // Scope `global`'s mark is raised at the same time: on a Redis
        // Cluster it is in a slot of its own, a call of its own.
        let (recorded, ()) = tokio::join!(
            inner.store.record_write(session, pos, floor, now_ms),
            self.raise_mark(pos)
        );
        let before = match recorded {
            Ok(before) => before,
            Err(e) => {
                self.store_failed(session, now_ms, &e);
                None
            }
        };
        Committed {
            token: pos,
            lost: before.and_then(|b| self.lost_write(b)),
        }
    }

    /// Whether the write whose floor is `floor` was lost in a failover
    /// ([`TimelineHistory::write_lost`](crate::TimelineHistory::write_lost)); counted when
    /// it was. For a front that keeps sessions itself (a proxy).
    pub(crate) fn lost_write(&self, floor: Position) -> Option<Position> {
        let lost = self.inner.tracker.shared.view().history.write_lost(floor);
        if lost.is_some() {
            self.inner.metrics.add_write_lost();
        }
        lost
    }

    /// The leader was at `lsn` (read by a front on its own connection, for
    /// a session it keeps itself): the tracker learns of it before its next
    /// poll, for lag and the absurd-token bound (rule 4).
    pub(crate) fn note_leader_position(&self, lsn: Lsn) {
        self.inner.tracker.shared.note_leader_lsn(lsn);
    }

    /// [`Router::record_write`] right after a commit: a failure here leaves
    /// the write's outcome unknown to the caller.
    async fn record_committed(
        &self,
        session: &SessionKey,
        client: &tokio_postgres::Client,
        floor: Option<Position>,
    ) -> Result<Committed> {
        self.record_write(session, client, floor).await.map_err(|e| {
            tracing::error!(error = %e, %session, "committed, but could not read the write position");
            Error::CommitUnknown(format!(
                "committed, but the leader went away before the write's position could be read ({e})"
            ))
        })
    }
}

/// The `(lsn text, timeline hex)` row of a simple query's answer.
fn position_row(rows: &[tokio_postgres::SimpleQueryMessage]) -> Result<Position> {
    let row = rows
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .ok_or(Error::NoLeaderLsn)?;
    let lsn: Lsn = row.get(0).ok_or(Error::NoLeaderLsn)?.parse()?;
    let timeline = row
        .get(1)
        .and_then(|t| u32::from_str_radix(t, 16).ok())
        .ok_or(Error::NoLeaderLsn)?;
    Ok(Position::new(timeline, lsn))
}
