//! [`RouterConfig`] (every knob, with its documented default) and
//! [`NodeUrls`] (where the nodes are).
//!
//! The library reads no files and no environment: the service builds these
//! from its flags.

use std::fmt;
use std::time::Duration;

use crate::{Error, FeedConfig, FollowerChoice, Result, Strategy};

/// The name fresh reads report when they were served by the leader
/// (`X-Served-By: leader`).
pub const LEADER_NAME: &str = "leader";

/// The name of the node configured as the leader ([`NodeUrls::leader`])
/// while another node leads (after a failover, once it is back as a
/// follower): `X-Served-By: former-leader`.
pub const FORMER_LEADER_NAME: &str = "former-leader";

/// How the router routes and how the tracker watches. `Default` gives the
/// documented defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// Strategy of fresh reads that do not name one. Default `hybrid`, the
    /// recommended one.
    pub default_strategy: Strategy,
    /// Scope of fresh reads that do not name one ([`Scope`](crate::Scope)):
    /// whose writes they must see. Default `session`.
    pub default_scope: crate::Scope,
    /// `sticky`: a session that wrote less than this long ago reads from the
    /// leader. `hybrid` applies it only to a write whose position it does
    /// not know (the .NET + Redis demo's `user:{id}:last_write_utc`, see
    /// [`RedisStoreConfig::seed_last_write_key`](crate::RedisStoreConfig)).
    /// Default 5 s.
    pub sticky_window: Duration,
    /// `causal`: longest a fresh read waits for a follower to catch up to its
    /// token before going to the leader. It waits blindly: whether or not a
    /// follower is about to catch up. 0 = never wait. Default 200 ms.
    pub causal_wait: Duration,
    /// `hybrid`: longest a fresh read waits for a follower to catch up; it
    /// waits only when the tracker predicts that a follower reaches the
    /// token within this budget ([`crate::predict`]), and goes to the leader
    /// at once otherwise. 0 = never wait. Default 20 ms.
    pub hybrid_wait: Duration,
    /// Which follower serves a read when several may (a stale-ok read; a
    /// fresh read under `causal` or `hybrid`). Default
    /// [`FollowerChoice::Load`]: of two random candidates, the one with
    /// fewer reads in flight, so followers that have the data share the
    /// work (`docs/scaling.md`, spreading fresh reads). A read may override it
    /// ([`ReadOptions::follower_choice`](crate::ReadOptions)).
    pub follower_choice: FollowerChoice,
    /// A follower whose lag time exceeds this leaves rotation (rule 8).
    /// Default 10 s.
    pub max_lag_time: Duration,
    /// A follower whose lag exceeds this many WAL bytes leaves rotation (rule
    /// 8); this is what catches a follower whose WAL receiver stopped.
    /// Default 16 MiB.
    pub max_lag_bytes: u64,
    /// How often the tracker polls each node. Default 10 ms: the staleness of
    /// what routing knows, and so how long causal reads wait at least.
    pub poll_interval: Duration,
    /// A poll not answered in this time counts as the node being down, so a
    /// hung node leaves rotation within a second (rule 8). Default 500 ms.
    pub poll_timeout: Duration,
    /// Connections in the leader's write pool (one per transaction in
    /// flight). Default 8: on two cores, 8 measured better than 16.
    pub pool_size: usize,
    /// Shared read connections per node, each pipelining every concurrent
    /// read given to it (see [`ReadConn`](crate::ReadConn)). More of them
    /// spread reads over more server processes and shorten the queue behind
    /// a slow statement, but batch less. Default 1: on two cores, one
    /// connection served 35.1–35.5k primary-key reads/s and two 31.2–33.2k
    /// (`docs/results.md`); raise it where the database has cores to spare.
    pub read_connections: usize,
    /// Longest one read may take on its node (the statement and, for a
    /// fresh read, its position). A read not answered by then counts its
    /// node as stalled: the shared connection is replaced, a follower is
    /// forgotten (rule 3), and the read runs once more elsewhere (rule 8).
    /// Default 2 s (a primary-key read takes about a millisecond).
    pub read_timeout: Duration,
    /// Longest wait for a connection of the write pool (to create one, or for one to be
    /// free). Default 2 s.
    pub pool_timeout: Duration,
    /// Longest a new connection (tracker, pool or read) may take. Default 2 s.
    pub connect_timeout: Duration,
    /// First delay before the tracker reconnects to a node it lost; doubles
    /// up to `reconnect_max`. Default 50 ms.
    pub reconnect_min: Duration,
    /// Longest delay between reconnect attempts. Default 2 s.
    pub reconnect_max: Duration,
    /// A token this many bytes beyond the leader's last known position is
    /// treated as bogus: its read goes to the leader at once, and what is
    /// stored is clamped to the leader's position (rule 4). Default 1 GiB.
    pub absurd_token_ahead: u64,
    /// After the session store fails, fresh reads keep going to the leader
    /// for this long after it answers again: a write made during the outage
    /// may be missing from the store, and only once it is older than the lag
    /// limit is it on every follower in rotation (rule 5). Default 10 s
    /// (= `max_lag_time`; keep it at least that).
    pub store_recovery_grace: Duration,
    /// The shared position feed: with it, one instance at a time (a lease
    /// in this Redis) polls the nodes and publishes what it reads, and the
    /// others apply that instead of polling, except while it is quiet (see
    /// [`FeedConfig`]). `None` (the default): this instance polls on its
    /// own.
    pub feed: Option<FeedConfig>,
}

