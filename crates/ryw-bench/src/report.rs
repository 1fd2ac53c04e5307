//! The report: per strategy, what the checker found and what it cost, the
//! followers' lag meanwhile, and the oracle line. Built from a
//! [`History`] alone, so a recorded history gives the same report offline.
//! Rendered as a terminal table ([`BenchReport::table`]) or JSON (serde);
//! the HTML page is in [`crate::html`].

use crate::BenchError;
use crate::checker::{Check, Violation, check_history};
use crate::history::{History, OpKind};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fmt::{self, Write as _};
use std::path::Path;

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
    /// Stale-read rate by time since the user's write.
    pub by_gap: Vec<GapBucket>,
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
    /// RYW violations, all strategies.
    pub ryw_violations: usize,
    /// Monotonic-read violations, all strategies.
    pub monotonic_violations: usize,
    /// The first [`MAX_LISTED_VIOLATIONS`] violations.
    pub violations: Vec<Violation>,
    /// The history the report was made from (not in the JSON; save it with
    /// [`History::save`]).
    #[serde(skip)]
    pub history: History,
}

/// A follower's configured delay as `cluster.json` (written by `ryw cluster
/// up`) records it. Only the fields the bench needs.
#[derive(Deserialize)]
struct ClusterFile {
    nodes: Vec<ClusterNode>,
}

#[derive(Deserialize)]
struct ClusterNode {
    name: String,
    role: String,
    #[serde(default)]
    delay_ms: Option<u64>,
}

/// Reads the followers' configured apply delays (`delay_ms`) from a `ryw
/// cluster` folder's `cluster.json`.
pub fn follower_delays(cluster_dir: &Path) -> Result<Vec<(String, u64)>, BenchError> {
    let path = cluster_dir.join("cluster.json");
    let text = std::fs::read_to_string(&path).map_err(BenchError::io("reading", &path))?;
    let file: ClusterFile = serde_json::from_str(&text)?;
    Ok(file
        .nodes
        .into_iter()
        .filter(|n| n.role == "follower")
        .filter_map(|n| Some((n.name, n.delay_ms?)))
        .collect())
}

