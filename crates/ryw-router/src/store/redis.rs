//! [`RedisStore`]: sessions in Redis, shared by every instance of a service,
//! so read-your-writes holds whichever instance serves the next request.
//!
//! Keys, for a session id `ID` and the default prefix `ryw:`:
//! `ryw:user:ID:lsn` (the token, a decimal `u64` WAL offset) and
//! `ryw:user:ID:last_write_ms` (decimal ms since the epoch), both with a TTL.
//! Updates are Lua scripts that store `max(old, new)` in one step, so two
//! instances racing can never lower a token.
//!
//! Reads also look at seed 003's own key, `user:ID:last_write_utc` (written
//! by a seed-003-style service, never by ryw; see [`super::seed`]), in the
//! same round trip: a write recorded there that ryw's position may not cover
//! is returned as [`SessionRecord::untracked_write_ms`].

use std::fmt;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Script};
use tokio::time::Instant;

use super::{SessionKey, SessionRecord, SessionStore, StoreFuture, StoreHealth, seed};
use crate::{Error, Position, Result};

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

/// How to reach Redis and how to name and keep sessions there.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisStoreConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key; default `ryw:`. Tests use their own to stay apart.
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
    /// A key written by a seed-003-style service after each write (`{id}`
    /// stands for the session id), holding an ISO-8601 UTC time and no
    /// position. Read with ryw's own keys; a write recorded there that ryw's
    /// position may not cover gets the sticky window under `hybrid` (and
    /// counts as a write for `sticky`). Never written by ryw. Default
    /// `user:{id}:last_write_utc` (seed 003's); `None` to ignore it.
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

/// Remembers the last failure: health, and fail-fast between retries.
#[derive(Debug, Default)]
struct Breaker {
    failure: Mutex<Option<(String, Instant)>>,
}

impl Breaker {
    /// Whether a call may go to Redis now.
    fn admit(&self, retry_after: Duration) -> Result<()> {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        match failure.as_mut() {
            Some((why, last_try)) if last_try.elapsed() < retry_after => {
                Err(Error::Store(format!("degraded: {why}")))
            }
            Some((_, last_try)) => {
                // This call is the probe; others keep failing fast.
                *last_try = Instant::now();
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn succeeded(&self) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.take().is_some() {
            tracing::info!("session store reachable again");
        }
    }

    fn failed(&self, why: String) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.is_none() {
            tracing::warn!(error = %why, "session store failing");
        }
        *failure = Some((why, Instant::now()));
    }

    fn health(&self) -> StoreHealth {
        match &*self.failure.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((why, _)) => StoreHealth::Degraded(why.clone()),
            None => StoreHealth::Ok,
        }
    }
}

/// Sessions in Redis through a reconnecting [`ConnectionManager`]. Every call
/// is bounded by `timeout`; failures are reported (not hidden) and make the
/// store degraded until a call succeeds.
pub struct RedisStore {
    conn: ConnectionManager,
    cfg: RedisStoreConfig,
    breaker: Breaker,
    record_write: Script,
    observe: Script,
    forget_write: Script,
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
        let client = redis::Client::open(cfg.url.as_str())
            .map_err(|e| Error::Config(format!("redis url: {e}")))?;
        let manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(cfg.timeout))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(cfg.retry_after);
        let conn = ConnectionManager::new_lazy_with_config(client, manager_cfg)
            .map_err(|e| Error::Config(format!("redis: {e}")))?;
        let store = RedisStore {
            conn,
            cfg,
            breaker: Breaker::default(),
            record_write: Script::new(&format!("{LUA_MAX}{RECORD_WRITE}")),
            observe: Script::new(&format!("{LUA_MAX}{OBSERVE}")),
            forget_write: Script::new(FORGET_WRITE),
        };
        // Learn the initial health now rather than on the first request.
        let mut conn = store.conn.clone();
        let _ = store
            .call(async move { redis::cmd("PING").query_async::<()>(&mut conn).await })
            .await;
        Ok(store)
    }

    fn key(&self, session: &SessionKey, field: &str) -> String {
        format!("{}user:{}:{}", self.cfg.key_prefix, session.as_str(), field)
    }

    fn ttl_ms(&self) -> u64 {
        self.cfg.ttl.as_millis().max(1) as u64
    }

    /// Runs one Redis call under the breaker and the timeout.
    async fn call<T>(&self, op: impl Future<Output = RedisResult<T>>) -> Result<T> {
        self.breaker.admit(self.cfg.retry_after)?;
        match tokio::time::timeout(self.cfg.timeout, op).await {
            Ok(Ok(v)) => {
                self.breaker.succeeded();
                Ok(v)
            }
            Ok(Err(e)) => {
                let why = e.to_string();
                self.breaker.failed(why.clone());
                Err(Error::Store(why))
            }
            Err(_) => {
                self.breaker
                    .failed(format!("timed out after {:?}", self.cfg.timeout));
                Err(Error::StoreTimeout(self.cfg.timeout))
            }
        }
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
            let mut conn = self.conn.clone();
            let seed_key = self
                .cfg
                .seed_last_write_key
                .as_deref()
                .map(|template| seed::key(template, key.as_str()));
            let mut values: Vec<Option<String>> = self
                .call(async {
                    let mut cmd = redis::cmd("MGET");
                    cmd.arg(self.key(key, "lsn"))
                        .arg(self.key(key, "last_write_ms"))
                        .arg(self.key(key, "write"));
                    if let Some(k) = &seed_key {
                        cmd.arg(k);
                    }
                    cmd.query_async(&mut conn).await
                })
                .await?;
            values.resize(4, None);
            let seed_at = values.pop().flatten();
            let write = values.pop().flatten();
            let at = values.pop().flatten();
            let lsn = values.pop().flatten();
            let (last_write_ms, untracked_write_ms) =
                seed::merge(parse_u64(at, "last_write_ms")?, seed_at.as_deref());
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
                .call(async {
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
                .call(async {
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
                .call(async {
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

    fn health(&self) -> StoreHealth {
        self.breaker.health()
    }

    fn backend(&self) -> &'static str {
        "redis"
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
        b.admit(every).unwrap();
        b.failed("refused".into());
        assert!(b.admit(every).is_err(), "fails fast right after a failure");
        tokio::time::advance(Duration::from_millis(501)).await;
        b.admit(every).unwrap();
        assert!(b.admit(every).is_err(), "only one probe per interval");
        b.succeeded();
        b.admit(every).unwrap();
        assert_eq!(b.health(), StoreHealth::Ok);
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
