//! Read-your-writes routing for PostgreSQL streaming replication.
//!
//! Writes go to the leader; reads go to followers wherever that is safe, and a
//! user always sees their own acknowledged writes, on any instance of the
//! service, from any device. The rules this crate enforces are numbered as in
//! `DESIGN.md` ("rule 2" in a comment marks where rule 2 is enforced).
//!
//! # Layout
//!
//! | file | what |
//! | --- | --- |
//! | `lsn.rs` | [`Lsn`]: a WAL position, parsed from `X/Y`, ordered, lag arithmetic |
//! | `token.rs` | [`Token`], [`TokenKey`]: HMAC-signed `v1.<lsn>.<mac>` header values (rule 4) |
//! | `strategy.rs` | [`Strategy`] (`leader`, `legacy`, `sticky`, `causal`, `hybrid`, `per-read-check`), [`Freshness`] |
//! | `config.rs` | [`RouterConfig`] with the documented defaults, [`NodeUrls`] |
//! | `clock.rs` | [`Clock`]: injectable wall clock for the sticky window and TTLs |
//! | `view.rs` | [`ClusterView`], [`NodeStatus`]: what the tracker publishes |
//! | `tracker/` | background polling of every node (`mod.rs`) and the pure bookkeeping of positions, lag and rotation (`state.rs`; rules 3 and 8) |
//! | `decide.rs` | [`decide()`]: the routing decision as a pure function (rules 2, 4, 5) |
//! | `store/` | [`SessionStore`] (the one trait), [`MemoryStore`], [`RedisStore`] |
//! | `router.rs` | [`Router`]: pools, `write`/`record_write` (rule 1), `read` with bounded waits, monotonic tokens (rule 7) |
//! | `metrics.rs` | [`MetricsSnapshot`]: counters with no backend dependency |
//! | `error.rs` | [`Error`], the crate's one error type |
//!
//! The crate knows nothing of HTTP, files or environment variables: a service
//! builds a [`RouterConfig`], verifies client tokens with [`TokenKey`], and
//! turns [`Decision`]s into headers.

#![warn(missing_docs)]

mod clock;
mod config;
pub mod decide;
mod error;
mod lsn;
mod metrics;
mod store;
mod strategy;
mod token;
mod tracker;
mod view;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{LEADER_NAME, NodeUrls, RouterConfig};
pub use error::{Error, Result};
pub use lsn::Lsn;
pub use strategy::{Freshness, Strategy};
pub use token::{MIN_KEY_BYTES, Token, TokenError, TokenKey};
pub use decide::{Choice, Reason, SessionState, decide};
pub use metrics::{MetricsSnapshot, ReadCount};
pub use view::{ClusterView, NodeStatus, Role};
pub use store::{
    MAX_SESSION_KEY, MemoryStore, RedisStore, RedisStoreConfig, SessionKey, SessionRecord,
    SessionStore, StoreFuture, StoreHealth,
};
