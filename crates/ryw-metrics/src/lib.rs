//! The router's metrics for Prometheus, for every front built on
//! [`ryw_router::Router`] (`ryw serve`'s `/metrics`, `ryw proxy`'s admin
//! endpoint), through the Prometheus project's client
//! (`prometheus-client`).
//!
//! [`register_router`] adds a collector that samples the live router at
//! each scrape (nothing to update by hand): reads by node, freshness and
//! strategy; writes, waits (a count, a sum and a histogram), fallbacks,
//! evictions, forgets, store errors, read checks, stalls and absurd
//! tokens; the tracker's polls and the position feed (messages, lease,
//! fallbacks, the age of positions as a histogram); each follower's lag; each node's rotation; the session store's
//! health. [`RouterSample`] is one such sample, for a front that renders a
//! registry of its own each time. [`encode`] turns a registry into text.
//!
//! The router crate itself has no metrics dependency: it keeps plain atomic
//! counters, and buckets its waits (`MetricsSnapshot::WAIT_BOUNDS`), which
//! this crate publishes as the `ryw_wait_duration_seconds` histogram.
//!
//! # Layout
//!
//! One file: the collector, the histogram of pre-counted buckets, the
//! encoder.

#![warn(missing_docs)]

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
pub use prometheus_client::registry::Registry;
use ryw_router::{ClusterView, Freshness, MetricsSnapshot, Router};

/// `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Adds the router's metrics to `registry`, read from `router` at each
/// scrape: reads by node, freshness and strategy; writes, waits (a count, a
/// sum and a histogram), fallbacks, evictions, forgets, store errors, read
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
pub struct RouterSample {
    /// The router's counters.
    pub metrics: MetricsSnapshot,
    /// The tracker's view of the nodes.
    pub view: ClusterView,
    /// Whether the session store answers.
    pub store_ok: bool,
}

/// A histogram whose buckets were counted elsewhere (the router's atomics,
/// the proxy's pools).
#[derive(Debug)]
pub struct BucketCounts {
    /// The sum of the observations.
    pub sum: f64,
    /// `(upper bound, count in this bucket)`, not cumulative, the last one
    /// `+Inf`.
    pub buckets: Vec<(f64, u64)>,
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
        let counters: [(&str, &str, u64); 16] = [
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
                "ryw_writes_lost",
                "requests that told a session a failover lost its acknowledged write",
                m.writes_lost,
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
            (
                "ryw_tracker_polls",
                "poll statements this instance's tracker sent to the nodes",
                m.tracker_polls,
            ),
            (
                "ryw_feed_messages",
                "position feed messages from another instance applied here",
                m.feed_messages,
            ),
            (
                "ryw_feed_published",
                "position feed messages this instance published as the lease holder",
                m.feed_published,
            ),
            (
                "ryw_feed_late",
                "position feed messages that arrived after the quiet limit (applied with their age; not counted as the feed speaking)",
                m.feed_late,
            ),
            (
                "ryw_feed_fallbacks",
                "times the position feed went quiet and this instance polled on its own",
                m.feed_fallbacks,
            ),
        ];
        for (name, help, v) in counters {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        for (name, help, wasted) in [
            (
                "ryw_strategy_waits",
                "fresh reads that waited for a follower to catch up, by strategy",
                false,
            ),
            (
                "ryw_wasted_waits",
                "fresh reads that waited for a follower and were served by the leader anyway, by strategy",
                true,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for w in &m.waits_by_strategy {
                let strategy = w.strategy.to_string();
                let n = if wasted { w.wasted } else { w.waits };
                ConstCounter::new(n)
                    .encode(family.encode_family(&[("strategy", strategy.as_str())])?)?;
            }
        }
        // Scopes: fresh reads per scope, and the coalesced fetches of
        // `global`'s mark and `cluster`'s leader position beside the reads
        // that took them (fetches well below reads: the coalescing works).
        for (name, help, pick) in [
            (
                "ryw_scope_reads",
                "fresh reads by scope",
                (|s: &ryw_router::ScopeReads| s.reads) as fn(&ryw_router::ScopeReads) -> u64,
            ),
            (
                "ryw_scope_fetches",
                "fetches sent of a scope's position (global: the mark; cluster: the leader's position), each shared by the reads that began before it was sent",
                |s| s.fetches,
            ),
            (
                "ryw_scope_fetched_reads",
                "fresh reads that took a fetched scope position (their own fetch or a shared one)",
                |s| s.fetched_reads,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in &m.scopes {
                ConstCounter::new(pick(s))
                    .encode(family.encode_family(&[("scope", s.scope.as_str())])?)?;
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
        let holder = ConstGauge::new(i64::from(m.feed_holder));
        holder.encode(encoder.encode_descriptor(
            "ryw_feed_holder",
            "1 while this instance holds the position feed's lease (it polls for all)",
            None,
            holder.metric_type(),
        )?)?;
        let ages = BucketCounts {
            sum: m.age_time.as_secs_f64(),
            buckets: m
                .age_histogram()
                .map(|(le, n)| (le.map_or(f64::INFINITY, |d| d.as_secs_f64()), n))
                .collect(),
        };
        ages.encode(encoder.encode_descriptor(
            "ryw_position_age_seconds",
            "sampled age of the follower positions routing relies on (since the poll that read each was sent)",
            None,
            ages.metric_type(),
        )?)?;
        {
            let mut family = encoder.encode_descriptor(
                "ryw_follower_lag_bytes",
                "WAL bytes a follower is behind the leader",
                None,
                MetricType::Gauge,
            )?;
            for f in self.view.followers() {
                if let Some(b) = f.follower().and_then(|h| h.lag_bytes) {
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
            for f in self.view.followers() {
                if let Some(ms) = f.follower().and_then(|h| h.lag_ms) {
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
            for n in self.view.listed() {
                let labels = [("node", &*n.name)];
                ConstGauge::new(i64::from(n.in_rotation)).encode(family.encode_family(&labels)?)?;
            }
        }
        let timeline = ConstGauge::new(i64::from(self.view.history.current));
        timeline.encode(encoder.encode_descriptor(
            "ryw_timeline",
            "the leader's timeline (it grows by one at each failover; 0 while no leader is known)",
            None,
            timeline.metric_type(),
        )?)?;
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
