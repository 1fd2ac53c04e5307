//! The followers' lag while the bench runs, from the service's own
//! `GET /api/cluster` (the report's lag table and, without configured
//! delays, the oracle's delay come from these samples).

use super::{RunState, stopped};
use crate::history::LagSample;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::watch;

/// Samples `GET /api/cluster` on the first target until stopped.
pub(super) async fn sample_cluster(
    sh: Arc<RunState>,
    stop: watch::Receiver<bool>,
) -> Vec<LagSample> {
    let mut samples = Vec::new();
    let url = format!("{}/api/cluster", sh.config.targets[0].trim_end_matches('/'));
    let mut tick = tokio::time::interval(sh.config.cluster_sample_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let sampling = async {
        loop {
            tick.tick().await;
            let t_us = sh.now_us();
            let Ok(resp) = sh.client.get(&url).send().await else {
                continue;
            };
            let Ok(body) = resp.json::<Value>().await else {
                continue;
            };
            let nodes = body
                .get("nodes")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for n in nodes
                .iter()
                .filter(|n| n.get("role").and_then(Value::as_str) == Some("follower"))
            {
                samples.push(LagSample {
                    t_us,
                    node: n
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string(),
                    lag_ms: n.get("lag_ms").and_then(Value::as_f64),
                    lag_bytes: n.get("lag_bytes").and_then(Value::as_u64),
                    in_rotation: n.get("in_rotation").and_then(Value::as_bool),
                });
            }
        }
    };
    tokio::select! {
        _ = sampling => {}
        _ = stopped(stop) => {}
    }
    samples
}
