//! HTTP handlers, one file per resource. Each makes one router call per
//! read or write ([`ryw_router::Router::query_opt`], [`ryw_router::Router::begin`]
//! …) and returns a [`ryw_axum::Served`] with its answer: the `ryw-axum`
//! layer turns it into `X-Served-By` and `X-Consistency-Token` on every
//! `/api` response.

pub mod account;
pub mod cluster;
pub mod dashboard;
pub mod ops;
pub mod payments;
pub mod products;
pub mod profile;
