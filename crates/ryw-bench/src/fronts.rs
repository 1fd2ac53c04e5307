//! The fronts the bench measures, run inside the bench's own process on a
//! `ryw cluster` folder: `ryw serve` ([`ServiceInProcess`], for `ryw bench
//! --cluster`, `ryw demo` and calibrate) and `ryw proxy`
//! ([`ProxyInProcess`], for the SQL front, the peers and the overhead
//! run); and the service's tables on a cluster ([`migrate_cluster`]),
//! created by the service's own migrations for a proxy (which creates no
//! table).

use crate::BenchError;
use ryw_proxy::{Proxy, ProxyConfig};
use ryw_router::{MemoryStore, NodeUrls, Router, RouterConfig, TokenKey};
use ryw_service::{Service, ServiceConfig};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long the followers may take to replay the schema, and to enter a
/// new router's rotation.
const SETTLE: Duration = Duration::from_secs(20);

fn front(front: &'static str) -> impl FnOnce(String) -> BenchError {
    move |detail| BenchError::Front { front, detail }
}

/// The configuration of a `ryw serve` on a local cluster folder, accepting
/// `X-Read-Strategy` (the bench picks the strategy per request), with a
/// random token key.
pub fn local_service_config(
    dir: &Path,
    redis_url: Option<String>,
    listen: SocketAddr,
) -> Result<ServiceConfig, BenchError> {
    let nodes = ServiceConfig::nodes_from_cluster(dir)?;
    let mut cfg = ServiceConfig::new(nodes, TokenKey::generate());
    cfg.listen = listen;
    cfg.redis_url = redis_url;
    cfg.allow_strategy_header = true;
    cfg.cluster_dir = Some(dir.to_path_buf());
    Ok(cfg)
}

/// A `ryw serve` running in this process.
#[derive(Debug)]
pub struct ServiceInProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl ServiceInProcess {
    /// Builds the service from `cfg` (see [`local_service_config`]) and
    /// serves it on the current runtime until stopped.
    pub async fn start(cfg: ServiceConfig) -> Result<ServiceInProcess, BenchError> {
        let service = Service::build(cfg)
            .await
            .map_err(|e| front("ryw serve")(format!("{e:#}")))?;
        let addr = service.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(service.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Ok(ServiceInProcess { addr, stop, task })
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drains and stops it.
    pub async fn stop(self) -> Result<(), BenchError> {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(front("ryw serve")(format!("{e:#}"))),
            Err(e) => Err(front("ryw serve")(format!("service task: {e}"))),
        }
    }
}

/// A `ryw proxy` running in this process.
#[derive(Debug)]
pub struct ProxyInProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ryw_proxy::ProxyError>>,
}

impl ProxyInProcess {
    /// Starts `ryw proxy` on the cluster in `dir` (on a free port), with
    /// the cluster's nodes (only the followers named in `only`, when
    /// given), `router`'s routing and the session store at `redis`. With
    /// `migrate`, applies the service's migrations through its router.
    /// Returns once every follower is in rotation (and has the schema).
    pub async fn start(
        dir: &Path,
        only: Option<&[String]>,
        router: RouterConfig,
        redis: Option<String>,
        migrate: bool,
    ) -> Result<ProxyInProcess, BenchError> {
        Self::start_pooled(
            dir,
            only,
            router,
            redis,
            migrate,
            ryw_proxy::PoolMode::Session,
            20,
        )
        .await
    }

    /// [`ProxyInProcess::start`] in pool mode `pool_mode`, with pools of
    /// `pool_size` server connections (transaction pooling).
    pub async fn start_pooled(
        dir: &Path,
        only: Option<&[String]>,
        router: RouterConfig,
        redis: Option<String>,
        migrate: bool,
        pool_mode: ryw_proxy::PoolMode,
        pool_size: usize,
    ) -> Result<ProxyInProcess, BenchError> {
        let mut nodes = ServiceConfig::nodes_from_cluster(dir)?;
        if let Some(names) = only {
            nodes.followers.retain(|(name, _)| names.contains(name));
        }
        let mut cfg = ProxyConfig::new(nodes, TokenKey::generate());
        cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        cfg.router = router;
        cfg.redis_url = redis;
        cfg.pool_mode = pool_mode;
        cfg.pool_size = pool_size;
        let proxy = Proxy::build(cfg)
            .await
            .map_err(|e| front("starting ryw proxy")(e.to_string()))?;
        if migrate {
            settle_schema(proxy.router()).await?;
        }
        let mut watch = proxy.router().watch_cluster();
        let entered = tokio::time::timeout(
            SETTLE,
            watch.wait_for(|v| v.followers().all(|f| f.in_rotation)),
        )
        .await;
        match entered {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err(front("ryw proxy")("the proxy's tracker stopped".into())),
            Err(_) => {
                return Err(front("ryw proxy")(
                    "the followers did not enter the proxy's rotation within 20 s".into(),
                ));
            }
        }
        let addr = proxy.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(proxy.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Ok(ProxyInProcess { addr, stop, task })
    }

    /// libpq URL of the cluster's database through it.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.addr.port(),
            ryw_cluster::DATABASE
        )
    }

    /// Stops it and waits until it has.
    pub async fn stop(self) -> Result<(), BenchError> {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(front("ryw proxy")(e.to_string())),
            Err(e) => Err(front("ryw proxy")(format!("proxy task: {e}"))),
        }
    }
}

