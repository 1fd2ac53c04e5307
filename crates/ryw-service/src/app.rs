//! [`app`]: the axum router with every route and the middleware, built from
//! an [`AppState`] so tests can drive it in-process with `oneshot`.

use crate::error::ApiError;
use crate::routes;
use crate::state::AppState;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ryw_axum::Served;
use std::time::Instant;
use utoipa_swagger_ui::SwaggerUi;

/// Every route, the middleware and the state.
///
/// The `/api` routes sit behind the `ryw-axum` layer (sessions from
/// `X-Demo-UserId`, verified tokens, `X-Served-By` and
/// `X-Consistency-Token` on every answer, errors and time-outs included);
/// the request log and counters wrap everything.
pub fn app(state: AppState) -> axum::Router {
    let api = axum::Router::new()
        .route("/account", post(routes::account::create))
        .route(
            "/payments",
            post(routes::payments::pay).get(routes::payments::list),
        )
        .route("/balance", get(routes::payments::balance))
        .route("/me", get(routes::profile::me))
        .route("/me/profile", post(routes::profile::upsert))
        .route("/products", get(routes::products::list))
        .route("/cluster", get(routes::cluster::show))
        .route("/cluster/lag", post(routes::cluster::set_lag))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), time_limit))
        .layer(state.ryw.layer());
    let body_limit = state.cfg.body_limit;
    let doc = crate::openapi::document(&state.cfg);
    axum::Router::new()
        .nest("/api", api)
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .route("/", get(routes::dashboard::index))
        .route("/app.js", get(routes::dashboard::app_js))
        .route("/style.css", get(routes::dashboard::style))
        .fallback(not_found)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), log_request))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotAvailable("no such route; see /docs".into())
}

/// An `/api` request that takes longer than `--request-timeout` is answered
/// 503 (inside the `ryw-axum` layer, so the answer carries the client's
/// token back).
async fn time_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.cfg.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::Timeout(limit).into_response(),
    }
}

/// Per request: the counters and one log line naming strategy, node and
/// waited ms.
async fn log_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    // A clone of the extension shares its text: no allocation per request.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let resp = next.run(req).await;
    let took = started.elapsed();
    let status = resp.status().as_u16();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
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
        waited_ms = served.and_then(|s| s.waited).map(|w| w.as_micros().div_ceil(1000) as u64).unwrap_or(0),
    );
    resp
}
