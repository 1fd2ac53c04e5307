//! `ryw serve`: flags → [`ServiceConfig`] → [`Service`], until Ctrl-C/SIGTERM.

use crate::cli::ServeArgs;
use anyhow::{Context, bail};
use ryw_router::{NodeUrls, RouterConfig, Strategy, TokenKey};
use ryw_service::{Service, ServiceConfig};

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = config(&args)?;
    let service = Service::build(cfg).await?;
    let addr = service.local_addr();
    tracing::info!(%addr, "ryw serve listening; dashboard at http://{addr}/ , API docs at http://{addr}/docs");
    service.run_until_stopped(shutdown_signal()).await
}

/// Builds the service configuration from the flags.
pub fn config(args: &ServeArgs) -> anyhow::Result<ServiceConfig> {
    let nodes = match (&args.cluster, &args.leader_url) {
        (Some(dir), _) => ServiceConfig::nodes_from_cluster(dir)?,
        (None, Some(leader)) => NodeUrls {
            leader: leader.clone(),
            followers: followers(&args.follower_urls)?,
        },
        (None, None) => {
            bail!("give --cluster DIR or --leader-url URL (with --follower-url for each replica)")
        }
    };
    let token_key = match (&args.token_key, &args.token_key_file) {
        (Some(k), _) => TokenKey::from_secret(k).context("--token-key / RYW_TOKEN_KEY")?,
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            TokenKey::from_secret(text.trim())
                .with_context(|| format!("token key in {}", path.display()))?
        }
        (None, None) => {
            tracing::warn!(
                "no RYW_TOKEN_KEY: using a random token key; consistency tokens will not survive a restart \
                 and other instances will refuse them"
            );
            TokenKey::generate()
        }
    };
    let dur =
        |flag: &str, v: &str| ryw_cluster::parse_duration(v).with_context(|| format!("--{flag}"));
    let router = RouterConfig {
        default_strategy: args.strategy.parse::<Strategy>().context("--strategy")?,
        sticky_window: dur("sticky-window", &args.sticky_window)?,
        causal_wait: dur("causal-wait", &args.causal_wait)?,
        max_lag_time: dur("max-lag", &args.max_lag)?,
        max_lag_bytes: args.max_lag_bytes,
        poll_interval: dur("poll-interval", &args.poll_interval)?,
        pool_size: args.pool_size,
        read_connections: args.read_connections,
        read_timeout: dur("read-timeout", &args.read_timeout)?,
        ..RouterConfig::default()
    };
    router.validate()?;
    if args.opening_balance < 0 {
        bail!("--opening-balance must not be negative");
    }
    let mut cfg = ServiceConfig::new(nodes, token_key);
    cfg.listen = args.listen;
    cfg.redis_url = match (&args.redis_url, &args.cluster) {
        (Some(url), _) => Some(url.clone()),
        // A cluster started with `--redis` has its own: share sessions
        // through it, as several instances on that cluster must.
        (None, Some(dir)) => ryw_cluster::ClusterInfo::load(dir)?.redis.map(|r| r.url),
        (None, None) => None,
    };
    cfg.router = router;
    cfg.allow_strategy_header = args.allow_strategy_header;
    cfg.opening_balance_cents = args.opening_balance;
    cfg.request_timeout = dur("request-timeout", &args.request_timeout)?;
    cfg.front = ryw_service::front::FrontLimits {
        header_read_timeout: dur("header-read-timeout", &args.header_read_timeout)?,
        idle_timeout: dur("idle-timeout", &args.idle_timeout)?,
        max_connections: args.max_connections,
    };
    if cfg.front.header_read_timeout.is_zero() || cfg.front.idle_timeout.is_zero() {
        bail!("--header-read-timeout and --idle-timeout must be positive");
    }
    if cfg.front.max_connections == 0 {
        bail!("--max-connections must be at least 1");
    }
    cfg.cluster_dir = args.cluster.clone();
    Ok(cfg)
}

fn followers(specs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| match s.split_once('=') {
            // `name=url`, unless the `=` belongs to a key=value conninfo.
            Some((name, url)) if !name.contains(' ') && !name.contains(':') && !url.is_empty() => {
                Ok((name.to_owned(), url.to_owned()))
            }
            _ => Ok((format!("follower{}", i + 1), s.clone())),
        })
        .collect()
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// A service running in this process (for `bench --cluster` and `demo`).
#[derive(Debug)]
pub struct InProcess {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    /// Starts the service on a local cluster folder, accepting
    /// `X-Read-Strategy` (the bench picks the strategy per request).
    pub async fn start(cfg: ServiceConfig) -> anyhow::Result<InProcess> {
        let service = Service::build(cfg).await?;
        let addr = service.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(service.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Ok(InProcess { addr, stop, task })
    }

    /// Drains and stops it.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("service task")?
    }
}

/// The configuration of an in-process service on a local cluster folder.
pub fn local_config(
    dir: &std::path::Path,
    redis_url: Option<String>,
    listen: std::net::SocketAddr,
) -> anyhow::Result<ServiceConfig> {
    let nodes = ServiceConfig::nodes_from_cluster(dir)?;
    let mut cfg = ServiceConfig::new(nodes, TokenKey::generate());
    cfg.listen = listen;
    cfg.redis_url = redis_url;
    cfg.allow_strategy_header = true;
    cfg.cluster_dir = Some(dir.to_path_buf());
    Ok(cfg)
}
