//! What every proxy test shares: a real cluster, `ryw proxy` in this
//! process on a free port, clients of its own through it and straight to
//! the nodes, and a table of one row per session.
//!
//! A read is judged by what the test can check itself: the value it wrote,
//! and the server that answered (`inet_server_port()`, the database's own
//! word), never by the proxy's `SHOW ryw.served_by`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ryw_cluster::harness::{TestCluster, TestClusterOptions};
use ryw_proxy::{Proxy, ProxyConfig};
use ryw_router::{NodeUrls, RouterConfig, TokenKey};
use tokio_postgres::{Client, NoTls};

/// The tests' table: `k` a session, `v` the last value it wrote.
pub const SCHEMA: &str = "CREATE TABLE kv (k text PRIMARY KEY, v bigint NOT NULL)";
pub const UPSERT: &str =
    "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v";
/// The value (0 when the row is not there) and the port of the server
/// that ran the statement.
pub const SELECT: &str = "SELECT coalesce((SELECT v FROM kv WHERE k = $1), 0), inet_server_port()";

/// A proxy running in this test, on a real cluster.
pub struct Running {
    pub addr: SocketAddr,
    /// The proxy's router (its view of the nodes).
    pub router: ryw_router::Router,
    /// The admin endpoint, when the setup asked for one.
    pub admin: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops the proxy and waits until it has.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A cluster, a proxy on it, the table created and replayed everywhere.
pub struct Ctx {
    pub cluster: TestCluster,
    pub proxy: Running,
    pub key: TokenKey,
    ports: Arc<HashMap<i32, String>>,
}

/// How a test wants its proxy.
#[derive(Clone, Debug)]
pub struct Setup {
    pub lags: Vec<Duration>,
    pub redis: bool,
    pub router: RouterConfig,
    pub auth_file: Option<std::path::PathBuf>,
    /// Serve the admin endpoint on a free port.
    pub admin: bool,
    /// `ProxyConfig::threads`.
    pub threads: usize,
    /// `ProxyConfig::pool_mode` and `pool_size`.
    pub pool_mode: ryw_proxy::PoolMode,
    pub pool_size: usize,
    /// `ProxyConfig::max_clients`.
    pub max_clients: usize,
    /// Clients' TLS: `ProxyConfig::tls_mode`, `tls_cert`, `tls_key`.
    pub tls: Option<(ryw_proxy::TlsMode, std::path::PathBuf, std::path::PathBuf)>,
    /// Appended to every node URL the proxy gets (`sslmode=…&sslrootcert=…`).
    pub node_params: Option<String>,
    /// `ProxyConfig::login_timeout`, when not the default.
    pub login_timeout: Option<Duration>,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup {
            lags: vec![Duration::from_millis(100), Duration::from_millis(400)],
            redis: false,
            router: RouterConfig::default(),
            auth_file: None,
            admin: false,
            threads: 0,
            pool_mode: ryw_proxy::PoolMode::Session,
            pool_size: 20,
            max_clients: 1000,
            tls: None,
            node_params: None,
            login_timeout: None,
        }
    }
}

impl Ctx {
    pub async fn start(setup: Setup) -> Ctx {
        let cluster = TestCluster::start_with(TestClusterOptions {
            lags: setup.lags.clone(),
            redis: setup.redis,
        })
        .await;
        Ctx::start_on(cluster, setup).await
    }

