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
//! | `router.rs` | [`Router`]: `write`/`record_write` (rule 1) on the leader's pool, `read` with bounded waits, `after_read` for monotonic tokens (rule 7) |
//! | `reader.rs` | [`ReadConn`]: shared, pipelining read connections per node, checked against restarts (rule 2) |
//! | `metrics.rs` | [`MetricsSnapshot`]: counters with no backend dependency |
//! | `error.rs` | [`Error`], the crate's one error type |
//!
//! The crate knows nothing of HTTP, files or environment variables: a service
//! builds a [`RouterConfig`], verifies client tokens with [`TokenKey`], and
//! turns [`Decision`]s into headers.
//!
//! # Wiring it into a handler
//!
//! ```no_run
//! use std::sync::Arc;
//! use ryw_router::{
//!     Freshness, MemoryStore, NodeUrls, Router, RouterConfig, SessionKey, TokenKey,
//! };
//!
//! # async fn handlers() -> Result<(), Box<dyn std::error::Error>> {
//! // At start-up: one router and one token key per process (the key shared
//! // by every instance, so tokens survive a change of instance).
//! let router = Router::connect(
//!     RouterConfig::default(),
//!     NodeUrls {
//!         leader: "postgres://postgres@127.0.0.1:5432/ryw".into(),
//!         followers: vec![("f1".into(), "postgres://postgres@127.0.0.1:5433/ryw".into())],
//!     },
//!     Arc::new(MemoryStore::default()),
//! )
//! .await?;
//! let key = TokenKey::from_secret("at least sixteen bytes of secret")?;
//! let user = SessionKey::new("3f2c9c1e-8a53-4a53-9b55-0c8f1b3f5a11")?;
//!
//! // POST /api/payments: write on the leader, then record the write.
//! let mut conn = router.write().await?;
//! let tx = conn.transaction().await?;
//! tx.execute("UPDATE accounts SET balance_cents = balance_cents - 500 WHERE user_id = $1::text::uuid", &[&user.as_str()])
//!     .await?;
//! tx.commit().await?;
//! let lsn = router.record_write(&user, &conn).await?; // rule 1: after COMMIT returned
//! let response_token = key.sign(lsn); // -> X-Consistency-Token
//!
//! // GET /api/balance: a fresh read. A bad token is the client's fault (400).
//! let client_token = Some(key.verify(&response_token)?);
//! let (conn, mut decision) = router.read(&user, Freshness::Fresh, None, client_token).await?;
//! // Rule 7: the read also selects the serving node's position (evaluated
//! // after its snapshot), so the session's token can cover all it saw.
//! let sql = format!(
//!     "SELECT balance_cents, {} FROM accounts WHERE user_id = $1::text::uuid",
//!     decision.position_sql()
//! );
//! let stmt = conn.prepare_cached(&sql).await?; // once per shared connection
//! match conn.query_one(&stmt, &[&user.as_str()]).await {
//!     Ok(row) => {
//!         let _balance: i64 = row.get(0);
//!         let position: tokio_postgres::types::PgLsn = row.get(1);
//!         // The next read never sees an older state (also of others'
//!         // writes). Without the column: `router.after_read(&user, &mut
//!         // decision, &conn)`, one more statement.
//!         router.after_read_with(&user, &mut decision, position.into()).await;
//!         let _served_by: &str = &decision.node; // -> X-Served-By
//!         let _token = decision.token.map(|t| key.sign(t)); // -> X-Consistency-Token
//!     }
//!     // Lets the router forget a follower whose connection broke (rule 3).
//!     Err(e) => router.report_error(&decision, &e),
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod clock;
mod config;
pub mod decide;
mod error;
mod lsn;
mod metrics;
mod reader;
mod router;
mod store;
mod strategy;
mod token;
mod tracker;
mod view;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{LEADER_NAME, NodeUrls, RouterConfig};
pub use decide::{Choice, Reason, SessionState, decide};
pub use error::{Error, Result};
pub use lsn::Lsn;
pub use metrics::{MetricsSnapshot, ReadCount};
pub use reader::ReadConn;
pub use router::{Decision, ReadOptions, Router};
pub use store::{
    MAX_SESSION_KEY, MemoryStore, RedisStore, RedisStoreConfig, SessionKey, SessionRecord,
    SessionStore, StoreFuture, StoreHealth,
};
pub use strategy::{Freshness, Strategy};
pub use token::{MIN_KEY_BYTES, Token, TokenError, TokenKey};
pub use view::{ClusterView, NodeStatus, Role};
