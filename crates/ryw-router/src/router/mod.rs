//! [`Router`]: the one object a service holds. It owns the leader's write
//! pool, the shared read connections, the follower tracker and the session
//! store, and runs the read and write protocols that keep the correctness
//! rules (`docs/architecture.md#correctness-rules`).
//!
//! | file | what |
//! | --- | --- |
//! | `mod.rs` | [`Router`]: connect, shut down, what it knows (view, health, metrics) |
//! | `query.rs` | the read protocol, one call per read: [`Router::query`], [`Router::read_on`] (rules 2, 3, 7, 8) |
//! | `write.rs` | the write protocol: [`Router::begin`] → [`WriteTx::commit`], [`Router::write_query`] (rules 1, 6) |
//! | `route.rs` | the lower level: [`Router::route`], a node and a [`Decision`] for one read, after a bounded wait (rules 2, 4, 5) |
//! | `front.rs` | for fronts with connections of their own (a proxy): [`FrontRead`], [`FrontWrite`], the coalesced [`Router::leader_position`] |
//! | `feedback.rs` | the lower level after a read: [`Router::raise_token`] (rule 7), [`Router::report_error`], [`Router::report_stall`] (rule 3) |
//! | `load.rs` | reads in flight per node, counted while a [`Decision`] lives: what spreads reads over followers |
//! | `scoped.rs` | what a read's [`Scope`](crate::Scope) adds to its target: `global`'s fleet-wide mark (raised by every write), `cluster`'s leader position |
//! | `coalesce.rs` | one fetch for every read that began before it was sent (`global`'s mark, `cluster`'s leader position) |

mod coalesce;
mod feedback;
mod front;
mod judge;
mod load;
mod query;
mod request;
mod route;
mod scoped;
mod write;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::tls::NodeTls;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::watch;

use self::load::InFlight;
use crate::feed::{Feed, cluster_hash};
use crate::metrics::{MetricSlot, Metrics};
use crate::reader::{FollowerGuard, ReadConn, Readers};
use crate::tracker::{Limits, Shared, Tracker, TrackerState};
use crate::view::{ClusterView, NodeId};
use crate::{
    Clock, Error, FORMER_LEADER_NAME, LEADER_NAME, Lsn, MetricsSnapshot, NodeUrls, Result,
    RouterConfig, SessionKey, SessionStore, StoreHealth, StorePart, SystemClock,
};

pub use front::{Finished, FrontRead, FrontWrite, PLAUSIBLE_AHEAD, Target, Writer};
pub use query::{ColumnIndex, Read, Row};
pub use request::{Decision, LocalSession, ReadRequest, SessionRef, Unsettled};
pub use write::{Committed, WriteTx, Written};

/// Remembers when each part of the session store last failed: a session's
/// fresh reads stay on the leader until `store_recovery_grace` after its
/// part failed (rule 5), because writes made during the outage (or, on a
/// Redis failover, acknowledged just before it and never replicated) may
/// be missing from it. One Redis is one part; a Redis Cluster's shards are
/// parts of their own, so one dead shard sends only its sessions to the
/// leader.
#[derive(Debug, Default)]
struct StoreGuard {
    /// Wall-clock ms of the last failure of the whole store (or of a part
    /// not known more precisely); 0 = never failed.
    whole_ms: AtomicU64,
    /// Wall-clock ms of the last failure of any part.
    any_ms: AtomicU64,
    /// Per shard (by its lowest slot), allocated on a shard's first failure.
    shards_ms: OnceLock<Box<[AtomicU64]>>,
}

impl StoreGuard {
    fn failed(&self, part: StorePart, now_ms: u64) {
        let at = now_ms.max(1);
        self.any_ms.fetch_max(at, Ordering::Relaxed);
        match part {
            StorePart::Whole => {
                self.whole_ms.fetch_max(at, Ordering::Relaxed);
            }
            StorePart::Shard(slot) => {
                let shards = self
                    .shards_ms
                    .get_or_init(|| (0..16384).map(|_| AtomicU64::new(0)).collect());
                if let Some(s) = shards.get(usize::from(slot)) {
                    s.fetch_max(at, Ordering::Relaxed);
                } else {
                    self.whole_ms.fetch_max(at, Ordering::Relaxed);
                }
            }
        }
    }

