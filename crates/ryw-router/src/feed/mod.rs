//! The shared position feed: with Redis, one instance at a time polls the
//! nodes and publishes every poll round; the others apply what it
//! publishes instead of polling, so the cost of knowing positions on each
//! node does not grow with the number of instances (`docs/scaling.md`).
//!
//! - **Lease.** A Lua script sets `<prefix><cluster>:lease` to this
//!   instance's id with a `PX <ttl>` when it is free (as `SET NX PX`), and
//!   renews it when it holds this id, every [`FeedConfig::renew_every`]; a
//!   compare-and-delete gives it back on [`Router::stop`](crate::Router::stop).
//!   The holder counts itself holding only until `ttl` after it *sent* its
//!   last successful renew, so it stops publishing before Redis lets
//!   another instance take the key. A holder that dies or stalls loses it
//!   after at most `ttl`; another instance takes it within `renew_every`.
//! - **Publish.** The holder's poll tasks run as without a feed; each
//!   outcome is also handed to a publisher task, which sends one message
//!   per round (every node's outcome, as soon as all have answered or half
//!   a poll interval after the first) on `<prefix><cluster>:positions`
//!   ([`message`]).
//! - **Subscribe.** Every instance listens; a message from another
//!   instance is applied through the same [`TrackerState`] methods as a
//!   local poll, so rule 3 (a position is trusted only within the
//!   postmaster incarnation it was read in) and the handling of timelines
//!   and promotions are the same code. Each poll is placed on the
//!   subscriber's own clock: its arrival, minus the message's transit
//!   (from the wall clocks), minus its age at publish, so an old message
//!   is never taken for fresh; one that took longer than the quiet limit
//!   does not count as the feed speaking.
//! - **Fallback.** An instance polls on its own while it holds the lease
//!   or the feed has been quiet for more than the quiet limit ([`Gate`]; 5 poll
//!   intervals, at least 50 ms):
//!   at start, when the holder died, when Redis is down. A dead feed costs
//!   load, never correctness.
//!
//! `<cluster>` is a hash of the nodes' names, hosts, ports and databases,
//! so only instances configured with the same nodes share a feed.
//!
//! On a Redis Cluster (a `redis+cluster://` URL) the hash is a hash tag
//! (`<prefix>{<cluster>}:lease`, `<prefix>{<cluster>}:positions`), so the
//! lease and the channel live on one shard and fail together, and the
//! channel is a sharded one: `SPUBLISH`/`SSUBSCRIBE` (Redis 7) deliver its
//! messages within that shard, where a classic `PUBLISH` would be broadcast
//! over the whole cluster bus. The subscription is opened again when it has
//! carried nothing (not even this instance's own messages) for a while: a
//! shard that failed over may have dropped it.
//!
//! [`TrackerState`]: crate::tracker::TrackerState

mod gate;
pub(crate) mod message;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::{PushKind, Script};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::redis_conn::{RedisAddr, RedisConn};
use crate::tracker::{PollOutcome, Shared};
use crate::{Error, Result};

/// A sharded subscription that carried nothing for this long (while the
/// lease is held every poll interval by someone, this instance included) is
/// opened again.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(2);

pub(crate) use gate::{Change, Gate};
use message::{FORMAT, FeedMessage, NodeReport, WireOutcome};

/// Lua: take the lease if it is free, renew it if this instance holds it
/// (also when this instance had counted it lost: a publish that failed);
/// 1 when held after the call.
const TAKE_OR_RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Lua: give the lease back only if this instance holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Where the feed lives and how the lease is kept. `Debug` hides the URL.
#[derive(Clone, PartialEq, Eq)]
pub struct FeedConfig {
    /// `redis://host:port/db` or `redis+cluster://host:port,…`: the Redis
    /// every instance of the service shares (usually the session store's).
    pub redis_url: String,
    /// Prefix of the lease key and the channel. Default `ryw:feed:`.
    pub prefix: String,
    /// The lease's time to live: a holder that dies or stalls is replaced
    /// after at most this (plus `renew_every`). Default 500 ms.
    pub lease_ttl: Duration,
    /// How often the holder renews the lease and the others try to take
    /// it. At most a third of `lease_ttl`. Default 150 ms.
    pub renew_every: Duration,
    /// An instance whose feed is silent for longer than this polls on its
    /// own until it speaks again; `None`: 5 poll intervals, at least 50 ms
    /// (3 intervals and 30 ms fell back several times a second on a
    /// loaded 2-core machine, where a task can wait tens of ms for a core).
    pub quiet_after: Option<Duration>,
    /// Longest one Redis call of the feed may take. Default 100 ms.
    pub timeout: Duration,
}

