//! The report in plain words: what `ryw demo` prints under the table.

use super::{BenchReport, StrategyReport};
use std::time::Duration;

/// The table in one paragraph of plain words (`ryw demo` prints it under
/// the table), then what the default (`hybrid`, with budget `budget`)
/// costs and saves against the fixed strategies.
pub fn plain_words(r: &BenchReport, budget: Duration) -> String {
    let find = |name: &str| r.strategies.iter().find(|s| s.strategy == name);
    let mut out = String::from("\nIn plain words:\n");
    if let Some(l) = find("legacy") {
        let older = l.ryw_violations - l.stale_not_found;
        out += &format!(
            "- legacy (random follower): {} of {} fresh reads missed the user's own write ({older} showed an older balance or profile",
            l.ryw_violations, l.reads
        );
        if l.stale_not_found > 0 {
            out += &format!(
                ", {} found no account or profile at all: a 404",
                l.stale_not_found
            );
        }
        out += ").\n";
    }
    for s in &r.strategies {
        if s.strategy == "legacy" || s.strategy.starts_with("proxy/") {
            continue;
        }
        out += &format!(
            "- {}: {} stale of {} fresh reads; {:.1}% served by the leader; p99 {:.1} ms",
            s.strategy,
            s.ryw_violations,
            s.reads,
            s.leader_share * 100.0,
            s.latency_ms.p99
        );
        if s.waits > 0 {
            out += &format!("; {} waits, {} wasted", s.waits, s.wasted_waits);
        }
        out += ".\n";
    }
    let proxied: Vec<_> = r
        .strategies
        .iter()
        .filter(|s| s.strategy.starts_with("proxy/"))
        .collect();
    if !proxied.is_empty() {
        out += "- through ryw proxy (a payment in a transaction on one connection, the balance read on another bound to the same ryw.session):";
        let parts: Vec<String> = proxied
            .iter()
            .map(|s| {
                format!(
                    " {} {} stale of {}, {:.1}% leader",
                    s.strategy.trim_start_matches("proxy/"),
                    s.ryw_violations,
                    s.reads,
                    s.leader_share * 100.0
                )
            })
            .collect();
        out += &parts.join(";");
        out += ".\n";
    }
    if let Some(o) = &r.oracle {
        out += &format!(
            "- oracle: {:.1}% of fresh reads came sooner after the user's own payment than any follower could have applied it; no strategy can serve those from a follower without waiting.\n",
            o.share * 100.0
        );
    }
    if let Some(h) = find("hybrid") {
        out += &default_verdict(r, h, budget);
    }
    out
}

