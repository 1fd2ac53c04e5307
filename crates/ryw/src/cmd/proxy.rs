//! `ryw proxy`: flags → [`ProxyConfig`] → [`Proxy`], until Ctrl-C/SIGTERM.

use super::shared::{feed_config, node_urls, redis_url, router_config, shutdown_signal, token_key};
use crate::cli::ProxyArgs;
use ryw_proxy::{Proxy, ProxyConfig};

pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let proxy = Proxy::build(config(&args)?).await?;
    let addr = proxy.local_addr();
    if let Some(admin) = proxy.admin_addr() {
        tracing::info!(%admin, "admin endpoint: http://{admin}/metrics and /readyz");
    }
    tracing::info!(%addr, "ryw proxy listening; connect with psql -h {} -p {} and the nodes' user and database", addr.ip(), addr.port());
    proxy.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}

/// Builds the proxy configuration from the flags.
pub fn config(args: &ProxyArgs) -> anyhow::Result<ProxyConfig> {
    let mut cfg = ProxyConfig::new(node_urls(&args.nodes)?, token_key(&args.token)?);
    cfg.listen = args.listen;
    cfg.redis_url = redis_url(&args.nodes)?;
    // The router's own write pool (positions) has its own size
    // (ryw_proxy::POSITION_CONNECTIONS); --pool-size sizes the pools of
    // server connections.
    cfg.router = router_config(
        &args.routing,
        ryw_proxy::POSITION_CONNECTIONS,
        ryw_proxy::DEFAULT_SCOPE,
    )?;
    cfg.router.feed = feed_config(&args.routing, cfg.redis_url.as_deref());
    cfg.auth_file = args.auth_file.clone();
    cfg.max_clients = args.max_clients.max(1);
    cfg.max_pending_logins = args.max_pending_logins.max(1);
    cfg.login_timeout = args.login_timeout.0;
    cfg.client_memory_limit = args.client_memory_limit;
    cfg.connect_timeout = args.connect_timeout.0;
    cfg.admin_listen = args.admin_listen;
    cfg.threads = args.threads;
    cfg.pool_mode = args.pool_mode;
    cfg.pool_size = args.pool_size.max(1);
    cfg.pool_timeout = args.pool_timeout.0;
    cfg.server_idle_timeout = args.server_idle_timeout.0;
    cfg.server_lifetime = args.server_lifetime.0;
    cfg.tls_cert = args.tls_cert.clone();
    cfg.tls_key = args.tls_key.clone();
    cfg.tls_mode = args
        .tls_mode
        .unwrap_or_else(|| ryw_proxy::TlsMode::default_for(args.tls_cert.is_some()));
    Ok(cfg)
}
