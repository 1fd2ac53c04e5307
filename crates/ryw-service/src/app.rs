//! [`app`]: the axum router with every route and the middleware, built from
//! an [`AppState`] so tests can drive it in-process with `oneshot`.

use crate::error::ApiError;
use crate::routes::{self, Served};
use crate::state::AppState;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::time::Instant;
use utoipa_swagger_ui::SwaggerUi;

/// Every route, the middleware and the state.
pub fn app(state: AppState) -> axum::Router {
    let api = axum::Router::new()
        .route("/api/account", post(routes::account::create))
        .route(
            "/api/payments",
            post(routes::payments::pay).get(routes::payments::list),
        )
        .route("/api/balance", get(routes::payments::balance))
        .route("/api/me", get(routes::profile::me))
        .route("/api/me/profile", post(routes::profile::upsert))
        .route("/api/products", get(routes::products::list))
        .route("/api/cluster", get(routes::cluster::show))
        .route("/api/cluster/lag", post(routes::cluster::set_lag))
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .route("/", get(routes::dashboard::index))
        .route("/app.js", get(routes::dashboard::app_js))
        .route("/style.css", get(routes::dashboard::style))
        .fallback(not_found);
    let body_limit = state.cfg.body_limit;
    let doc = crate::openapi::document(&state.cfg);
    api.merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), around))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotAvailable("no such route; see /docs".into())
}

/// Per request: a time limit, the consistency headers on every `/api`
/// response (also errors), the request counters and one log line naming
/// strategy, node and waited ms.
async fn around(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = req.method().clone();
    let is_api = req.uri().path().starts_with("/api");
    // An error answered before any node was involved still carries the
    // client's token (when it verifies) so the client loses nothing. Kept
    // raw and verified only for such answers: on the common path the
    // handler's extractor has already verified it.
    let client_token = req.headers().get("x-consistency-token").cloned();
    let limit = state.cfg.request_timeout;
    let mut resp = match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::Timeout(limit).into_response(),
    };
    if is_api {
        let h = resp.headers_mut();
        if !h.contains_key("x-served-by") {
            h.insert("x-served-by", HeaderValue::from_static("none"));
        }
        if !h.contains_key("x-consistency-token")
            && let Ok(v) = HeaderValue::from_str(
                &state
                    .key
                    .sign(verified(&state, client_token.as_ref()).unwrap_or(ryw_router::Lsn::ZERO)),
            )
        {
            h.insert("x-consistency-token", v);
        }
    }
    let took = started.elapsed();
    let status = resp.status().as_u16();
    let route = route.as_deref().unwrap_or("unmatched");
    state.http.record(route, status, took);
    let served = resp.extensions().get::<Served>();
    tracing::info!(
        target: "ryw::request",
        %method,
        route,
        status,
        ms = took.as_secs_f64() * 1000.0,
        node = served.map(|s| &*s.node).unwrap_or("-"),
        strategy = served.and_then(|s| s.strategy).map(|s| s.as_str()).unwrap_or("-"),
        waited_ms = served.map(|s| s.waited.as_millis() as u64).unwrap_or(0),
    );
    resp
}

/// The position of a client's `X-Consistency-Token`, if it verifies.
fn verified(state: &AppState, token: Option<&HeaderValue>) -> Option<ryw_router::Lsn> {
    let text = token?.to_str().ok()?;
    state.key.verify(text.trim()).ok()
}
