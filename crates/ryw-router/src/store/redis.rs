//! [`RedisStore`]: sessions in Redis, shared by every instance of a service,
//! so read-your-writes holds whichever instance serves the next request.
//!
//! Keys, for a session id `ID` and the default prefix `ryw:`:
//! `ryw:user:ID:lsn` (the token), `ryw:user:ID:last_write_ms` (decimal ms
//! since the epoch) and `ryw:user:ID:write` (the last write's floor), all
//! with a TTL. Updates are Lua scripts that store `max(old, new)` in one
//! step, so two instances racing can never lower a token.
//!
//! On a Redis Cluster (a `redis+cluster://` URL, see `redis_conn.rs`) the
//! id is a hash tag, `ryw:user:{ID}:lsn`, so one session's keys share a
//! slot and each script runs on one shard; on one Redis the names stay as
//! they were (a rolling upgrade keeps its sessions). Each shard fails on its
//! own: a call to a dead shard fails (fast, once its breaker is open) and
//! only the sessions of that shard lose their state ([`StorePart`]).
//!
//! Scope `global`'s fleet-wide mark is one more key, `ryw:mark` (the
//! highest acknowledged write's position, raised by a max script, no TTL).
//! On a cluster it is a slot of its own, apart from every session's, so a
//! write raises it with a call of its own, at the same time as the
//! session's script; while its shard fails, `global` reads go to the
//! leader.
//!
//! Reads also look at the .NET + Redis demo's key, `user:ID:last_write_utc`
//! (written by that demo, never by ryw; see [`super::seed`]): a write
//! recorded there that ryw's position may not cover is returned as
//! [`SessionRecord::untracked_write_ms`]. On one Redis it is in the same
//! `MGET`. On a cluster it has no hash tag (the `{id}` of its template is
//! replaced by the id, braces and all), so it lives in a slot of its own,
//! usually on another shard: it is read by a `GET` of its own at the same
//! time, and when that shard cannot answer, the session is taken to have
//! written just now (the sticky window's safe side: the leader) rather than
//! failing its own shard.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use redis::{RedisResult, Script, Value};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{SessionKey, SessionRecord, SessionStore, StoreFuture, StoreHealth, StorePart, seed};
use crate::redis_conn::{RedisAddr, RedisConn, slot_of};
use crate::{Error, Position, Result};

/// How often a cluster's shards are asked for again (`CLUSTER SLOTS`): they
/// change only when slots move between shards, not at a failover.
const SHARDS_REFRESH: Duration = Duration::from_secs(2);

/// `max` of two decimal strings without leading zeros, compared as numbers
/// (Lua numbers are doubles and lose precision past 2^53).
const LUA_MAX: &str = r"
local function max_dec(old, new)
  if not old or not string.match(old, '^%d+$') then return new end
  if #old ~= #new then
    if #old > #new then return old else return new end
  end
  if old > new then return old else return new end
end
";

/// KEYS: position key, last-write key, write-floor key. ARGV: position,
/// now_ms, ttl_ms, the write's floor ('' when unknown: the stored one is
/// kept). Returns the write floor stored before ('' for none).
const RECORD_WRITE: &str = r"
local pos = max_dec(redis.call('GET', KEYS[1]), ARGV[1])
redis.call('SET', KEYS[1], pos, 'PX', ARGV[3])
local at = max_dec(redis.call('GET', KEYS[2]), ARGV[2])
redis.call('SET', KEYS[2], at, 'PX', ARGV[3])
local before = redis.call('GET', KEYS[3])
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[3], max_dec(before, ARGV[4]), 'PX', ARGV[3])
elseif before then
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
return before or ''
";

/// KEYS: write-position key. ARGV: the lost position. Deletes the key if it
/// still holds it.
const FORGET_WRITE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
";

/// KEYS: position key. ARGV: position, ttl_ms.
const OBSERVE: &str = r"
local lsn = max_dec(redis.call('GET', KEYS[1]), ARGV[1])
redis.call('SET', KEYS[1], lsn, 'PX', ARGV[2])
return lsn
";

/// KEYS: the mark key. ARGV: position. No TTL: the mark must outlive
/// every session (a lower mark would let a `global` read be stale).
const RAISE_MARK: &str = r"
redis.call('SET', KEYS[1], max_dec(redis.call('GET', KEYS[1]), ARGV[1]))
return 1
";

