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

/// Followers that have not replayed the migrations yet would answer
/// "relation does not exist": wait (bounded) until every healthy follower
/// has replayed them. Only a follower that is down (or not streaming) is
/// skipped. A follower merely out of rotation for lag is waited for: the
/// migration itself can push it past `max_lag_bytes`, and it returns to
/// rotation as soon as it replays up to the (delayed) commit record — before
/// the schema is visible there (found by the fault tests).
async fn wait_for_schema_on_followers(router: &Router, lsn: ryw_router::Lsn) {
    let deadline = std::time::Duration::from_secs(10);
    let mut watch = router.watch_cluster();
    let done = tokio::time::timeout(deadline, async {
        loop {
            {
                let view = watch.borrow_and_update();
                // Done when each follower has replayed the schema, or has
                // been polled and is down. (Remaining gap: a follower down
                // now that returns within its replay delay of the migration
                // could serve a read before replaying it.)
                let polled =
                    |f: &ryw_router::NodeStatus| f.note.as_deref() != Some("not polled yet");
                if view
                    .followers
                    .iter()
                    .all(|f| f.lsn.is_some_and(|l| l >= lsn) || (polled(f) && !f.healthy))
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
    if done.is_err() {
        tracing::warn!(%lsn, "followers had not replayed the schema after {deadline:?}; serving anyway");
    }
}

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

/// `host:port` of a libpq URL or key=value string, as far as it says.
fn address(url: &str) -> String {
    let Ok(pg) = url.parse::<tokio_postgres::Config>() else {
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
        let schema_lsn = {
            let mut conn = router
                .write()
                .await
                .map_err(|e| unreachable(&cfg.nodes.leader, &e))?;
            schema::migrate(&mut conn).await?;
            let row = conn
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .await?;
            row.get::<_, String>(0).parse::<ryw_router::Lsn>()?
        };
        wait_for_schema_on_followers(&router, schema_lsn).await;
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
        state.router.shutdown();
        Ok(())
    }
}
