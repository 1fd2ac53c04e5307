//! The errors of the cluster manager. Each says what went wrong and, where
//! there is one, the command that fixes it.

use std::path::PathBuf;

/// Everything that can go wrong while managing a local cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No PostgreSQL server binaries were found anywhere we looked.
    #[error(
        "no PostgreSQL server binaries found (looked in {searched}); install them with \
         `apt-get install postgresql` (Debian/Ubuntu) or pass --pg-bin DIR / set PG_BIN"
    )]
    PgBinariesMissing { searched: String },
    /// `redis-server` is not installed.
    #[error("redis-server not found on PATH; install it with `apt-get install redis-server`")]
    RedisMissing,
    /// The private Redis Cluster could not be formed or asked.
    #[error("redis cluster: {0}")]
    RedisCluster(String),
    /// A port the cluster needs is taken by another process.
    #[error("port {port} on 127.0.0.1 is already in use; choose another base port with --port")]
    PortInUse { port: u16 },
    /// The folder already holds a cluster whose processes are alive.
    #[error(
        "{dir} already holds a running cluster (pid {pid}); stop it with `ryw cluster down --dir {dir}` \
         or choose another --dir"
    )]
    AlreadyRunning { dir: PathBuf, pid: i32 },
    /// The folder holds a stopped cluster's data.
    #[error(
        "{dir} holds the data of a stopped cluster; remove it with `ryw cluster down --purge --dir {dir}` \
         or choose another --dir"
    )]
    StaleData { dir: PathBuf },
    /// No cluster description in the folder.
    #[error("no cluster in {dir} (no cluster.json); start one with `ryw cluster up --dir {dir}`")]
    NotFound { dir: PathBuf },
    /// The file system holding the folder is nearly full.
    #[error("only {free_mib} MiB free under {dir}; a cluster needs at least {need_mib} MiB")]
    NotEnoughDisk {
        dir: PathBuf,
        free_mib: u64,
        need_mib: u64,
    },
    /// The OS user that must run the servers cannot be used.
    #[error("{0}")]
    OsUser(String),
    /// A helper program (initdb, pg_ctl, pg_basebackup, …) failed.
    #[error("{program} failed ({status}): {output}")]
    Command {
        program: String,
        status: String,
        output: String,
    },
    /// A follower never reached the `streaming` state.
    #[error(
        "{node} did not start streaming within {secs} s; last lines of its log ({log}):\n{tail}"
    )]
    NotStreaming {
        node: String,
        secs: u64,
        log: PathBuf,
        tail: String,
    },
    /// A server did not come up or answer in time.
    #[error("{node} did not answer within {secs} s; last lines of its log ({log}):\n{tail}")]
    NotAnswering {
        node: String,
        secs: u64,
        log: PathBuf,
        tail: String,
    },
    /// The named replica does not exist in this cluster.
    #[error("no replica {0:?} in this cluster (use 1..=N or a follower name)")]
    NoSuchReplica(String),
    /// `--to NAME` or `rejoin NAME` names no node of this cluster.
    #[error("no node {name:?} in this cluster (nodes: {nodes})")]
    NoSuchNode { name: String, nodes: String },
    /// A command that needs a follower was given another node.
    #[error("{node} is {role}, not a follower; {hint}")]
    NotAFollower {
        node: String,
        role: String,
        hint: String,
    },
    /// A failover found no follower that is alive and in recovery.
    #[error(
        "no follower is alive to promote ({detail}); start one again, or bring a failed node \
         back with `ryw cluster rejoin NAME`"
    )]
    NoFollowerAlive { detail: String },
    /// The follower named by `--to` cannot be promoted.
    #[error("{node} cannot be promoted: {reason}; nothing was stopped")]
    NotPromotable { node: String, reason: String },
    /// A node other than the recorded leader is already out of recovery.
    #[error(
        "{node} is already out of recovery (a leader) while cluster.json names {leader}: a failover \
         already happened outside ryw, or one did not finish; finish it with \
         `ryw cluster failover --to {node}`"
    )]
    AlreadyPromoted { node: String, leader: String },
    /// A promoted follower did not leave recovery in time.
    #[error(
        "{node} was asked to promote but was still in recovery after {secs} s; last lines of its log ({log}):\n{tail}"
    )]
    NotPromoted {
        node: String,
        secs: u64,
        log: PathBuf,
        tail: String,
    },
    /// `rejoin` needs the node stopped: it rewinds its data folder.
    #[error(
        "{node} is running (pid {pid}); rejoin rewinds a stopped server. Stop it first: \
         `pg_ctl -D {data_dir} stop -m fast` as the servers' OS user"
    )]
    NotStopped {
        node: String,
        pid: i32,
        data_dir: PathBuf,
    },
    /// The leader is not answering, so nothing can follow it.
    #[error(
        "the leader {node} does not answer ({detail}); start it, or fail over with `ryw cluster failover`"
    )]
    LeaderDown { node: String, detail: String },
    /// `pg_rewind` failed.
    #[error("pg_rewind of {node} failed ({status}); last lines of its output:\n{tail}")]
    RewindFailed {
        node: String,
        status: String,
        tail: String,
    },
    /// A user-supplied argument is malformed.
    #[error("bad argument: {0}")]
    BadArgument(String),
    /// A SQL command against a node failed.
    #[error("{node}: {source}")]
    Sql {
        node: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// File-system trouble.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `cluster.json` could not be read or written.
    #[error("cluster description {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl ClusterError {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ClusterError::Io { what, path, source }
    }
}