/// Judges a recorded history file offline (`ryw bench check FILE`): the same
/// checker and report as a live run. `cluster_dir` gives the apply delays for
/// the oracle line.
pub fn check_file(path: &Path, cluster_dir: Option<&Path>) -> Result<BenchReport, BenchError> {
    let history = History::read(path)?;
    let follower_delays_ms = match cluster_dir {
        Some(dir) => follower_delays(dir)?,
        None => Vec::new(),
    };
    Ok(BenchReport::from_history(
        history,
        ReportMeta {
            follower_delays_ms,
            ..ReportMeta::default()
        },
    ))
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// The smallest follower apply delay: configured (`cluster.json`) if known,
/// else the median lag of the least-lagged follower in the samples.
pub fn smallest_apply_delay(
    followers: &[FollowerLag],
    configured: &[(String, u64)],
) -> Option<(f64, String)> {
    if let Some(min) = configured.iter().map(|(_, d)| *d).min() {
        return Some((
            min as f64,
            "cluster.json (configured recovery_min_apply_delay)".into(),
        ));
    }
    followers
        .iter()
        .filter(|f| f.samples > 0)
        .map(|f| f.median_ms)
        .min_by(f64::total_cmp)
        .map(|d| {
            (
                d,
                "median lag of the least-lagged follower in /api/cluster samples".into(),
            )
        })
}

/// Share of reads that were forced to the leader: sent less than `delay_ms`
/// after the user's latest acknowledged write. Returns (forced, reads).
pub fn oracle_count(
    since_write_us: impl IntoIterator<Item = Option<u64>>,
    delay_ms: f64,
) -> (u64, u64) {
    let mut forced = 0;
    let mut reads = 0;
    for gap in since_write_us {
        reads += 1;
        if gap.is_some_and(|g| (g as f64) < delay_ms * 1000.0) {
            forced += 1;
        }
    }
    (forced, reads)
}

fn gap_buckets() -> Vec<GapBucket> {
    let label = |ms: u64| {
        if ms >= 1000 {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        }
    };
    let mut out = Vec::new();
    let mut from = 0;
    for &to in &GAP_EDGES_MS {
        let text = if from == 0 {
            format!("<{}", label(to))
        } else {
            format!("{}–{}", label(from), label(to))
        };
        out.push(GapBucket {
            label: text,
            from_ms: from,
            to_ms: Some(to),
            reads: 0,
            stale: 0,
        });
        from = to;
    }
    out.push(GapBucket {
        label: format!("≥{}", label(from)),
        from_ms: from,
        to_ms: None,
        reads: 0,
        stale: 0,
    });
    out
}

fn follower_lag(history: &History, configured: &[(String, u64)]) -> Vec<FollowerLag> {
    let mut by_node: BTreeMap<&str, (Vec<f64>, u64, u64)> = BTreeMap::new();
    for s in &history.lag {
        let e = by_node.entry(&s.node).or_default();
        if let Some(l) = s.lag_ms.filter(|l| l.is_finite()) {
            e.0.push(l);
        }
        if let Some(r) = s.in_rotation {
            e.1 += 1;
            e.2 += u64::from(r);
        }
    }
    for (name, _) in configured {
        by_node.entry(name).or_default();
    }
    by_node
        .into_iter()
        .map(|(node, (mut lags, known, in_rot))| {
            lags.sort_by(f64::total_cmp);
            FollowerLag {
                node: node.to_string(),
                samples: lags.len(),
                min_ms: lags.first().copied().unwrap_or(0.0),
                median_ms: median(&lags),
                max_ms: lags.last().copied().unwrap_or(0.0),
                in_rotation_share: (known > 0).then(|| ratio(in_rot, known)),
                configured_delay_ms: configured.iter().find(|(n, _)| n == node).map(|(_, d)| *d),
            }
        })
        .collect()
}

/// Percentiles reported in `latency_cdf`.
const CDF_POINTS: [f64; 14] = [
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 98.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
];

fn latency(h: &Histogram<u64>) -> (Latency, Vec<(f64, f64)>) {
    if h.is_empty() {
        return (Latency::default(), Vec::new());
    }
    let ms = |us: u64| us as f64 / 1000.0;
    let lat = Latency {
        p50: ms(h.value_at_quantile(0.50)),
        p95: ms(h.value_at_quantile(0.95)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
        mean: h.mean() / 1000.0,
    };
    let cdf = CDF_POINTS
        .iter()
        .map(|&p| (p, ms(h.value_at_percentile(p))))
        .collect();
    (lat, cdf)
}

impl BenchReport {
    /// Checks the history and summarises it.
    pub fn from_history(history: History, meta: ReportMeta) -> BenchReport {
        let check: Check = check_history(&history.ops);
        let followers = follower_lag(&history, &meta.follower_delays_ms);
        let delay = smallest_apply_delay(&followers, &meta.follower_delays_ms);
        let elapsed_s = meta.elapsed_s.unwrap_or_else(|| history.span_s());

        // Strategy order: as configured, then any others by name.
        let mut order: Vec<String> = meta.strategy_order.clone();
        let mut others: Vec<&str> = history
            .ops
            .iter()
            .map(|o| o.strategy.as_str())
            .filter(|s| !order.iter().any(|o| o == s))
            .collect();
        others.sort_unstable();
        others.dedup();
        order.extend(others.into_iter().map(String::from));

        let mut strategies = Vec::new();
        for name in &order {
            let ops = || history.ops.iter().filter(|o| &o.strategy == name);
            let reads: Vec<_> = check
                .reads
                .iter()
                .filter(|r| &history.ops[r.op].strategy == name)
                .collect();
            let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds");
            let mut leader = 0;
            let (mut waits, mut waited) = (0u64, 0.0);
            let mut by_gap = gap_buckets();
            for r in &reads {
                let op = &history.ops[r.op];
                hist.saturating_record(op.latency_us().max(1));
                leader += u64::from(op.served_by.as_deref() == Some("leader"));
                if let Some(w) = op.waited_ms.filter(|w| *w > 0.0) {
                    waits += 1;
                    waited += w;
                }
                if let Some(gap) = r.since_write_us {
                    let ms = gap / 1000;
                    let i = GAP_EDGES_MS
                        .iter()
                        .position(|&e| ms < e)
                        .unwrap_or(GAP_EDGES_MS.len());
                    by_gap[i].reads += 1;
                    by_gap[i].stale += u64::from(r.ryw_violation);
                }
            }
            let n = reads.len() as u64;
            let ryw = reads.iter().filter(|r| r.ryw_violation).count() as u64;
            let (latency_ms, latency_cdf) = latency(&hist);
            strategies.push(StrategyReport {
                strategy: name.clone(),
                users: ops().map(|o| o.user.as_str()).collect::<HashSet<_>>().len(),
                reads: n,
                writes: ops()
                    .filter(|o| o.kind.is_write() && o.ok_with_version())
                    .count() as u64,
                stale_ok_reads: ops()
                    .filter(|o| o.kind == OpKind::Products && o.ok())
                    .count() as u64,
                errors: ops().filter(|o| o.is_error()).count() as u64,
                ryw_violations: ryw,
                stale_not_found: reads
                    .iter()
                    .filter(|r| r.ryw_violation && history.ops[r.op].found_nothing())
                    .count() as u64,
                monotonic_violations: reads.iter().filter(|r| r.monotonic_violation).count() as u64,
                stale_rate: ratio(ryw, n),
                leader_share: ratio(leader, n),
                oracle_share: delay.as_ref().map(|(d, _)| {
                    let (forced, total) = oracle_count(reads.iter().map(|r| r.since_write_us), *d);
                    ratio(forced, total)
                }),
                latency_ms,
                latency_cdf,
                reads_per_s: if elapsed_s > 0.0 {
                    n as f64 / elapsed_s
                } else {
                    0.0
                },
                waits,
                mean_wait_ms: if waits > 0 {
                    waited / waits as f64
                } else {
                    0.0
                },
                by_gap,
            });
        }

        let oracle = delay.map(|(delay_ms, source)| {
            let (forced, fresh_reads) =
                oracle_count(check.reads.iter().map(|r| r.since_write_us), delay_ms);
            Oracle {
                delay_ms,
                source,
                fresh_reads,
                forced,
                share: ratio(forced, fresh_reads),
            }
        });
        BenchReport {
            targets: meta.targets,
            think: meta.think,
            load: meta.load,
            send_token: meta.send_token,
            elapsed_s,
            interrupted: meta.interrupted,
            missed_arrivals: meta.missed_arrivals,
            missed_no_idle_user: meta.missed_no_idle_user,
            operations: history.ops.len(),
            strategies,
            followers,
            oracle,
            ryw_violations: check.ryw_violations(),
            monotonic_violations: check.monotonic_violations(),
            violations: check
                .violations
                .into_iter()
                .take(MAX_LISTED_VIOLATIONS)
                .collect(),
            history,
        }
    }

    /// The report as pretty JSON (for `--json`).
    pub fn to_json(&self) -> Result<String, BenchError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// The terminal table: one row per strategy, then the followers' lag,
    /// the oracle line and the first violations.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let pct = |x: f64| format!("{:.1}", 100.0 * x);
        let ms = |x: f64| {
            if x < 10.0 {
                format!("{x:.2}")
            } else {
                format!("{x:.1}")
            }
        };
        let header = [
            "strategy", "users", "reads", "reads/s", "stale", "stale%", "non-mono", "leader%",
            "p50 ms", "p95 ms", "p99 ms", "waits", "wait ms", "errors",
        ];
        let rows: Vec<[String; 14]> = self
            .strategies
            .iter()
            .map(|r| {
                [
                    r.strategy.clone(),
                    r.users.to_string(),
                    r.reads.to_string(),
                    format!("{:.0}", r.reads_per_s),
                    r.ryw_violations.to_string(),
                    pct(r.stale_rate),
                    r.monotonic_violations.to_string(),
                    pct(r.leader_share),
                    ms(r.latency_ms.p50),
                    ms(r.latency_ms.p95),
                    ms(r.latency_ms.p99),
                    r.waits.to_string(),
                    ms(r.mean_wait_ms),
                    r.errors.to_string(),
                ]
            })
            .collect();
        write_table(&mut s, &header, &rows);

        if !self.followers.is_empty() {
            s.push('\n');
            let header = [
                "follower",
                "delay",
                "samples",
                "min lag ms",
                "median ms",
                "max ms",
                "in rotation",
            ];
            let rows: Vec<[String; 7]> = self
                .followers
                .iter()
                .map(|f| {
                    [
                        f.node.clone(),
                        f.configured_delay_ms
                            .map_or("-".into(), |d| format!("{d}ms")),
                        f.samples.to_string(),
                        ms(f.min_ms),
                        ms(f.median_ms),
                        ms(f.max_ms),
                        f.in_rotation_share
                            .map_or("-".into(), |r| format!("{}%", pct(r))),
                    ]
                })
                .collect();
            write_table(&mut s, &header, &rows);
        }

        s.push('\n');
        match &self.oracle {
            Some(o) => {
                let _ = writeln!(
                    s,
                    "oracle: {}% of fresh reads ({} of {}) were sent less than {} ms after the user's own write, before any follower could have applied it;\n        no strategy that keeps read-your-writes without waiting can serve fewer than that from the leader on this run.\n        (delay from {})",
                    pct(o.share),
                    o.forced,
                    o.fresh_reads,
                    ms(o.delay_ms),
                    o.source
                );
            }
            None => {
                s.push_str("oracle: unknown (no follower lag samples and no cluster.json delays)\n")
            }
        }
        let _ = writeln!(
            s,
            "checked {} operations over {:.1} s: {} read-your-writes violations, {} monotonic-read violations{}",
            self.operations,
            self.elapsed_s,
            self.ryw_violations,
            self.monotonic_violations,
            if self.interrupted {
                " (stopped early)"
            } else {
                ""
            }
        );
        if self.missed_arrivals > 0 {
            let busy = self.missed_no_idle_user.min(self.missed_arrivals);
            let _ = writeln!(
                s,
                "open loop: {} offered arrivals never started: {busy} found no idle user (add users), \
                 {} came due while the bench itself ran late (a busy machine)",
                self.missed_arrivals,
                self.missed_arrivals - busy
            );
        }
        for v in self.violations.iter().take(5) {
            let _ = writeln!(
                s,
                "  {:?} at op #{}: {} {} (client {}, {}) {} < {} at t={:.3}s, served by {}",
                v.kind,
                v.op,
                v.read.as_str(),
                v.user,
                v.client,
                v.strategy,
                v.saw(),
                v.expected,
                v.sent_us as f64 / 1e6,
                v.served_by.as_deref().unwrap_or("?")
            );
        }
        s
    }
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.table())
    }
}

