//! [`MemoryStore`]: sessions in a map in this process. The default: right for
//! one service instance, and for tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{SessionKey, SessionRecord, SessionStore, StoreFuture, StoreHealth};
use crate::{Clock, Position, SystemClock};

/// Sweep expired sessions after this many updates.
const SWEEP_EVERY: u64 = 4096;

#[derive(Debug, Default)]
struct Entry {
    record: SessionRecord,
    expires_ms: u64,
}

#[derive(Debug, Default)]
struct Map {
    sessions: HashMap<SessionKey, Entry>,
    updates: u64,
    /// Scope `global`'s mark: the highest write acknowledged in this
    /// process (never expires).
    mark: Option<Position>,
}

/// Sessions in memory, each forgotten `ttl` after its last update (like the
/// Redis keys' TTL). Never fails, so always healthy.
#[derive(Debug)]
pub struct MemoryStore {
    map: Mutex<Map>,
    ttl: Duration,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryStore {
    /// A 10-minute TTL on the system clock.
    fn default() -> MemoryStore {
        MemoryStore::new(Duration::from_secs(600), Arc::new(SystemClock))
    }
}

impl MemoryStore {
    /// A store whose sessions expire `ttl` after their last update, timed by
    /// `clock`.
    pub fn new(ttl: Duration, clock: Arc<dyn Clock>) -> MemoryStore {
        MemoryStore {
            map: Mutex::new(Map::default()),
            ttl,
            clock,
        }
    }

    /// Number of live (unexpired) sessions.
    pub fn len(&self) -> usize {
        let now = self.clock.now_ms();
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.sessions.values().filter(|e| e.expires_ms > now).count()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies `f` to the session's record; returns its record before and
    /// its token after.
    fn update(
        &self,
        key: &SessionKey,
        f: impl FnOnce(&mut SessionRecord),
    ) -> (SessionRecord, Position) {
        let now = self.clock.now_ms();
        let expires_ms = now.saturating_add(self.ttl.as_millis() as u64);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.updates += 1;
        if map.updates.is_multiple_of(SWEEP_EVERY) {
            map.sessions.retain(|_, e| e.expires_ms > now);
        }
        let entry = map.sessions.entry(key.clone()).or_default();
        if entry.expires_ms <= now {
            entry.record = SessionRecord::default();
        }
        let before = entry.record;
        f(&mut entry.record);
        entry.expires_ms = expires_ms;
        (before, entry.record.token.unwrap_or_default())
    }
}

impl SessionStore for MemoryStore {
    fn load<'a>(&'a self, key: &'a SessionKey) -> StoreFuture<'a, SessionRecord> {
        let now = self.clock.now_ms();
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let record = map
            .sessions
            .get(key)
            .filter(|e| e.expires_ms > now)
            .map(|e| e.record)
            .unwrap_or_default();
        Box::pin(std::future::ready(Ok(record)))
    }

    fn record_write<'a>(
        &'a self,
        key: &'a SessionKey,
        pos: Position,
        floor: Option<Position>,
        now_ms: u64,
    ) -> StoreFuture<'a, Option<Position>> {
        let (before, _) = self.update(key, |r| {
            r.token = r.token.max(Some(pos));
            r.write = r.write.max(floor);
            r.last_write_ms = r.last_write_ms.max(Some(now_ms));
        });
        Box::pin(std::future::ready(Ok(before.write)))
    }

    fn observe<'a>(&'a self, key: &'a SessionKey, pos: Position) -> StoreFuture<'a, Position> {
        let (_, stored) = self.update(key, |r| r.token = r.token.max(Some(pos)));
        Box::pin(std::future::ready(Ok(stored)))
    }