/// How to reach Redis and how to name and keep sessions there.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisStoreConfig {
    /// `redis://host:port/db` for one Redis, or
    /// `redis+cluster://host:port,host:port` for a Redis Cluster (any of
    /// its nodes as seeds).
    pub url: String,
    /// Prefix of every key; default `ryw:`. Tests use their own to stay
    /// apart. On a cluster it should hold no `{`: a hash tag in the prefix
    /// would put every session in one slot.
    pub key_prefix: String,
    /// Sessions are forgotten this long after their last update. Default 10
    /// min.
    pub ttl: Duration,
    /// Longest any Redis call may take before it counts as a failure, so a
    /// dead Redis never hangs a request (rule 4's spirit, rule 5's letter).
    /// Default 250 ms.
    pub timeout: Duration,
    /// While failing, calls fail at once and only one call per this interval
    /// tries Redis again, so a dead Redis costs requests nothing. Default
    /// 500 ms.
    pub retry_after: Duration,
    /// A key written by the .NET + Redis demo after each write (`{id}`
    /// stands for the session id), holding an ISO-8601 UTC time and no
    /// position. Read with ryw's own keys; a write recorded there that ryw's
    /// position may not cover gets the sticky window under `hybrid` (and
    /// counts as a write for `sticky`). Never written by ryw. Default
    /// `user:{id}:last_write_utc` (the demo's); `None` to ignore it.
    pub seed_last_write_key: Option<String>,
}

impl RedisStoreConfig {
    /// The defaults, for `url`.
    pub fn new(url: impl Into<String>) -> RedisStoreConfig {
        RedisStoreConfig {
            url: url.into(),
            key_prefix: "ryw:".to_owned(),
            ttl: Duration::from_secs(600),
            timeout: Duration::from_millis(250),
            retry_after: Duration::from_millis(500),
            seed_last_write_key: Some(seed::SEED_LAST_WRITE_KEY.to_owned()),
        }
    }
}

impl fmt::Debug for RedisStoreConfig {
    /// Without the URL, which may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreConfig")
            .field("key_prefix", &self.key_prefix)
            .field("ttl", &self.ttl)
            .field("timeout", &self.timeout)
            .field("retry_after", &self.retry_after)
            .field("seed_last_write_key", &self.seed_last_write_key)
            .finish_non_exhaustive()
    }
}

/// Remembers the last failure of each part of the store: health, and
/// fail-fast between retries. A call to a part admits only while neither
/// that part nor the whole store is failing, or as the one probe per
/// interval.
#[derive(Debug, Default)]
struct Breaker {
    failures: Mutex<HashMap<StorePart, (String, Instant)>>,
}

impl Breaker {
    /// Whether a call to `part` may go to Redis now.
    fn admit(&self, part: StorePart, retry_after: Duration) -> Result<()> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let parts = [
            Some(part),
            (part != StorePart::Whole).then_some(StorePart::Whole),
        ];
        for p in parts.iter().flatten() {
            if let Some((why, last_try)) = failures.get(p)
                && last_try.elapsed() < retry_after
            {
                return Err(Error::Store(format!("degraded: {why}")));
            }
        }
        // This call is the probe of whatever failed; others keep failing
        // fast until it answers.
        for p in parts.iter().flatten() {
            if let Some((_, last_try)) = failures.get_mut(p) {
                *last_try = Instant::now();
            }
        }
        Ok(())
    }

    fn succeeded(&self, part: StorePart) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut any = failures.remove(&part).is_some();
        any |= failures.remove(&StorePart::Whole).is_some();
        if any {
            tracing::info!(%part, "reachable again");
        }
    }

    fn failed(&self, part: StorePart, why: String) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if !failures.contains_key(&part) {
            tracing::warn!(error = %why, %part, "failing");
        }
        failures.insert(part, (why, Instant::now()));
    }

    fn health(&self) -> StoreHealth {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let mut failing: Vec<_> = failures.iter().collect();
        failing.sort_by_key(|(part, _)| match part {
            StorePart::Whole => None,
            StorePart::Shard(slot) => Some(*slot),
        });
        match failing.as_slice() {
            [] => StoreHealth::Ok,
            [(StorePart::Whole, (why, _))] => StoreHealth::Degraded(why.clone()),
            [(part, (why, _)), rest @ ..] => StoreHealth::Degraded(format!(
                "{part}{}: {why}",
                if rest.is_empty() {
                    String::new()
                } else {
                    format!(" and {} more", rest.len())
                }
            )),
        }
    }
}

