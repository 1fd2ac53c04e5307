//! Small PostgreSQL helpers shared by the router, its read connections and
//! the tracker: what a failed statement says about its connection (one
//! definition for the whole crate, and for the services built on it), the
//! position queries, and error text with the server's message.

use tokio_postgres::SimpleQueryMessage;

use crate::Lsn;
use crate::view::Role;

/// A follower's replay position (NULL on a primary).
pub(crate) const REPLAY_POSITION: &str = "SELECT CASE WHEN pg_is_in_recovery() \
     THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END";
/// `per-read-check`'s question to a follower right before the read: its
/// replay position and the timeline it last received.
pub(crate) const CHECK_POSITION: &str = "SELECT pg_last_wal_replay_lsn(), \
     (SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1)";
/// The leader's WAL write position.
pub(crate) const LEADER_POSITION: &str = "SELECT pg_current_wal_lsn()";

/// The SQL expression giving a node's position: everything up to it is
/// visible to a statement that evaluates it (the statement's snapshot was
/// taken before), so it bounds what that statement saw (rule 7). A
/// follower's is its replay position, or its current one if it was
/// promoted since the read was planned (its replay position stops there,
/// below what a read of the new leader can see).
pub(crate) const fn position_expr(role: Role) -> &'static str {
    match role {
        Role::Leader => "pg_current_wal_lsn()",
        Role::Follower => {
            "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END"
        }
    }
}

/// What a failed statement means for its connection and its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The connection is gone (see [`connection_lost`]): forget the node's
    /// position (rule 3) and run the read elsewhere (rule 8).
    ConnectionLost,
    /// A hot standby cancelled the statement because replay needed what it
    /// read (SQLSTATE 40001, "conflict with recovery"). The connection and
    /// the node are fine; the read may run elsewhere.
    RecoveryConflict,
    /// The statement itself failed: a syntax error, a missing table, a
    /// cancelled statement (57014). Running it elsewhere would not help.
    Statement,
}

/// Classifies a failed statement (`on_follower`: 40001 is a recovery
/// conflict only on a standby).
pub(crate) fn classify(e: &tokio_postgres::Error, on_follower: bool) -> Failure {
    if connection_lost(e) {
        Failure::ConnectionLost
    } else if on_follower && e.code().is_some_and(|c| c.code() == "40001") {
        Failure::RecoveryConflict
    } else {
        Failure::Statement
    }
}

/// Whether a statement's error means its connection is gone, rather than
/// the statement being wrong: the connection closed, an I/O error (no
/// SQLSTATE), SQLSTATE class 08 (connection exception), or the server ending
/// the session: 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03
/// cannot_connect_now, 57P04 database_dropped, 57P05 idle_session_timeout.
///
/// Not 57014 query_canceled, although it is in the same class 57: a
/// cancelled statement (a `statement_timeout`, a cancel request) leaves its
/// connection usable, and its node is as healthy as before, so forgetting
/// the node's position would only send reads to the leader for nothing.
/// This is the one definition the router, the service and the proxy use.
pub fn connection_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        None => true,
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03" | "57P04" | "57P05")
        }
    }
}

/// A `tokio-postgres` error with the server's message: its `Display` says
/// only "db error" for errors the server sent.
pub(crate) fn describe_pg(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        // The driver's own words ("error connecting to server") wrap the
        // cause that matters ("Connection refused"): say the innermost.
        None => {
            let mut cause: &dyn std::error::Error = e;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            cause.to_string()
        }
    }
}

/// The first column of the first row of a simple query's answer.
pub(crate) fn first_value(rows: &[SimpleQueryMessage]) -> Option<&str> {
    rows.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0),
        _ => None,
    })
}

/// Reads a `pg_lsn` column (NULL → `None`).
pub(crate) fn lsn_column(
    row: &tokio_postgres::Row,
    index: usize,
) -> Result<Option<Lsn>, tokio_postgres::Error> {
    let lsn: Option<tokio_postgres::types::PgLsn> = row.try_get(index)?;
    Ok(lsn.map(Lsn::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_expressions_match_the_role() {
        assert_eq!(position_expr(Role::Leader), "pg_current_wal_lsn()");
        assert!(position_expr(Role::Follower).contains("pg_last_wal_replay_lsn()"));
        assert!(LEADER_POSITION.ends_with(position_expr(Role::Leader)));
        assert!(REPLAY_POSITION.ends_with(position_expr(Role::Follower)));
    }
}
