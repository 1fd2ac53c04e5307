//! What the bench's SQL front needs from the binary: `ryw proxy` running
//! in this process on a local cluster (as `--cluster` runs `ryw serve`
//! in-process), and the service's tables on a cluster, created by the
//! service's own migrations (the proxy creates no table).

use anyhow::Context;
use ryw_proxy::{Proxy, ProxyConfig};
use ryw_router::{MemoryStore, NodeUrls, Router, RouterConfig, TokenKey};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long the followers may take to replay the schema, and to enter a
/// new router's rotation.
const SETTLE: Duration = Duration::from_secs(20);

/// A `ryw proxy` running in this process.
#[derive(Debug)]
pub struct ProxyInProcess {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
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
    ) -> anyhow::Result<ProxyInProcess> {
        let mut nodes = cluster_nodes(dir)?;
        if let Some(names) = only {
            nodes.followers.retain(|(name, _)| names.contains(name));
        }
        let mut cfg = ProxyConfig::new(nodes, TokenKey::generate());
        cfg.listen = "127.0.0.1:0".parse()?;
        cfg.router = router;
        cfg.redis_url = redis;
        let proxy = Proxy::build(cfg).await.context("starting ryw proxy")?;
        if migrate {
            settle_schema(proxy.router()).await?;
        }
        let mut watch = proxy.router().watch_cluster();
        tokio::time::timeout(
            SETTLE,
            watch.wait_for(|v| v.followers().all(|f| f.in_rotation)),
        )
        .await
        .context("the followers did not enter the proxy's rotation within 20 s")?
        .context("the proxy's tracker stopped")?;
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
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("proxy task")??;
        Ok(())
    }
}

/// The cluster's nodes, from its `cluster.json`.
fn cluster_nodes(dir: &Path) -> anyhow::Result<NodeUrls> {
    Ok(ryw_service::ServiceConfig::nodes_from_cluster(dir)?)
}

/// The service's migrations through `router`, then every follower has
/// replayed them.
async fn settle_schema(router: &Router) -> anyhow::Result<()> {
    let lsn = ryw_service::schema::migrate(router)
        .await
        .context("creating the service's tables (its migrations)")?;
    anyhow::ensure!(
        router.wait_replayed(lsn, SETTLE).await,
        "the followers had not replayed the service's tables after 20 s"
    );
    Ok(())
}

/// Creates the service's tables on the cluster in `dir` (its migrations,
/// through a router of its own), for a SQL front that runs elsewhere.
pub async fn migrate_cluster(dir: &Path) -> anyhow::Result<()> {
    let router = Router::connect(
        RouterConfig::default(),
        cluster_nodes(dir)?,
        Arc::new(MemoryStore::default()),
    )
    .await
    .context("connecting to the cluster")?;
    let done = settle_schema(&router).await;
    router.shutdown();
    done
}
