//! [`Error`]: the one error type of the crate.
//!
//! Messages are short and lowercase; the service maps variants to HTTP
//! statuses in one place (parse errors are the client's fault, the rest are
//! ours).

use std::time::Duration;

use crate::TokenError;

/// Everything that can go wrong in the router.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Text that is not a `pg_lsn` (`X/Y`, hex).
    #[error("invalid lsn {0:?}")]
    InvalidLsn(String),
    /// A strategy name outside the contract.
    #[error("unknown strategy {0:?}")]
    UnknownStrategy(String),
    /// A session key that is empty, too long or has control characters.
    #[error("invalid session key")]
    InvalidSessionKey,
    /// A consistency token that was refused (a client fault: HTTP 400).
    #[error("invalid token: {0}")]
    Token(#[from] TokenError),
    /// A configuration value that cannot work (for example a zero pool size).
    #[error("invalid config: {0}")]
    Config(String),
    /// A node URL that `tokio-postgres` cannot parse.
    #[error("invalid url for {node}: {source}")]
    Url {
        /// The node's name (`leader` or a follower's).
        node: String,
        /// Why it did not parse.
        source: tokio_postgres::Error,
    },
    /// No connection could be had from a node's pool.
    #[error("no connection to {node}: {source}")]
    Pool {
        /// The node's name.
        node: String,
        /// Why (timeout, refused, failed validation).
        source: deadpool_postgres::PoolError,
    },
    /// No shared read connection to a node could be opened.
    #[error("no read connection to {node}: {reason}")]
    Connect {
        /// The node's name.
        node: String,
        /// Why (refused, timed out, restarted, shut down).
        reason: String,
    },
    /// A statement the router itself runs failed.
    #[error("postgres: {}", describe_pg(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// `pg_current_wal_lsn()` returned nothing (should not happen on a leader).
    #[error("leader returned no wal position")]
    NoLeaderLsn,
    /// A node returned no WAL position after a read (a follower that is no
    /// longer a standby).
    #[error("{0} returned no wal position")]
    NoPosition(String),
    /// The session store failed (rule 5: fresh reads then go to the leader).
    #[error("session store: {0}")]
    Store(String),
    /// The session store did not answer in time.
    #[error("session store timed out after {0:?}")]
    StoreTimeout(Duration),
}

/// A `tokio-postgres` error with the server's message: its `Display` says
/// only "db error" for errors the server sent.
pub(crate) fn describe_pg(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
