//! The ryw demo service: payments (pay, then read the balance) and the
//! .NET + Redis demo's profile and products (README, "How it compares"),
//! served through the read-your-writes router, with a dashboard, OpenAPI,
//! health and Prometheus metrics.
//!
//! "Rule N" in comments: the correctness rules, listed in
//! `docs/architecture.md#correctness-rules` with the code and tests of each.
//!
//! # Layout
//!
//! - `config.rs`: [`ServiceConfig`], typed; the binary fills it from flags.
//! - `startup.rs`: [`Service`]: connect, migrate, bind, run until stopped.
//! - `front.rs`: the accept loop and HTTP/1.1 connections: header and idle
//!   timeouts, the connection cap, the lingering close (slow clients).
//! - `app.rs`: [`app()`] — every route and the middleware (time limit,
//!   consistency headers, request log and counters).
//! - `openapi.rs`: the OpenAPI document, its shared headers and problem
//!   schema, filled in per server (strategy header, follower names).
//! - `state.rs`: [`AppState`], shared by the handlers.
//! - `extract.rs`: identity (`X-Demo-UserId`), `X-Read-Strategy`,
//!   `X-Consistency-Token` and JSON bodies, refused with 4xx before any work.
//! - `domain.rs`: input newtypes (amounts, profiles, idempotency keys).
//! - `error.rs`: [`ApiError`] → problem+json, in one place.
//! - `routes/`: handlers filed by resource, and the read/write plumbing.
//! - `schema.rs`: migrations, applied on start under an advisory lock.
//! - `metrics.rs`: `/metrics` through `prometheus-client`: request and wait
//!   histograms, the router's counters; reusable registration helpers.
//! - `static/`: the dashboard (HTML, JS, CSS), embedded in the binary.

pub mod app;
pub mod config;
pub mod domain;
pub mod error;
pub mod extract;
pub mod front;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod schema;
pub mod startup;
pub mod state;

pub use app::app;
pub use config::ServiceConfig;
pub use error::ApiError;
pub use startup::Service;
pub use state::AppState;

/// Default largest request body (64 KiB, the README's input limits).
pub const BODY_LIMIT: usize = 64 * 1024;
