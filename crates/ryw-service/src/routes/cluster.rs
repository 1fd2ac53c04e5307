//! `GET /api/cluster` (what the router knows of every node, and the session
//! store's health) and `POST /api/cluster/lag` (the dashboard's lag control,
//! only when serving a local cluster).

use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

/// One node as the router's tracker last saw it.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeBody {
    /// `leader`, a follower's name, or `former-leader` (the node configured
    /// as the leader, once another leads).
    pub name: String,
    /// The node's configured name (the leader's too: `follower1` after it
    /// was promoted).
    pub node: String,
    /// `leader` or `follower`.
    pub role: &'static str,
    /// Its timeline: a leader's current one, a follower's last received
    /// (null while unknown).
    pub timeline: Option<u32>,
    /// Leader: current WAL position; follower: replay position (null when unknown).
    pub lsn: Option<String>,
    /// WAL bytes behind the leader (followers).
    pub lag_bytes: Option<u64>,
    /// Time behind the leader, measured in-process (followers).
    pub lag_ms: Option<u64>,
    /// Reachable, and for a follower streaming.
    pub healthy: bool,
    /// May serve reads now.
    pub in_rotation: bool,
    /// Why not, when not.
    pub note: Option<String>,
    /// Follower: how long after the leader reaches a position the router
    /// sees this follower at it (the longest of its last 8 catch-ups), what
    /// `hybrid` predicts from; null until seen.
    pub catch_up_ms: Option<u64>,
    /// Follower of a local cluster (`--cluster`): its configured replay
    /// delay (`recovery_min_apply_delay`, as `ryw cluster lag` and
    /// `POST /api/cluster/lag` last set it); null otherwise.
    pub delay_ms: Option<u64>,
}

/// The session store's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoreBody {
    /// `memory` or `redis`.
    pub kind: &'static str,
    /// False while degraded (fresh reads then go to the leader).
    pub healthy: bool,
    /// Why degraded.
    pub detail: Option<String>,
}

/// `GET /api/cluster`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterBody {
    /// The server's default strategy.
    pub strategy: String,
    /// Whether `X-Read-Strategy` is accepted.
    pub strategy_header: bool,
    /// Whether `POST /api/cluster/lag` works (local cluster).
    pub lag_control: bool,
    /// The server's sticky window in ms (`--sticky-window`): under `sticky`
    /// (and `hybrid`, for a session with no position) a user who wrote this
    /// recently reads from the leader. The dashboard shows it.
    pub sticky_window_ms: u64,
    /// The server's causal wait budget in ms (`--causal-wait`).
    pub causal_wait_ms: u64,
    /// The server's hybrid wait budget in ms (`--hybrid-wait`): `hybrid`
    /// waits this long at most, and only for a follower predicted to catch
    /// up within it.
    pub hybrid_wait_ms: u64,
    /// The leader's timeline: 1 until the first failover, one more at each
    /// (0 while no leader is known).
    pub timeline: u32,
    /// Leader first.
    pub nodes: Vec<NodeBody>,
    /// Session store health.
    pub session_store: StoreBody,
}

/// Every node's role, position, lag and rotation; the session store's health.
#[utoipa::path(get, path = "/api/cluster", tag = "ops", operation_id = "cluster",
    responses((status = 200, description = "every node as the tracker last saw it", body = ClusterBody)))]
pub async fn show(State(state): State<AppState>) -> Json<ClusterBody> {
    let view = state.router.cluster_view();
    let delays = configured_delays(state.cfg.cluster_dir.clone()).await;
    // The configured name behind each published one.
    let configured = |n: &ryw_router::ObservedNode| -> String {
        if std::ptr::eq(n, &view.leader) {
            view.leader_node()
                .unwrap_or(ryw_router::LEADER_NAME)
                .to_owned()
        } else if &*n.name == ryw_router::FORMER_LEADER_NAME {
            ryw_router::LEADER_NAME.to_owned()
        } else {
            n.name.to_string()
        }
    };
    let nodes = view
        .listed()
        .map(|n| NodeBody {
            name: n.name.to_string(),
            node: configured(n),
            role: n.role().as_str(),
            timeline: n.timeline,
            lsn: n.lsn.map(|l| l.to_string()),
            lag_bytes: n.follower().and_then(|f| f.lag_bytes),
            lag_ms: n.follower().and_then(|f| f.lag_ms),
            healthy: n.healthy,
            in_rotation: n.in_rotation,
            note: n.note.clone(),
            catch_up_ms: n
                .follower()
                .and_then(|f| f.catch_up)
                .map(|d| d.as_millis() as u64),
            delay_ms: delays
                .iter()
                .find(|(name, _)| *name == configured(n))
                .and_then(|(_, d)| *d),
        })
        .collect();
    let health = state.router.store_health();
    let body = ClusterBody {
        strategy: state.cfg.router.default_strategy.to_string(),
        strategy_header: state.cfg.allow_strategy_header,
        lag_control: state.cfg.lag_control && state.cfg.cluster_dir.is_some(),
        sticky_window_ms: state.cfg.router.sticky_window.as_millis() as u64,
        causal_wait_ms: state.cfg.router.causal_wait.as_millis() as u64,
        hybrid_wait_ms: state.cfg.router.hybrid_wait.as_millis() as u64,
        timeline: view.history.current,
        nodes,
        session_store: StoreBody {
            kind: state.router.store_backend(),
            healthy: health.is_ok(),
            detail: match health {
                ryw_router::StoreHealth::Ok => None,
                ryw_router::StoreHealth::Degraded(why) => Some(why),
            },
        },
    };
    Json(body)
}

