//! Building the report from a history: the checker over every operation,
//! then, per strategy, the counts, the latency distribution, the leader
//! share, the waits (and the wasted ones: a read that waited, `waited_ms` >
//! 0, and was served by the leader anyway) and the stale-read rate by time
//! since the user's write.

use super::lag::follower_lag;
use super::oracle::{largest_apply_delay, oracle_count, smallest_apply_delay};
use super::{
    BenchReport, FollowerShare, GAP_EDGES_MS, GapBucket, Latency, MAX_LISTED_VIOLATIONS, Oracle,
    ReportMeta, StrategyReport, ratio,
};
use crate::BenchError;
use crate::checker::{Check, check_history};
use crate::history::{OpKind, RunHistory};
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashSet};

/// How much later than its apply delay a follower has shown a write, at the
/// 99th percentile (FACTS: catch-up p99 is the delay + 10 ms).
const CATCH_UP_SLACK_MS: f64 = 10.0;

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
    pub fn from_history(history: RunHistory, meta: ReportMeta) -> BenchReport {
        let check: Check = check_history(&history.ops);
        let followers = follower_lag(&history, &meta.follower_delays_ms);
        let delay = smallest_apply_delay(&followers, &meta.follower_delays_ms);
        let every_follower_after_ms = largest_apply_delay(&followers, &meta.follower_delays_ms)
            .map(|d| d + CATCH_UP_SLACK_MS);
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
            let (mut waits, mut waited, mut wasted) = (0u64, 0.0, 0u64);
            let mut by_gap = gap_buckets();
            let mut split: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
            for r in &reads {
                let op = &history.ops[r.op];
                hist.saturating_record(op.latency_us().max(1));
                let on_leader = op.served_by.as_deref() == Some("leader");
                leader += u64::from(on_leader);
                if let Some(node) = op.served_by.as_deref().filter(|_| !on_leader) {
                    let all_could = every_follower_after_ms.is_some_and(|after| {
                        r.since_write_us.is_some_and(|g| g as f64 >= after * 1000.0)
                    });
                    let e = split.entry(node).or_default();
                    e.0 += 1;
                    e.1 += u64::from(all_could);
                }
                if let Some(w) = op.waited_ms.filter(|w| *w > 0.0) {
                    waits += 1;
                    waited += w;
                    // It waited for a follower, and the leader served it.
                    wasted += u64::from(on_leader);
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
                wasted_waits: wasted,
                by_gap,
                follower_split: split
                    .into_iter()
                    .map(|(node, (reads, when_all_could))| FollowerShare {
                        node: node.to_owned(),
                        reads,
                        when_all_could,
                    })
                    .collect(),
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
            every_follower_after_ms,
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
}
