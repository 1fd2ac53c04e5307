//! What every real-cluster test shares: a cluster with a router on it, a
//! table of one row per session, and helpers that write a value and read it
//! back.
//!
//! A read is judged by what the test can check itself: the value it wrote,
//! and the server that answered (`inet_server_port()`, the database's own
//! word). Never by `Decision::node`, which is the router's claim.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ryw_cluster::harness::{TestCluster, TestClusterOptions};
use ryw_router::{
    ClusterView, Decision, Freshness, Lsn, MemoryStore, NodeUrls, ReadOptions, ReadRequest,
    RedisStore, RedisStoreConfig, Router, RouterConfig, SessionKey, SessionStore, Strategy,
};
use tokio::time::Instant;

/// Every test's one table: `k` is the session, `v` the last value it wrote.
const SCHEMA: &str = "CREATE TABLE kv (k text PRIMARY KEY, v bigint NOT NULL)";
const UPSERT: &str =
    "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v";
/// The value (0 when the row is not there yet) and the port of the server
/// that ran the statement.
pub const SELECT: &str = "SELECT coalesce((SELECT v FROM kv WHERE k = $1), 0), inet_server_port()";

/// The session store a test's router uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Redis,
}

/// A running cluster, a router on it and the names of its servers by port.
pub struct Ctx {
    pub cluster: TestCluster,
    pub router: Router,
    pub store: Arc<dyn SessionStore>,
    pub nodes: Nodes,
}

impl Ctx {
    /// A cluster with one follower per entry of `lags` (and a private Redis
    /// for [`StoreKind::Redis`]), a router with `cfg`, the table created and
    /// replayed on every follower, every follower in rotation.
    pub async fn start(lags: &[Duration], cfg: RouterConfig, store: StoreKind) -> Ctx {
        let started = Instant::now();
        let cluster = TestCluster::start_with(TestClusterOptions {
            lags: lags.to_vec(),
            redis: store == StoreKind::Redis,
        })
        .await;
        let store: Arc<dyn SessionStore> = match store {
            StoreKind::Memory => Arc::new(MemoryStore::default()),
            StoreKind::Redis => {
                let url = cluster
                    .redis_url()
                    .expect("the cluster was started with Redis");
                Arc::new(
                    RedisStore::connect(RedisStoreConfig::new(url))
                        .await
                        .expect("redis store"),
                )
            }
        };
        let all: Vec<String> = cluster
            .follower_urls()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let router = router_for(&cluster, &all, cfg, store.clone()).await;
        let nodes = Nodes::of(&cluster);
        let setup = SessionKey::new("setup").unwrap();
        let tx = router.begin(&setup).await.expect("begin on the leader");
        tx.batch_execute(SCHEMA).await.expect("create table");
        let lsn = tx.commit().await.expect("commit").token.lsn;
        wait_view(&router, "every follower replays the table", secs(20), |v| {
            v.followers()
                .all(|f| f.in_rotation && f.lsn.is_some_and(|l| l >= lsn))
        })
        .await;
        eprintln!("cluster and router ready in {:?}", started.elapsed());
        Ctx {
            cluster,
            router,
            store,
            nodes,
        }
    }
}

/// A router on `cluster` that knows only the followers named in `followers`
/// (a second service instance, sharing `store`, sees them too).
pub async fn router_for(
    cluster: &TestCluster,
    followers: &[&str],
    cfg: RouterConfig,
    store: Arc<dyn SessionStore>,
) -> Router {
    let urls = NodeUrls {
        leader: cluster.leader_url(),
        followers: cluster
            .follower_urls()
            .into_iter()
            .filter(|(n, _)| followers.contains(&n.as_str()))
            .collect(),
    };
    assert_eq!(
        urls.followers.len(),
        followers.len(),
        "unknown follower name"
    );
    Router::connect(cfg, urls, store).await.expect("router")
}

/// Server names by port, from the cluster's own description.
#[derive(Clone, Debug)]
pub struct Nodes(Arc<HashMap<i32, String>>);

impl Nodes {
    pub fn of(cluster: &TestCluster) -> Nodes {
        Nodes(Arc::new(
            cluster
                .info()
                .nodes
                .iter()
                .map(|n| (i32::from(n.port), n.name.clone()))
                .collect(),
        ))
    }