/// Each node's configured replay delay, from the local cluster's
/// `cluster.json` (empty without `--cluster`, or when it cannot be read: the
/// delays are for the dashboard's inputs, nothing depends on them).
async fn configured_delays(dir: Option<std::path::PathBuf>) -> Vec<(String, Option<u64>)> {
    let Some(dir) = dir else {
        return Vec::new();
    };
    let read = tokio::task::spawn_blocking(move || ryw_cluster::ClusterInfo::load(&dir)).await;
    match read {
        Ok(Ok(info)) => info
            .nodes
            .into_iter()
            .map(|n| (n.name, n.delay_ms))
            .collect(),
        _ => Vec::new(),
    }
}

/// Body of `POST /api/cluster/lag`.
#[derive(Debug, ToSchema)]
pub struct LagRequest {
    /// A follower of this cluster (`follower1`, …).
    pub follower: String,
    /// The new replay delay in ms, 0..=60000.
    #[schema(maximum = 60_000)]
    pub delay_ms: u64,
}

/// Answer of `POST /api/cluster/lag`.
#[derive(Debug, ToSchema)]
pub struct LagBody {
    /// The follower changed.
    pub follower: String,
    /// Its replay delay now, in ms.
    pub delay_ms: u64,
}

/// Changes a local follower's replay delay: `{"follower": "follower1", "delay_ms": 800}`.
#[utoipa::path(post, path = "/api/cluster/lag", tag = "ops", operation_id = "set_lag",
    request_body(content = LagRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "changed", body = LagBody),
        (status = 400, description = "the body is not valid JSON (malformed-json)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "lag control is off: the service does not run on a local cluster, or without --allow-lag-control (not-available)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "the body is larger than 64 KiB (body-too-large)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "the body is not application/json (unsupported-media-type)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "no such follower (or a node that is not one), or delay_ms not an integer in 0..=60000 (invalid-field)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn set_lag(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(dir) = state
        .cfg
        .cluster_dir
        .as_ref()
        .filter(|_| state.cfg.lag_control)
    else {
        return Err(ApiError::NotAvailable(
            "lag control changes replication, so it is off unless the service runs on a local \
             cluster (--cluster DIR) with --allow-lag-control"
                .into(),
        ));
    };
    let follower = body
        .get("follower")
        .and_then(|v| v.as_str())
        .ok_or_else(|| ApiError::InvalidField {
            field: "follower",
            detail: "follower must be a follower's name, e.g. follower1".into(),
        })?;
    let delay_ms = body
        .get("delay_ms")
        .and_then(crate::domain::whole_number)
        .and_then(|d| u64::try_from(d).ok())
        .filter(|&d| d <= 60_000)
        .ok_or_else(|| ApiError::InvalidField {
            field: "delay_ms",
            detail: "delay_ms must be an integer in 0..=60000".into(),
        })?;
    let node = ryw_cluster::set_lag(dir, follower, std::time::Duration::from_millis(delay_ms))
        .await
        .map_err(|e| match e {
            ryw_cluster::ClusterError::NoSuchReplica(_)
            | ryw_cluster::ClusterError::NotAFollower { .. } => ApiError::InvalidField {
                field: "follower",
                detail: e.to_string(),
            },
            other => ApiError::Internal(other.into()),
        })?;
    tracing::info!(follower = %node.name, delay_ms, "changed replay delay");
    let body = serde_json::json!({"follower": node.name, "delay_ms": delay_ms});
    Ok(Json(body))
}
