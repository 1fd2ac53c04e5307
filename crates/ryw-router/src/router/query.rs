//! The read protocol, one call per read: [`Router::query`] (and
//! [`Router::query_one`], [`Router::query_opt`]) for one statement,
//! [`Router::read_on`] for a caller's closure. Each call
//!
//! 1. routes the read ([`Router::route`]: rules 2, 4, 5);
//! 2. for a fresh read, selects the node's position in the read's own
//!    statement (a last column it strips again) or, where that cannot be
//!    done, in a statement of its own right after, and raises the session's
//!    token to it (rule 7);
//! 3. times the read out after [`RouterConfig::read_timeout`];
//! 4. if the node's connection broke or the read stalled, forgets that
//!    follower (rule 3) and runs the read once more elsewhere (rule 8).
//!
//! [`RouterConfig::read_timeout`]: crate::RouterConfig::read_timeout

use std::fmt;
use std::future::Future;

use tokio_postgres::types::{FromSql, ToSql};

use super::Router;
use super::feedback::read_position;
use super::request::{Decision, ReadRequest};
use crate::pg::{Failure, classify, describe_pg, lsn_column};
use crate::reader::{FreshStatement, ReadConn};
use crate::view::Role;
use crate::{Error, Freshness, Lsn, Result};

/// What a read returned, and the [`Decision`] that says where it was served
/// (`decision.node` for `X-Served-By`), how long it waited, and the
/// session's token after it (`decision.token` for `X-Consistency-Token`).
#[derive(Debug)]
pub struct Read<T> {
    /// The rows, or the closure's value.
    pub value: T,
    /// Where and why, and the token after the read.
    pub decision: Decision,
}

impl<T> Read<T> {
    /// The same read with its value transformed.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Read<U> {
        Read {
            value: f(self.value),
            decision: self.decision,
        }
    }
}

/// A row of a read: a `tokio_postgres::Row` without the position column the
/// router added to a fresh read's statement.
#[derive(Debug)]
pub struct Row {
    row: tokio_postgres::Row,
    /// Columns of the caller's statement (the router's own comes after).
    width: usize,
}

impl Row {
    /// The caller's columns.
    pub fn columns(&self) -> &[tokio_postgres::Column] {
        &self.row.columns()[..self.width]
    }

    /// The number of the caller's columns.
    pub fn len(&self) -> usize {
        self.width
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.width == 0
    }

    /// A column by index or name, converted to `T`; panics if it does not
    /// exist or does not convert (as `tokio_postgres::Row::get` does).
    pub fn get<'a, I, T>(&'a self, idx: I) -> T
    where
        I: ColumnIndex + fmt::Display,
        T: FromSql<'a>,
    {
        match self.try_get(&idx) {
            Ok(v) => v,
            Err(e) => panic!("error retrieving column {idx}: {e}"),
        }
    }

    /// A column by index or name, converted to `T`.
    pub fn try_get<'a, I, T>(&'a self, idx: I) -> Result<T>
    where
        I: ColumnIndex + fmt::Display,
        T: FromSql<'a>,
    {
        let i = idx
            .index_in(self.columns())
            .ok_or_else(|| Error::Column(idx.to_string()))?;
        Ok(self.row.try_get(i)?)
    }

    /// The row as the server sent it, with the router's position column
    /// (if any) last.
    pub fn into_inner(self) -> tokio_postgres::Row {
        self.row
    }
}

/// A column of a [`Row`]: its index (`usize`) or its name (`&str`), as in
/// `tokio-postgres`.
pub trait ColumnIndex {
    /// The index of this column among `columns`, if it is one of them.
    fn index_in(&self, columns: &[tokio_postgres::Column]) -> Option<usize>;
}

impl ColumnIndex for usize {
    fn index_in(&self, columns: &[tokio_postgres::Column]) -> Option<usize> {
        (*self < columns.len()).then_some(*self)
    }
}

impl ColumnIndex for str {
    fn index_in(&self, columns: &[tokio_postgres::Column]) -> Option<usize> {
        // As tokio-postgres does: an exact match first, then ignoring case.
        columns.iter().position(|c| c.name() == self).or_else(|| {
            columns
                .iter()
                .position(|c| c.name().eq_ignore_ascii_case(self))
        })
    }
}

impl<T: ColumnIndex + ?Sized> ColumnIndex for &T {
    fn index_in(&self, columns: &[tokio_postgres::Column]) -> Option<usize> {
        T::index_in(*self, columns)
    }
}

/// The statement parameters of [`Router::query`].
pub type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Why an attempt did not answer, and whether another may.
enum Attempt {
    /// The node broke or stalled, or a standby cancelled the read: try once
    /// more elsewhere (already reported).
    Retry(String),
    /// The statement failed for a reason of its own.
    Fail(Error),
}