impl FeedConfig {
    /// The defaults, for `redis_url`.
    pub fn new(redis_url: impl Into<String>) -> FeedConfig {
        FeedConfig {
            redis_url: redis_url.into(),
            prefix: "ryw:feed:".to_owned(),
            lease_ttl: Duration::from_millis(500),
            renew_every: Duration::from_millis(150),
            quiet_after: None,
            timeout: Duration::from_millis(100),
        }
    }

    /// The quiet limit for a tracker polling every `poll_interval`.
    pub fn quiet_limit(&self, poll_interval: Duration) -> Duration {
        self.quiet_after
            .unwrap_or_else(|| (poll_interval * 5).max(Duration::from_millis(50)))
    }

    /// Refuses values that cannot work.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(format!("feed: {what}")));
        if self.lease_ttl.is_zero() || self.renew_every.is_zero() || self.timeout.is_zero() {
            return bad("durations must be positive");
        }
        if self.renew_every * 3 > self.lease_ttl {
            return bad("renew_every must be at most a third of lease_ttl");
        }
        if self.timeout >= self.lease_ttl {
            return bad("timeout must be shorter than lease_ttl");
        }
        if self.quiet_after.is_some_and(|q| q.is_zero()) {
            return bad("quiet_after must be positive");
        }
        Ok(())
    }
}

impl fmt::Debug for FeedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedConfig")
            .field("prefix", &self.prefix)
            .field("lease_ttl", &self.lease_ttl)
            .field("renew_every", &self.renew_every)
            .field("quiet_after", &self.quiet_after)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A local poll's outcome, handed to the publisher while this instance
/// holds the lease.
#[derive(Debug)]
pub(crate) struct LocalReport {
    pub node: usize,
    pub sent: Instant,
    pub received: Instant,
    pub outcome: PollOutcome,
}

/// Whether this instance holds the lease: until `ttl` after the send of
/// its last successful take or renew.
#[derive(Debug, Default)]
struct Lease {
    held_until: Mutex<Option<Instant>>,
}

impl Lease {
    fn holding(&self, now: Instant) -> bool {
        self.held_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| now < t)
    }

    fn set(&self, until: Option<Instant>) {
        *self.held_until.lock().unwrap_or_else(|e| e.into_inner()) = until;
    }
}

/// The feed's tasks and what they share; stopped by [`Feed::stop`] or on
/// drop.
pub(crate) struct Feed {
    conn: RedisConn,
    lease: Arc<Lease>,
    lease_key: String,
    holder: String,
    timeout: Duration,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Feed")
            .field("holder", &self.holder)
            .field("lease_key", &self.lease_key)
            .finish_non_exhaustive()
    }
}

/// Everything the feed's tasks need.
#[derive(Clone)]
struct Ctx {
    cfg: FeedConfig,
    conn: RedisConn,
    addr: RedisAddr,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    lease: Arc<Lease>,
    lease_key: String,
    channel: String,
    holder: String,
    names: Arc<[Arc<str>]>,
    poll_interval: Duration,
    quiet_after: Duration,
}