    /// [`Ctx::start`] on a cluster the test started (and set up) itself.
    pub async fn start_on(cluster: TestCluster, setup: Setup) -> Ctx {
        let key = TokenKey::generate();
        let admin = direct(&cluster.leader_url()).await;
        admin.batch_execute(SCHEMA).await.expect("create table");
        let lsn: String = admin
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .unwrap()
            .get(0);
        for (name, url) in cluster.follower_urls() {
            let f = direct(&url).await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let replay: Option<String> = f
                    .query_one("SELECT pg_last_wal_replay_lsn()::text", &[])
                    .await
                    .unwrap()
                    .get(0);
                let done = replay
                    .and_then(|r| r.parse::<ryw_router::Lsn>().ok())
                    .is_some_and(|r| r >= lsn.parse().unwrap());
                if done {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{name} never replayed the table"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let proxy = start_proxy(&cluster, &setup, key.clone()).await;
        let ports = Arc::new(
            cluster
                .info()
                .nodes
                .iter()
                .map(|n| (i32::from(n.port), n.name.clone()))
                .collect(),
        );
        Ctx {
            cluster,
            proxy,
            key,
            ports,
        }
    }

    /// A client of the proxy (the nodes' user and database).
    pub async fn client(&self) -> Client {
        connect_to(self.proxy.addr, "").await
    }

    /// A client of the proxy whose connection is bound to `session`
    /// (startup option `-c ryw.session=…`).
    pub async fn client_in(&self, session: &str) -> Client {
        connect_to(self.proxy.addr, &format!("-c ryw.session={session}")).await
    }

    /// The proxy's router.
    pub fn proxy_router(&self) -> &ryw_router::Router {
        &self.proxy.router
    }

    /// Node names by port, to move into tasks.
    pub fn node_names(&self) -> Nodes {
        Nodes(self.ports.clone())
    }
}

/// Server names by port.
#[derive(Clone, Debug)]
pub struct Nodes(Arc<HashMap<i32, String>>);

impl Nodes {
    /// The node name behind a port.
    pub fn name(&self, port: Option<i32>) -> String {
        port.and_then(|p| self.0.get(&p).cloned())
            .unwrap_or_else(|| format!("unknown server (port {port:?})"))
    }
}

/// Starts a proxy on `cluster` on a free port (a second instance shares
/// the cluster's Redis when the setup has one).
pub async fn start_proxy(cluster: &TestCluster, setup: &Setup, key: TokenKey) -> Running {
    let with_params = |url: String| match &setup.node_params {
        Some(p) => format!("{url}{}{p}", if url.contains('?') { '&' } else { '?' }),
        None => url,
    };
    let nodes = NodeUrls {
        leader: with_params(cluster.leader_url()),
        followers: cluster
            .follower_urls()
            .into_iter()
            .map(|(n, u)| (n, with_params(u)))
            .collect(),
    };
    let mut cfg = ProxyConfig::new(nodes, key);
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    cfg.router = setup.router.clone();
    cfg.auth_file = setup.auth_file.clone();
    cfg.threads = setup.threads;
    cfg.pool_mode = setup.pool_mode;
    cfg.pool_size = setup.pool_size;
    cfg.max_clients = setup.max_clients;
    if let Some((mode, cert, key)) = &setup.tls {
        cfg.tls_mode = *mode;
        cfg.tls_cert = Some(cert.clone());
        cfg.tls_key = Some(key.clone());
    }
    if let Some(t) = setup.login_timeout {
        cfg.login_timeout = t;
    }
    if setup.admin {
        cfg.admin_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    if setup.redis {
        cfg.redis_url = Some(cluster.redis_url().expect("a cluster with Redis"));
    }
    let proxy = Proxy::build(cfg).await.expect("proxy");
    let addr = proxy.local_addr();
    let router = proxy.router().clone();
    let admin = proxy.admin_addr();
    // Until the tracker has seen the followers, reads go to the leader:
    // wait for them, so tests measure routing, not start-up.
    let mut watch = proxy.router().watch_cluster();
    tokio::time::timeout(
        Duration::from_secs(10),
        watch.wait_for(|v| v.followers().all(|f| f.in_rotation)),
    )
    .await
    .expect("followers in rotation")
    .expect("tracker running");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = proxy
            .run_until_stopped(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Running {
        addr,
        admin,
        router,
        stop: Some(stop),
        task: Some(task),
    }
}

/// A tokio-postgres client through the proxy at `addr`.
pub async fn connect_to(addr: SocketAddr, options: &str) -> Client {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(addr.ip().to_string())
        .port(addr.port())
        .user("postgres")
        .dbname(ryw_cluster::DATABASE)
        .connect_timeout(Duration::from_secs(5));
    if !options.is_empty() {
        cfg.options(options);
    }
    let (client, conn) = cfg
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect through the proxy at {addr}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A client straight to a node, bypassing the proxy.
pub async fn direct(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Reads `row`'s value through `client`: (value, server port).
pub async fn read(client: &Client, row: &str) -> (i64, Option<i32>) {
    let r = client.query_one(SELECT, &[&row]).await.expect("read");
    (r.get(0), r.get(1))
}

/// Writes `v` as `row`'s value through `client` (autocommit).
pub async fn write(client: &Client, row: &str, v: i64) {
    client.execute(UPSERT, &[&row, &v]).await.expect("write");
}