impl Router {
    /// Runs one read statement, routed as `req` says, keeping every read
    /// rule: returns its rows (without the router's position column) and
    /// the [`Decision`].
    ///
    /// `sql` is one statement, typically a `SELECT`. For a fresh read it
    /// runs as `SELECT *, <position> FROM (<sql>) AS ryw_read`, prepared
    /// once per shared connection; a statement that cannot be a subquery
    /// (`SHOW`, `EXPLAIN`) runs as written, followed by a position query.
    /// Errors: [`Error::Query`] for the statement's own failure,
    /// [`Error::ReadFailed`] when two nodes broke or stalled in a row, and
    /// the routing errors of [`Router::route`].
    pub async fn query(
        &self,
        req: &ReadRequest<'_>,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Read<Vec<Row>>> {
        let mut last = String::new();
        for attempt in 0..2 {
            let (conn, mut decision) = self.route_read(req).await?;
            let outcome = tokio::time::timeout(
                self.inner.cfg.read_timeout,
                self.run_statement(req, &conn, &mut decision, sql, params),
            )
            .await;
            match self.judge(outcome, &conn, &decision, attempt) {
                Ok(rows) => {
                    // The read has answered: no longer in flight on its node.
                    decision.held.release();
                    return Ok(Read {
                        value: rows,
                        decision,
                    });
                }
                Err(Attempt::Retry(why)) => last = why,
                Err(Attempt::Fail(e)) => return Err(e),
            }
        }
        Err(Error::ReadFailed(last))
    }

    /// [`Router::query`] for exactly one row ([`Error::RowCount`] otherwise).
    pub async fn query_one(
        &self,
        req: &ReadRequest<'_>,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Read<Row>> {
        let read = self.query(req, sql, params).await?;
        match read.value.len() {
            1 => Ok(read.map(|mut rows| rows.remove(0))),
            n => Err(Error::RowCount(n)),
        }
    }

    /// [`Router::query`] for at most one row ([`Error::RowCount`] for more).
    /// A fresh read that finds nothing still raises the session's token:
    /// "no row" is an observation too (rule 7).
    pub async fn query_opt(
        &self,
        req: &ReadRequest<'_>,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Read<Option<Row>>> {
        let read = self.query(req, sql, params).await?;
        match read.value.len() {
            0 | 1 => Ok(read.map(|rows| rows.into_iter().next())),
            n => Err(Error::RowCount(n)),
        }
    }

