//! `ryw demo`: the main job. A local cluster in a temporary folder (lags
//! 100 ms and 400 ms), the service in-process, the bench over every
//! strategy, the comparison table and the HTML report; then everything is
//! torn down (also on Ctrl-C, and on error).

use super::bench::emit;
use super::proxied::ProxyInProcess;
use super::serve::{InProcess, local_config};
use crate::cli::DemoArgs;
use anyhow::Context;
use ryw_bench::{BenchConfig, ReadOn, SqlGroup, StrategySpec};
use ryw_cluster::UpOptions;
use std::time::Duration;

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
    let service = InProcess::start(local_config(dir, redis.clone(), listen)?).await?;
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
        strategies: StrategySpec::all(),
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
            println!("{}", explain(&report));
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

/// The table in one paragraph of plain words.
fn explain(r: &ryw_bench::BenchReport) -> String {
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
    for name in [
        "leader",
        "sticky:2s",
        "sticky:5s",
        "causal",
        "hybrid",
        "per-read-check",
    ] {
        if let Some(s) = find(name) {
            out += &format!(
                "- {name}: {} stale of {} fresh reads; {:.1}% served by the leader; p99 {:.1} ms.\n",
                s.ryw_violations,
                s.reads,
                s.leader_share * 100.0,
                s.latency_ms.p99
            );
        }
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
        let text = explain(&BenchReport::from_history(history, ReportMeta::default()));
        assert!(
            text.contains(
                "- legacy (random follower): 2 of 3 fresh reads missed the user's own write \
                 (1 showed an older balance or profile, 1 found no account or profile at all: a 404)."
            ),
            "{text}"
        );
    }
}