/// The service's migrations through `router`, then every follower has
/// replayed them.
async fn settle_schema(router: &Router) -> Result<(), BenchError> {
    let lsn = ryw_service::schema::migrate(router)
        .await
        .map_err(|e| front("creating the service's tables (its migrations)")(format!("{e:#}")))?;
    if !router.wait_replayed(lsn, SETTLE).await {
        return Err(front("the service's tables")(
            "the followers had not replayed them after 20 s".into(),
        ));
    }
    Ok(())
}

/// Creates the service's tables on the cluster in `dir` (its migrations,
/// through a router of its own), for a SQL front that runs elsewhere.
pub async fn migrate_cluster(dir: &Path) -> Result<(), BenchError> {
    let nodes: NodeUrls = ServiceConfig::nodes_from_cluster(dir)?;
    let router = Router::connect(
        RouterConfig::default(),
        nodes,
        Arc::new(MemoryStore::default()),
    )
    .await
    .map_err(|e| front("connecting to the cluster")(e.to_string()))?;
    let done = settle_schema(&router).await;
    router.shutdown();
    done
}

/// The cluster's own Redis URL (from `ryw cluster up --redis`).
pub fn cluster_redis(dir: &Path) -> Result<String, BenchError> {
    let info = ryw_cluster::ClusterInfo::load(dir)?;
    info.redis_url().ok_or_else(|| {
        BenchError::config(
            "--redis",
            "this cluster has no Redis (`ryw cluster up --redis` or `--redis-cluster 3`)",
        )
    })
}

/// Which SQL front `ryw bench --proxy` measures.
#[derive(Debug, Clone)]
pub enum SqlFrontAt {
    /// A proxy already running at this URL (on the cluster in the folder,
    /// when given: the service's tables are created there first).
    Running {
        /// Its libpq URL.
        url: String,
        /// The cluster folder behind it.
        cluster: Option<std::path::PathBuf>,
    },
    /// `ryw proxy` started in this process on this cluster folder, with
    /// this session store.
    InProcess {
        /// The cluster folder.
        cluster: std::path::PathBuf,
        /// The session store's Redis, or in memory.
        redis_url: Option<String>,
    },
}

/// The bench's workload through a SQL front: `cfg` with a group per
/// strategy and read mode (`ryw_bench::SqlGroup::ryw`) on the front's URL,
/// run until done or `stop`; an in-process proxy is stopped after.
pub async fn bench_sql_front(
    at: SqlFrontAt,
    strategies: &[crate::StrategySpec],
    read_on: &[crate::ReadOn],
    cfg: crate::BenchConfig,
    stop: impl Future<Output = ()>,
) -> Result<crate::BenchReport, BenchError> {
    let (url, proxy) = match at {
        SqlFrontAt::Running { url, cluster } => {
            if let Some(dir) = cluster {
                migrate_cluster(&dir).await?;
            }
            (url, None)
        }
        SqlFrontAt::InProcess { cluster, redis_url } => {
            let p = ProxyInProcess::start(&cluster, None, RouterConfig::default(), redis_url, true)
                .await?;
            eprintln!("ryw proxy in this process: {}", p.url());
            (p.url(), Some(p))
        }
    };
    let cfg = crate::BenchConfig {
        sql: crate::SqlGroup::ryw(&url, "", strategies, read_on),
        ..cfg
    };
    let report = crate::run(cfg, stop).await;
    if let Some(p) = proxy {
        p.stop().await?;
    }
    report
}
