//! `TestApp`: a real cluster, a migrated service on it, and typed helpers to
//! call it in-process (`oneshot`) or over a real socket.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use ryw_cluster::harness::{TestCluster, TestClusterOptions};
use ryw_router::{NodeUrls, TokenKey};
use ryw_service::{AppState, Service, ServiceConfig};
use serde_json::Value;
use std::time::Duration;
use tower::ServiceExt;

/// The lags of the payment story: 100 ms and 400 ms.
pub const LAGS: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(400)];

/// A shared token key so two instances accept each other's tokens.
pub const KEY: &str = "test key of at least sixteen bytes";

pub struct TestApp {
    pub cluster: TestCluster,
    pub app: axum::Router,
}

/// A response, parsed.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn i64(&self, field: &str) -> i64 {
        self.body[field]
            .as_i64()
            .unwrap_or_else(|| panic!("no integer {field} in {}", self.body))
    }
}

pub fn config(cluster: &TestCluster) -> ServiceConfig {
    let nodes = NodeUrls {
        leader: cluster.leader_url(),
        followers: cluster.follower_urls(),
    };
    let mut cfg = ServiceConfig::new(nodes, TokenKey::from_secret(KEY).unwrap());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.allow_strategy_header = true;
    cfg.cluster_dir = Some(cluster.dir());
    cfg.lag_control = true;
    cfg
}

impl TestApp {
    /// A cluster with the story's lags and a service with the in-memory store.
    pub async fn start() -> TestApp {
        Self::start_with(
            TestClusterOptions {
                lags: LAGS.to_vec(),
                redis: false,
            },
            |_| {},
        )
        .await
    }

    pub async fn start_with(
        opts: TestClusterOptions,
        tweak: impl FnOnce(&mut ServiceConfig),
    ) -> TestApp {
        init_logs();
        let cluster = TestCluster::start_with(opts).await;
        let mut cfg = config(&cluster);
        tweak(&mut cfg);
        let service = Service::build(cfg).await.expect("service starts");
        let state = service.state();
        wait_followers_in_rotation(&state).await;
        let app = ryw_service::app(state.clone());
        TestApp { cluster, app }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        user: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Resp {
        call(&self.app, method, path, user, headers, body).await
    }

    /// Creates the user's account and returns its opening version.
    pub async fn account(&self, user: &str) -> i64 {
        let r = self
            .call("POST", "/api/account", Some(user), &[], None)
            .await;
        assert!(
            r.status == StatusCode::CREATED || r.status == StatusCode::OK,
            "{r:?}"
        );
        r.i64("version")
    }

    pub async fn pay(&self, user: &str, cents: i64, key: Option<&str>) -> Resp {
        let body = format!(r#"{{"amount_cents": {cents}}}"#);
        let mut h = vec![];
        if let Some(k) = key {
            h.push(("idempotency-key", k));
        }
        self.call("POST", "/api/payments", Some(user), &h, Some(&body))
            .await
    }

    pub async fn balance(&self, user: &str, strategy: &str) -> Resp {
        self.call(
            "GET",
            "/api/balance",
            Some(user),
            &[("x-read-strategy", strategy)],
            None,
        )
        .await
    }
}

pub async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    user: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(u) = user {
        req = req.header("x-demo-userid", u);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_owned())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Resp {
        status,
        headers,
        body,
    }
}

/// Waits until the tracker has seen every follower (positions known).
pub async fn wait_followers_in_rotation(state: &AppState) {
    let t = std::time::Instant::now();
    loop {
        let view = state.router.cluster_view();
        if view.followers().all(|f| f.in_rotation) && view.leader.in_rotation {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "followers never entered rotation: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn user() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Logs to the test's captured output; `RUST_LOG` picks the level (default: warnings).
pub fn init_logs() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
