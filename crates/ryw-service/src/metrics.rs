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
//! - [`register_router`] (from the `ryw-metrics` crate, shared with the
//!   proxy): adds the router's metrics to a [`Registry`], read from the
//!   live router at each scrape.
//! - [`encode`]: a registry as text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
pub use ryw_metrics::{Registry, encode, register_router};
use ryw_router::{ClusterView, MetricsSnapshot};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = ryw_metrics::CONTENT_TYPE;

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
    /// The two series of each (route, status) seen, looked up by `&str`:
    /// recording a request builds no label set (two `String`s) once its
    /// series exist.
    series: Arc<RwLock<SeriesByRoute>>,
}

/// Per route, per status: the request counter and the latency histogram.
type SeriesByRoute = HashMap<String, HashMap<u16, (Counter, Histogram)>>;

impl Default for HttpMetrics {
    fn default() -> HttpMetrics {
        HttpMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            series: Arc::default(),
        }
    }
}

impl HttpMetrics {
    /// Counts one request answered with `status` after `took`.
    pub fn record(&self, route: &str, status: u16, took: Duration) {
        let known = self
            .series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(route)
            .and_then(|by_status| by_status.get(&status))
            .cloned();
        let (requests, latency) = known.unwrap_or_else(|| self.create(route, status));
        requests.inc();
        latency.observe(took.as_secs_f64());
    }

    /// The series of `(route, status)`, created in both families.
    fn create(&self, route: &str, status: u16) -> (Counter, Histogram) {
        let requests = self
            .requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                status,
            })
            .clone();
        let latency = self
            .latency
            .get_or_create(&LatencyLabels {
                route: route.to_owned(),
                status_class: status_class(status),
            })
            .clone();
        self.series
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(route.to_owned())
            .or_default()
            .insert(status, (requests.clone(), latency.clone()));
        (requests, latency)
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
    registry.register_collector(Box::new(ryw_metrics::RouterSample {
        metrics: router.clone(),
        view: view.clone(),
        store_ok,
    }));
    encode(&registry)
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
                leader_id: None,
                nodes: vec![],
                history: std::sync::Arc::new(ryw_router::TimelineHistory::first()),
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
                leader_id: None,
                nodes: vec![],
                history: std::sync::Arc::new(ryw_router::TimelineHistory::first()),
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

    fn test_node(name: &str) -> ryw_router::ObservedNode {
        ryw_router::ObservedNode {
            name: name.into(),
            health: ryw_router::RoleHealth::Leader,
            timeline: Some(1),
            lsn: None,
            healthy: true,
            in_rotation: true,
            note: None,
            polled: true,
            epoch: 0,
            polled_at: None,
        }
    }
}