impl Default for RouterConfig {
    fn default() -> RouterConfig {
        RouterConfig {
            default_strategy: Strategy::Hybrid,
            default_scope: crate::Scope::Session,
            sticky_window: Duration::from_secs(5),
            causal_wait: Duration::from_millis(200),
            hybrid_wait: Duration::from_millis(20),
            follower_choice: FollowerChoice::Load,
            max_lag_time: Duration::from_secs(10),
            max_lag_bytes: 16 * 1024 * 1024,
            poll_interval: Duration::from_millis(10),
            poll_timeout: Duration::from_millis(500),
            pool_size: 8,
            read_connections: 1,
            read_timeout: Duration::from_secs(2),
            pool_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            absurd_token_ahead: 1024 * 1024 * 1024,
            store_recovery_grace: Duration::from_secs(10),
            feed: None,
        }
    }
}

impl RouterConfig {
    /// Refuses values that cannot work, with the field's name.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(what.to_owned()));
        if self.pool_size == 0 {
            return bad("pool_size must be at least 1");
        }
        if self.read_connections == 0 {
            return bad("read_connections must be at least 1");
        }
        if self.poll_interval.is_zero() {
            return bad("poll_interval must be positive");
        }
        if self.poll_timeout.is_zero()
            || self.connect_timeout.is_zero()
            || self.read_timeout.is_zero()
        {
            return bad("timeouts must be positive");
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return bad("reconnect_min must be positive and at most reconnect_max");
        }
        if self.max_lag_time.is_zero() || self.max_lag_bytes == 0 {
            return bad("lag limits must be positive");
        }
        if let Some(feed) = &self.feed {
            feed.validate()?;
        }
        Ok(())
    }
}

/// Where the nodes are: the leader and any number of named followers.
///
/// Roles are discovered, not trusted: the tracker polls every node, writes
/// go to the one that is not in recovery, and a promotion moves them (a
/// follower promoted by Patroni, a cloud's failover or `pg_ctl promote`
/// becomes the leader within a poll; the old leader, back as a follower,
/// serves reads as `former-leader`). List every node that may lead.
///
/// URLs are `tokio-postgres` connection strings (`postgres://user@host:port/db`
/// or `host=… port=…`). `Debug` prints names only, since URLs may hold
/// passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeUrls {
    /// The node expected to be the primary at start.
    pub leader: String,
    /// `(name, url)` per other node: the followers, and any other node that
    /// may be promoted. The name is what `X-Served-By` says and what the
    /// dashboard shows; it must be unique and not `leader` or
    /// `former-leader`.
    pub followers: Vec<(String, String)>,
}

impl NodeUrls {
    /// Refuses duplicate, empty or reserved follower names.
    pub fn validate(&self) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for (name, _) in &self.followers {
            if name.is_empty()
                || name == LEADER_NAME
                || name == FORMER_LEADER_NAME
                || !seen.insert(name.as_str())
            {
                return Err(Error::Config(format!(
                    "follower name {name:?} is empty, reserved or repeated"
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for NodeUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeUrls")
            .field("leader", &"..")
            .field(
                "followers",
                &self.followers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = RouterConfig::default();
        assert_eq!(c.default_strategy, Strategy::Hybrid);
        assert_eq!(c.sticky_window, Duration::from_secs(5));
        assert_eq!(c.causal_wait, Duration::from_millis(200));
        assert_eq!(c.hybrid_wait, Duration::from_millis(20));
        assert_eq!(c.follower_choice, FollowerChoice::Load);
        assert_eq!(c.max_lag_time, Duration::from_secs(10));
        assert_eq!(c.max_lag_bytes, 16 << 20);
        assert_eq!(c.poll_interval, Duration::from_millis(10));
        assert_eq!(c.pool_size, 8);
        assert!(c.store_recovery_grace >= c.max_lag_time);
        c.validate().unwrap();
    }

    #[test]
    fn impossible_values_are_refused() {
        let c = RouterConfig {
            pool_size: 0,
            ..RouterConfig::default()
        };
        assert!(matches!(c.validate(), Err(Error::Config(_))));
    }

    #[test]
    fn follower_names_must_be_unique_and_not_leader() {
        let urls = |names: &[&str]| NodeUrls {
            leader: "host=x".into(),
            followers: names
                .iter()
                .map(|n| (n.to_string(), "host=y".into()))
                .collect(),
        };
        urls(&["f1", "f2"]).validate().unwrap();
        assert!(urls(&["f1", "f1"]).validate().is_err());
        assert!(urls(&["leader"]).validate().is_err());
        assert!(urls(&["former-leader"]).validate().is_err());
        assert!(urls(&[""]).validate().is_err());
    }

    #[test]
    fn debug_hides_urls() {
        let urls = NodeUrls {
            leader: "postgres://u:secret@h/db".into(),
            followers: vec![("f1".into(), "postgres://u:secret@h2/db".into())],
        };
        let shown = format!("{urls:?}");
        assert!(!shown.contains("secret"));
        assert!(shown.contains("f1"));
    }
}