impl Feed {
    /// Starts the lease, publisher, subscriber and gate tasks for a
    /// tracker over `names` whose nodes hash to `cluster`. Does not wait
    /// for Redis (until it answers, every instance polls on its own);
    /// fails only on a bad configuration.
    pub fn start(
        cfg: FeedConfig,
        poll_interval: Duration,
        cluster: u64,
        names: Vec<Arc<str>>,
        shared: Arc<Shared>,
        metrics: Arc<Metrics>,
    ) -> Result<Feed> {
        cfg.validate()?;
        let addr = RedisAddr::parse(&cfg.redis_url)?;
        let conn = RedisConn::lazy(&addr, cfg.timeout, cfg.renew_every)?;
        // On a cluster the lease and the channel share a hash tag: one shard.
        let base = if addr.is_cluster() {
            format!("{}{{{cluster:016x}}}", cfg.prefix)
        } else {
            format!("{}{cluster:016x}", cfg.prefix)
        };
        let holder = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
        let quiet_after = cfg.quiet_limit(poll_interval);
        let (tx, rx) = mpsc::unbounded_channel();
        shared.attach_feed(tx, quiet_after);
        let ctx = Ctx {
            conn: conn.clone(),
            addr,
            shared,
            metrics,
            lease: Arc::new(Lease::default()),
            lease_key: format!("{base}:lease"),
            channel: format!("{base}:positions"),
            holder: holder.clone(),
            names: names.into(),
            poll_interval,
            quiet_after,
            cfg: cfg.clone(),
        };
        let tasks = vec![
            tokio::spawn(lease_loop(ctx.clone())),
            tokio::spawn(publish_loop(ctx.clone(), rx)),
            tokio::spawn(subscribe_loop(ctx.clone())),
            tokio::spawn(gate_loop(ctx.clone())),
        ];
        tracing::info!(channel = %ctx.channel, holder = %holder, "position feed on");
        Ok(Feed {
            conn,
            lease: ctx.lease,
            lease_key: ctx.lease_key,
            holder,
            timeout: cfg.timeout,
            tasks: Mutex::new(tasks),
        })
    }

