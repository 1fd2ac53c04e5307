//! The check before a run: every target reachable, every strategy accepted.

use super::{H_STRATEGY, H_USER};
use crate::BenchError;
use crate::config::BenchConfig;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

/// Refuses to start when a target is unreachable or refuses a strategy
/// header (e.g. a server without `--allow-strategy-header`), so a
/// misconfigured run fails in a second with the server's own words.
pub(super) async fn preflight(
    client: &reqwest::Client,
    config: &BenchConfig,
) -> Result<(), BenchError> {
    for target in &config.targets {
        for spec in &config.strategies {
            let url = format!("{}/api/balance", target.trim_end_matches('/'));
            let resp = client
                .get(&url)
                .header(H_USER, Uuid::new_v4().to_string())
                .header(H_STRATEGY, spec.to_string())
                .send()
                .await
                .map_err(|e| BenchError::Target {
                    url: target.clone(),
                    detail: format!("cannot reach it: {e}"),
                })?;
            if resp.status() == StatusCode::BAD_REQUEST {
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                let said = |k: &str| {
                    body.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                return Err(BenchError::Target {
                    url: target.clone(),
                    detail: format!(
                        "X-Read-Strategy: {spec} got 400 {} {} {} (does it run with --allow-strategy-header?)",
                        said("type"),
                        said("title"),
                        said("detail")
                    ),
                });
            }
        }
    }
    Ok(())
}
