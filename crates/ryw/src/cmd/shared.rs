//! What `ryw serve` and `ryw proxy` share: the nodes, the routing
//! configuration, the token key and the shutdown signal, from their common
//! flags.

use crate::cli::{NodeArgs, RoutingArgs, TokenArgs};
use anyhow::{Context, bail};
use ryw_router::{NodeUrls, RouterConfig, TokenKey};

/// The nodes, from `--cluster` or `--leader-url`/`--follower-url`.
pub fn node_urls(args: &NodeArgs) -> anyhow::Result<NodeUrls> {
    match (&args.cluster, &args.leader_url) {
        (Some(dir), _) => {
            let info = ryw_cluster::ClusterInfo::load(dir)?;
            Ok(NodeUrls {
                leader: info.leader().url.clone(),
                followers: info
                    .followers()
                    .map(|n| (n.name.clone(), n.url.clone()))
                    .collect(),
            })
        }
        (None, Some(leader)) => Ok(NodeUrls {
            leader: leader.clone(),
            followers: followers(&args.follower_urls),
        }),
        (None, None) => {
            bail!("give --cluster DIR or --leader-url URL (with --follower-url for each replica)")
        }
    }
}

/// The session store's Redis: `--redis-url`, else the cluster's own.
pub fn redis_url(args: &NodeArgs) -> anyhow::Result<Option<String>> {
    Ok(match (&args.redis_url, &args.cluster) {
        (Some(url), _) => Some(url.clone()),
        // A cluster started with `--redis` has its own: share sessions
        // through it, as several instances on that cluster must.
        (None, Some(dir)) => ryw_cluster::ClusterInfo::load(dir)?.redis.map(|r| r.url),
        (None, None) => None,
    })
}

/// The router's configuration from the routing flags.
pub fn router_config(args: &RoutingArgs) -> anyhow::Result<RouterConfig> {
    let cfg = RouterConfig {
        default_strategy: args.strategy,
        sticky_window: args.sticky_window.0,
        causal_wait: args.causal_wait.0,
        hybrid_wait: args.hybrid_wait.0,
        max_lag_time: args.max_lag.0,
        max_lag_bytes: args.max_lag_bytes,
        poll_interval: args.poll_interval.0,
        pool_size: args.pool_size,
        read_connections: args.read_connections,
        read_timeout: args.read_timeout.0,
        ..RouterConfig::default()
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The token key from `--token-key`, `--token-key-file`, or a random one
/// (said in the log: tokens then do not survive a restart).
pub fn token_key(args: &TokenArgs) -> anyhow::Result<TokenKey> {
    Ok(match (&args.token_key, &args.token_key_file) {
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
    })
}

/// `NAME=URL` or `URL` (named followerN).
fn followers(specs: &[String]) -> Vec<(String, String)> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| match s.split_once('=') {
            // `name=url`, unless the `=` belongs to a key=value conninfo.
            Some((name, url)) if !name.contains(' ') && !name.contains(':') && !url.is_empty() => {
                (name.to_owned(), url.to_owned())
            }
            _ => (format!("follower{}", i + 1), s.clone()),
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