    /// Stops the tasks and, if this instance holds the lease, gives it
    /// back, so another takes over at once rather than after the ttl.
    pub async fn stop(&self) {
        self.abort();
        if !self.lease.holding(Instant::now()) {
            return;
        }
        self.lease.set(None);
        let mut conn = self.conn.clone();
        let released = tokio::time::timeout(
            self.timeout,
            Script::new(RELEASE)
                .key(&self.lease_key)
                .arg(&self.holder)
                .invoke_async::<i64>(&mut conn),
        )
        .await;
        match released {
            Ok(Ok(_)) => tracing::info!("position feed lease released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "releasing the position feed lease"),
            Err(_) => tracing::warn!("releasing the position feed lease timed out"),
        }
    }

    /// Stops the tasks; the lease, if held, expires after its ttl.
    pub fn abort(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.abort();
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Wall clock in µs since the epoch.
fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Takes the lease when it is free, renews it while held.
async fn lease_loop(ctx: Ctx) {
    let take = Script::new(TAKE_OR_RENEW);
    let ttl_ms = ctx.cfg.lease_ttl.as_millis().max(1) as u64;
    let mut ticker = tokio::time::interval(ctx.cfg.renew_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let sent = Instant::now();
        let holding = ctx.lease.holding(sent);
        let mut conn = ctx.conn.clone();
        let outcome = tokio::time::timeout(
            ctx.cfg.timeout,
            take.key(&ctx.lease_key)
                .arg(&ctx.holder)
                .arg(ttl_ms)
                .invoke_async::<i64>(&mut conn),
        )
        .await;
        match outcome {
            Ok(Ok(1)) => {
                if !holding {
                    tracing::info!(holder = %ctx.holder, "position feed: this instance polls for all");
                }
                ctx.lease.set(Some(sent + ctx.cfg.lease_ttl));
            }
            Ok(Ok(_)) => {
                if holding {
                    tracing::warn!("position feed: lease lost to another instance");
                }
                ctx.lease.set(None);
            }
            // Redis did not answer: a held lease runs out by itself.
            Ok(Err(e)) => tracing::debug!(error = %e, "position feed: lease call failed"),
            Err(_) => tracing::debug!("position feed: lease call timed out"),
        }
        ctx.shared
            .set_feed_holding(ctx.lease.holding(Instant::now()));
    }
}

/// Turns the holder's poll outcomes into one message per round.
async fn publish_loop(ctx: Ctx, mut rx: mpsc::UnboundedReceiver<LocalReport>) {
    let nodes = ctx.names.len();
    let mut seq = 0u64;
    let mut failing = false;
    loop {
        let Some(first) = rx.recv().await else { return };
        let deadline = Instant::now() + ctx.poll_interval / 2;
        let mut batch = vec![first];
        while batch.len() < nodes {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => batch.push(r),
                    None => return,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        // Whatever queued behind a slow publish goes in this message too.
        while let Ok(r) = rx.try_recv() {
            batch.push(r);
        }
        let now = Instant::now();
        if !ctx.lease.holding(now) {
            continue;
        }
        seq += 1;
        let age = |t: Instant| now.saturating_duration_since(t).as_micros() as u64;
        let msg = FeedMessage {
            v: FORMAT,
            holder: ctx.holder.clone(),
            seq,
            published_us: wall_us(),
            nodes: batch
                .iter()
                .map(|r| NodeReport {
                    node: r.node,
                    name: ctx.names[r.node].to_string(),
                    sent_age_us: age(r.sent),
                    recv_age_us: age(r.received),
                    outcome: WireOutcome::from(&r.outcome),
                })
                .collect(),
        };
        let mut conn = ctx.conn.clone();
        // A sharded channel on a cluster: its messages stay on its shard.
        let publish = if ctx.addr.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let sent = tokio::time::timeout(
            ctx.cfg.timeout,
            redis::cmd(publish)
                .arg(&ctx.channel)
                .arg(msg.encode())
                .query_async::<i64>(&mut conn),
        )
        .await;
        match sent {
            Ok(Ok(_)) => {
                ctx.metrics.add_feed_published();
                failing = false;
            }
            // The others fall back to polling after the quiet limit; the
            // lease runs out by itself if Redis is gone.
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "position feed: publish failed");
            }
            Err(_) if !failing => {
                failing = true;
                tracing::warn!("position feed: publish timed out");
            }
            _ => {}
        }
    }
}

/// Listens to the channel, reconnecting while Redis is down.
async fn subscribe_loop(ctx: Ctx) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match listen(&ctx).await {
            Ok(()) => backoff = Duration::from_millis(50),
            Err(why) => tracing::debug!(error = %why, "position feed: subscription failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// One subscription, until its connection ends (or, on a cluster, until
/// it has been silent for [`RESUBSCRIBE_AFTER`]).
async fn listen(ctx: &Ctx) -> std::result::Result<(), String> {
    let limit = ctx.cfg.timeout * 5;
    match &ctx.addr {
        RedisAddr::Single(url) => {
            let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
            let mut pubsub = tokio::time::timeout(limit, client.get_async_pubsub())
                .await
                .map_err(|_| "connect timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            tokio::time::timeout(limit, pubsub.subscribe(&ctx.channel))
                .await
                .map_err(|_| "subscribe timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            tracing::debug!(channel = %ctx.channel, "position feed: subscribed");
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                receive(ctx, msg.get_payload_bytes());
            }
            Ok(())
        }
        RedisAddr::Cluster(seeds) => {
            let client =
                RedisAddr::cluster_client(seeds, ctx.cfg.timeout).map_err(|e| e.to_string())?;
            let (tx, mut rx) = mpsc::unbounded_channel();
            let cfg = redis::cluster::ClusterConfig::new()
                .set_connection_timeout(ctx.cfg.timeout)
                .set_response_timeout(ctx.cfg.timeout)
                .set_push_sender(tx);
            let mut conn =
                tokio::time::timeout(limit, client.get_async_connection_with_config(cfg))
                    .await
                    .map_err(|_| "connect timed out".to_owned())?
                    .map_err(|e| e.to_string())?;
            tokio::time::timeout(limit, conn.ssubscribe(&ctx.channel))
                .await
                .map_err(|_| "ssubscribe timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            tracing::debug!(channel = %ctx.channel, "position feed: subscribed (sharded)");
            loop {
                let push = tokio::time::timeout(RESUBSCRIBE_AFTER, rx.recv())
                    .await
                    .map_err(|_| format!("nothing on the channel for {RESUBSCRIBE_AFTER:?}"))?;
                let Some(push) = push else {
                    return Ok(());
                };
                if push.kind != PushKind::SMessage {
                    continue;
                }
                // [channel, payload]
                if let Some(redis::Value::BulkString(payload)) = push.data.get(1) {
                    receive(ctx, payload);
                }
            }
        }
    }
}

/// Applies one message from the channel, unless it is this instance's own.
fn receive(ctx: &Ctx, payload: &[u8]) {
    let arrival = Instant::now();
    let Some(m) = FeedMessage::decode(payload) else {
        return;
    };
    if m.holder == ctx.holder {
        return;
    }
    let transit = message::transit(wall_us(), m.published_us);
    // A message that was queued somewhere (a stalled instance, a
    // backlog) still tells the truth about the past: its polls are
    // placed back by the transit, so their age shows, and a later poll
    // already applied wins. But it does not count as the feed
    // speaking: if only late ones come, this instance polls itself.
    let late = transit > ctx.quiet_after;
    ctx.shared
        .apply_feed(m, arrival, transit, &ctx.names, !late);
    if late {
        ctx.metrics.add_feed_late();
    } else {
        ctx.metrics.add_feed_message();
    }
}

/// Re-decides local polling every half poll interval.
async fn gate_loop(ctx: Ctx) {
    let step = (ctx.poll_interval / 2).max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval(step);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        ctx.shared.step_gate(Instant::now());
    }
}

/// A 64-bit FNV-1a hash of the nodes' identities (name, hosts, ports,
/// database; never passwords): instances share a feed only with instances
/// configured with the same nodes in the same order.
pub(crate) fn cluster_hash(nodes: &[(Arc<str>, tokio_postgres::Config)]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes.iter().chain(std::iter::once(&0u8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (name, pg) in nodes {
        eat(name.as_bytes());
        for host in pg.get_hosts() {
            eat(format!("{host:?}").as_bytes());
        }
        for port in pg.get_ports() {
            eat(&port.to_be_bytes());
        }
        eat(pg.get_dbname().unwrap_or("").as_bytes());
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_take_over_within_a_second_and_bad_values_are_refused() {
        let c = FeedConfig::new("redis://127.0.0.1/");
        c.validate().unwrap();
        assert!(c.lease_ttl + c.renew_every < Duration::from_secs(1));
        assert_eq!(
            c.quiet_limit(Duration::from_millis(10)),
            Duration::from_millis(50)
        );
        assert_eq!(
            c.quiet_limit(Duration::from_millis(50)),
            Duration::from_millis(250)
        );
        let slow_renew = FeedConfig {
            renew_every: Duration::from_millis(200),
            ..c.clone()
        };
        assert!(slow_renew.validate().is_err());
        assert!(!format!("{:?}", FeedConfig::new("redis://:pw@h/")).contains("pw"));
    }

    #[test]
    fn the_cluster_hash_depends_on_the_nodes_not_on_passwords() {
        let cfg = |url: &str| url.parse::<tokio_postgres::Config>().unwrap();
        let a = [(Arc::from("f1"), cfg("postgres://u:one@h:5433/db"))];
        let b = [(Arc::from("f1"), cfg("postgres://u:two@h:5433/db"))];
        let c = [(Arc::from("f1"), cfg("postgres://u:one@h:5434/db"))];
        let d = [(Arc::from("f2"), cfg("postgres://u:one@h:5433/db"))];
        assert_eq!(cluster_hash(&a), cluster_hash(&b));
        assert_ne!(cluster_hash(&a), cluster_hash(&c));
        assert_ne!(cluster_hash(&a), cluster_hash(&d));
    }
}
