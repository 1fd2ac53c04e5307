//! `/metrics` in the Prometheus text format (0.0.4), through the Prometheus
//! project's client (`prometheus-client`): the service's request counters
//! and latency histogram, the router's counters and wait histogram (and
//! waits and wasted waits by strategy), the tracker's lag gauges and the
//! session store's health.
//!
//! The building blocks are reusable by any front that has a
//! [`ryw_router::Router`] (the proxy exports the same way):
//!
//! - [`HttpMetrics`]: requests by route and status, and their latency in
//!   buckets by route and status class; [`HttpMetrics::register`] adds them
//!   to a [`Registry`].
//! - [`register_router`]: adds the router's metrics to a [`Registry`], read
//!   from the live router at each scrape (nothing to update by hand).
//! - [`encode`]: a registry as text.
//!
//! The router crate itself has no metrics dependency: it keeps plain atomic
//! counters, and buckets its waits ([`MetricsSnapshot::WAIT_BOUNDS`]), which
//! this module publishes as the `ryw_wait_duration_seconds` histogram.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::Registry;
use ryw_router::{ClusterView, Freshness, MetricsSnapshot, Router};
use std::time::Duration;

/// `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the request latency buckets: a primary-key read
/// answers in about a millisecond, a causal wait adds up to its budget
/// (200 ms by default), and the request time limit is 10 s.
pub const LATENCY_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Labels of `ryw_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The route template (`/api/payments`), never the raw path, so that
    /// clients cannot create series at will.
    route: String,
    status: u16,
}

/// Labels of `ryw_http_request_duration_seconds`: the status class
/// (`2xx`…`5xx`) rather than the code keeps the number of series small.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    route: String,
    status_class: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BOUNDS)
}

/// Requests by route and status, and their latency by route and status
/// class. Cheap to clone: clones count into the same series.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> HttpMetrics {
        HttpMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl HttpMetrics {
    /// Counts one request answered with `status` after `took`.
    pub fn record(&self, route: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&LatencyLabels {
                route: route.to_owned(),
                status_class: status_class(status),
            })
            .observe(took.as_secs_f64());
    }

    /// Adds `ryw_http_requests_total` and `ryw_http_request_duration_seconds`
    /// to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ryw_http_requests",
            "HTTP requests by route and status",
            self.requests.clone(),
        );
        registry.register(
            "ryw_http_request_duration_seconds",
            "time to answer an HTTP request, by route and status class",
            self.latency.clone(),
        );
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Adds the router's metrics to `registry`, read from `router` at each
/// scrape: reads by node, freshness and strategy; writes, waits (a count, a
/// sum and a histogram; waits and wasted waits by strategy), fallbacks, evictions, forgets, store errors, read
/// checks and stalls; each follower's lag; each node's rotation; the
/// session store's health.
pub fn register_router(registry: &mut Registry, router: Router) {
    registry.register_collector(Box::new(LiveRouter(router)));
}

/// The text of every metric in `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in
    // a metric, and an empty answer is better than a panic in a handler.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        tracing::error!(error = %e, "encoding metrics");
    }
    out
}

/// Every metric of the service, from one sample of the router's state (what
/// `GET /metrics` answers).
pub fn render(
    http: &HttpMetrics,
    router: &MetricsSnapshot,
    view: &ClusterView,
    store_ok: bool,
) -> String {
    let mut registry = Registry::default();
    http.register(&mut registry);
    registry.register_collector(Box::new(RouterSample {
        metrics: router.clone(),
        view: view.clone(),
        store_ok,
    }));
    encode(&registry)
}

/// A collector that samples a live router at each scrape.
struct LiveRouter(Router);

impl std::fmt::Debug for LiveRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveRouter(..)")
    }
}

impl Collector for LiveRouter {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        RouterSample {
            metrics: self.0.metrics(),
            view: self.0.cluster_view(),
            store_ok: self.0.store_health().is_ok(),
        }
        .encode(encoder)
    }
}

/// The router's state at one moment, as metrics.
#[derive(Debug)]
struct RouterSample {
    metrics: MetricsSnapshot,
    view: ClusterView,
    store_ok: bool,
}

