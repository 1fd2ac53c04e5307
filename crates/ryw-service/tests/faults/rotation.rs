//! Watching `GET /api/cluster` (what an operator sees) for a follower to
//! leave or return to rotation.

use crate::helpers::call;
use std::time::{Duration, Instant};

/// Whether `node` is in rotation now, per `GET /api/cluster`.
pub async fn in_rotation(app: &axum::Router, node: &str) -> bool {
    let r = call(app, "GET", "/api/cluster", None, &[], None).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["name"] == node)
        .unwrap_or_else(|| panic!("no node {node} in {}", r.body))["in_rotation"]
        .as_bool()
        .expect("in_rotation")
}

/// Polls `GET /api/cluster` every 10 ms until `node`'s rotation is
/// `wanted`; returns how long that took since `since`. Panics after `max`.
pub async fn wait_rotation(
    app: &axum::Router,
    node: &str,
    wanted: bool,
    since: Instant,
    max: Duration,
) -> Duration {
    loop {
        if in_rotation(app, node).await == wanted {
            return since.elapsed();
        }
        let cluster = call(app, "GET", "/api/cluster", None, &[], None).await;
        assert!(
            since.elapsed() < max,
            "{node} in_rotation never became {wanted} within {max:?}: {}",
            cluster.body
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
