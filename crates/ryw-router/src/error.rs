//! [`Error`]: the one error type of the crate.
//!
//! Messages are short and lowercase; the service maps variants to HTTP
//! statuses in one place (parse errors are the client's fault, the rest are
//! ours).

use std::time::Duration;

use crate::TokenError;
use crate::pg::describe_pg;

/// Everything that can go wrong in the router.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Text that is not a `pg_lsn` (`X/Y`, hex).
    #[error("invalid lsn {0:?}")]
    InvalidLsn(String),
    /// A strategy name outside the contract.
    #[error("unknown strategy {0:?}")]
    UnknownStrategy(String),
    /// A scope name outside the contract ([`Scope`](crate::Scope)).
    #[error("unknown scope {0:?}; use one of connection, session, global, cluster")]
    UnknownScope(String),
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
    /// A node URL's TLS settings (`sslmode`, `sslrootcert`) cannot work.
    #[error("tls for {node}: {source}")]
    Tls {
        /// The node's name.
        node: String,
        /// What is wrong.
        source: crate::tls::TlsError,
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
    /// No node leads now: the leader is down (a failover may be under way)
    /// or none was found. Writes and leader reads answer this at once; a
    /// write retried with its idempotency key is safe.
    #[error("leader unavailable: {0}")]
    LeaderUnavailable(String),
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
    /// Text that is not a duration (`100ms`, `2s`, `0`).
    #[error("invalid duration {0}")]
    Duration(String),
    /// The caller's read statement failed on a node, for a reason of its own
    /// (syntax, a missing table, a cancelled statement): running it elsewhere
    /// would not help.
    #[error("query on {node}: {}", describe_pg(.source))]
    Query {
        /// The node that ran it.
        node: String,
        /// What the server said.
        source: tokio_postgres::Error,
    },
    /// A read could not be answered: the node chosen and the one tried after
    /// it both broke or stalled (rule 8 retries once). Retry later.
    #[error("the read failed twice: {0}")]
    ReadFailed(String),
    /// A write did not commit: its statement failed, or `COMMIT` did (a
    /// transaction that had already failed, a deferred constraint, a
    /// serialization failure). Nothing of it is left (rule 6).
    #[error("the write did not commit: {}", describe_pg(.0))]
    NotCommitted(tokio_postgres::Error),
    /// The write's outcome is unknown: the leader's connection broke during
    /// `COMMIT`, or right after it before the write's position could be
    /// read (rule 1). It may have committed; only a retry that is safe to
    /// repeat (an idempotency key) can tell.
    #[error("the write may have committed: {0}")]
    CommitUnknown(String),
    /// `query_one`/`query_opt` got another number of rows.
    #[error("expected one row, got {0}")]
    RowCount(usize),
    /// A column that the row does not have.
    #[error("no column {0}")]
    Column(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
