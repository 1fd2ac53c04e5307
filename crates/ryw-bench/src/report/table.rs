//! The terminal table: one row per strategy, the followers' lag, the oracle
//! line, the totals and the first violations.

use super::{BenchReport, ratio};
use std::fmt::{self, Write as _};

impl BenchReport {
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
            "p50 ms", "p95 ms", "p99 ms", "waits", "wasted", "wait ms", "errors",
        ];
        let rows: Vec<[String; 15]> = self
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
                    r.wasted_waits.to_string(),
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

        if self.strategies.iter().any(|r| !r.follower_split.is_empty()) {
            s.push('\n');
            let after = self
                .every_follower_after_ms
                .map_or("(delays unknown)".to_owned(), |a| {
                    format!("≥ {a:.0} ms after the write")
                });
            let split = |r: &super::StrategyReport, all_could: bool| {
                let n =
                    |f: &super::FollowerShare| if all_could { f.when_all_could } else { f.reads };
                let total: u64 = r.follower_split.iter().map(n).sum();
                r.follower_split
                    .iter()
                    .map(|f| format!("{} {}%", f.node, pct(ratio(n(f), total))))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let header = [
                "strategy",
                "follower reads",
                "every follower could serve",
                "split of those",
                "split of all follower reads",
            ];
            let rows: Vec<[String; 5]> = self
                .strategies
                .iter()
                .filter(|r| !r.follower_split.is_empty())
                .map(|r| {
                    [
                        r.strategy.clone(),
                        r.follower_split
                            .iter()
                            .map(|f| f.reads)
                            .sum::<u64>()
                            .to_string(),
                        r.follower_split
                            .iter()
                            .map(|f| f.when_all_could)
                            .sum::<u64>()
                            .to_string(),
                        split(r, true),
                        split(r, false),
                    ]
                })
                .collect();
            let _ = writeln!(
                s,
                "fresh reads by follower (\"every follower could serve\": sent {after})"
            );
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
