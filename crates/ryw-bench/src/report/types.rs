//! What a report holds, and what it is given besides the history.

use crate::checker::Violation;
use crate::history::RunHistory;
use serde::{Deserialize, Serialize};

/// How many violations the report lists one by one (all are counted).
pub const MAX_LISTED_VIOLATIONS: usize = 100;

/// Upper edges (ms, exclusive) of the "time since the user's write" buckets
/// the stale-read rate is broken down by; the last bucket is open.
pub const GAP_EDGES_MS: [u64; 7] = [10, 50, 100, 200, 500, 1000, 2000];

/// What a report knows besides the history: how the run was configured.
/// Everything is optional so an offline check can leave it out.
#[derive(Debug, Clone, Default)]
pub struct ReportMeta {
    /// Service base URLs.
    pub targets: Vec<String>,
    /// Think time as given (`0ms..1s`).
    pub think: Option<String>,
    /// `closed` or `open:RATE`.
    pub load: Option<String>,
    /// Whether the client echoed the consistency token.
    pub send_token: Option<bool>,
    /// Wall time of the workload (default: the history's span).
    pub elapsed_s: Option<f64>,
    /// Stopped early (Ctrl-C).
    pub interrupted: bool,
    /// Open loop: offered arrivals (rate × elapsed) that never started an
    /// iteration, whatever the cause.
    pub missed_arrivals: u64,
    /// Open loop: of those, arrivals that found every user busy.
    pub missed_no_idle_user: u64,
    /// Order of the strategies in the report; others follow by name.
    pub strategy_order: Vec<String>,
    /// Followers' configured apply delays (`cluster.json` `delay_ms`); when
    /// empty the oracle estimates the delay from the lag samples.
    pub follower_delays_ms: Vec<(String, u64)>,
}

/// Read latency summary, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// Fresh reads and stale ones in one "time since the user's latest
/// acknowledged write" bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapBucket {
    /// `<10ms`, `10–50ms`, …, `≥2s`.
    pub label: String,
    /// Lower edge (ms, inclusive).
    pub from_ms: u64,
    /// Upper edge (ms, exclusive); `None` for the last bucket.
    pub to_ms: Option<u64>,
    /// Checked fresh reads in the bucket.
    pub reads: u64,
    /// Of those, RYW violations.
    pub stale: u64,
}

/// The fresh reads one follower served for a strategy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowerShare {
    /// The follower (`served_by`).
    pub node: String,
    /// Checked fresh reads it served.
    pub reads: u64,
    /// Of those, reads every follower could have served: sent at least
    /// [`BenchReport::every_follower_after_ms`] after the user's own write.
    pub when_all_could: u64,
}

/// Everything measured for one strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategyReport {
    /// `X-Read-Strategy` value (`sticky:2s`).
    pub strategy: String,
    /// Distinct users.
    pub users: usize,
    /// Checked fresh reads (`balance`, `me`: 2xx with a version, or a 404
    /// that found nothing).
    pub reads: u64,
    /// Acknowledged writes.
    pub writes: u64,
    /// Stale-ok reads (`products`) that succeeded.
    pub stale_ok_reads: u64,
    /// Requests of any kind without a 2xx answer (incl. timeouts), except
    /// fresh reads that found nothing (those are checked reads).
    pub errors: u64,
    /// Fresh reads older than the user's acknowledged write.
    pub ryw_violations: u64,
    /// Of those, reads that found nothing at all (404: the node had not
    /// replayed the account's or profile's creation yet).
    #[serde(default)]
    pub stale_not_found: u64,
    /// Reads older than what the same client had already read.
    pub monotonic_violations: u64,
    /// `ryw_violations / reads`.
    pub stale_rate: f64,
    /// Share of checked fresh reads served by the leader (`served_by`).
    pub leader_share: f64,
    /// Share of this strategy's fresh reads that no follower could have
    /// served yet (see [`Oracle`]); `None` when the delay is unknown.
    pub oracle_share: Option<f64>,
    /// Fresh-read latency.
    pub latency_ms: Latency,
    /// Fresh-read latency distribution: (percentile, ms) points.
    pub latency_cdf: Vec<(f64, f64)>,
    /// Checked fresh reads per second of run time.
    pub reads_per_s: f64,
    /// Fresh reads on which the server waited for a follower (`waited_ms` > 0).
    pub waits: u64,
    /// Mean of `waited_ms` over those reads.
    pub mean_wait_ms: f64,
    /// Of those, reads served by the leader anyway (`served_by` is
    /// `leader`): wasted waits, judged from the client's side.
    #[serde(default)]
    pub wasted_waits: u64,
    /// Stale-read rate by time since the user's write.
    pub by_gap: Vec<GapBucket>,
    /// Fresh reads per follower that served any, by name: how evenly the
    /// followers that have a write share its reads.
    #[serde(default)]
    pub follower_split: Vec<FollowerShare>,
}

