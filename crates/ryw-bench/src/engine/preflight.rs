//! The check before a run: every target reachable, every strategy accepted
//! (HTTP), every SQL front reachable with the service's tables behind it.

use super::sql_user::describe;
use super::{H_STRATEGY, H_USER};
use crate::BenchError;
use crate::config::BenchConfig;
use crate::sql::{CHECK_SQL, SqlFront, session_key};
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

/// Refuses to start when a SQL front cannot serve the run: unreachable, no
/// `accounts` table behind it (the service's migrations create it), or,
/// for a ryw group, not ryw proxy (it must answer `SHOW ryw.served_by`,
/// which PostgreSQL itself refuses) or refusing the group's strategy.
pub(super) async fn preflight_sql(config: &BenchConfig) -> Result<(), BenchError> {
    for g in &config.sql {
        let refused = |detail: String| BenchError::Target {
            url: g.url.clone(),
            detail,
        };
        let mut cfg: tokio_postgres::Config = g
            .url
            .parse()
            .map_err(|e| refused(format!("not a libpq URL: {e}")))?;
        cfg.connect_timeout(config.request_timeout);
        let (client, conn) = cfg
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| refused(format!("cannot connect: {}", describe(&e))))?;
        let conn = tokio::spawn(conn);
        let checked = async {
            client.simple_query(CHECK_SQL).await.map_err(|e| {
                refused(format!(
                    "{CHECK_SQL:?} failed ({}); the bench pays and reads the service's tables: \
                     run `ryw serve` once on this cluster (its migrations create them), or \
                     `ryw bench --cluster DIR --proxy`, which does it",
                    describe(&e)
                ))
            })?;
            if let SqlFront::Ryw { strategy } = g.front {
                client
                    .simple_query("SHOW ryw.served_by")
                    .await
                    .map_err(|e| {
                        refused(format!(
                            "`SHOW ryw.served_by` failed ({}): is this ryw proxy? \
                             (group {:?})",
                            describe(&e),
                            g.label
                        ))
                    })?;
                // What every user's connection says, one statement at a time.
                let mut sets = vec![format!(
                    "SET ryw.session = '{}'",
                    session_key(&uuid::Uuid::new_v4())
                )];
                if let Some(s) = strategy {
                    sets.push(format!("SET ryw.strategy = '{s}'"));
                }
                for set in sets {
                    client
                        .simple_query(&set)
                        .await
                        .map_err(|e| refused(format!("{set}: {}", describe(&e))))?;
                }
            }
            Ok::<_, BenchError>(())
        }
        .await;
        drop(client);
        let _ = conn.await;
        checked?;
    }
    Ok(())
}