    /// Runs the caller's reads on one connection of the node `req` is
    /// routed to, for reads that need several statements, keeping every
    /// read rule: `f` gets the connection (it may be called twice, on
    /// another node, if the first broke or stalled), and for a fresh read
    /// the session's token is raised after `f` returned, by a position
    /// query of its own.
    ///
    /// The connection is shared with other reads of the node: run single
    /// statements, no `BEGIN` or `SET`. Each statement takes its own
    /// snapshot; the position read after them bounds them all.
    ///
    /// ```no_run
    /// # async fn f(router: ryw_router::Router, session: ryw_router::SessionKey) -> ryw_router::Result<()> {
    /// use ryw_router::ReadRequest;
    /// let read = router
    ///     .read_on(&ReadRequest::fresh(&session), |conn| async move {
    ///         let balance = conn.query_one("SELECT balance_cents FROM accounts LIMIT 1", &[]).await?;
    ///         let payments = conn.query("SELECT amount_cents FROM payments LIMIT 5", &[]).await?;
    ///         Ok((balance.get::<_, i64>(0), payments.len()))
    ///     })
    ///     .await?;
    /// println!("{:?} from {}", read.value, read.decision.node);
    /// # Ok(()) }
    /// ```
    pub async fn read_on<T, F, Fut>(&self, req: &ReadRequest<'_>, mut f: F) -> Result<Read<T>>
    where
        F: FnMut(ReadConn) -> Fut,
        Fut: Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    {
        let mut last = String::new();
        for attempt in 0..2 {
            let (conn, mut decision) = self.route_read(req).await?;
            let run = async {
                let value = f(conn.clone()).await.map_err(Failed::Pg)?;
                if req.freshness == Freshness::Fresh {
                    let position = read_position(&conn, decision.role).await?;
                    self.raise_after(&mut decision, position).await?;
                }
                Ok(value)
            };
            let outcome = tokio::time::timeout(self.inner.cfg.read_timeout, run).await;
            match self.judge(outcome, &conn, &decision, attempt) {
                Ok(value) => {
                    decision.held.release();
                    return Ok(Read { value, decision });
                }
                Err(Attempt::Retry(why)) => last = why,
                Err(Attempt::Fail(e)) => return Err(e),
            }
        }
        Err(Error::ReadFailed(last))
    }

    /// One attempt of [`Router::query`] on the routed connection.
    async fn run_statement(
        &self,
        req: &ReadRequest<'_>,
        conn: &ReadConn,
        decision: &mut Decision,
        sql: &str,
        params: Params<'_>,
    ) -> std::result::Result<Vec<Row>, Failed> {
        if req.freshness == Freshness::StaleOk {
            let stmt = conn.prepare_cached(sql).await?;
            let rows = conn.query(&stmt, params).await?;
            let width = stmt.columns().len();
            return Ok(rows.into_iter().map(|row| Row { row, width }).collect());
        }
        let (rows, width, position) = match conn.prepare_fresh(sql, decision.role).await? {
            FreshStatement::InStatement(stmt) => {
                let width = stmt.columns().len() - 1;
                let rows = conn.query(&stmt, params).await?;
                let position = match rows.first() {
                    Some(row) => lsn_column(row, width)?,
                    // No row to carry it: "nothing" was seen, and that is
                    // an observation too.
                    None => read_position(conn, decision.role).await?,
                };
                (rows, width, position)
            }
            FreshStatement::After(stmt) => {
                let rows = conn.query(&stmt, params).await?;
                let position = read_position(conn, decision.role).await?;
                (rows, stmt.columns().len(), position)
            }
        };
        self.raise_after(decision, position).await?;
        Ok(rows.into_iter().map(|row| Row { row, width }).collect())
    }

    /// Rule 7 after a fresh read: the token rises to the node's position.
    /// A follower that gives none is no longer a standby: the read cannot
    /// be bounded, so it counts as a lost connection and runs elsewhere.
    async fn raise_after(
        &self,
        decision: &mut Decision,
        position: Option<Lsn>,
    ) -> std::result::Result<(), Failed> {
        match position {
            Some(lsn) => {
                // Reads teach the tracker: the position this read selected
                // on its follower is known from now on (same epoch only).
                if decision.role == Role::Follower
                    && let (Some(i), Some(epoch)) = (decision.follower, decision.epoch)
                {
                    self.inner.tracker.shared.learn_from_read(i, epoch, lsn);
                }
                self.raise_token(decision, lsn).await;
                Ok(())
            }
            None => Err(Failed::NoPosition),
        }
    }

    /// What one attempt's outcome means: the value, a retry elsewhere (after
    /// telling the router, rules 3 and 8), or the caller's error.
    fn judge<T>(
        &self,
        outcome: std::result::Result<std::result::Result<T, Failed>, tokio::time::error::Elapsed>,
        conn: &ReadConn,
        decision: &Decision,
        attempt: usize,
    ) -> std::result::Result<T, Attempt> {
        let timeout = self.inner.cfg.read_timeout;
        let e = match outcome {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(Failed::Pg(e))) => e,
            Ok(Err(Failed::NoPosition)) => {
                self.report_lost(decision, "no replay position: no longer a standby");
                self.inner.metrics.add_retry();
                return Err(Attempt::Retry(format!(
                    "{} is no longer a standby",
                    decision.node
                )));
            }
            Err(_) => {
                self.report_stall(decision, conn, timeout);
                self.inner.metrics.add_retry();
                tracing::warn!(node = %decision.node, attempt, "read stalled; retrying on another node");
                return Err(Attempt::Retry(format!(
                    "{} did not answer in {timeout:?}",
                    decision.node
                )));
            }
        };
        match classify(&e, decision.role == Role::Follower) {
            Failure::ConnectionLost => {
                self.report_error(decision, &e);
                self.inner.metrics.add_retry();
                tracing::warn!(node = %decision.node, attempt, error = %describe_pg(&e), "read failed; retrying on another node");
                Err(Attempt::Retry(format!(
                    "{}: {}",
                    decision.node,
                    describe_pg(&e)
                )))
            }
            Failure::RecoveryConflict => {
                self.inner.metrics.add_retry();
                tracing::info!(node = %decision.node, attempt, "read cancelled by recovery; retrying");
                Err(Attempt::Retry(format!(
                    "{}: {}",
                    decision.node,
                    describe_pg(&e)
                )))
            }
            Failure::Statement => Err(Attempt::Fail(Error::Query {
                node: decision.node.to_string(),
                source: e,
            })),
        }
    }
}

/// Why an attempt's statements failed.
#[derive(Debug)]
enum Failed {
    /// A statement failed.
    Pg(tokio_postgres::Error),
    /// The node returned no position: a follower that is no longer a
    /// standby, whose read cannot be bounded (rule 7).
    NoPosition,
}

impl From<tokio_postgres::Error> for Failed {
    fn from(e: tokio_postgres::Error) -> Failed {
        Failed::Pg(e)
    }
}