/// One follower's replication lag while the bench ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowerLag {
    /// Follower name.
    pub node: String,
    /// Samples with a lag value.
    pub samples: usize,
    /// Smallest lag seen (ms).
    pub min_ms: f64,
    /// Median lag (ms).
    pub median_ms: f64,
    /// Largest lag seen (ms).
    pub max_ms: f64,
    /// Share of samples in which it was in rotation.
    pub in_rotation_share: Option<f64>,
    /// Configured apply delay from `cluster.json`, if known.
    pub configured_delay_ms: Option<u64>,
}

/// The leader share no strategy can beat on this run without waiting: the
/// share of fresh reads sent sooner after the user's own latest acknowledged
/// write than the smallest follower apply delay, i.e. before any follower
/// could have applied it. A strategy that keeps read-your-writes must send
/// those to the leader (or make them wait).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Oracle {
    /// The smallest follower apply delay (ms).
    pub delay_ms: f64,
    /// Where it comes from (`cluster.json` or the `/api/cluster` samples).
    pub source: String,
    /// Checked fresh reads, all strategies.
    pub fresh_reads: u64,
    /// Of those, sent within `delay_ms` of the user's latest acknowledged write.
    pub forced: u64,
    /// `forced / fresh_reads`.
    pub share: f64,
}

/// The outcome of a bench run or of an offline check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    /// Service base URLs (empty offline).
    pub targets: Vec<String>,
    /// Think time as configured.
    pub think: Option<String>,
    /// `closed` or `open:RATE`.
    pub load: Option<String>,
    /// Whether the client echoed the consistency token.
    pub send_token: Option<bool>,
    /// Run time of the workload (s).
    pub elapsed_s: f64,
    /// Stopped early (Ctrl-C): the numbers cover what ran.
    pub interrupted: bool,
    /// Open loop: offered arrivals (rate × elapsed) that never started an
    /// iteration, whatever the cause: no idle user, or the bench's own
    /// arrival clock running late (a busy machine).
    pub missed_arrivals: u64,
    /// Open loop: of those, arrivals that found every user busy (add users);
    /// the rest came due while the arrival clock ran late.
    #[serde(default)]
    pub missed_no_idle_user: u64,
    /// Requests recorded in the history.
    pub operations: usize,
    /// Per strategy, in the configured order.
    pub strategies: Vec<StrategyReport>,
    /// Followers' lag meanwhile.
    pub followers: Vec<FollowerLag>,
    /// The oracle line, when the smallest apply delay is known.
    pub oracle: Option<Oracle>,
    /// A fresh read sent this long after the user's own write could have
    /// been served by every follower: the largest apply delay + 10 ms (a
    /// catch-up's p99 beyond its delay). `None` when the delays are unknown.
    #[serde(default)]
    pub every_follower_after_ms: Option<f64>,
    /// RYW violations, all strategies.
    pub ryw_violations: usize,
    /// Monotonic-read violations, all strategies.
    pub monotonic_violations: usize,
    /// The first [`MAX_LISTED_VIOLATIONS`] violations.
    pub violations: Vec<Violation>,
    /// The history the report was made from (not in the JSON; save it with
    /// [`RunHistory::save`]).
    #[serde(skip)]
    pub history: RunHistory,
}
