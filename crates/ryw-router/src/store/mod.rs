//! The session store: where a session's token and last write time live
//! between requests, so that a user's next read — on another instance, from
//! another device — knows what it must see.
//!
//! [`SessionStore`] is the crate's one trait, because there are two real
//! implementations: [`MemoryStore`] (one process) and [`RedisStore`] (shared
//! by every instance of a service). Beside the sessions, the store keeps
//! one fleet-wide mark (the highest acknowledged write), for reads of scope
//! `global` ([`crate::Scope`]).

mod memory;
mod redis;
pub mod seed;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{Error, Position, Result};

pub use self::memory::MemoryStore;
pub use self::redis::{RedisStore, RedisStoreConfig};

/// Longest accepted session key, in bytes.
pub const MAX_SESSION_KEY: usize = 128;

/// Identifies a session: the service passes the user id (a UUID). Checked on
/// the way in so it is safe inside a Redis key and a log line.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(Arc<str>);

impl SessionKey {
    /// A key from a user id: 1–128 bytes, no whitespace or control
    /// characters.
    pub fn new(id: impl AsRef<str>) -> Result<SessionKey> {
        let id = id.as_ref();
        let ok = !id.is_empty()
            && id.len() <= MAX_SESSION_KEY
            && !id.chars().any(|c| c.is_control() || c.is_whitespace());
        if ok {
            Ok(SessionKey(Arc::from(id)))
        } else {
            Err(Error::InvalidSessionKey)
        }
    }

    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for SessionKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<SessionKey> {
        SessionKey::new(s)
    }
}

/// What the store holds for one session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionRecord {
    /// The highest position the session has written or seen.
    pub token: Option<Position>,
    /// The floor of the session's latest write: a position the leader had
    /// reached before the write's commit record. What tells a write that a
    /// failover lost ([`TimelineHistory::write_lost`](crate::TimelineHistory::write_lost))
    /// from a read of data that went with it.
    pub write: Option<Position>,
    /// Wall-clock ms of its last write (the sticky window).
    pub last_write_ms: Option<u64>,
    /// Wall-clock ms of a write whose position `token` may not cover: one
    /// recorded only by the .NET + Redis demo
    /// (`user:{id}:last_write_utc`, see [`seed`]). `hybrid` lets the sticky
    /// window decide for it. Always `None` in the memory store.
    pub untracked_write_ms: Option<u64>,
}

/// What of a session store fails together. A session's fresh reads trust
/// the store only while its part has not failed within the recovery grace
/// (rule 5), so one failed shard of a Redis Cluster sends only its own
/// sessions' fresh reads to the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StorePart {
    /// The whole store: one Redis, memory, or a cluster whose shards are not
    /// known yet.
    Whole,
    /// One shard of a Redis Cluster, named by the lowest hash slot it
    /// serves (the same after a failover: a promoted replica serves its
    /// master's slots).
    Shard(u16),
}

impl fmt::Display for StorePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorePart::Whole => f.write_str("the session store"),
            StorePart::Shard(slot) => write!(f, "the session store's shard at slot {slot}"),
        }
    }
}

/// Whether the store can be relied on; shown by `GET /api/cluster`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreHealth {
    /// Answering.
    Ok,
    /// Failing or recently failed: fresh reads go to the leader (rule 5).
    Degraded(String),
}

impl StoreHealth {
    /// Whether it is [`StoreHealth::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, StoreHealth::Ok)
    }
}

/// A boxed future of a store call (dyn-compatible, no extra dependency).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Keeps sessions' tokens. Every update is `max(old, new)`, atomically: a
/// token is never lowered, whichever instance writes last (rules 1 and 7).
///
/// Implementations must answer quickly or fail (the Redis store times out
/// after 250 ms): the router treats any error as "session unknown" and sends
/// the session's fresh reads to the leader (rule 5).
pub trait SessionStore: Send + Sync + fmt::Debug {
    /// The session's record; an empty record for an unknown or expired one.
    fn load<'a>(&'a self, key: &'a SessionKey) -> StoreFuture<'a, SessionRecord>;

    /// After a committed write at `pos`: token = max(token, pos), write =
    /// max(write, floor) when the write's floor is known (a position the
    /// leader had reached before the write committed:
    /// [`TimelineHistory::write_lost`](crate::TimelineHistory::write_lost) judges it), and
    /// last write = max(last write, `now_ms`). Returns the write floor the
    /// session had *before* (so the router can tell it a write of it was
    /// lost in a failover, even when this write replaces it).
    fn record_write<'a>(
        &'a self,
        key: &'a SessionKey,
        pos: Position,
        floor: Option<Position>,
        now_ms: u64,
    ) -> StoreFuture<'a, Option<Position>>;

    /// After a read that saw `pos`: token = max(token, pos) (monotonic
    /// reads, rule 7). Returns the stored token.
    fn observe<'a>(&'a self, key: &'a SessionKey, pos: Position) -> StoreFuture<'a, Position>;

    /// The session was told that its write at `lost` was lost in a
    /// failover: the write floor is cleared if it is still `lost`, so
    /// it is told once.
    fn forget_write<'a>(&'a self, key: &'a SessionKey, lost: Position) -> StoreFuture<'a, ()>;

    /// Scope `global`: raises the fleet-wide high-water mark to `pos`
    /// (mark = max(mark, pos), atomically): every write does it before it is
    /// acknowledged, whoever wrote it, so a `global` read that fetches the
    /// mark after it began sees every acknowledged write. One key for every
    /// session (on a Redis Cluster, a slot of its own).
    fn raise_mark<'a>(&'a self, pos: Position) -> StoreFuture<'a, ()>;

    /// Scope `global`: the fleet-wide mark now (`None` before any write).
    fn load_mark<'a>(&'a self) -> StoreFuture<'a, Option<Position>>;

    /// The part of the store the mark lives in (rule 5, as
    /// [`SessionStore::part`] for a session).
    fn mark_part(&self) -> StorePart {
        StorePart::Whole
    }

    /// The part of the store `key`'s record lives in: what must not have
    /// failed lately for the session's fresh reads to trust it (rule 5).
    /// [`StorePart::Whole`] unless the store is sharded.
    fn part(&self, key: &SessionKey) -> StorePart {
        let _ = key;
        StorePart::Whole
    }

    /// Whether the store is answering.
    fn health(&self) -> StoreHealth;

    /// `"memory"` or `"redis"`, for the dashboard.
    fn backend(&self) -> &'static str;
}