/// A Redis Cluster's shards, as last learnt: for each hash slot, the lowest
/// slot of the shard that serves it (its [`StorePart::Shard`] name).
/// Unknown until the first `CLUSTER SLOTS` answers: meanwhile every failure
/// counts against the whole store.
#[derive(Debug, Default)]
struct Shards {
    by_slot: RwLock<Option<Arc<[u16]>>>,
}

impl Shards {
    fn part(&self, slot: u16) -> StorePart {
        match &*self.by_slot.read().unwrap_or_else(|e| e.into_inner()) {
            Some(map) => StorePart::Shard(map[usize::from(slot)]),
            None => StorePart::Whole,
        }
    }

    fn set(&self, map: Arc<[u16]>) {
        *self.by_slot.write().unwrap_or_else(|e| e.into_inner()) = Some(map);
    }
}

/// The .NET + Redis demo's value for a session.
enum Seed {
    /// Read: the value, if the key exists.
    Read(Option<String>),
    /// Its shard did not answer.
    Unreadable,
}

/// Slot → shard from a `CLUSTER SLOTS` reply: `[start, end, [ip, port, id,
/// …], replicas…]` per range; a shard (one master id) may serve several
/// ranges. A slot no range covers is a shard of its own.
fn shards_from_slots(reply: &Value) -> Option<Arc<[u16]>> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let mut parsed = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(fields) = range else {
            return None;
        };
        let start: u16 = redis::from_redis_value_ref(fields.first()?).ok()?;
        let end: u16 = redis::from_redis_value_ref(fields.get(1)?).ok()?;
        let Value::Array(master) = fields.get(2)? else {
            return None;
        };
        let id: String = redis::from_redis_value_ref(master.get(2)?).ok()?;
        if start > end || end >= 16384 {
            return None;
        }
        parsed.push((start, end, id));
    }
    let mut lowest: HashMap<&str, u16> = HashMap::new();
    for (start, _, id) in &parsed {
        let e = lowest.entry(id.as_str()).or_insert(*start);
        *e = (*e).min(*start);
    }
    let mut map: Vec<u16> = (0..16384).collect();
    for (start, end, id) in &parsed {
        let shard = lowest[id.as_str()];
        for slot in *start..=*end {
            map[usize::from(slot)] = shard;
        }
    }
    Some(map.into())
}

/// Asks for the shards every [`SHARDS_REFRESH`] while the store lives.
async fn refresh_shards(conn: RedisConn, shards: Weak<Shards>, timeout: Duration) {
    loop {
        let mut c = conn.clone();
        let reply = tokio::time::timeout(
            timeout,
            redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<Value>(&mut c),
        )
        .await;
        let Some(shards) = shards.upgrade() else {
            return;
        };
        match reply {
            Ok(Ok(v)) => match shards_from_slots(&v) {
                Some(map) => shards.set(map),
                None => tracing::warn!("unexpected CLUSTER SLOTS reply"),
            },
            Ok(Err(e)) => tracing::debug!(error = %e, "CLUSTER SLOTS failed"),
            Err(_) => tracing::debug!("CLUSTER SLOTS timed out"),
        }
        drop(shards);
        tokio::time::sleep(SHARDS_REFRESH).await;
    }
}

