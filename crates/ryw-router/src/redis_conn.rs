//! The Redis the session store and the position feed share: one server, or
//! a Redis Cluster.
//!
//! - `redis://[user:password@]host:port[/db]` (and everything else the
//!   `redis` crate accepts): one server, through a reconnecting
//!   [`ConnectionManager`].
//! - `redis+cluster://[user:password@]host:port[,host:port…][/]`: a Redis
//!   Cluster, through the `redis` crate's cluster client. The hosts are seed
//!   nodes: any one that answers tells the client every shard, and the
//!   client sends each command to the shard that holds its keys, follows
//!   `MOVED`/`ASK` and finds a replica promoted after a failover. One URL,
//!   so every flag and variable that takes a Redis URL (`--redis-url`,
//!   `RYW_REDIS_URL`, [`RedisStoreConfig::new`](crate::RedisStoreConfig::new),
//!   [`FeedConfig::new`](crate::FeedConfig::new)) takes a cluster too.
//!
//! What ryw sends a cluster keeps to one slot per command: a session's keys
//! share a hash tag (`ryw:user:{ID}:lsn`), each Lua script touches one
//! session, the feed's lease and channel share one tag, and the channel is
//! a sharded one (`SPUBLISH`/`SSUBSCRIBE`, Redis 7), so its messages stay on
//! its shard instead of crossing the whole cluster bus.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::{Error, Result};

/// The scheme of a Redis Cluster URL.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Where Redis is, from a URL.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum RedisAddr {
    /// One server.
    Single(String),
    /// A Redis Cluster: one `redis://` URL per seed node.
    Cluster(Vec<String>),
}

impl fmt::Debug for RedisAddr {
    /// Without the URLs, which may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisAddr::Single(_) => f.write_str("Single(..)"),
            RedisAddr::Cluster(seeds) => write!(f, "Cluster({} seeds)", seeds.len()),
        }
    }
}

impl RedisAddr {
    /// Parses a store or feed URL (see the module docs). A malformed one is
    /// an [`Error::Config`] naming what is wrong (never the password).
    pub fn parse(url: &str) -> Result<RedisAddr> {
        let url = url.trim();
        let bad = |why: &str| Err(Error::Config(format!("redis url: {why}")));
        if url
            .get(..CLUSTER_SCHEME.len() + 1)
            .is_some_and(|s| s.eq_ignore_ascii_case("rediss+cluster://"))
        {
            return bad("TLS to a Redis Cluster (rediss+cluster://) is not supported");
        }
        let Some(rest) = url
            .get(..CLUSTER_SCHEME.len())
            .filter(|s| s.eq_ignore_ascii_case(CLUSTER_SCHEME))
            .map(|_| &url[CLUSTER_SCHEME.len()..])
        else {
            // One server: the redis crate says what it accepts.
            redis::Client::open(url).map_err(|e| Error::Config(format!("redis url: {e}")))?;
            return Ok(RedisAddr::Single(url.to_owned()));
        };
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), rest),
        };
        let hosts = match hosts.split_once(['/', '?']) {
            Some((h, tail)) if tail.is_empty() || tail == "0" => h,
            Some(_) => {
                return bad("a Redis Cluster has no databases or options: end it at the hosts");
            }
            None => hosts,
        };
        let mut seeds = Vec::new();
        for host in hosts.split(',').map(str::trim) {
            if host.is_empty() {
                return bad("an empty host in the redis+cluster:// list");
            }
            let seed = format!("redis://{auth}{host}/");
            redis::Client::open(seed.as_str())
                .map_err(|e| Error::Config(format!("redis url: seed {host:?}: {e}")))?;
            seeds.push(seed);
        }
        Ok(RedisAddr::Cluster(seeds))
    }

    /// Whether it is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisAddr::Cluster(_))
    }

    /// The cluster client for the seeds, with `timeout` per attempt and few
    /// retries (a caller that times out has given up anyway), RESP3 so that
    /// sharded pub/sub works, and `push` for its messages.
    pub fn cluster_client(seeds: &[String], timeout: Duration) -> Result<ClusterClient> {
        ClusterClientBuilder::new(seeds.iter().map(String::as_str))
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(100)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .build()
            .map_err(|e| Error::Config(format!("redis cluster: {e}")))
    }
}

/// A connection to either kind, cheap to clone; commands are
/// [`ConnectionLike`], so `Script::invoke_async` and `Cmd::query_async` work
/// on both. Opened lazily: a Redis that is down at start is an error of the
/// first call, never of the constructor.
#[derive(Clone)]
pub(crate) enum RedisConn {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RedisConn::Single(_) => "RedisConn::Single",
            RedisConn::Cluster(_) => "RedisConn::Cluster",
        })
    }
}

impl RedisConn {
    /// A lazy connection to `addr`: `timeout` for connecting and for each
    /// answer, reconnect attempts at most `retry_max` apart.
    pub fn lazy(addr: &RedisAddr, timeout: Duration, retry_max: Duration) -> Result<RedisConn> {
        match addr {
            RedisAddr::Single(url) => {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| Error::Config(format!("redis url: {e}")))?;
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(retry_max);
                ConnectionManager::new_lazy_with_config(client, cfg)
                    .map(RedisConn::Single)
                    .map_err(|e| Error::Config(format!("redis: {e}")))
            }
            RedisAddr::Cluster(seeds) => {
                let client = RedisAddr::cluster_client(seeds, timeout)?;
                let cfg = ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                Ok(RedisConn::Cluster(
                    client.get_pending_async_connection_with_config(cfg),
                ))
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// The hash slot of `key` in a Redis Cluster (its hash tag's, if it has
/// one), as the cluster computes it.
pub(crate) fn slot_of(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % 16384
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_lists_its_seeds_and_keeps_the_password_out_of_debug() {
        let a = RedisAddr::parse("redis+cluster://:pw@127.0.0.1:7001,127.0.0.1:7002/").unwrap();
        assert_eq!(
            a,
            RedisAddr::Cluster(vec![
                "redis://:pw@127.0.0.1:7001/".into(),
                "redis://:pw@127.0.0.1:7002/".into()
            ])
        );
        assert!(a.is_cluster());
        assert!(!format!("{a:?}").contains("pw"));
        let one = RedisAddr::parse("REDIS+CLUSTER://h:7001").unwrap();
        assert_eq!(one, RedisAddr::Cluster(vec!["redis://h:7001/".into()]));
        let single = RedisAddr::parse("redis://127.0.0.1:6379/2").unwrap();
        assert!(!single.is_cluster());
    }

    #[test]
    fn malformed_cluster_urls_are_a_config_error() {
        for bad in [
            "redis+cluster://",
            "redis+cluster://h:1,,h:2",
            "redis+cluster://h:1/3",
            "redis+cluster://h:1?protocol=2",
            "rediss+cluster://h:1",
            "redis+cluster://h:notaport",
            "not a url",
        ] {
            assert!(
                matches!(RedisAddr::parse(bad), Err(Error::Config(_))),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn slots_are_the_clusters_and_one_sessions_keys_share_one() {
        // Values from Redis' own CLUSTER KEYSLOT.
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(
            slot_of("{user1000}.following"),
            slot_of("{user1000}.followers")
        );
        assert_eq!(slot_of("{}"), 15257, "an empty tag hashes the whole key");
        assert_eq!(slot_of("ryw:user:{42}:lsn"), slot_of("42"));
        assert_eq!(
            slot_of("ryw:user:{42}:write"),
            slot_of("ryw:user:{42}:last_write_ms")
        );
    }
}
