//! A real local replication cluster for ryw: one PostgreSQL primary, N
//! streaming hot-standby followers with controllable replication lag, and
//! optionally a private Redis or Redis Cluster — started from the PostgreSQL binaries on the
//! machine, on loopback only, in a folder the user can find again.
//!
//! Everything here drives real `postgres` and `redis-server` processes; there
//! is no simulation. The cluster is described by a JSON file
//! ([`ClusterInfo`], `cluster.json` in the cluster folder) that the service
//! and the bench read to find the nodes.
//!
//! # Layout
//!
//! - [`error`]: [`ClusterError`], the one error enum of this crate.
//! - [`pgbin`]: finds the PostgreSQL server binaries (`--pg-bin`, `PG_BIN`,
//!   `pg_config --bindir`, `PATH`, `/usr/lib/postgresql/*/bin`).
//! - [`runas`]: which OS user runs the servers (`postgres` when we are root).
//! - [`info`]: [`ClusterInfo`] / [`NodeInfo`], the saved description.
//! - [`info`]: also [`ReplicationInfo`] (`replication.json`: synchronous or
//!   not, the timeline, the failovers so far).
//! - [`conf`]: the servers' configuration (`ryw.conf`, `pg_hba.conf`, a
//!   standby's `postgresql.auto.conf`), slot names, the sockets folder.
//! - [`up`]: [`up()`] — `initdb`, `pg_basebackup -R -X stream -C -S`, start,
//!   wait until every follower streams; `--sync` sets
//!   `synchronous_standby_names`.
//! - [`ops`]: [`status()`], [`set_lag()`], [`down()`] and the fault helpers
//!   the reliability tests use (kill, restart, cut and repair replication).
//! - [`failover`](mod@failover): [`failover()`](failover::failover) (stop the leader,
//!   promote the follower with the most WAL, re-point the others) and
//!   [`rejoin()`](failover::rejoin) (`pg_rewind` a stopped node and start it
//!   as a follower), with typed reports.
//! - [`timeline`]: which timeline a node is on; history files and switch
//!   points.
//! - [`redis`]: a private `redis-server` without persistence.
//! - [`redis_cluster`]: a private Redis Cluster (`up --redis-cluster N
//!   --redis-replicas R`) formed from the same binary.
//! - [`proc`]: processes and connections the others share (run a program,
//!   `pg_ctl start`, liveness of a pid, a log's tail, URLs); `failover` →
//!   `up` → `ops` → `redis` → `proc`, no cycle.
//! - [`harness`]: [`harness::TestCluster`], one call that gives an integration
//!   test a running cluster on unique ports, torn down on drop, with
//!   failover and rejoin.

pub mod conf;
pub mod error;
pub mod failover;
pub mod harness;
pub mod info;
pub mod ops;
pub mod pgbin;
pub mod proc;
pub mod redis;
pub mod redis_cluster;
pub mod runas;
pub mod timeline;
pub mod up;

pub use error::ClusterError;
pub use failover::{
    FailoverOptions, FailoverReport, RejoinOptions, RejoinReport, failover, rejoin,
};
pub use info::{
    ClusterInfo, NodeInfo, NodeRole, RedisClusterInfo, RedisInfo, RedisNodeInfo, ReplicationInfo,
};
pub use ops::{NodeState, down, set_lag, status};
pub use redis_cluster::RedisClusterSpec;
pub use up::{UpOptions, up};

/// Default folder of `ryw cluster up`, relative to the working directory.
pub const DEFAULT_DIR: &str = ".ryw/cluster";

/// Default port of the leader. Followers take the next ports. Below 32768 on
/// purpose: Linux hands client sockets ports 32768–60999, and a client
/// retrying a stopped server in that range can connect to itself and block
/// the server's restart.
pub const DEFAULT_PORT: u16 = 25432;

/// The database the cluster creates for applications (URLs point at it).
pub const DATABASE: &str = "ryw";

/// Parses a duration such as `100ms`, `1s` or `0` (humantime syntax).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, ClusterError> {
    let t = s.trim();
    if t == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    humantime::parse_duration(t)
        .map_err(|e| ClusterError::BadArgument(format!("duration {t:?}: {e}")))
}

/// Parses a comma-separated list of delays, e.g. `100ms,400ms`.
pub fn parse_lags(s: &str) -> Result<Vec<std::time::Duration>, ClusterError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(parse_duration)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lags_parse_as_a_comma_separated_list() {
        assert_eq!(
            parse_lags("100ms,400ms").unwrap(),
            vec![Duration::from_millis(100), Duration::from_millis(400)]
        );
        assert_eq!(parse_lags("0").unwrap(), vec![Duration::ZERO]);
        assert!(parse_lags("fast").is_err());
    }
}