    /// Whether a session in `part` may trust the store now: neither its
    /// part nor the whole store failed within `grace`. A session whose part
    /// is not known precisely (the whole store) trusts it only when no part
    /// failed.
    fn trusted(&self, part: StorePart, now_ms: u64, grace: Duration) -> bool {
        let ok = |last: &AtomicU64| {
            let last = last.load(Ordering::Relaxed);
            last == 0 || u128::from(now_ms.saturating_sub(last)) >= grace.as_millis()
        };
        ok(&self.whole_ms)
            && match part {
                StorePart::Whole => ok(&self.any_ms),
                StorePart::Shard(slot) => self
                    .shards_ms
                    .get()
                    .and_then(|s| s.get(usize::from(slot)))
                    .is_none_or(ok),
            }
    }

    /// Whether no part failed within `grace`.
    fn all_trusted(&self, now_ms: u64, grace: Duration) -> bool {
        self.trusted(StorePart::Whole, now_ms, grace)
    }
}

/// One node's connections: a write pool (used while it leads) and the
/// shared read connections (as the leader or as a follower).
struct NodeConns {
    /// Writes: pooled, one transaction per connection. Opened on first use.
    pool: Pool,
    /// Reads: shared, pipelining clients.
    reads: Readers,
}

/// What every clone of a [`Router`] shares.
struct Parts {
    cfg: RouterConfig,
    clock: Arc<dyn Clock>,
    store: Arc<dyn SessionStore>,
    /// Every node, indexed as the tracker indexes them: the followers in
    /// configuration order, then the node configured as the leader.
    nodes: Vec<NodeConns>,
    tracker: Tracker,
    /// The shared position feed, when configured.
    feed: Option<Feed>,
    metrics: Arc<Metrics>,
    store_guard: StoreGuard,
    /// Coalesces fronts' reads of the leader's position after a write.
    leader_fetch: front::LeaderFetch,
    /// Coalesces the fetches of `global` and `cluster` reads.
    scope_fetches: scoped::ScopeFetches,
    /// Reads in flight per node (indexed as the tracker's nodes): the load
    /// that followers able to serve a read are chosen by.
    in_flight: Arc<InFlight>,
}