    fn forget_write<'a>(&'a self, key: &'a SessionKey, lost: Position) -> StoreFuture<'a, ()> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.sessions.get_mut(key)
            && entry.record.write == Some(lost)
        {
            entry.record.write = None;
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn raise_mark<'a>(&'a self, pos: Position) -> StoreFuture<'a, ()> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.mark = map.mark.max(Some(pos));
        Box::pin(std::future::ready(Ok(())))
    }

    fn load_mark<'a>(&'a self) -> StoreFuture<'a, Option<Position>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        Box::pin(std::future::ready(Ok(map.mark)))
    }

    fn health(&self) -> StoreHealth {
        StoreHealth::Ok
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    fn store() -> (MemoryStore, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_000_000));
        (
            MemoryStore::new(Duration::from_secs(600), clock.clone()),
            clock,
        )
    }

    fn key(s: &str) -> SessionKey {
        SessionKey::new(s).unwrap()
    }

    fn pos(lsn: u64) -> Position {
        Position::new(1, crate::Lsn::from_u64(lsn))
    }

    #[tokio::test]
    async fn the_global_mark_only_ever_rises() {
        let (s, _) = store();
        assert_eq!(s.load_mark().await.unwrap(), None);
        s.raise_mark(pos(500)).await.unwrap();
        s.raise_mark(pos(300)).await.unwrap();
        assert_eq!(s.load_mark().await.unwrap(), Some(pos(500)));
        let next = Position::new(2, crate::Lsn::from_u64(10));
        s.raise_mark(next).await.unwrap();
        assert_eq!(
            s.load_mark().await.unwrap(),
            Some(next),
            "a later timeline is higher"
        );
    }

    #[tokio::test]
    async fn tokens_only_ever_rise() {
        let (s, _) = store();
        let k = key("u1");
        assert_eq!(s.load(&k).await.unwrap(), SessionRecord::default());
        assert_eq!(
            s.record_write(&k, pos(500), Some(pos(500)), 10)
                .await
                .unwrap(),
            None,
            "a write returns the write position before it"
        );
        assert_eq!(s.observe(&k, pos(400)).await.unwrap(), pos(500));
        assert_eq!(
            s.record_write(&k, pos(300), Some(pos(300)), 5)
                .await
                .unwrap(),
            Some(pos(500))
        );
        assert_eq!(
            s.load(&k).await.unwrap(),
            SessionRecord {
                token: Some(pos(500)),
                write: Some(pos(500)),
                last_write_ms: Some(10),
                untracked_write_ms: None,
            }
        );
        assert_eq!(s.observe(&k, pos(900)).await.unwrap(), pos(900));
        assert_eq!(
            s.load(&k).await.unwrap().write,
            Some(pos(500)),
            "a read moves the token, not the write"
        );
        s.forget_write(&k, pos(499)).await.unwrap();
        assert_eq!(
            s.load(&k).await.unwrap().write,
            Some(pos(500)),
            "not that one"
        );
        s.forget_write(&k, pos(500)).await.unwrap();
        assert_eq!(s.load(&k).await.unwrap().write, None);
        // A later timeline is after every position of an earlier one.
        let next = Position::new(2, crate::Lsn::from_u64(100));
        assert_eq!(s.observe(&k, next).await.unwrap(), next);
        assert_eq!(s.load(&key("u2")).await.unwrap(), SessionRecord::default());
    }

    #[tokio::test]
    async fn sessions_expire_after_the_ttl_since_their_last_update() {
        let (s, clock) = store();
        let k = key("u1");
        s.record_write(&k, pos(5), Some(pos(5)), clock.now_ms())
            .await
            .unwrap();
        clock.advance(Duration::from_secs(599));
        s.observe(&k, pos(6)).await.unwrap();
        clock.advance(Duration::from_secs(599));
        assert_eq!(s.load(&k).await.unwrap().token, Some(pos(6)));
        clock.advance(Duration::from_secs(2));
        assert_eq!(s.load(&k).await.unwrap(), SessionRecord::default());
        assert!(s.is_empty());
        // An expired entry starts over rather than resurrecting old values.
        s.observe(&k, pos(1)).await.unwrap();
        assert_eq!(s.load(&k).await.unwrap().last_write_ms, None);
    }

    #[test]
    fn session_keys_are_checked() {
        assert!(SessionKey::new("3f2c9c1e-8a53-4a53-9b55-0c8f1b3f5a11").is_ok());
        for bad in ["", "a b", "a\nb", &"x".repeat(129)] {
            assert!(SessionKey::new(bad).is_err(), "{bad:?}");
        }
    }
}