/// Left-aligns the first column, right-aligns the others.
fn write_table<const N: usize>(s: &mut String, header: &[&str; N], rows: &[[String; N]]) {
    let mut width = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |s: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        for (i, cell) in cells.enumerate() {
            let pad = width[i].saturating_sub(cell.chars().count());
            if i == 0 {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str("  ");
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            }
        }
        s.push('\n');
    };
    line(s, &mut header.iter().copied());
    for row in rows {
        line(s, &mut row.iter().map(String::as_str));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{LagSample, Op};

    fn op(
        user: &str,
        strategy: &str,
        kind: OpKind,
        sent_ms: u64,
        recv_ms: u64,
        version: u64,
        served_by: &str,
    ) -> Op {
        Op {
            user: user.into(),
            client: user.into(),
            strategy: strategy.into(),
            kind,
            sent_us: sent_ms * 1000,
            recv_us: recv_ms * 1000,
            status: 200,
            version: Some(version),
            served_by: Some(served_by.into()),
            waited_ms: None,
            problem: None,
        }
    }

    fn lag(t_ms: u64, node: &str, lag_ms: f64) -> LagSample {
        LagSample {
            t_us: t_ms * 1000,
            node: node.into(),
            lag_ms: Some(lag_ms),
            lag_bytes: None,
            in_rotation: Some(true),
        }
    }

    fn sample_history() -> History {
        use OpKind::*;
        History {
            ops: vec![
                op("a", "legacy", Pay, 0, 10, 1, "leader"),
                op("a", "legacy", Balance, 15, 17, 0, "follower1"), // 5 ms after: stale
                op("a", "legacy", Balance, 500, 502, 1, "follower1"),
                op("b", "leader", Pay, 0, 10, 1, "leader"),
                op("b", "leader", Balance, 20, 24, 1, "leader"), // 10 ms after
                Op {
                    waited_ms: Some(30.0),
                    ..op("b", "leader", Balance, 300, 340, 1, "leader")
                },
                Op {
                    status: 0,
                    version: None,
                    served_by: None,
                    ..op("b", "leader", Products, 400, 900, 0, "")
                },
            ],
            lag: vec![
                lag(0, "follower1", 90.0),
                lag(250, "follower1", 110.0),
                lag(500, "follower1", 100.0),
                lag(0, "follower2", 400.0),
                lag(250, "follower2", 420.0),
            ],
        }
    }

    #[test]
    fn the_report_counts_per_strategy_and_the_oracle_uses_the_least_lagged_follower() {
        let r = BenchReport::from_history(
            sample_history(),
            ReportMeta {
                strategy_order: vec!["leader".into()],
                elapsed_s: Some(2.0),
                ..ReportMeta::default()
            },
        );
        assert_eq!(
            r.strategies
                .iter()
                .map(|s| s.strategy.as_str())
                .collect::<Vec<_>>(),
            ["leader", "legacy"]
        );
        let leader = &r.strategies[0];
        assert_eq!(
            (
                leader.reads,
                leader.ryw_violations,
                leader.errors,
                leader.writes
            ),
            (2, 0, 1, 1)
        );
        assert_eq!(leader.leader_share, 1.0);
        assert_eq!((leader.waits, leader.mean_wait_ms), (1, 30.0));
        assert_eq!(leader.reads_per_s, 1.0);
        assert!(
            (leader.latency_ms.p50 - 4.0).abs() < 0.01
                && (leader.latency_ms.max - 40.0).abs() < 0.05,
            "{:?}",
            leader.latency_ms
        );
        let legacy = &r.strategies[1];
        assert_eq!(
            (
                legacy.reads,
                legacy.ryw_violations,
                legacy.stale_rate,
                legacy.leader_share
            ),
            (2, 1, 0.5, 0.0)
        );
        assert_eq!(legacy.by_gap[0].label, "<10ms");
        assert_eq!((legacy.by_gap[0].reads, legacy.by_gap[0].stale), (1, 1));
        assert_eq!(legacy.by_gap.last().unwrap().label, "≥2s");

        // follower1's median lag is 100 ms: reads 5 and 10 ms after a write were forced.
        let f1 = &r.followers[0];
        assert_eq!(
            (
                f1.node.as_str(),
                f1.samples,
                f1.min_ms,
                f1.median_ms,
                f1.max_ms
            ),
            ("follower1", 3, 90.0, 100.0, 110.0)
        );
        let o = r.oracle.as_ref().unwrap();
        assert_eq!((o.delay_ms, o.forced, o.fresh_reads), (100.0, 2, 4));
        assert_eq!(o.share, 0.5);
        assert_eq!(legacy.oracle_share, Some(0.5));
        assert_eq!((r.ryw_violations, r.monotonic_violations), (1, 0));
    }

    #[test]
    fn configured_delays_win_over_the_samples() {
        let meta = ReportMeta {
            follower_delays_ms: vec![("follower1".into(), 8), ("follower2".into(), 400)],
            ..ReportMeta::default()
        };
        let r = BenchReport::from_history(sample_history(), meta);
        let o = r.oracle.unwrap();
        assert_eq!(
            (o.delay_ms, o.forced),
            (8.0, 1),
            "only the read 5 ms after the write is under 8 ms"
        );
        assert!(o.source.contains("cluster.json"));
        assert_eq!(r.followers[1].configured_delay_ms, Some(400));
    }

    #[test]
    fn oracle_arithmetic() {
        let gaps = [Some(0), Some(99_999), Some(100_000), Some(250_000), None];
        assert_eq!(
            oracle_count(gaps, 100.0),
            (2, 5),
            "strictly less than the delay; no write yet is never forced"
        );
        assert_eq!(oracle_count(gaps, 0.0), (0, 5));
        assert_eq!(oracle_count([], 100.0), (0, 0));
        let f = |node: &str, samples, median_ms| FollowerLag {
            node: node.into(),
            samples,
            min_ms: 0.0,
            median_ms,
            max_ms: 0.0,
            in_rotation_share: None,
            configured_delay_ms: None,
        };
        assert_eq!(
            smallest_apply_delay(
                &[f("f1", 3, 400.0), f("f2", 2, 101.0), f("f3", 0, 0.0)],
                &[]
            )
            .unwrap()
            .0,
            101.0
        );
        assert_eq!(smallest_apply_delay(&[], &[]), None);
    }

    #[test]
    fn the_table_shows_every_strategy_the_lag_and_the_oracle() {
        let r = BenchReport::from_history(
            sample_history(),
            ReportMeta {
                elapsed_s: Some(2.0),
                ..ReportMeta::default()
            },
        );
        let t = r.table();
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("strategy  users  reads  reads/s  stale  stale%"),
            "{t}"
        );
        assert!(
            lines[1].starts_with("leader  ") && lines[2].starts_with("legacy  "),
            "{t}"
        );
        assert!(lines[2].contains(" 50.0 "), "stale% of legacy: {t}");
        assert!(t.contains("follower1"), "{t}");
        assert!(t.contains("oracle: 50.0% of fresh reads (2 of 4)"), "{t}");
        assert!(
            t.contains("1 read-your-writes violations, 0 monotonic-read violations"),
            "{t}"
        );
        assert!(t.contains("ReadYourWrites at op #1: balance a"), "{t}");
        // columns line up: every row of the strategy table is as wide as the header
        assert_eq!(lines[1].chars().count(), lines[0].chars().count());
    }

    #[test]
    fn missed_arrivals_are_told_apart_by_cause() {
        let meta = |missed, busy| ReportMeta {
            missed_arrivals: missed,
            missed_no_idle_user: busy,
            ..ReportMeta::default()
        };
        let r = BenchReport::from_history(sample_history(), meta(7, 2));
        assert!(
            r.table().contains(
                "open loop: 7 offered arrivals never started: 2 found no idle user (add users), \
                 5 came due while the bench itself ran late (a busy machine)"
            ),
            "{}",
            r.table()
        );
        let json: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
        assert_eq!(
            (&json["missed_arrivals"], &json["missed_no_idle_user"]),
            (&serde_json::json!(7), &serde_json::json!(2))
        );
        let quiet = BenchReport::from_history(sample_history(), meta(0, 0));
        assert!(!quiet.table().contains("open loop"));
    }

    #[test]
    fn the_json_report_round_trips() {
        let r = BenchReport::from_history(sample_history(), ReportMeta::default());
        let json = r.to_json().unwrap();
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["strategies"][1]["ryw_violations"], 1);
        assert_eq!(back["oracle"]["forced"], 2);
        assert!(back.get("history").is_none());
    }

    #[test]
    fn a_history_file_is_checked_offline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        std::fs::write(
            &path,
            r#"{"user":"u1","client":"u1-phone","strategy":"legacy","kind":"pay","sent_us":0,"recv_us":5000,"status":201,"version":1,"served_by":"leader"}
{"user":"u1","client":"u1-laptop","strategy":"legacy","kind":"balance","sent_us":6000,"recv_us":7000,"status":200,"version":0,"served_by":"follower2"}
{"user":"u1","client":"u1-laptop","strategy":"legacy","kind":"balance","sent_us":8000,"recv_us":9000,"status":200,"version":1,"served_by":"follower1"}
{"user":"u1","client":"u1-laptop","strategy":"legacy","kind":"balance","sent_us":9500,"recv_us":9900,"status":200,"version":0,"served_by":"follower2"}
{"kind":"lag","t_us":0,"node":"follower1","lag_ms":2}
{"kind":"lag","t_us":0,"node":"follower2","lag_ms":400,"in_rotation":true}
"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("cluster.json"), r#"{"version":1,"nodes":[{"name":"leader","role":"leader","delay_ms":null},{"name":"follower1","role":"follower","delay_ms":3},{"name":"follower2","role":"follower","delay_ms":400}]}"#).unwrap();
        let r = check_file(&path, None).unwrap();
        assert_eq!(
            (r.ryw_violations, r.monotonic_violations, r.operations),
            (2, 1, 4)
        );
        assert_eq!(r.oracle.as_ref().unwrap().delay_ms, 2.0);
        let r = check_file(&path, Some(dir.path())).unwrap();
        assert_eq!(r.oracle.as_ref().unwrap().delay_ms, 3.0);
        assert_eq!(
            r.oracle.as_ref().unwrap().forced,
            1,
            "of the reads 1, 3 and 4.5 ms after the write, only the first is under 3 ms"
        );
    }

    #[test]
    fn a_read_that_found_nothing_is_judged_offline_not_counted_as_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        // 1: no profile yet (right); 2: account created; 3: a follower without
        // the account (stale); 4: another 404 (an error); 5: an older bench's
        // 404 without `problem` (an error, as it was then).
        std::fs::write(
            &path,
            r#"{"user":"u1","client":"c","strategy":"legacy","kind":"me","sent_us":0,"recv_us":900,"status":404,"served_by":"follower1","problem":"no-profile"}
{"user":"u1","client":"c","strategy":"legacy","kind":"account","sent_us":1000,"recv_us":2000,"status":201,"version":0,"served_by":"leader"}
{"user":"u1","client":"c","strategy":"legacy","kind":"balance","sent_us":2100,"recv_us":2500,"status":404,"served_by":"follower2","waited_ms":0,"problem":"no-account"}
{"user":"u1","client":"c","strategy":"legacy","kind":"balance","sent_us":2600,"recv_us":2700,"status":404,"served_by":"none","problem":"not-available"}
{"user":"u1","client":"c","strategy":"legacy","kind":"balance","sent_us":2800,"recv_us":2900,"status":404,"served_by":"none"}
"#,
        )
        .unwrap();
        let r = check_file(&path, None).unwrap();
        assert_eq!((r.ryw_violations, r.monotonic_violations), (1, 0));
        let legacy = &r.strategies[0];
        assert_eq!(
            (
                legacy.reads,
                legacy.ryw_violations,
                legacy.stale_not_found,
                legacy.errors
            ),
            (2, 1, 1, 2)
        );
        assert_eq!(r.violations[0].version, None);
        let t = r.table();
        assert!(
            t.contains(
                "ReadYourWrites at op #2: balance u1 (client c, legacy) found nothing (404) < 0"
            ),
            "{t}"
        );
        assert!(t.contains("served by follower2"), "{t}");
        let json: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
        assert_eq!(json["violations"][0]["version"], serde_json::Value::Null);
    }
}
