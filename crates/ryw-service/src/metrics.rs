//! `/metrics` in the Prometheus text format: the service's request
//! counters plus the router's counters and the tracker's lag gauges.
//!
//! The format is a handful of `name{labels} value` lines; rendering it here
//! keeps a metrics backend (and its registry globals) out of the library.

use ryw_router::{ClusterView, MetricsSnapshot};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Requests by route template and status, with total latency.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    by_route: Mutex<BTreeMap<(String, u16), (u64, f64)>>,
}

impl HttpMetrics {
    /// Counts one request.
    pub fn record(&self, route: &str, status: u16, took: Duration) {
        let mut m = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry((route.to_owned(), status)).or_default();
        e.0 += 1;
        e.1 += took.as_secs_f64();
    }

    fn snapshot(&self) -> BTreeMap<(String, u16), (u64, f64)> {
        self.by_route
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Renders every metric.
pub fn render(
    http: &HttpMetrics,
    router: &MetricsSnapshot,
    view: &ClusterView,
    store_ok: bool,
) -> String {
    let mut out = String::new();
    let snap = http.snapshot();
    header(
        &mut out,
        "ryw_http_requests_total",
        "counter",
        "HTTP requests by route and status",
    );
    for ((route, status), (n, _)) in &snap {
        let _ = writeln!(
            out,
            "ryw_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
            esc(route)
        );
    }
    header(
        &mut out,
        "ryw_http_request_seconds_sum",
        "counter",
        "total time spent answering, by route",
    );
    let mut by_route: BTreeMap<&str, f64> = BTreeMap::new();
    for ((route, _), (_, secs)) in &snap {
        *by_route.entry(route).or_default() += secs;
    }
    for (route, secs) in by_route {
        let _ = writeln!(
            out,
            "ryw_http_request_seconds_sum{{route=\"{}\"}} {secs:.6}",
            esc(route)
        );
    }
    header(
        &mut out,
        "ryw_reads_total",
        "counter",
        "reads routed, by node, freshness and strategy",
    );
    for r in &router.reads {
        let freshness = match r.freshness {
            ryw_router::Freshness::Fresh => "fresh",
            ryw_router::Freshness::StaleOk => "stale_ok",
        };
        let _ = writeln!(
            out,
            "ryw_reads_total{{node=\"{}\",freshness=\"{freshness}\",strategy=\"{}\"}} {}",
            esc(&r.node),
            r.strategy,
            r.count
        );
    }
    let counters: [(&str, &str, u64); 9] = [
        (
            "ryw_writes_total",
            "leader connections handed out for writes",
            router.writes,
        ),
        (
            "ryw_waits_total",
            "fresh reads that waited for a follower to catch up",
            router.waits,
        ),
        (
            "ryw_wait_timeouts_total",
            "waits that ran out of budget and went to the leader",
            router.wait_timeouts,
        ),
        (
            "ryw_fallbacks_to_leader_total",
            "reads that wanted a follower and got the leader",
            router.fallbacks_to_leader,
        ),
        (
            "ryw_evictions_total",
            "times a follower left rotation",
            router.evictions,
        ),
        (
            "ryw_forgets_total",
            "times a follower's position was forgotten after a failure",
            router.forgets,
        ),
        (
            "ryw_session_store_errors_total",
            "session store calls that failed or timed out",
            router.store_errors,
        ),
        (
            "ryw_read_checks_total",
            "extra replay-position queries made by per-read-check",
            router.read_checks,
        ),
        (
            "ryw_read_stalls_total",
            "reads that did not answer in time (their shared connection was retired)",
            router.stalls,
        ),
    ];
    for (name, help, v) in counters {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    header(
        &mut out,
        "ryw_wait_seconds_total",
        "counter",
        "total time fresh reads waited for followers",
    );
    let _ = writeln!(
        out,
        "ryw_wait_seconds_total {:.6}",
        router.wait_time.as_secs_f64()
    );
    header(
        &mut out,
        "ryw_follower_lag_bytes",
        "gauge",
        "WAL bytes a follower is behind the leader",
    );
    for f in &view.followers {
        if let Some(b) = f.lag_bytes {
            let _ = writeln!(
                out,
                "ryw_follower_lag_bytes{{node=\"{}\"}} {b}",
                esc(&f.name)
            );
        }
    }
    header(
        &mut out,
        "ryw_follower_lag_seconds",
        "gauge",
        "time a follower is behind the leader",
    );
    for f in &view.followers {
        if let Some(ms) = f.lag_ms {
            let _ = writeln!(
                out,
                "ryw_follower_lag_seconds{{node=\"{}\"}} {:.3}",
                esc(&f.name),
                ms as f64 / 1000.0
            );
        }
    }
    header(
        &mut out,
        "ryw_node_in_rotation",
        "gauge",
        "1 when the node may serve reads",
    );
    for n in view.nodes() {
        let _ = writeln!(
            out,
            "ryw_node_in_rotation{{node=\"{}\"}} {}",
            esc(&n.name),
            u8::from(n.in_rotation)
        );
    }
    header(
        &mut out,
        "ryw_session_store_healthy",
        "gauge",
        "1 when the session store answers",
    );
    let _ = writeln!(out, "ryw_session_store_healthy {}", u8::from(store_ok));
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
