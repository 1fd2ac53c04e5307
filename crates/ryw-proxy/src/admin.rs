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

use crate::server::ProxyState;

/// The admin app.
pub(crate) fn app(shared: Arc<ProxyState>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<ProxyState>>) -> impl IntoResponse {
    let mut registry = ryw_metrics::Registry::default();
    ryw_metrics::register_router(&mut registry, shared.router.clone());
    registry.register_collector(Box::new(ProxyCounters(shared.clone())));
    registry.register_collector(Box::new(PoolMetrics(shared.clone())));
    (
        [(header::CONTENT_TYPE, ryw_metrics::CONTENT_TYPE)],
        ryw_metrics::encode(&registry),
    )
}

/// The proxy's counters, read at the scrape.
#[derive(Debug)]
struct ProxyCounters(Arc<ProxyState>);

impl prometheus_client::collector::Collector for ProxyCounters {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.0.metrics.encode(encoder)
    }
}

/// The pools' figures, read at the scrape.
#[derive(Debug)]
struct PoolMetrics(Arc<ProxyState>);

impl prometheus_client::collector::Collector for PoolMetrics {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        encode_pools(&self.0.pools.snapshot(), encoder)
    }
}

/// Transaction pooling, per pool (node, role, database; the relay
/// threads' pools summed): server connections in use and idle, clients
/// waiting, and how long the ones that waited waited.
fn encode_pools(
    snapshots: &[crate::pool::PoolSnapshot],
    mut encoder: prometheus_client::encoding::DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::encoding::EncodeMetric;
    use prometheus_client::metrics::MetricType;
    use prometheus_client::metrics::gauge::ConstGauge;
    use std::collections::BTreeMap;

    type Labels = (String, String, String);
    #[derive(Default)]
    struct Sum {
        active: i64,
        idle: i64,
        waiting: i64,
        count: u64,
        sum_us: u64,
        buckets: [u64; crate::pool::WAIT_BUCKETS_MS.len() + 1],
    }
    let mut pools: BTreeMap<Labels, Sum> = BTreeMap::new();
    for p in snapshots {
        let e = pools
            .entry((
                p.node.to_string(),
                p.key.user.to_string(),
                p.key.database.to_string(),
            ))
            .or_default();
        e.active += (p.open - p.idle) as i64;
        e.idle += p.idle as i64;
        e.waiting += p.waiting as i64;
        e.count += p.waits.count;
        e.sum_us += p.waits.sum_us;
        for (a, b) in e.buckets.iter_mut().zip(p.waits.buckets) {
            *a += b;
        }
    }
    let labels = |(node, user, database): &Labels| {
        [
            ("node", node.clone()),
            ("user", user.clone()),
            ("database", database.clone()),
        ]
    };
    {
        let mut family = encoder.encode_descriptor(
            "ryw_proxy_pool_server_connections",
            "transaction pooling: server connections by pool and state (active: lent to a client)",
            None,
            MetricType::Gauge,
        )?;
        for (key, sum) in &pools {
            for (state, n) in [("active", sum.active), ("idle", sum.idle)] {
                let [a, b, c] = labels(key);
                let l = [a, b, c, ("state", state.to_owned())];
                ConstGauge::new(n).encode(family.encode_family(&l)?)?;
            }
        }
    }
    {
        let mut family = encoder.encode_descriptor(
            "ryw_proxy_pool_clients_waiting",
            "transaction pooling: clients waiting for a server connection now",
            None,
            MetricType::Gauge,
        )?;
        for (key, sum) in &pools {
            ConstGauge::new(sum.waiting).encode(family.encode_family(&labels(key))?)?;
        }
    }
    {
        let mut family = encoder.encode_descriptor(
            "ryw_proxy_pool_wait_seconds",
            "transaction pooling: how long clients that found every server connection busy waited",
            None,
            MetricType::Histogram,
        )?;
        for (key, sum) in &pools {
            let mut buckets: Vec<(f64, u64)> = crate::pool::WAIT_BUCKETS_MS
                .iter()
                .zip(sum.buckets)
                .map(|(ms, n)| (*ms as f64 / 1000.0, n))
                .collect();
            buckets.push((
                f64::INFINITY,
                sum.buckets[crate::pool::WAIT_BUCKETS_MS.len()],
            ));
            ryw_metrics::BucketCounts {
                sum: sum.sum_us as f64 / 1e6,
                buckets,
            }
            .encode(family.encode_family(&labels(key))?)?;
        }
    }
    Ok(())
}

async fn readyz(State(shared): State<Arc<ProxyState>>) -> impl IntoResponse {
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
