//! [`AppState`]: what every handler shares.

use crate::config::ServiceConfig;
use crate::metrics::HttpMetrics;
use ryw_router::{Router, TokenKey};
use std::sync::Arc;

/// Cheap to clone; one per service instance.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

/// The shared parts.
#[derive(Debug)]
pub struct Inner {
    /// The read-your-writes router.
    pub router: Router,
    /// Signs and verifies `X-Consistency-Token`.
    pub key: TokenKey,
    /// The configuration the service started with.
    pub cfg: ServiceConfig,
    /// Request counters for `/metrics`.
    pub http: HttpMetrics,
}

impl AppState {
    /// Wraps a connected router.
    pub fn new(router: Router, cfg: ServiceConfig) -> AppState {
        AppState(Arc::new(Inner {
            router,
            key: cfg.token_key.clone(),
            cfg,
            http: HttpMetrics::default(),
        }))
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
