//! `/healthz` (liveness), `/readyz` (readiness: the leader is reachable;
//! says `degraded` while the session store is down) and `/metrics`.

use crate::state::AppState;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `GET /readyz`.
#[derive(Debug, utoipa::ToSchema)]
pub struct ReadyBody {
    /// `ready`, `degraded` or `leader unreachable`.
    pub status: String,
    /// The leader answers.
    pub leader: bool,
    /// Followers that may serve reads now.
    pub followers_in_rotation: u64,
    /// `ok`, or `degraded: <why>`.
    pub session_store: String,
}

/// Always 200 while the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "ops", operation_id = "healthz",
    responses((status = 200, description = "alive", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// 200 `ready` or `degraded` (session store down: fresh reads go to the
/// leader, nothing fails); 503 when the leader is unreachable.
#[utoipa::path(get, path = "/readyz", tag = "ops", operation_id = "readyz",
    responses((status = 200, description = "ready, or degraded (session store down)", body = ReadyBody),
              (status = 503, description = "the leader is unreachable", body = ReadyBody)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let view = state.router.cluster_view();
    let store = state.router.store_health();
    let (status, word) = if !view.leader.healthy {
        (StatusCode::SERVICE_UNAVAILABLE, "leader unreachable")
    } else if !store.is_ok() {
        (StatusCode::OK, "degraded")
    } else {
        (StatusCode::OK, "ready")
    };
    let body = serde_json::json!({
        "status": word,
        "leader": view.leader.healthy,
        "followers_in_rotation": view.followers_in_rotation(),
        "session_store": match store { ryw_router::StoreHealth::Ok => "ok".to_owned(), ryw_router::StoreHealth::Degraded(w) => format!("degraded: {w}") },
    });
    (status, axum::Json(body)).into_response()
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "ops", operation_id = "metrics",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let text = crate::metrics::render(
        &state.http,
        &state.router.metrics(),
        &state.router.cluster_view(),
        state.router.store_health().is_ok(),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