/// Sessions in one Redis (through a reconnecting connection) or a Redis
/// Cluster. Every call is bounded by `timeout`; failures are reported (not
/// hidden) and make the store (or the shard) degraded until a call
/// succeeds.
pub struct RedisStore {
    conn: RedisConn,
    cluster: bool,
    cfg: RedisStoreConfig,
    breaker: Breaker,
    record_write: Script,
    observe: Script,
    forget_write: Script,
    raise_mark: Script,
    /// A cluster's shards, and the task that keeps them current.
    shards: Arc<Shards>,
    refresh: Option<JoinHandle<()>>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        if let Some(task) = self.refresh.take() {
            task.abort();
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("cfg", &self.cfg)
            .field("health", &self.breaker.health())
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for `cfg`. Does not fail when Redis is down (the store starts
    /// degraded and recovers by itself); fails only on a malformed URL. Must
    /// run inside a tokio runtime.
    pub async fn connect(cfg: RedisStoreConfig) -> Result<RedisStore> {
        if cfg
            .seed_last_write_key
            .as_deref()
            .is_some_and(|k| !k.contains("{id}"))
        {
            return Err(Error::Config(
                "redis seed_last_write_key must contain {id}".to_owned(),
            ));
        }
        let addr = RedisAddr::parse(&cfg.url)?;
        let conn = RedisConn::lazy(&addr, cfg.timeout, cfg.retry_after)?;
        let shards = Arc::new(Shards::default());
        let refresh = addr.is_cluster().then(|| {
            tokio::spawn(refresh_shards(
                conn.clone(),
                Arc::downgrade(&shards),
                cfg.timeout,
            ))
        });
        let store = RedisStore {
            conn,
            cluster: addr.is_cluster(),
            cfg,
            breaker: Breaker::default(),
            record_write: Script::new(&format!("{LUA_MAX}{RECORD_WRITE}")),
            observe: Script::new(&format!("{LUA_MAX}{OBSERVE}")),
            forget_write: Script::new(FORGET_WRITE),
            raise_mark: Script::new(&format!("{LUA_MAX}{RAISE_MARK}")),
            shards,
            refresh,
        };
        // Learn the initial health now rather than on the first request
        // (on a cluster: any node answering).
        let mut conn = store.conn.clone();
        let _ = store
            .call(StorePart::Whole, async move {
                redis::cmd("PING").query_async::<Value>(&mut conn).await
            })
            .await;
        Ok(store)
    }

    /// A session's key. On a cluster the id is a hash tag, so all of a
    /// session's keys are in one slot (whatever the id holds: the tag ends
    /// at the first `}` after the prefix's `{`, the same for every field).
    fn key(&self, session: &SessionKey, field: &str) -> String {
        if self.cluster {
            format!(
                "{}user:{{{}}}:{}",
                self.cfg.key_prefix,
                session.as_str(),
                field
            )
        } else {
            format!("{}user:{}:{}", self.cfg.key_prefix, session.as_str(), field)
        }
    }

    /// Scope `global`'s mark: one key for every session (no hash tag).
    fn mark_key(&self) -> String {
        format!("{}mark", self.cfg.key_prefix)
    }

    /// The part of the store a key lives in.
    fn part_of_key(&self, key: &str) -> StorePart {
        if self.cluster {
            self.shards.part(slot_of(key))
        } else {
            StorePart::Whole
        }
    }

    fn ttl_ms(&self) -> u64 {
        self.cfg.ttl.as_millis().max(1) as u64
    }

    /// Runs one Redis call to `part` under the breaker and the timeout.
    async fn call<T>(
        &self,
        part: StorePart,
        op: impl Future<Output = RedisResult<T>>,
    ) -> Result<T> {
        self.breaker.admit(part, self.cfg.retry_after)?;
        match tokio::time::timeout(self.cfg.timeout, op).await {
            Ok(Ok(v)) => {
                self.breaker.succeeded(part);
                Ok(v)
            }
            Ok(Err(e)) => {
                let why = e.to_string();
                self.breaker.failed(part, why.clone());
                Err(Error::Store(why))
            }
            Err(_) => {
                self.breaker
                    .failed(part, format!("timed out after {:?}", self.cfg.timeout));
                Err(Error::StoreTimeout(self.cfg.timeout))
            }
        }
    }

    /// One session's own keys (`MGET`, one slot) and, on a cluster, seed
    /// 003's key by a `GET` of its own at the same time. Returns ryw's three
    /// values and the demo's.
    async fn load_values(
        &self,
        key: &SessionKey,
        seed_key: Option<String>,
    ) -> Result<([Option<String>; 3], Seed)> {
        let own = [
            self.key(key, "lsn"),
            self.key(key, "last_write_ms"),
            self.key(key, "write"),
        ];
        let part = self.part(key);
        if !self.cluster {
            let mut conn = self.conn.clone();
            let mut values: Vec<Option<String>> = self
                .call(part, async {
                    let mut cmd = redis::cmd("MGET");
                    cmd.arg(&own);
                    if let Some(k) = &seed_key {
                        cmd.arg(k);
                    }
                    cmd.query_async(&mut conn).await
                })
                .await?;
            values.resize(4, None);
            let seed = values.pop().flatten();
            let write = values.pop().flatten();
            let at = values.pop().flatten();
            let lsn = values.pop().flatten();
            return Ok(([lsn, at, write], Seed::Read(seed)));
        }
        let (mut a, mut b) = (self.conn.clone(), self.conn.clone());
        let own_values = self.call(part, async {
            redis::cmd("MGET")
                .arg(&own)
                .query_async::<Vec<Option<String>>>(&mut a)
                .await
        });
        let seed_value = async {
            let Some(k) = seed_key else {
                return Seed::Read(None);
            };
            let part = self.part_of_key(&k);
            let got = self
                .call(part, async {
                    redis::cmd("GET")
                        .arg(&k)
                        .query_async::<Option<String>>(&mut b)
                        .await
                })
                .await;
            match got {
                Ok(v) => Seed::Read(v),
                Err(_) => Seed::Unreadable,
            }
        };
        let (own_values, seed) = tokio::join!(own_values, seed_value);
        let mut values = own_values?;
        values.resize(3, None);
        let write = values.pop().flatten();
        let at = values.pop().flatten();
        let lsn = values.pop().flatten();
        Ok(([lsn, at, write], seed))
    }
}

/// A stored position: [`Position::ordinal`] in decimal (a plain LSN from
/// before timelines reads as timeline 0, which every later position
/// passes).
fn parse_position(value: Option<String>) -> Result<Option<Position>> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<u128>()
                .ok()
                .and_then(Position::from_ordinal)
                .ok_or_else(|| Error::Store(format!("corrupt position {v:?}")))
        })
        .transpose()
}