/// Routes a service's queries across a leader and its followers with
/// read-your-writes consistency. Cheap to clone (one `Arc`); clones share
/// connections, tracker and counters.
///
/// Reads: [`Router::query`] (and `query_one`, `query_opt`, `read_on`).
/// Writes: [`Router::begin`] → [`WriteTx::commit`], or
/// [`Router::write_query`]. Each call keeps every rule that applies to it;
/// a front that runs statements the router cannot see, such as a protocol
/// proxy, plans each read with [`Router::front_read`] ([`FrontRead`]) and
/// records each write with [`Router::front_write`] ([`FrontWrite`]); the
/// lower-level read ([`Router::route`], [`Router::raise_token`],
/// [`Router::report_error`], [`Router::report_stall`]) is for a caller that
/// runs single statements on the router's connections.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Parts>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("cfg", &self.inner.cfg)
            .field("store", &self.inner.store.backend())
            .field("view", &self.inner.tracker.shared.view())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Builds the write pool and the read connections (opened on first
    /// use) and starts the tracker. Does not wait for any node: until the
    /// tracker has seen followers, fresh reads go to the leader.
    /// Fails only on invalid configuration or URLs. Must run inside a tokio
    /// runtime.
    pub async fn connect(
        cfg: RouterConfig,
        urls: NodeUrls,
        store: Arc<dyn SessionStore>,
    ) -> Result<Router> {
        Router::connect_with_clock(cfg, urls, store, Arc::new(SystemClock)).await
    }

    /// [`Router::connect`] with an injected wall clock (tests of the sticky
    /// window).
    pub async fn connect_with_clock(
        cfg: RouterConfig,
        urls: NodeUrls,
        store: Arc<dyn SessionStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Router> {
        cfg.validate()?;
        urls.validate()?;
        // Followers first, in configuration order, then the configured
        // leader: a follower's index is its place in `urls.followers`.
        let mut named: Vec<(Arc<str>, tokio_postgres::Config)> =
            Vec::with_capacity(urls.followers.len() + 1);
        // Each node's TLS (its URL's `sslmode`/`sslrootcert`), by index.
        let mut tls = Vec::with_capacity(urls.followers.len() + 1);
        for (name, url) in &urls.followers {
            let (pg, node_tls) = parse_url(name, url, &cfg)?;
            named.push((Arc::from(name.as_str()), pg));
            tls.push(node_tls);
        }
        let (pg, node_tls) = parse_url(LEADER_NAME, &urls.leader, &cfg)?;
        named.push((Arc::from(FORMER_LEADER_NAME), pg));
        tls.push(node_tls);
        let names: Vec<Arc<str>> = named.iter().map(|(n, _)| n.clone()).collect();
        let in_flight = InFlight::new(names.len());
        let metrics = Arc::new(Metrics::new(MetricSlot::labels(names.iter().cloned())));
        let shared = Arc::new(Shared::new(
            TrackerState::new(&names, Limits::from_config(&cfg)),
            metrics.clone(),
        ));
        let mut nodes = Vec::with_capacity(named.len());
        for (index, (_, pg)) in named.iter().enumerate() {
            let guard = FollowerGuard {
                shared: shared.clone(),
                node: NodeId::new(index),
            };
            // Named in pg_stat_activity, unless the URL names them.
            let mut pg = pg.clone();
            if pg.get_application_name().is_none() {
                pg.application_name("ryw-router");
            }
            nodes.push(NodeConns {
                pool: build_pool(pg.clone(), &tls[index], &cfg)?,
                reads: Readers::new(
                    pg.clone(),
                    tls[index].clone(),
                    cfg.read_connections,
                    cfg.connect_timeout,
                    Some(guard),
                ),
            });
        }
        let tracker_pg = |mut pg: tokio_postgres::Config| {
            if pg.get_application_name().is_none() {
                pg.application_name("ryw-tracker");
            }
            pg
        };
        let feed = match &cfg.feed {
            Some(feed_cfg) => Some(Feed::start(
                feed_cfg.clone(),
                cfg.poll_interval,
                cluster_hash(&named),
                names.clone(),
                shared.clone(),
                metrics.clone(),
            )?),
            None => None,
        };
        let tracker = Tracker::start(
            shared,
            named
                .into_iter()
                .zip(tls)
                .map(|((_, pg), tls)| (tracker_pg(pg), tls))
                .collect(),
            &cfg,
        );
        Ok(Router {
            inner: Arc::new(Parts {
                cfg,
                clock,
                store,
                nodes,
                tracker,
                feed,
                metrics,
                store_guard: StoreGuard::default(),
                leader_fetch: front::LeaderFetch::default(),
                scope_fetches: scoped::ScopeFetches::default(),
                in_flight,
            }),
        })
    }

    /// Waits, at most `limit`, until every follower has replayed `lsn` or
    /// has been polled and found down; returns whether they all had. For a
    /// schema change every read depends on (a table a follower would not
    /// have yet: "relation does not exist"), before serving.
    ///
    /// A follower merely out of rotation for lag is waited for: the change
    /// itself can push it past `max_lag_bytes`, and it returns to rotation
    /// as soon as it replays up to the change's (delayed) commit record,
    /// before the change is visible there. Only a follower that is down, or
    /// not streaming, is skipped.
    pub async fn wait_replayed(&self, lsn: Lsn, limit: Duration) -> bool {
        let mut watch = self.watch_cluster();
        let done = tokio::time::timeout(limit, async {
            loop {
                {
                    let view = watch.borrow_and_update();
                    if view
                        .followers()
                        .all(|f| f.lsn.is_some_and(|l| l >= lsn) || (f.polled && !f.healthy))
                    {
                        return;
                    }
                }
                if watch.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        done.is_ok()
    }

    /// What the tracker knows of every node now.
    pub fn cluster_view(&self) -> ClusterView {
        (*self.inner.tracker.shared.view()).clone()
    }

    /// A receiver of every view the tracker publishes (for a dashboard's
    /// live updates).
    pub fn watch_cluster(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.inner.tracker.shared.subscribe()
    }

    /// Whether fresh reads may rely on the session store: degraded while it
    /// fails and for `store_recovery_grace` after (rule 5).
    pub fn store_health(&self) -> StoreHealth {
        let inner = &self.inner;
        match inner.store.health() {
            StoreHealth::Ok
                if !inner
                    .store_guard
                    .all_trusted(inner.clock.now_ms(), inner.cfg.store_recovery_grace) =>
            {
                StoreHealth::Degraded(
                    "recovering: fresh reads of the sessions it failed stay on the leader"
                        .to_owned(),
                )
            }
            health => health,
        }
    }

    /// `"memory"` or `"redis"`.
    pub fn store_backend(&self) -> &'static str {
        self.inner.store.backend()
    }

    /// Reads in flight now on each node, by the name it has in
    /// [`ClusterView::nodes`] (the node configured as the leader is
    /// `former-leader` there): what this router spreads follower reads by.
    /// A read counts from its routing until its [`Decision`] is dropped.
    pub fn reads_in_flight(&self) -> Vec<(Arc<str>, u32)> {
        let view = self.inner.tracker.shared.view();
        view.nodes
            .iter()
            .map(|n| n.name.clone())
            .zip(self.inner.in_flight.snapshot())
            .collect()
    }

    /// All counters now.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    /// The configuration in force.
    pub fn config(&self) -> &RouterConfig {
        &self.inner.cfg
    }

    /// Stops the tracker and closes the pool and the read connections:
    /// connections already handed out finish their work; new requests fail.
    pub fn shutdown(&self) {
        let inner = &self.inner;
        if let Some(feed) = &inner.feed {
            feed.abort();
        }
        inner.tracker.shutdown();
        for node in &inner.nodes {
            node.pool.close();
            node.reads.close();
        }
    }

    /// [`Router::shutdown`], after giving back the position feed's lease
    /// if this instance holds it (at most the feed's Redis timeout), so
    /// another instance takes over at once instead of after the lease's
    /// ttl.
    pub async fn stop(&self) {
        if let Some(feed) = &self.inner.feed {
            feed.stop().await;
        }
        self.shutdown();
    }

    /// Rule 5: a store call for `session` failed, so fresh reads of the
    /// sessions in its part of the store go to the leader until the grace
    /// period after it answers again.
    fn store_failed(&self, session: &SessionKey, now_ms: u64, error: &Error) {
        let part = self.inner.store.part(session);
        self.inner.metrics.add_store_error();
        self.inner.store_guard.failed(part, now_ms);
        tracing::debug!(error = %error, %part, "session store call failed");
    }

    /// The node that leads now, for a write or a read on the leader. While
    /// none is known yet (the tracker's first polls), waits for one at most
    /// `connect_timeout`; once the leader has been seen down, answers at
    /// once ([`Error::LeaderUnavailable`]): a write must not hang through a
    /// failover, and a retry with its idempotency key is safe.
    async fn leader_id(&self) -> Result<NodeId> {
        let shared = &self.inner.tracker.shared;
        let usable = |v: &ClusterView| v.leader_id.filter(|_| v.leader.healthy);
        let view = shared.view();
        if let Some(i) = usable(&view) {
            return Ok(i);
        }
        // At start, until every node has been heard of: one node's failed
        // poll says no node leads *yet*, not that the leader is down.
        if !view.leader.polled || view.nodes.iter().any(|n| !n.polled) {
            let mut watch = shared.subscribe();
            let found = tokio::time::timeout(self.inner.cfg.connect_timeout, async {
                loop {
                    if let Some(i) = usable(&watch.borrow_and_update()) {
                        return Some(i);
                    }
                    if watch.changed().await.is_err() {
                        return None;
                    }
                }
            })
            .await;
            if let Ok(Some(i)) = found {
                return Ok(i);
            }
        }
        let view = shared.view();
        Err(Error::LeaderUnavailable(
            match (view.leader_node(), &view.leader.note) {
                (Some(node), Some(why)) => format!("the leader ({node}) is down: {why}"),
                (_, Some(why)) => format!("no node is the leader: {why}"),
                _ => "no node is the leader".to_owned(),
            },
        ))
    }

    /// A connection of the leader's write pool.
    async fn leader_conn(&self) -> Result<Object> {
        let id = self.leader_id().await?;
        self.inner.nodes[id.index()]
            .pool
            .get()
            .await
            .map_err(|source| Error::Pool {
                node: LEADER_NAME.to_owned(),
                source,
            })
    }

    /// A shared read connection to the leader.
    async fn leader_read_conn(&self) -> Result<ReadConn> {
        let id = self.leader_id().await?;
        self.inner.nodes[id.index()]
            .reads
            .get()
            .await
            .map_err(|reason| Error::Connect {
                node: LEADER_NAME.to_owned(),
                reason,
            })
    }

    /// A shared read connection to follower `id`. With `epoch`, refuses it if
    /// the tracker forgot the follower since the decision was taken (rule 2:
    /// the position that made it eligible must still stand). On a
    /// connection failure the follower is forgotten (rule 3, in
    /// [`Readers`]). `Err` means "use the leader".
    async fn follower_conn(&self, id: NodeId, epoch: Option<u64>) -> Result<ReadConn, ()> {
        let shared = &self.inner.tracker.shared;
        let conn = self.inner.nodes[id.index()]
            .reads
            .get()
            .await
            .map_err(|_| ())?;
        if epoch.is_some_and(|e| shared.view().node(id).is_none_or(|n| n.epoch != e)) {
            return Err(());
        }
        Ok(conn)
    }
}

/// A node URL: its connection settings, and its TLS (`sslmode` and
/// `sslrootcert` as libpq reads them: [`crate::tls`]).
fn parse_url(
    name: &str,
    url: &str,
    cfg: &RouterConfig,
) -> Result<(tokio_postgres::Config, NodeTls)> {
    let tls_error = |source| Error::Tls {
        node: name.to_owned(),
        source,
    };
    let (rest, mode, root) = crate::tls::take_tls_params(url).map_err(tls_error)?;
    let mut pg: tokio_postgres::Config = rest.parse().map_err(|source| Error::Url {
        node: name.to_owned(),
        source,
    })?;
    let tls = NodeTls::from_params(mode.as_deref(), root.as_deref()).map_err(tls_error)?;
    tls.configure(&mut pg);
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(cfg.connect_timeout);
    }
    Ok((pg, tls))
}

/// The leader's pool, for writes (a transaction needs a connection of its
/// own).
fn build_pool(pg: tokio_postgres::Config, tls: &NodeTls, cfg: &RouterConfig) -> Result<Pool> {
    let manager = Manager::from_config(
        pg,
        tls.make_connect(),
        ManagerConfig {
            // `is_closed()` only: validating with a query on every checkout
            // would add a round trip to every write.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(cfg.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(cfg.pool_timeout))
        .create_timeout(Some(cfg.connect_timeout))
        .recycle_timeout(Some(cfg.pool_timeout))
        .build()
        .map_err(|e| Error::Config(format!("pool: {e}")))
}
