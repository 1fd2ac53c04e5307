//! The benchmark's ceiling: a minimal HTTP server that does what ryw's
//! `GET /api/balance` does at its core and nothing else — one axum handler,
//! one shared `tokio-postgres` client to one follower, the service's own
//! primary-key query prepared once, a small JSON answer. No routing, no
//! session, no token, no position.
//!
//! Why: ryw's ratio to `pgbench -S` depends on the machine. pgbench pays
//! for no HTTP, so where PostgreSQL is fast the ratio falls: ryw measured
//! 0.81× of pgbench on a machine where pgbench reached about 42k TPS, and
//! 0.51–0.55× on one where it reached about 90k. A server that does the same
//! query over the same HTTP moves with the machine as ryw does (ryw was
//! 0.85–0.95× of it on that second machine), so ryw's ratio to it, in the
//! same run, is what routing costs. `ryw bench calibrate` starts it the way
//! it starts ryw (inside the `ryw` process, on the same tokio runtime) and loads
//! both with the same generator in the same rounds.
//!
//! A single `Client` used by every request at once pipelines their queries
//! on one connection, as ryw's read path does. It is the fastest plain
//! setup measured on these machines: a throwaway endpoint with one shared
//! client reached 0.78× of pgbench, with a pool of 8 and `prepare_cached`
//! 0.53×, without prepared statements 0.22×. It does not reconnect: it is a
//! measuring tool, and a broken connection shows as 503s, which calibrate
//! refuses.

use crate::BenchError;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

/// The query of the service's balance read (`GET /api/balance`), word for
/// word, so both servers ask PostgreSQL the same thing.
pub const BALANCE_SQL: &str = "SELECT balance_cents, version FROM accounts WHERE user_id = $1";

/// The `application_name` of its one connection (`pg_stat_activity` shows it).
pub const APPLICATION_NAME: &str = "ryw-calibrate-minimal";

/// The identity header of the service's API (the same request reaches both).
const H_USER: &str = "x-demo-userid";

/// The answer of `GET /api/balance`: the fields ryw's answer has that come
/// from the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// The account's balance.
    pub balance_cents: i64,
    /// The account's version (one per payment).
    pub version: i64,
}

/// What every request shares: the one client and the statement prepared on it.
struct Db {
    client: Client,
    balance: Statement,
}

/// A running minimal server; [`MinimalServer::stop`] drains and ends it.
#[derive(Debug)]
pub struct MinimalServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl MinimalServer {
    /// Connects one client to `follower_url` (a libpq URL), prepares
    /// [`BALANCE_SQL`] on it, binds `listen` (port 0: any free port) and
    /// serves `GET /api/balance` on the current tokio runtime until stopped.
    pub async fn start(follower_url: &str, listen: SocketAddr) -> Result<Self, BenchError> {
        let pg = |what| move |source| BenchError::Postgres { what, source };
        let mut cfg: tokio_postgres::Config =
            follower_url.parse().map_err(pg("parsing the url"))?;
        cfg.connect_timeout(Duration::from_secs(5))
            .application_name(APPLICATION_NAME);
        let (client, connection) = cfg.connect(NoTls).await.map_err(pg("connecting"))?;
        // The connection task does the socket I/O of every query of `client`.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let balance = client
            .prepare(BALANCE_SQL)
            .await
            .map_err(pg("preparing the balance query"))?;
        let app = Router::new()
            .route("/api/balance", get(balance_handler))
            .with_state(Arc::new(Db { client, balance }));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| BenchError::Listen {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| BenchError::Listen {
            addr: listen,
            source,
        })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(MinimalServer { addr, stop, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drains the requests in flight and stops.
    pub async fn stop(self) -> Result<(), BenchError> {
        let _ = self.stop.send(());
        let served = self.task.await.map_err(|e| BenchError::Listen {
            addr: self.addr,
            source: std::io::Error::other(e),
        })?;
        served.map_err(|source| BenchError::Listen {
            addr: self.addr,
            source,
        })
    }
}

/// `GET /api/balance`: the caller's balance and version from the follower.
async fn balance_handler(State(db): State<Arc<Db>>, headers: HeaderMap) -> Response {
    let Some(user) = headers
        .get(H_USER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok())
    else {
        return answer(StatusCode::BAD_REQUEST, "X-Demo-UserId must be a UUID");
    };
    match db.client.query_opt(&db.balance, &[&user]).await {
        Ok(Some(row)) => Json(Balance {
            balance_cents: row.get(0),
            version: row.get(1),
        })
        .into_response(),
        Ok(None) => answer(StatusCode::NOT_FOUND, "no account"),
        Err(e) => answer(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

fn answer(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({ "error": error }))).into_response()
}
