//! [`ServiceConfig`]: everything `ryw serve` needs, typed. The binary builds
//! it from flags and `RYW_*` variables; tests build it directly.

use ryw_router::{NodeUrls, RouterConfig, TokenKey};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Opening balance of new accounts, in cents (`--opening-balance`).
pub const DEFAULT_OPENING_BALANCE_CENTS: i64 = 100_000;
/// Longest a request may take before it is answered 503 (`--request-timeout`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the service listens, which nodes it routes to, and how.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Listen address; port 0 picks a free port (tests read it back).
    pub listen: SocketAddr,
    /// The leader and the followers.
    pub nodes: NodeUrls,
    /// Redis URL for the shared session store; `None` = in-memory (one instance).
    pub redis_url: Option<String>,
    /// Routing: default strategy, sticky window, causal budget, lag limits.
    pub router: RouterConfig,
    /// Accept `X-Read-Strategy` per request (dashboard, bench).
    pub allow_strategy_header: bool,
    /// HMAC key of consistency tokens; share it between instances.
    pub token_key: TokenKey,
    /// Opening balance of new accounts, in cents.
    pub opening_balance_cents: i64,
    /// Longest a request may take before it is answered 503.
    pub request_timeout: Duration,
    /// Largest accepted request body.
    pub body_limit: usize,
    /// The HTTP front's limits against slow and idle clients: header read
    /// timeout, idle timeout, connection cap.
    pub front: crate::front::FrontLimits,
    /// The local cluster folder when serving one (`--cluster`).
    pub cluster_dir: Option<PathBuf>,
    /// Whether `POST /api/cluster/lag` may change a follower's replay
    /// delay (it changes the replication of `cluster_dir`'s cluster): off
    /// unless asked for (`--allow-lag-control`; `ryw demo` turns it on).
    pub lag_control: bool,
}

impl ServiceConfig {
    /// A configuration with the documented defaults for these nodes.
    pub fn new(nodes: NodeUrls, token_key: TokenKey) -> ServiceConfig {
        ServiceConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            nodes,
            redis_url: None,
            router: RouterConfig::default(),
            allow_strategy_header: false,
            token_key,
            opening_balance_cents: DEFAULT_OPENING_BALANCE_CENTS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            body_limit: crate::BODY_LIMIT,
            front: crate::front::FrontLimits::default(),
            cluster_dir: None,
            lag_control: false,
        }
    }

    /// Every node of a `ryw cluster up` folder: the node named `leader` as
    /// the configured leader, whatever it is now (the router finds the one
    /// that leads: after `ryw cluster failover` another does), and every
    /// other node, failed ones included, as a follower by its name (a node
    /// that is down leaves no rotation; one rejoined serves reads again).
    pub fn nodes_from_cluster(
        dir: &std::path::Path,
    ) -> Result<NodeUrls, ryw_cluster::ClusterError> {
        let info = ryw_cluster::ClusterInfo::load(dir)?;
        let configured = info
            .nodes
            .iter()
            .find(|n| n.name == ryw_router::LEADER_NAME)
            .unwrap_or_else(|| info.leader());
        Ok(NodeUrls {
            leader: configured.url.clone(),
            followers: info
                .nodes
                .iter()
                .filter(|n| n.name != configured.name)
                .map(|n| (n.name.clone(), n.url.clone()))
                .collect(),
        })
    }
}
