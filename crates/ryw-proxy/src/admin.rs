//! The admin endpoint (`--admin-listen`): `GET /metrics` (the router's
//! metrics, as `ryw serve` exports them, and the proxy's own) and `GET
//! /readyz` (200 while the leader answers the tracker; 503 with a JSON
//! reason otherwise). A small axum app beside the wire-protocol listener.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::server::Shared;

/// The admin app.
pub(crate) fn app(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let mut registry = ryw_metrics::Registry::default();
    ryw_metrics::register_router(&mut registry, shared.router.clone());
    registry.register_collector(Box::new(SharedMetrics(shared.clone())));
    (
        [(header::CONTENT_TYPE, ryw_metrics::CONTENT_TYPE)],
        ryw_metrics::encode(&registry),
    )
}

/// The proxy's counters, read at the scrape.
#[derive(Debug)]
struct SharedMetrics(Arc<Shared>);

impl prometheus_client::collector::Collector for SharedMetrics {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.0.metrics.encode(encoder)
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let view = shared.router.cluster_view();
    let store = shared.router.store_health();
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
        "clients": shared.metrics.clients(),
        "session_store": match store {
            ryw_router::StoreHealth::Ok => "ok".to_owned(),
            ryw_router::StoreHealth::Degraded(w) => format!("degraded: {w}"),
        },
    });
    (status, Json(body))
}