    pub fn name(&self, port: Option<i32>) -> String {
        port.and_then(|p| self.0.get(&p).cloned())
            .unwrap_or_else(|| format!("unknown server (port {port:?})"))
    }
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

pub fn session(name: impl AsRef<str>) -> SessionKey {
    SessionKey::new(name).expect("session key")
}

/// Read options for one strategy, nothing else overridden.
pub fn with(strategy: Strategy) -> ReadOptions {
    ReadOptions::strategy(strategy)
}

/// Writes `v` as `s`'s value in a leader transaction; the router records the
/// write after COMMIT returned (rule 1). Returns the token's position.
pub async fn write(router: &Router, s: &SessionKey, v: i64) -> Lsn {
    let tx = router.begin(s).await.expect("begin on the leader");
    tx.execute(UPSERT, &[&s.as_str(), &v])
        .await
        .expect("upsert");
    tx.commit().await.expect("commit").token.lsn
}

/// One read as the test saw it.
#[derive(Debug)]
pub struct Read {
    /// The session's value on the server that answered.
    pub v: i64,
    /// That server's name, from its port.
    pub node: String,
    /// From asking the router to the row arriving.
    pub elapsed: Duration,
    /// The router's account (for tokens and error reports, not for judging).
    pub decision: Decision,
}

/// Reads `s`'s value through the router's read protocol
/// ([`Router::query_one`]: routing, rule 7, time-out, retry elsewhere).
pub async fn read(
    router: &Router,
    nodes: &Nodes,
    s: &SessionKey,
    freshness: Freshness,
    opts: ReadOptions,
    client_token: Option<ryw_router::Position>,
) -> Result<Read, ryw_router::Error> {
    read_row(router, nodes, s, s.as_str(), freshness, opts, client_token).await
}

/// As session `s`, reads the value of row `row` (another session's).
pub async fn read_row(
    router: &Router,
    nodes: &Nodes,
    s: &SessionKey,
    row: &str,
    freshness: Freshness,
    opts: ReadOptions,
    client_token: Option<ryw_router::Position>,
) -> Result<Read, ryw_router::Error> {
    let started = Instant::now();
    let req = ReadRequest {
        session: ryw_router::SessionRef::Shared(s),
        freshness,
        options: opts,
        client_token,
        scope: None,
    };
    let read = router.query_one(&req, SELECT, &[&row]).await?;
    Ok(Read {
        v: read.value.get(0),
        node: nodes.name(read.value.get(1)),
        elapsed: started.elapsed(),
        decision: read.decision,
    })
}

/// Counts of a batch of reads.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub reads: usize,
    /// Reads that returned less than the session had written (or seen).
    pub stale: usize,
    pub errors: Vec<String>,
    /// Reads per server that answered.
    pub by_node: BTreeMap<String, usize>,
}

impl Tally {
    /// Counts `r`; stale if it shows less than `expected`.
    pub fn add(&mut self, r: &Read, expected: i64) {
        self.reads += 1;
        if r.v < expected {
            self.stale += 1;
        }
        *self.by_node.entry(r.node.clone()).or_default() += 1;
    }

    pub fn error(&mut self, e: impl std::fmt::Display) {
        self.errors.push(e.to_string());
    }

    pub fn merge(&mut self, other: Tally) {
        self.reads += other.reads;
        self.stale += other.stale;
        self.errors.extend(other.errors);
        for (node, n) in other.by_node {
            *self.by_node.entry(node).or_default() += n;
        }
    }

    pub fn on(&self, node: &str) -> usize {
        self.by_node.get(node).copied().unwrap_or(0)
    }

    pub fn off_leader(&self) -> usize {
        self.reads - self.on("leader")
    }
}

/// Waits until `pred` holds for a published view; panics after `limit`
/// with the last view. Returns how long it took.
pub async fn wait_view(
    router: &Router,
    what: &str,
    limit: Duration,
    pred: impl Fn(&ClusterView) -> bool,
) -> Duration {
    let started = Instant::now();
    let deadline = started + limit;
    let mut rx = router.watch_cluster();
    loop {
        let ok = pred(&rx.borrow_and_update());
        if ok {
            return started.elapsed();
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("{what}: the tracker stopped publishing"),
            Err(_) => panic!(
                "{what}: not within {limit:?}; last view: {:#?}",
                router.cluster_view()
            ),
        }
    }
}

/// A connection of the test's own to one server, bypassing the router.
pub async fn direct(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// `s`'s value as `client`'s server has it (0 when the row is missing).
pub async fn value_on(client: &tokio_postgres::Client, s: &SessionKey) -> i64 {
    client
        .query_one(SELECT, &[&s.as_str()])
        .await
        .expect("select")
        .get(0)
}

/// `pg_last_wal_replay_lsn()` of a follower, in a statement of its own.
pub async fn replay_lsn(client: &tokio_postgres::Client) -> Lsn {
    let row = client
        .query_one("SELECT pg_last_wal_replay_lsn()::text", &[])
        .await
        .expect("replay lsn");
    row.get::<_, String>(0).parse().expect("an lsn")
}

/// The URL of the follower called `name`.
pub fn follower_url(cluster: &TestCluster, name: &str) -> String {
    cluster
        .follower_urls()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, url)| url)
        .unwrap_or_else(|| panic!("no follower {name}"))
}

/// Runs a blocking harness call (stop, kill) without stalling the runtime.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}
