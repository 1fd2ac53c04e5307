//! [`Service`]: build (connect, migrate, bind), then run until a shutdown
//! future resolves. The binary and the tests both use it.

use crate::app::app;
use crate::config::ServiceConfig;
use crate::schema;
use crate::state::AppState;
use anyhow::Context;
use ryw_router::{MemoryStore, RedisStore, RedisStoreConfig, Router, SessionStore};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

/// The error of a leader that cannot be reached at start, said once: the
/// node's address and the innermost cause ("connection refused"), not the
/// pool's and the driver's wrappers of it, each repeating the next.
fn unreachable(url: &str, e: &ryw_router::Error) -> anyhow::Error {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    anyhow::anyhow!("cannot connect to the leader at {}: {cause}", address(url))
}

/// No node leads at start: the configured leader's address and why the
/// tracker could not use it, said once, and how many other candidates
/// were tried.
fn no_leader(cfg: &ServiceConfig, router: &Router) -> anyhow::Error {
    let view = router.cluster_view();
    let why = view
        .named(ryw_router::FORMER_LEADER_NAME)
        .and_then(|n| n.note.clone())
        .map(|note| note.trim_start_matches("connect: ").to_owned())
        .unwrap_or_else(|| "it is not the leader".to_owned());
    let others = match cfg.nodes.followers.len() {
        0 => String::new(),
        1 => " (and the other node does not lead either)".to_owned(),
        n => format!(" (and none of the {n} other nodes leads)"),
    };
    anyhow::anyhow!(
        "cannot connect to the leader at {}: {why}{others}",
        address(&cfg.nodes.leader)
    )
}

/// `host:port` of a libpq URL or key=value string, as far as it says.
fn address(url: &str) -> String {
    // `sslmode=verify-full` and `sslrootcert` are not tokio-postgres's.
    let Some(pg) = ryw_router::tls::take_tls_params(url)
        .ok()
        .and_then(|(rest, _, _)| rest.parse::<tokio_postgres::Config>().ok())
    else {
        return "(unparsable url)".to_owned();
    };
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// A connected, migrated service bound to its port.
#[derive(Debug)]
pub struct Service {
    state: AppState,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl Service {
    /// Connects the router (and the session store), applies migrations on the
    /// leader and binds the listener.
    pub async fn build(cfg: ServiceConfig) -> anyhow::Result<Service> {
        let store: Arc<dyn SessionStore> = match &cfg.redis_url {
            Some(url) => Arc::new(
                RedisStore::connect(RedisStoreConfig::new(url.clone()))
                    .await
                    .with_context(|| format!("connecting to Redis at {url}"))?,
            ),
            None => Arc::new(MemoryStore::default()),
        };
        let router = Router::connect(cfg.router.clone(), cfg.nodes.clone(), store)
            .await
            .context("starting the router")?;
        let schema_lsn = schema::migrate(&router).await.map_err(|e| {
            match e.downcast_ref::<ryw_router::Error>() {
                Some(re @ (ryw_router::Error::Pool { .. } | ryw_router::Error::Connect { .. })) => {
                    unreachable(&cfg.nodes.leader, re)
                }
                Some(ryw_router::Error::LeaderUnavailable(_)) => no_leader(&cfg, &router),

                _ => e,
            }
        })?;
        // Followers that have not replayed the migrations yet would answer
        // "relation does not exist". (Remaining gap: a follower down now
        // that returns within its replay delay could serve a read before
        // replaying them.)
        let limit = std::time::Duration::from_secs(10);
        if !router.wait_replayed(schema_lsn, limit).await {
            tracing::warn!(%schema_lsn, "followers had not replayed the schema after {limit:?}; serving anyway");
        }
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("binding {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        Ok(Service {
            state: AppState::new(router, cfg),
            listener,
            addr,
        })
    }

    /// Where it listens (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (tests use it for in-process requests).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests (for
    /// at most the request time limit) and stops the router's background
    /// tasks.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state.clone();
        let limits = state.cfg.front;
        let drain = state.cfg.request_timeout;
        crate::front::serve(self.listener, app(self.state), limits, drain, shutdown).await;
        state.router.stop().await;
        Ok(())
    }
}
