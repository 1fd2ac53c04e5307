//! What `ryw serve` and `ryw proxy` share: the nodes, the routing
//! configuration, the token key and the shutdown signal, from their common
//! flags.

use crate::cli::{NodeArgs, RoutingArgs, TokenArgs};
use anyhow::{Context, bail};
use ryw_router::{FeedConfig, NodeUrls, RouterConfig, Scope, TokenKey};

/// The nodes, from `--cluster` or `--leader-url`/`--follower-url`.
pub fn node_urls(args: &NodeArgs) -> anyhow::Result<NodeUrls> {
    match (&args.cluster, args.leader_url.split_first()) {
        (Some(dir), _) => Ok(ryw_service::ServiceConfig::nodes_from_cluster(dir)?),
        (None, Some((leader, candidates))) => {
            let mut followers = followers(&args.follower_urls);
            // Other leader candidates: nodes too (a follower's URL once).
            for (i, spec) in candidates.iter().enumerate() {
                let (name, url) = named(spec, || format!("candidate{}", i + 2));
                if !followers.iter().any(|(_, u)| *u == url) {
                    followers.push((name, url));
                }
            }
            Ok(NodeUrls {
                leader: named(leader, || ryw_router::LEADER_NAME.to_owned()).1,
                followers,
            })
        }
        (None, None) => {
            bail!("give --cluster DIR or --leader-url URL (with --follower-url for each replica)")
        }
    }
}

/// The session store's Redis: `--redis-url`, else the cluster's own.
pub fn redis_url(args: &NodeArgs) -> anyhow::Result<Option<String>> {
    Ok(match (&args.redis_url, &args.cluster) {
        (Some(url), _) => Some(url.clone()),
        // A cluster started with `--redis` (or `--redis-cluster N`) has its
        // own: share sessions through it, as several instances on that
        // cluster must.
        (None, Some(dir)) => ryw_cluster::ClusterInfo::load(dir)?.redis_url(),
        (None, None) => None,
    })
}

/// The position feed: on with a Redis unless `--feed off` / `--no-feed`.
pub fn feed_config(args: &RoutingArgs, redis_url: Option<&str>) -> Option<FeedConfig> {
    let on = args.feed == "on" && !args.no_feed;
    redis_url.filter(|_| on).map(FeedConfig::new)
}

/// The router's configuration from the routing flags.
/// `pool_size`: the leader's write pool (`ryw serve --pool-size`; the
/// proxy's router needs only its default); `scope`: the command's default
/// scope, when `--scope` is not given.
pub fn router_config(
    args: &RoutingArgs,
    pool_size: usize,
    scope: Scope,
) -> anyhow::Result<RouterConfig> {
    let cfg = RouterConfig {
        default_strategy: args.strategy,
        default_scope: args.scope.unwrap_or(scope),
        sticky_window: args.sticky_window.0,
        causal_wait: args.causal_wait.0,
        hybrid_wait: args.hybrid_wait.0,
        max_lag_time: args.max_lag.0,
        max_lag_bytes: args.max_lag_bytes,
        poll_interval: args.poll_interval.0,
        pool_size,
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
        .map(|(i, s)| named(s, || format!("follower{}", i + 1)))
        .collect()
}

/// `NAME=URL`, or `URL` named by `default`. A `key=value` connection
/// string (`host=db1 user=app`) is a URL: its first key is a libpq keyword.
fn named(spec: &str, default: impl FnOnce() -> String) -> (String, String) {
    match spec.split_once('=') {
        Some((name, url))
            if !name.contains(' ')
                && !name.contains(':')
                && !url.is_empty()
                && !LIBPQ_KEYWORDS.contains(&name.trim()) =>
        {
            (name.to_owned(), url.to_owned())
        }
        _ => (default(), spec.to_owned()),
    }
}

/// The keywords a libpq `key=value` connection string starts with.
const LIBPQ_KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslmode",
    "requiressl",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "krbsrvname",
    "gsslib",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
];

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn nodes(args: &[&str]) -> NodeUrls {
        let cli = Cli::try_parse_from(
            ["ryw", "proxy"]
                .iter()
                .chain(args)
                .copied()
                .collect::<Vec<_>>(),
        )
        .unwrap();
        match cli.command {
            crate::cli::Command::Proxy(p) => node_urls(&p.nodes).unwrap(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn leader_candidates_are_nodes_and_a_follower_listed_twice_is_one() {
        let n = nodes(&[
            "--leader-url",
            "postgres://db1/app,postgres://db2/app,spare=postgres://db3/app",
            "--follower-url",
            "postgres://db2/app",
        ]);
        assert_eq!(n.leader, "postgres://db1/app");
        assert_eq!(
            n.followers,
            [
                ("follower1".to_owned(), "postgres://db2/app".to_owned()),
                ("spare".to_owned(), "postgres://db3/app".to_owned()),
            ]
        );
        n.validate().unwrap();
        let one = nodes(&[
            "--leader-url",
            "host=db1 user=app",
            "--follower-url",
            "f1=host=db2 user=app",
        ]);
        assert_eq!(one.leader, "host=db1 user=app");
        assert_eq!(
            one.followers,
            [("f1".to_owned(), "host=db2 user=app".to_owned())]
        );
    }
}
