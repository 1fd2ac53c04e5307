//! Read-your-writes routing for PostgreSQL streaming replication.
//!
//! Writes go to the leader; reads go to followers wherever that is safe, and a
//! user always sees their own acknowledged writes, on any instance of the
//! service, from any device. The rules this crate enforces are the
//! correctness rules of `docs/architecture.md#correctness-rules`, by number
//! ("rule 2" in a comment marks where rule 2 is enforced); the
//! [rules index](#rules-index) below says where and which test proves each.
//!
//! # One call per read, one per write
//!
//! ```no_run
//! use std::sync::Arc;
//! use ryw_router::{MemoryStore, NodeUrls, ReadRequest, Router, RouterConfig, SessionKey, TokenKey};
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
//! // A write: a transaction on the leader; its position is recorded after
//! // COMMIT returned (rule 1).
//! let tx = router.begin(&user).await?;
//! tx.execute("UPDATE accounts SET balance_cents = balance_cents - 500 WHERE user_id = $1::text::uuid", &[&user.as_str()])
//!     .await?;
//! let committed = tx.commit().await?;
//! let header = key.sign(committed.token); // -> X-Consistency-Token
//! // committed.lost: an earlier write of this session that a failover
//! // lost (-> X-Ryw-Write-Lost); None almost always.
//!
//! // A fresh read: a follower that has the session's writes, or the leader.
//! let client_token = Some(key.verify(&header)?); // a bad token is a 400
//! let read = router
//!     .query_one(
//!         &ReadRequest::fresh(&user).client_token(client_token),
//!         "SELECT balance_cents FROM accounts WHERE user_id = $1::text::uuid",
//!         &[&user.as_str()],
//!     )
//!     .await?;
//! let balance: i64 = read.value.get(0);
//! let served_by = &read.decision.node; // -> X-Served-By
//! let token = read.decision.token.map(|t| key.sign(t)); // -> X-Consistency-Token
//! # let _ = (balance, served_by, token);
//! # Ok(())
//! # }
//! ```
//!
//! The read call routes (rules 2, 4, 5), adds the node's position to the
//! statement and raises the session's token to it (rule 7), times the read
//! out, and if the follower broke or stalled, forgets it (rule 3) and reads
//! once more elsewhere (rule 8).
//!
//! # The default strategy, `hybrid`
//!
//! A fresh read goes to a follower known to have replayed the session's
//! token. If none has, it waits, at most [`RouterConfig::hybrid_wait`]
//! (20 ms), only when [`predict::forecast`] expects a follower there within
//! that budget, and goes to the leader at once otherwise. The prediction is
//! a pure function of what the tracker publishes ([`ClusterView`]): when
//! the leader reached each recent position, each follower's replay
//! position, how long it has been behind, and its pace (how long its recent
//! catch-ups took, [`FollowerHealth::catch_up`]). It decides only whether to
//! wait: a follower serves the read only once it is seen at the token (rule
//! 2) and the wait ends at the budget (rule 4), so a wrong prediction (a
//! follower whose replay stops) costs at most the budget, on the leader,
//! never a stale read. A read that waited and still went to the leader is a
//! *wasted wait*, counted per strategy ([`MetricsSnapshot::waits_by_strategy`]).
//!
//! # Which follower
//!
//! When several followers may serve a read (every follower in rotation for
//! a stale-ok read; every one known to have replayed the token for a fresh
//! read under `causal` and `hybrid`, and the first to reach it after a
//! wait), the router draws two of them at random and takes the one with
//! fewer reads in flight ([`FollowerChoice::Load`], [`decide::Load`]). Lag
//! does not matter once a follower has the data, so followers that all
//! have it share the work, and a slow or loaded one, whose reads stay in
//! flight longer, gets less. A read counts as in flight from its routing
//! until its [`Decision`] is dropped ([`Router::query`] and
//! [`Router::read_on`] let go once it answered), so a front that runs the
//! read on its own connections ([`Router::front_read`]) only has to drop
//! the [`FrontRead`] (or finish it) when the read is done. [`FollowerChoice::LeastLagged`] is the
//! old choice, kept to measure against.
//!
//! The sticky window ([`RouterConfig::sticky_window`]) decides only for a
//! write whose position is unknown: one recorded by the .NET + Redis demo
//! as `user:{id}:last_write_utc`, which the [`RedisStore`] reads beside its
//! own keys ([`seed`]). For such a session the demo's guarantee holds (fresh
//! while lag stays under the window), strictly when
//! [`RouterConfig::max_lag_time`] is under the window. [`Router::read_on`] does the same for a
//! closure that runs several statements. For an axum service, the
//! `ryw-axum` crate adds the session extractor and the response headers.
//!
//! # Layout
//!
//! | file | what |
//! | --- | --- |
//! | `lsn.rs` | [`Lsn`]: a WAL position, parsed from `X/Y`, ordered, lag arithmetic |
//! | `timeline.rs` | [`Position`] (an LSN and its timeline), [`TimelineHistory`]: what a position means after a failover |
//! | `token.rs` | [`Token`], [`TokenKey`]: HMAC-signed `v2.<timeline><lsn>.<mac>` header values (rule 4) |
//! | `strategy.rs` | [`Strategy`] (`leader`, `legacy`, `sticky`, `causal`, `hybrid`, `per-read-check`), [`Freshness`], [`FollowerChoice`] |
//! | `scope.rs` | [`Scope`] (`connection`, `session`, `global`, `cluster`): whose writes a fresh read must see |
//! | `options.rs` | [`ReadOptions`] (`causal:50ms`), [`parse_duration`] |
//! | `config.rs` | [`RouterConfig`] with the documented defaults, [`NodeUrls`] |
//! | `clock.rs` | [`Clock`]: injectable wall clock for the sticky window and TTLs |
//! | `view.rs` | [`ClusterView`], [`ObservedNode`]: what the tracker publishes; [`NodeId`], a node's place in it |
//! | `tracker/` | background polling of every node (`mod.rs`) and the pure bookkeeping of positions, lag, each follower's pace and rotation (`state.rs`; rules 3 and 8) |
//! | `feed/` | the shared position feed ([`FeedConfig`]): a Redis lease, one instance polls and publishes each round (`message.rs`; sharded pub/sub on a Redis Cluster), the others apply it and poll only while it is quiet (`gate.rs`) |
//! | `decide.rs` | [`decide()`]: the routing decision as a pure function (rules 2, 4, 5), and which follower by load ([`decide::Load`]) |
//! | `predict.rs` | [`predict::forecast`]: when a follower is expected at a token, the pure function behind `hybrid`'s choice to wait |
//! | `store/` | [`SessionStore`] (the one trait), [`MemoryStore`], [`RedisStore`] (one Redis or a Redis Cluster, failing per [`StorePart`]); the .NET + Redis demo's `user:{id}:last_write_utc` key (`seed.rs`) |
//! | `redis_conn.rs` | the Redis the store and the feed share: `redis://` or `redis+cluster://` ([`CLUSTER_SCHEME`]), one connection type for both, a key's hash slot |
//! | `router/` | [`Router`]: the read protocol (`query.rs`), the write protocol (`write.rs`), the lower level they are built on (`route.rs` plans a read, `request.rs` holds what is asked and answered, `judge.rs` a session's positions against the timeline history and the token a read leaves, `feedback.rs`), the fronts' typed reads and writes (`front.rs`), and the reads in flight per node (`load.rs`) |
//! | `reader.rs` | [`ReadConn`]: shared, pipelining read connections per node, checked against restarts (rule 2) |
//! | `pg.rs` | [`connection_lost`], position queries, error text |
//! | `tls.rs` | [`tls::NodeTls`]: a node URL's `sslmode`/`sslrootcert` (libpq's meaning) as a rustls configuration, for every connection to a node |
//! | `metrics.rs` | [`MetricsSnapshot`]: counters with no backend dependency |
//! | `error.rs` | [`Error`], the crate's one error type |
//!
//! The crate knows nothing of HTTP, files or environment variables: a service
//! builds a [`RouterConfig`], verifies client tokens with [`TokenKey`], and
//! turns [`Decision`]s into headers.
//!
//! # Rules index
//!
//! Each rule of `docs/architecture.md#correctness-rules`, the code that enforces it, and a test that fails
//! without it (`tests/cluster/` runs against a real primary and streaming
//! followers; the service's tests in `crates/ryw-service/tests/`).
//!
//! | rule | enforced by | fails without it |
//! | --- | --- | --- |
//! | 1. a write's token is read after `COMMIT` returned | [`WriteTx::commit`], [`Router::write_query`] → `Router::record_write` | `commit_lsn::a_follower_at_the_write_token_shows_the_write_but_not_at_an_lsn_read_inside_the_transaction` |
//! | 2. a follower serves a fresh read only if its position, seen before the read, covers the token | [`decide()`] on the tracker's published view; the epoch check in `Router::route`; [`ReadConn`]'s start-time check | `pairs::fresh_reads_right_after_a_write_are_stale_only_under_legacy` |
//! | 3. a follower's position is forgotten when its connection breaks or it restarts | `tracker/state.rs` (`forget_follower`, start-time change; positions from the shared feed go through the same `TrackerState::apply`, see `feed/`); [`Router::report_error`] with [`connection_lost`]; [`Router::report_stall`] | `restart::a_follower_restarted_behind_a_session_token_never_serves_that_session_stale`; `lost::a_terminated_read_forgets_the_follower_and_is_served_elsewhere_but_a_cancelled_one_does_not` |
//! | 4. tokens are signed; a token never makes a read wait past its budget | [`TokenKey::verify`]; `decide::is_absurd`; the bounded wait in `Router::route` (its budget in [`Choice::Wait`]: `causal_wait`, or `hybrid_wait` and only when [`predict::forecast`] expects a follower within it) | `tokens::forged_tokens_are_refused_and_far_future_tokens_never_wait_past_the_budget`; `hybrid::hybrid_pays_then_reads_never_stale_mostly_on_followers_and_a_stopped_follower_costs_at_most_the_budget`; unit `a_follower_whose_lag_jumps_past_the_prediction_costs_the_budget_then_no_more_waits` |
//! | 5. store down → fresh reads on the leader | `SessionState::Unknown` in `Router::route`; the store guard's grace, per [`StorePart`] (a Redis Cluster's shard) | `store_outage::with_redis_down_fresh_reads_go_to_the_leader_and_follower_reads_resume_after_the_grace`; `redis_cluster::a_killed_redis_master_sends_only_its_sessions_to_the_leader_until_its_replica_serves_never_stale`; unit `a_failed_shard_distrusts_only_its_own_sessions_and_the_whole_store_distrusts_all` |
//! | 6. writes only on the leader; a write that did not commit leaves nothing | [`Router::begin`] (the leader's pool); [`WriteTx`] rolls back when dropped; `commit` refuses a failed transaction | `protocol::a_dropped_or_failed_transaction_leaves_nothing_and_reports_not_committed`; service `twelve_concurrent_identical_clicks_charge_exactly_once` |
//! | 7. monotonic reads | [`Router::query`] selects the node's position in the read and [`Router::raise_token`] keeps it | `monotonic::a_session_never_reads_an_older_version_across_followers_and_instances` |
//! | 8. a down or lagging follower leaves rotation; reads do not fail | `tracker/state.rs` (rotation by lag time and bytes); the retry in [`Router::query`] | `kill::reads_survive_a_killed_follower_which_leaves_rotation_and_returns_after_restart`, `cut::a_follower_whose_replication_is_cut_leaves_rotation_and_returns_when_repaired` |