/// A histogram whose buckets were counted elsewhere (the router's atomics).
struct BucketCounts {
    sum: f64,
    /// `(upper bound, count in this bucket)`, not cumulative, the last one
    /// `+Inf`.
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for BucketCounts {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let count = self.buckets.iter().map(|(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(self.sum, count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Collector for RouterSample {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.metrics;
        {
            let mut family = encoder.encode_descriptor(
                "ryw_reads",
                "reads routed, by node, freshness and strategy",
                None,
                MetricType::Counter,
            )?;
            for r in &m.reads {
                let freshness = match r.freshness {
                    Freshness::Fresh => "fresh",
                    Freshness::StaleOk => "stale_ok",
                };
                let strategy = r.strategy.to_string();
                let labels = [
                    ("node", &*r.node),
                    ("freshness", freshness),
                    ("strategy", strategy.as_str()),
                ];
                ConstCounter::new(r.count).encode(family.encode_family(&labels)?)?;
            }
        }
        let counters: [(&str, &str, u64); 10] = [
            (
                "ryw_writes",
                "leader connections handed out for writes",
                m.writes,
            ),
            (
                "ryw_waits",
                "fresh reads that waited for a follower to catch up",
                m.waits,
            ),
            (
                "ryw_wait_timeouts",
                "waits that ran out of budget and went to the leader",
                m.wait_timeouts,
            ),
            (
                "ryw_fallbacks_to_leader",
                "reads that wanted a follower and got the leader",
                m.fallbacks_to_leader,
            ),
            (
                "ryw_evictions",
                "times a follower left rotation",
                m.evictions,
            ),
            (
                "ryw_forgets",
                "times a follower's position was forgotten after a failure",
                m.forgets,
            ),
            (
                "ryw_session_store_errors",
                "session store calls that failed or timed out",
                m.store_errors,
            ),
            (
                "ryw_read_checks",
                "extra replay-position queries made by per-read-check",
                m.read_checks,
            ),
            (
                "ryw_read_stalls",
                "reads that did not answer in time (their shared connection was retired)",
                m.stalls,
            ),
            (
                "ryw_absurd_tokens",
                "tokens absurdly far beyond the leader, clamped and sent to the leader",
                m.absurd_tokens,
            ),
        ];
        for (name, help, v) in counters {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        {
            let mut family = encoder.encode_descriptor(
                "ryw_strategy_waits",
                "fresh reads that waited for a follower to catch up, by strategy",
                None,
                MetricType::Counter,
            )?;
            for w in &m.waits_by_strategy {
                let strategy = w.strategy.to_string();
                ConstCounter::new(w.waits)
                    .encode(family.encode_family(&[("strategy", strategy.as_str())])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "ryw_wasted_waits",
                "fresh reads that waited for a follower and were served by the leader anyway, by strategy",
                None,
                MetricType::Counter,
            )?;
            for w in &m.waits_by_strategy {
                let strategy = w.strategy.to_string();
                ConstCounter::new(w.wasted)
                    .encode(family.encode_family(&[("strategy", strategy.as_str())])?)?;
            }
        }
        let wait_sum = ConstCounter::new(m.wait_time.as_secs_f64());
        wait_sum.encode(encoder.encode_descriptor(
            "ryw_wait_seconds",
            "total time fresh reads waited for followers",
            None,
            wait_sum.metric_type(),
        )?)?;
        let waits = BucketCounts {
            sum: m.wait_time.as_secs_f64(),
            buckets: m
                .wait_histogram()
                .map(|(le, n)| (le.map_or(f64::INFINITY, |d| d.as_secs_f64()), n))
                .collect(),
        };
        waits.encode(encoder.encode_descriptor(
            "ryw_wait_duration_seconds",
            "how long fresh reads waited for a follower to catch up",
            None,
            waits.metric_type(),
        )?)?;
        {
            let mut family = encoder.encode_descriptor(
                "ryw_follower_lag_bytes",
                "WAL bytes a follower is behind the leader",
                None,
                MetricType::Gauge,
            )?;
            for f in &self.view.followers {
                if let Some(b) = f.lag_bytes {
                    let labels = [("node", &*f.name)];
                    ConstGauge::new(b as i64).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "ryw_follower_lag_seconds",
                "time a follower is behind the leader",
                None,
                MetricType::Gauge,
            )?;
            for f in &self.view.followers {
                if let Some(ms) = f.lag_ms {
                    let labels = [("node", &*f.name)];
                    ConstGauge::new(ms as f64 / 1000.0).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "ryw_node_in_rotation",
                "1 when the node may serve reads",
                None,
                MetricType::Gauge,
            )?;
            for n in self.view.nodes() {
                let labels = [("node", &*n.name)];
                ConstGauge::new(i64::from(n.in_rotation)).encode(family.encode_family(&labels)?)?;
            }
        }
        let healthy = ConstGauge::new(i64::from(self.store_ok));
        healthy.encode(encoder.encode_descriptor(
            "ryw_session_store_healthy",
            "1 when the session store answers",
            None,
            healthy.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_latency_lands_in_its_bucket_by_route_and_status_class() {
        let http = HttpMetrics::default();
        http.record("/api/balance", 200, Duration::from_micros(800));
        http.record("/api/balance", 404, Duration::from_millis(30));
        http.record("/api/balance", 200, Duration::from_millis(3));
        let text = render(
            &http,
            &MetricsSnapshot::default(),
            &ClusterView {
                leader: test_node("leader"),
                followers: vec![],
                leader_reached: vec![],
            },
            true,
        );
        for line in [
            "ryw_http_requests_total{route=\"/api/balance\",status=\"200\"} 2",
            "ryw_http_requests_total{route=\"/api/balance\",status=\"404\"} 1",
            "ryw_http_request_duration_seconds_count{route=\"/api/balance\",status_class=\"2xx\"} 2",
            "ryw_http_request_duration_seconds_bucket{route=\"/api/balance\",status_class=\"2xx\",le=\"0.0005\"} 0",
            "ryw_http_request_duration_seconds_bucket{route=\"/api/balance\",status_class=\"2xx\",le=\"0.001\"} 1",
            "ryw_http_request_duration_seconds_bucket{route=\"/api/balance\",status_class=\"2xx\",le=\"0.005\"} 2",
            "ryw_http_request_duration_seconds_bucket{route=\"/api/balance\",status_class=\"4xx\",le=\"0.025\"} 0",
            "ryw_http_request_duration_seconds_bucket{route=\"/api/balance\",status_class=\"4xx\",le=\"0.05\"} 1",
            "ryw_session_store_healthy 1",
            "ryw_node_in_rotation{node=\"leader\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn router_waits_become_a_cumulative_histogram() {
        let mut snap = MetricsSnapshot {
            waits: 3,
            wait_time: Duration::from_millis(230),
            wasted_waits: 1,
            waits_by_strategy: vec![
                ryw_router::StrategyWaits {
                    strategy: ryw_router::Strategy::Causal,
                    waits: 1,
                    wasted: 1,
                },
                ryw_router::StrategyWaits {
                    strategy: ryw_router::Strategy::Hybrid,
                    waits: 2,
                    wasted: 0,
                },
            ],
            ..MetricsSnapshot::default()
        };
        snap.wait_buckets = vec![0; MetricsSnapshot::WAIT_BOUNDS.len() + 1];
        snap.wait_buckets[4] = 2; // ≤ 20 ms
        snap.wait_buckets[7] = 1; // ≤ 200 ms
        let text = render(
            &HttpMetrics::default(),
            &snap,
            &ClusterView {
                leader: test_node("leader"),
                followers: vec![],
                leader_reached: vec![],
            },
            false,
        );
        for line in [
            "ryw_waits_total 3",
            "ryw_strategy_waits_total{strategy=\"causal\"} 1",
            "ryw_strategy_waits_total{strategy=\"hybrid\"} 2",
            "ryw_wasted_waits_total{strategy=\"causal\"} 1",
            "ryw_wasted_waits_total{strategy=\"hybrid\"} 0",
            "ryw_wait_duration_seconds_count 3",
            "ryw_wait_duration_seconds_sum 0.23",
            "ryw_wait_duration_seconds_bucket{le=\"0.01\"} 0",
            "ryw_wait_duration_seconds_bucket{le=\"0.02\"} 2",
            "ryw_wait_duration_seconds_bucket{le=\"0.1\"} 2",
            "ryw_wait_duration_seconds_bucket{le=\"0.2\"} 3",
            "ryw_wait_duration_seconds_bucket{le=\"+Inf\"} 3",
            "ryw_session_store_healthy 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in:\n{text}"
            );
        }
    }

    fn test_node(name: &str) -> ryw_router::NodeStatus {
        ryw_router::NodeStatus {
            name: name.into(),
            role: ryw_router::Role::Leader,
            lsn: None,
            lag_bytes: None,
            lag_ms: None,
            healthy: true,
            in_rotation: true,
            note: None,
            epoch: 0,
            behind_since: None,
            catch_up: None,
        }
    }
}
