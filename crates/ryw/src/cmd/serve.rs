//! `ryw serve`: flags → [`ServiceConfig`] → [`Service`], until Ctrl-C/SIGTERM.

use super::shared::{feed_config, node_urls, redis_url, router_config, shutdown_signal, token_key};
use crate::cli::ServeArgs;
use anyhow::bail;
use ryw_router::Scope;
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
    let mut cfg = ServiceConfig::new(node_urls(&args.nodes)?, token_key(&args.token)?);
    cfg.listen = args.listen;
    cfg.redis_url = redis_url(&args.nodes)?;
    cfg.router = router_config(&args.routing, args.pool_size, Scope::Session)?;
    cfg.router.feed = feed_config(&args.routing, cfg.redis_url.as_deref());
    cfg.allow_strategy_header = args.allow_strategy_header;
    if args.opening_balance < 0 {
        bail!("--opening-balance must not be negative");
    }
    cfg.opening_balance_cents = args.opening_balance;
    cfg.request_timeout = args.request_timeout.0;
    cfg.front = ryw_service::front::FrontLimits {
        header_read_timeout: args.header_read_timeout.0,
        idle_timeout: args.idle_timeout.0,
        max_connections: args.max_connections,
    };
    if cfg.front.header_read_timeout.is_zero() || cfg.front.idle_timeout.is_zero() {
        bail!("--header-read-timeout and --idle-timeout must be positive");
    }
    if cfg.front.max_connections == 0 {
        bail!("--max-connections must be at least 1");
    }
    cfg.cluster_dir = args.nodes.cluster.clone();
    cfg.lag_control = args.allow_lag_control;
    if cfg.lag_control && cfg.cluster_dir.is_none() {
        bail!("--allow-lag-control needs --cluster DIR (a local cluster ryw started)");
    }
    Ok(cfg)
}