/// What the default costs and saves, against the fixed strategies of the
/// same run: the figures issue 14 asks of it.
fn default_verdict(r: &BenchReport, h: &StrategyReport, budget: Duration) -> String {
    let find = |name: &str| r.strategies.iter().find(|s| s.strategy == name);
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    let share = |w: u64, n: u64| {
        if n == 0 {
            "no waits".to_string()
        } else {
            format!("{w} of {n} waits, {:.1}%", 100.0 * w as f64 / n as f64)
        }
    };
    let mut out = String::from("\nThe default, hybrid (budget ");
    out += &format!("{} ms):\n", budget.as_millis());
    let oracle = |s: &StrategyReport| {
        s.oracle_share
            .map(|o| format!(" (its users' oracle {})", pct(o)))
            .unwrap_or_default()
    };
    if let Some(c0) = find("causal:0ms") {
        let diff = 100.0 * (h.leader_share - c0.leader_share);
        out += &format!(
            "- leader share {}{} against causal:0ms's {}{}: {diff:+.1} points{}.\n",
            pct(h.leader_share),
            oracle(h),
            pct(c0.leader_share),
            oracle(c0),
            if diff < 0.0 {
                ", the reads it served from a follower after waiting for one about to catch up (causal:0ms never waits)"
            } else {
                " (the two groups of users differ by chance too: compare each with its oracle)"
            },
        );
    }
    let limit = budget.as_secs_f64() * 1000.0 + 2.0;
    out += &format!(
        "- fresh-read p99 {:.1} ms, {} its budget + 2 ms ({limit:.0} ms); {} reads waited, mean {:.1} ms.\n",
        h.latency_ms.p99,
        if h.latency_ms.p99 <= limit {
            "within"
        } else {
            "OVER"
        },
        h.waits,
        h.mean_wait_ms,
    );
    out += &format!("- wasted waits: {}", share(h.wasted_waits, h.waits));
    if let Some(c20) = find("causal:20ms") {
        out += &format!(
            ", against causal:20ms's {} (it waits blindly, the same budget)",
            share(c20.wasted_waits, c20.waits)
        );
    }
    out += ".\n";
    for (name, what) in [
        ("leader", "every fresh read on the leader"),
        ("sticky:5s", "the .NET demo's 5 s window"),
        ("causal:200ms", "the longest blind wait"),
        ("per-read-check", "a round trip per read"),
    ] {
        if let Some(s) = find(name) {
            out += &format!(
                "- against {name} ({what}): {:+.1} points of leader share, {:+.1} ms of p99.\n",
                100.0 * (h.leader_share - s.leader_share),
                h.latency_ms.p99 - s.latency_ms.p99,
            );
        }
    }
    let front = crate::html::frontier(r);
    out += &format!(
        "- the frontier (no strategy that kept read-your-writes is better on both leader share and p99): {}; hybrid {} on it.\n",
        front.join(", "),
        if front.iter().any(|s| s == "hybrid") {
            "is"
        } else {
            "is NOT"
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ReportMeta, RunHistory};

    #[test]
    fn the_plain_words_tell_older_versions_from_reads_that_found_nothing() {
        let lines = [
            r#"{"user":"u","client":"c","strategy":"legacy","kind":"account","sent_us":0,"recv_us":10,"status":201,"version":0}"#,
            r#"{"user":"u","client":"c","strategy":"legacy","kind":"balance","sent_us":20,"recv_us":30,"status":404,"served_by":"follower2","problem":"no-account"}"#,
            r#"{"user":"u","client":"c","strategy":"legacy","kind":"pay","sent_us":40,"recv_us":50,"status":201,"version":1}"#,
            r#"{"user":"u","client":"c","strategy":"legacy","kind":"balance","sent_us":60,"recv_us":70,"status":200,"version":0}"#,
            r#"{"user":"u","client":"c","strategy":"legacy","kind":"balance","sent_us":80,"recv_us":90,"status":200,"version":1}"#,
        ]
        .join("\n");
        let history = RunHistory::parse(lines.as_bytes(), std::path::Path::new("h")).unwrap();
        let text = plain_words(
            &BenchReport::from_history(history, ReportMeta::default()),
            Duration::from_millis(20),
        );
        assert!(
            text.contains(
                "- legacy (random follower): 2 of 3 fresh reads missed the user's own write \
                 (1 showed an older balance or profile, 1 found no account or profile at all: a 404)."
            ),
            "{text}"
        );
    }

    #[test]
    fn the_verdict_holds_the_default_against_the_fixed_strategies() {
        let line = r#"{"user":"u","client":"c","strategy":"hybrid","kind":"balance","sent_us":0,"recv_us":10,"status":200,"version":0,"served_by":"leader"}"#;
        let history = RunHistory::parse(line.as_bytes(), std::path::Path::new("h")).unwrap();
        let mut report = BenchReport::from_history(history, ReportMeta::default());
        let template = report.strategies[0].clone();
        let point = |name: &str, share: f64, p99: f64, waits: u64, wasted: u64| {
            let mut s = template.clone();
            s.strategy = name.into();
            s.leader_share = share;
            s.latency_ms.p99 = p99;
            s.waits = waits;
            s.wasted_waits = wasted;
            s
        };
        report.strategies = vec![
            point("causal:0ms", 0.124, 0.7, 0, 0),
            point("causal:20ms", 0.11, 20.8, 40, 12),
            point("hybrid", 0.105, 15.2, 12, 0),
        ];
        let text = plain_words(&report, Duration::from_millis(20));
        for needle in [
            "- hybrid: 0 stale of 1 fresh reads; 10.5% served by the leader; p99 15.2 ms; 12 waits, 0 wasted.",
            "leader share 10.5% against causal:0ms's 12.4%: -1.9 points, the reads it served",
            "fresh-read p99 15.2 ms, within its budget + 2 ms (22 ms)",
            "wasted waits: 0 of 12 waits, 0.0%, against causal:20ms's 12 of 40 waits, 30.0%",
            "the frontier (no strategy that kept read-your-writes is better on both leader share and p99): causal:0ms, hybrid; hybrid is on it.",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
    }
}
