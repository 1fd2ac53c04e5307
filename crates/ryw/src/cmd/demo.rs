//! `ryw demo`: the main job. A local cluster in a temporary folder (lags
//! 100 ms and 400 ms), the service in-process, the bench over every
//! strategy and the causal budget sweep ([`DEMO_STRATEGIES`]), the
//! comparison table and the HTML report (with the trade-off chart); then
//! everything is torn down (also on Ctrl-C, and on error).

use super::bench::emit;
use super::proxied::ProxyInProcess;
use super::serve::{InProcess, local_config};
use crate::cli::DemoArgs;
use anyhow::Context;
use ryw_bench::{BenchConfig, ReadOn, SqlGroup, StrategySpec};
use ryw_cluster::UpOptions;
use ryw_router::RouterConfig;
use std::time::Duration;

/// What `ryw demo` compares: the fixed strategies of `all`, with `causal`
/// swept over budgets (`sweep`: 0, 5, 20, 50 and 200 ms, and `hybrid`), so
/// the report draws the trade-off between waiting and the leader's load.
pub const DEMO_STRATEGIES: &str = "leader,legacy,sticky:2s,sticky:5s,sweep,per-read-check";

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("ryw-demo-").tempdir()?;
    {
        // The servers may run as the `postgres` OS user: let it in.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    let dir = tmp.path().join("cluster");
    let opts = UpOptions {
        dir: dir.clone(),
        redis: args.redis,
        pg_bin: args.pg_bin.clone(),
        ..UpOptions::default()
    };
    println!(
        "starting a local cluster: leader + 2 streaming followers with replay delays 100 ms and 400 ms …"
    );
    let info = ryw_cluster::up(&opts).await?;
    super::cluster::print_info(&info);
    let result = with_cluster(&args, &dir, info.redis.map(|r| r.url)).await;
    println!("tearing down the cluster …");
    super::cluster::down(&dir, true)?;
    result
}

async fn with_cluster(
    args: &DemoArgs,
    dir: &std::path::Path,
    redis: Option<String>,
) -> anyhow::Result<()> {
    let listen = if args.keep {
        args.listen
    } else {
        "127.0.0.1:0".parse()?
    };
    let mut service_cfg = local_config(dir, redis.clone(), listen)?;
    // The demo's dashboard changes the local cluster's lag on purpose.
    service_cfg.lag_control = true;
    let service = InProcess::start(service_cfg).await?;
    // The service has created the tables; the proxy shares its session store.
    let proxy = match args.proxy {
        true => Some(
            ProxyInProcess::start(dir, None, ryw_router::RouterConfig::default(), redis, false)
                .await?,
        ),
        false => None,
    };
    let cfg = BenchConfig {
        targets: vec![format!("http://{}", service.addr)],
        strategies: StrategySpec::parse_list(DEMO_STRATEGIES)?,
        sql: proxy.as_ref().map_or_else(Vec::new, |p| {
            SqlGroup::ryw(&p.url(), "proxy/", &StrategySpec::all(), &[ReadOn::Other])
        }),
        users: args.users,
        duration: args.duration.0,
        cluster_dir: Some(dir.to_path_buf()),
        ..BenchConfig::default()
    };
    println!(
        "running the bench: {} users over {} strategies at the same time for {:?}; think time 0–1 s between a payment and the balance read",
        cfg.users,
        cfg.strategies.len(),
        cfg.duration
    );
    if let Some(p) = &proxy {
        println!(
            "and through ryw proxy ({}): the same strategies, the proxy/… rows; each user pays in a transaction on one connection and reads its balance on another bound to the same ryw.session",
            p.url()
        );
    }
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = interrupted.clone();
    let report = ryw_bench::run(cfg, async move {
        let _ = tokio::signal::ctrl_c().await;
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        eprintln!("interrupted: finishing the report, then tearing down");
    })
    .await;
    let outcome = match report {
        Ok(report) => {
            emit(&report, None, Some(&args.report))?;
            println!("{}", explain(&report, RouterConfig::default().hybrid_wait));
            Ok(())
        }
        Err(e) => Err(e.into()),
    };
    if args.keep && !interrupted.load(std::sync::atomic::Ordering::SeqCst) {
        println!(
            "\ndashboard: http://{}/   API docs: http://{}/docs   (Ctrl-C to stop)",
            service.addr, service.addr
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    if let Some(p) = proxy {
        tokio::time::timeout(Duration::from_secs(10), p.stop())
            .await
            .context("stopping the proxy")??;
    }
    tokio::time::timeout(Duration::from_secs(10), service.stop())
        .await
        .context("stopping the service")??;
    outcome
}

/// The table in one paragraph of plain words, then what the default
/// (`hybrid`, with budget `budget`) costs and saves against the fixed
/// strategies.
fn explain(r: &ryw_bench::BenchReport, budget: Duration) -> String {
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
fn default_verdict(
    r: &ryw_bench::BenchReport,
    h: &ryw_bench::StrategyReport,
    budget: Duration,
) -> String {
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
    let oracle = |s: &ryw_bench::StrategyReport| {
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
        ("sticky:5s", "seed 003's window"),
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
    let front = ryw_bench::html::frontier(r);
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
    use ryw_bench::{BenchReport, History, ReportMeta};

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
        let history = History::parse(lines.as_bytes(), std::path::Path::new("h")).unwrap();
        let text = explain(
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
        let history = History::parse(line.as_bytes(), std::path::Path::new("h")).unwrap();
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
        let text = explain(&report, Duration::from_millis(20));
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