#![warn(missing_docs)]

mod clock;
mod config;
pub mod decide;
mod error;
mod feed;
mod lsn;
mod metrics;
mod options;
mod pg;
pub mod predict;
mod reader;
mod redis_conn;
mod router;
mod scope;
mod store;
mod strategy;
mod timeline;
pub mod tls;
mod token;
mod tracker;
mod view;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{FORMER_LEADER_NAME, LEADER_NAME, NodeUrls, RouterConfig};
pub use decide::{Choice, Now, Reason, SessionState, decide};
pub use error::{Error, Result};
pub use feed::FeedConfig;
pub use lsn::Lsn;
pub use metrics::{MetricSlot, MetricsSnapshot, ReadCount, ScopeReads, StrategyWaits};
pub use options::{MAX_READ_OPTION, ReadOptions, parse_duration};
pub use pg::connection_lost;
pub use predict::Forecast;
pub use reader::ReadConn;
pub use redis_conn::CLUSTER_SCHEME;
pub use router::{
    ColumnIndex, Committed, Decision, Finished, FrontRead, FrontWrite, LocalSession,
    PLAUSIBLE_AHEAD, Read, ReadRequest, Router, Row, SessionRef, Target, Unsettled, WriteTx,
    Writer, Written,
};
pub use scope::Scope;
pub use store::seed;
pub use store::{
    MAX_SESSION_KEY, MemoryStore, RedisStore, RedisStoreConfig, SessionKey, SessionRecord,
    SessionStore, StoreFuture, StoreHealth, StorePart,
};
pub use strategy::{FollowerChoice, Freshness, Strategy};
pub use timeline::{Position, Switch, TimelineHistory, Verdict};
pub use token::{MIN_KEY_BYTES, Token, TokenError, TokenKey};
pub use view::{ClusterView, FollowerHealth, NodeId, ObservedNode, Reached, Role, RoleHealth};