fn parse_u64(value: Option<String>, what: &str) -> Result<Option<u64>> {
    value
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| Error::Store(format!("corrupt {what} {v:?}")))
        })
        .transpose()
}

impl SessionStore for RedisStore {
    fn load<'a>(&'a self, key: &'a SessionKey) -> StoreFuture<'a, SessionRecord> {
        Box::pin(async move {
            let seed_key = self
                .cfg
                .seed_last_write_key
                .as_deref()
                .map(|template| seed::key(template, key.as_str()));
            let ([lsn, at, write], seed_at) = self.load_values(key, seed_key).await?;
            let own_last_write = parse_u64(at, "last_write_ms")?;
            let (last_write_ms, untracked_write_ms) = match seed_at {
                Seed::Read(v) => seed::merge(own_last_write, v.as_deref()),
                // The demo's shard cannot say whether the session wrote:
                // as if it just had (the window's safe side: the leader),
                // without failing the session's own shard.
                Seed::Unreadable => (Some(seed::UNPARSEABLE), Some(seed::UNPARSEABLE)),
            };
            Ok(SessionRecord {
                token: parse_position(lsn)?,
                write: parse_position(write)?,
                last_write_ms,
                untracked_write_ms,
            })
        })
    }

    fn record_write<'a>(
        &'a self,
        key: &'a SessionKey,
        pos: Position,
        floor: Option<Position>,
        now_ms: u64,
    ) -> StoreFuture<'a, Option<Position>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let before: String = self
                .call(self.part(key), async {
                    self.record_write
                        .key(self.key(key, "lsn"))
                        .key(self.key(key, "last_write_ms"))
                        .key(self.key(key, "write"))
                        .arg(pos.ordinal().to_string())
                        .arg(now_ms.to_string())
                        .arg(self.ttl_ms())
                        .arg(floor.map(|f| f.ordinal().to_string()).unwrap_or_default())
                        .invoke_async(&mut conn)
                        .await
                })
                .await?;
            parse_position(Some(before))
        })
    }

    fn observe<'a>(&'a self, key: &'a SessionKey, pos: Position) -> StoreFuture<'a, Position> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let stored: String = self
                .call(self.part(key), async {
                    self.observe
                        .key(self.key(key, "lsn"))
                        .arg(pos.ordinal().to_string())
                        .arg(self.ttl_ms())
                        .invoke_async(&mut conn)
                        .await
                })
                .await?;
            Ok(parse_position(Some(stored))?.unwrap_or_default())
        })
    }

    fn forget_write<'a>(&'a self, key: &'a SessionKey, lost: Position) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let _: i64 = self
                .call(self.part(key), async {
                    self.forget_write
                        .key(self.key(key, "write"))
                        .arg(lost.ordinal().to_string())
                        .invoke_async(&mut conn)
                        .await
                })
                .await?;
            Ok(())
        })
    }

    fn raise_mark<'a>(&'a self, pos: Position) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let key = self.mark_key();
            let _: i64 = self
                .call(self.part_of_key(&key), async {
                    self.raise_mark
                        .key(&key)
                        .arg(pos.ordinal().to_string())
                        .invoke_async(&mut conn)
                        .await
                })
                .await?;
            Ok(())
        })
    }

    fn load_mark<'a>(&'a self) -> StoreFuture<'a, Option<Position>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let key = self.mark_key();
            let value: Option<String> = self
                .call(self.part_of_key(&key), async {
                    redis::cmd("GET").arg(&key).query_async(&mut conn).await
                })
                .await?;
            parse_position(value)
        })
    }

    fn mark_part(&self) -> StorePart {
        self.part_of_key(&self.mark_key())
    }

    fn part(&self, key: &SessionKey) -> StorePart {
        self.part_of_key(&self.key(key, "lsn"))
    }

    fn health(&self) -> StoreHealth {
        self.breaker.health()
    }

    fn backend(&self) -> &'static str {
        if self.cluster {
            "redis-cluster"
        } else {
            "redis"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing listens on port 1 of loopback: connections are refused at
    /// once. No real Redis is needed to test failing safe.
    fn unreachable() -> RedisStoreConfig {
        RedisStoreConfig::new("redis://127.0.0.1:1/")
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_an_error_and_degraded_never_a_hang() {
        let store = RedisStore::connect(unreachable()).await.unwrap();
        assert!(matches!(store.health(), StoreHealth::Degraded(_)));
        let key = SessionKey::new("u1").unwrap();
        let started = std::time::Instant::now();
        assert!(store.load(&key).await.is_err());
        let pos = Position::new(1, crate::Lsn::from_u64(1));
        assert!(store.record_write(&key, pos, Some(pos), 1).await.is_err());
        assert!(store.observe(&key, pos).await.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn while_degraded_calls_fail_fast_and_one_probe_per_interval_retries() {
        let b = Breaker::default();
        let every = Duration::from_millis(500);
        let w = StorePart::Whole;
        b.admit(w, every).unwrap();
        b.failed(w, "refused".into());
        assert!(
            b.admit(w, every).is_err(),
            "fails fast right after a failure"
        );
        tokio::time::advance(Duration::from_millis(501)).await;
        b.admit(w, every).unwrap();
        assert!(b.admit(w, every).is_err(), "only one probe per interval");
        b.succeeded(w);
        b.admit(w, every).unwrap();
        assert_eq!(b.health(), StoreHealth::Ok);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_shard_fails_fast_alone_and_a_failing_whole_fails_every_shard() {
        let b = Breaker::default();
        let every = Duration::from_millis(500);
        let (one, two) = (StorePart::Shard(0), StorePart::Shard(5461));
        b.failed(two, "connection refused".into());
        b.admit(one, every).unwrap();
        assert!(b.admit(two, every).is_err());
        assert_eq!(
            b.health(),
            StoreHealth::Degraded(
                "the session store's shard at slot 5461: connection refused".into()
            )
        );
        b.failed(StorePart::Whole, "no node answers".into());
        assert!(
            b.admit(one, every).is_err(),
            "the whole store fails every part"
        );
        tokio::time::advance(Duration::from_millis(501)).await;
        b.admit(one, every).unwrap();
        b.succeeded(one);
        assert!(
            b.admit(one, every).is_ok(),
            "a success of a part clears the whole"
        );
        // Shard two's probe interval had passed too: one probe, then fast
        // failures again.
        b.admit(two, every).unwrap();
        assert!(b.admit(two, every).is_err());
    }

    #[test]
    fn cluster_slots_name_each_shard_by_its_lowest_slot() {
        let node = |port: i64, id: &str| {
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(port),
                Value::BulkString(id.as_bytes().to_vec()),
            ])
        };
        let range = |start: i64, end: i64, master: Value| {
            Value::Array(vec![Value::Int(start), Value::Int(end), master])
        };
        let reply = Value::Array(vec![
            range(0, 5460, node(7001, "a")),
            range(5461, 10922, node(7002, "b")),
            range(10923, 16000, node(7003, "c")),
            // Moved from b to a: a's lowest slot still names it.
            range(16001, 16383, node(7001, "a")),
        ]);
        let map = shards_from_slots(&reply).expect("parsed");
        assert_eq!(map[0], 0);
        assert_eq!(map[5460], 0);
        assert_eq!(map[5461], 5461);
        assert_eq!(map[12000], 10923);
        assert_eq!(map[16383], 0);
        assert!(shards_from_slots(&Value::Int(1)).is_none());
    }

    #[test]
    fn malformed_urls_are_a_config_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt
            .block_on(RedisStore::connect(RedisStoreConfig::new("not a url")))
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }

    #[test]
    fn a_seed_key_without_the_id_is_a_config_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cfg = RedisStoreConfig {
            seed_last_write_key: Some("user:last_write_utc".into()),
            ..unreachable()
        };
        let err = rt.block_on(RedisStore::connect(cfg)).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }

    #[test]
    fn debug_hides_the_url() {
        let shown = format!("{:?}", RedisStoreConfig::new("redis://:hunter2@h/"));
        assert!(!shown.contains("hunter2"));
    }
}
