//! HTTP handlers, one file per resource, and the shared read/write plumbing:
//! every `/api` response names the node that served it (`X-Served-By`) and
//! carries the session's signed token (`X-Consistency-Token`).

pub mod account;
pub mod cluster;
pub mod dashboard;
pub mod ops;
pub mod payments;
pub mod products;
pub mod profile;

use crate::error::{ApiError, is_connection_error};
use crate::extract::{Caller, ClientToken, ReadPrefs};
use crate::state::AppState;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ryw_router::{Decision, Freshness, Lsn, Strategy};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Row;
use tokio_postgres::types::PgLsn;
use tokio_postgres::types::ToSql;

/// Who served a request, for the response headers and the request log.
#[derive(Debug, Clone)]
pub struct Served {
    /// `leader` or a follower's name.
    pub node: Arc<str>,
    /// The session's position after this request.
    pub token: Option<Lsn>,
    /// The strategy applied (reads only).
    pub strategy: Option<Strategy>,
    /// Time spent waiting for a follower to catch up.
    pub waited: Duration,
}

impl Served {
    /// A write (or a read) on the leader.
    pub fn leader(token: Option<Lsn>) -> Served {
        Served {
            node: Arc::from(ryw_router::LEADER_NAME),
            token,
            strategy: None,
            waited: Duration::ZERO,
        }
    }

    /// A status answer that involved no node's data.
    pub fn none() -> Served {
        Served {
            node: Arc::from("none"),
            token: None,
            strategy: None,
            waited: Duration::ZERO,
        }
    }

    /// From a router decision.
    pub fn from_decision(d: &Decision) -> Served {
        Served {
            node: d.node.clone(),
            token: d.token,
            strategy: Some(d.strategy),
            waited: d.waited,
        }
    }
}

/// A JSON response with the consistency headers.
pub fn respond(
    state: &AppState,
    served: Served,
    status: StatusCode,
    body: impl Serialize,
) -> Response {
    with_consistency_headers(state, served, (status, axum::Json(body)).into_response())
}

/// An error answer from a read that reached a node. A fresh read that found
/// no row (404 `no-account` / `no-profile`) is still an observation made on
/// that node (under `legacy`, possibly a follower that has not replayed the
/// row's creation yet), so it names the node and carries the session's token
/// as a 200 would.
pub fn respond_error(state: &AppState, served: Served, error: ApiError) -> Response {
    with_consistency_headers(state, served, error.into_response())
}

/// Sets `X-Served-By`, `X-Consistency-Token` (and `X-Waited-Ms` for reads)
/// from `served`, and keeps `served` for the request log.
fn with_consistency_headers(state: &AppState, served: Served, mut resp: Response) -> Response {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&served.node) {
        h.insert("x-served-by", v);
    }
    let token = state.key.sign(served.token.unwrap_or(Lsn::ZERO));
    if let Ok(v) = HeaderValue::from_str(&token) {
        h.insert("x-consistency-token", v);
    }
    if served.strategy.is_some() {
        h.insert(
            "x-waited-ms",
            HeaderValue::from(served.waited.as_millis() as u64),
        );
    }
    resp.extensions_mut().insert(served);
    resp
}

/// A read statement in two halves, so that [`read_rows`] can add the
/// serving node's position to its select list: `SELECT {columns} {rest}`.
#[derive(Debug, Clone, Copy)]
pub struct Select {
    /// The select list, e.g. `balance_cents, version`.
    pub columns: &'static str,
    /// Everything after it, from `FROM` on.
    pub rest: &'static str,
}

impl Select {
    /// The statement to run: for a fresh read, with the node's position as
    /// one more, last, column (rule 7).
    fn sql(&self, position: Option<&str>) -> String {
        match position {
            Some(pos) => format!("SELECT {}, {pos} {}", self.columns, self.rest),
            None => format!("SELECT {} {}", self.columns, self.rest),
        }
    }
}

