//! [`AppState`]: what every handler shares.

use crate::config::ServiceConfig;
use crate::domain::{DEFAULT_USER, UserId};
use crate::metrics::HttpMetrics;
use ryw_axum::Ryw;
use ryw_router::{Router, SessionKey, TokenKey};
use std::sync::Arc;

/// Cheap to clone; one per service instance.
#[derive(Debug, Clone)]
pub struct AppState(Arc<AppStateInner>);

/// The parts every handler shares, behind [`AppState`].
#[derive(Debug)]
pub struct AppStateInner {
    /// The read-your-writes router.
    pub router: Router,
    /// Signs and verifies `X-Consistency-Token`.
    pub key: TokenKey,
    /// Sessions from `X-Demo-UserId`, tokens, `X-Read-Strategy`: the
    /// `ryw-axum` layer's configuration.
    pub ryw: Ryw,
    /// The configuration the service started with.
    pub cfg: ServiceConfig,
    /// Request counters for `/metrics`.
    pub http: HttpMetrics,
}

impl AppState {
    /// Wraps a connected router.
    pub fn new(router: Router, cfg: ServiceConfig) -> AppState {
        let ryw = Ryw::new(cfg.token_key.clone())
            .session_header("x-demo-userid")
            .parse_session(|text| {
                let user = UserId::parse(Some(text)).map_err(|e| e.problem())?;
                Ok(session_of(user))
            })
            .default_session(session_of(UserId(DEFAULT_USER)))
            .strategy_header("x-read-strategy", cfg.allow_strategy_header);
        AppState(Arc::new(AppStateInner {
            router,
            key: cfg.token_key.clone(),
            ryw,
            cfg,
            http: HttpMetrics::default(),
        }))
    }
}

/// The router's session of a user: its canonical UUID text, so every
/// instance keys a user's Redis entries alike (stickiness is per user, not
/// per browser: it holds across devices and instances).
pub fn session_of(user: UserId) -> SessionKey {
    SessionKey::new(user.0.to_string()).expect("a UUID is a valid session key")
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}