/// Runs one read statement on the node the router picks. If the
/// connection breaks mid-read (a follower died) or the node does not answer
/// within `read_timeout` (stopped, partitioned), the router forgets that
/// follower (rule 3) and the read is retried once elsewhere (rule 8: no
/// failed requests when a follower leaves).
///
/// Rule 7 for fresh reads: the statement also selects the node's position,
/// evaluated after its snapshot was taken, so it bounds what the read saw,
/// and the session's token is raised to it; a later read never sees an
/// older state. That costs no extra statement. Only a read that returns no
/// row asks for the position in a statement of its own.
pub async fn read_rows(
    state: &AppState,
    caller: &Caller,
    freshness: Freshness,
    prefs: ReadPrefs,
    token: ClientToken,
    select: Select,
    params: &[&(dyn ToSql + Sync)],
) -> Result<(Vec<Row>, Decision), ApiError> {
    let opts = prefs.options();
    let fresh = freshness == Freshness::Fresh;
    let mut last = None;
    for attempt in 0..2 {
        let (conn, mut decision) = state
            .router
            .read_with(&caller.session, freshness, opts, token.0)
            .await
            .map_err(ApiError::from_router)?;
        let sql = select.sql(fresh.then(|| decision.position_sql()));
        let res = tokio::time::timeout(state.cfg.read_timeout, async {
            let stmt = conn.prepare_cached(&sql).await?;
            let rows = conn.query(&stmt, params).await?;
            if fresh {
                let position = rows.first().and_then(|row| {
                    row.try_get::<_, Option<PgLsn>>(row.len() - 1)
                        .ok()
                        .flatten()
                });
                match position {
                    Some(lsn) => {
                        state
                            .router
                            .after_read_with(&caller.session, &mut decision, lsn.into())
                            .await
                    }
                    None => {
                        // No row to carry it: ask in a statement of its own.
                        // A failure here costs only this token's precision.
                        let _ = state
                            .router
                            .after_read(&caller.session, &mut decision, &conn)
                            .await;
                    }
                }
            }
            Ok(rows)
        })
        .await;
        let Ok(res) = res else {
            state
                .router
                .report_stall(&decision, &conn, state.cfg.read_timeout);
            tracing::warn!(node = %decision.node, attempt, "read stalled; retrying on another node");
            last = Some(format!(
                "{} did not answer in {:?}",
                decision.node, state.cfg.read_timeout
            ));
            continue;
        };
        match res {
            Ok(rows) => return Ok((rows, decision)),
            Err(e) if is_connection_error(&e) => {
                state.router.report_error(&decision, &e);
                tracing::warn!(node = %decision.node, attempt, error = %e, "read failed; retrying on another node");
                last = Some(e.to_string());
            }
            Err(e) => return Err(ApiError::from_db(e)),
        }
    }
    Err(ApiError::Unavailable(format!(
        "the read failed twice: {}",
        last.unwrap_or_default()
    )))
}

/// The leader's position after a committed write, stored for the session
/// (rule 1: read after COMMIT returned). A session store failure does not
/// fail it (the router marks the store degraded, rule 5).
///
/// If the position itself cannot be read (the leader went away right after
/// COMMIT), the write stands but nothing can tell this session's next fresh
/// read what it must wait for: a 201 then let it read a follower without its
/// own payment (found by the leader-stop fault test). So the answer is a 503
/// saying the outcome is unknown; a retry with the same `Idempotency-Key`
/// returns the committed payment, charged once, with a proper token.
pub async fn record_write(
    state: &AppState,
    caller: &Caller,
    client: &tokio_postgres::Client,
) -> Result<Lsn, ApiError> {
    state
        .router
        .record_write(&caller.session, client)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, user = %caller.user.0, "committed, but could not read the write position");
            ApiError::Unavailable(format!(
                "the write may have committed, but the leader went away before its position \
                 could be read ({e}); retry with the same Idempotency-Key to learn its outcome"
            ))
        })
}
