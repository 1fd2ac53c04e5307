//! `ryw bench peers`: Pgpool-II (one per `delay_threshold`) and `ryw
//! proxy` on one cluster, under the same workload in one run; and the
//! outcome in plain words.

use super::{Pgpool, PgpoolOptions, peer_groups, pgpool_name};
use crate::BenchError;
use crate::config::{BenchConfig, StrategySpec, Think};
use crate::fronts::ProxyInProcess;
use crate::report::BenchReport;
use ryw_cluster::ClusterInfo;
use ryw_router::RouterConfig;
use std::path::PathBuf;
use std::time::Duration;

/// What to run side by side.
#[derive(Debug, Clone)]
pub struct PeersOptions {
    /// The `ryw cluster` folder.
    pub cluster: PathBuf,
    /// ryw proxy's strategies (a row each, on the same connection and on
    /// another one).
    pub strategies: Vec<StrategySpec>,
    /// Virtual users in total.
    pub users: usize,
    /// How long the workload runs.
    pub duration: Duration,
    /// Think time between a payment and the balance read.
    pub think: Think,
    /// One Pgpool-II per `delay_threshold` (WAL bytes).
    pub delay_thresholds: Vec<u64>,
    /// ryw proxy's session store (the cluster's Redis), or in memory.
    pub redis_url: Option<String>,
    /// Show the progress bar.
    pub progress: bool,
}

/// What a side-by-side run gives.
#[derive(Debug)]
pub struct PeersRun {
    /// The bench's report, a row per Pgpool-II or strategy and connection.
    pub report: BenchReport,
    /// Each Pgpool-II's `SHOW pool_nodes` at the end.
    pub pool_nodes: Vec<(String, Vec<String>)>,
}

/// Starts ryw proxy (applying the service's migrations) and the
/// Pgpool-IIs, tells `say` what runs where, runs the workload until done
/// or `stop`, and stops them all.
pub async fn side_by_side(
    opts: &PeersOptions,
    say: impl Fn(String),
    stop: impl Future<Output = ()>,
) -> Result<PeersRun, BenchError> {
    if opts.delay_thresholds.is_empty() {
        return Err(BenchError::config("--delay-threshold", "none given"));
    }
    let dir = &opts.cluster;
    let info = ClusterInfo::load(dir)?;
    let proxy = ProxyInProcess::start(
        dir,
        None,
        RouterConfig::default(),
        opts.redis_url.clone(),
        true,
    )
    .await?;
    let mut pgpools: Vec<(String, Pgpool)> = Vec::new();
    let only_one = opts.delay_thresholds.len() == 1;
    for &t in &opts.delay_thresholds {
        let pool = PgpoolOptions {
            delay_threshold: t,
            // One process per client connection: the users' two each, and
            // the preflight's.
            num_init_children: (2 * opts.users as u32 + 4).clamp(8, 512),
            ..PgpoolOptions::default()
        };
        // Each in a folder of its own inside the cluster's.
        match Pgpool::start_in(&info, &pool, &format!("pgpool-{t}")).await {
            Ok(p) => pgpools.push((pgpool_name(t, only_one), p)),
            Err(e) => {
                for (_, p) in pgpools {
                    p.stop().await;
                }
                proxy.stop().await?;
                return Err(e);
            }
        }
    }
    for (name, p) in &pgpools {
        say(format!(
            "{name}: Pgpool-II at {} (statement-level load balancing, delay_threshold = {} bytes checked every {} s, \
             disable_load_balance_on_write = 'always')",
            p.url(),
            p.options.delay_threshold,
            p.options.sr_check_period,
        ));
    }
    say(format!(
        "ryw proxy at {}; {} users over {} rows for {:?}",
        proxy.url(),
        opts.users,
        2 * pgpools.len() + 2 * opts.strategies.len(),
        opts.duration
    ));
    let urls: Vec<(String, String)> = pgpools.iter().map(|(n, p)| (n.clone(), p.url())).collect();
    let cfg = BenchConfig {
        targets: Vec::new(),
        strategies: Vec::new(),
        sql: peer_groups(&urls, &proxy.url(), &opts.strategies),
        users: opts.users,
        duration: opts.duration,
        think: opts.think,
        cluster_dir: Some(dir.clone()),
        progress: opts.progress,
        ..BenchConfig::default()
    };
    let report = crate::run(cfg, stop).await;
    let mut pool_nodes = Vec::new();
    for (name, p) in pgpools {
        pool_nodes.push((name, p.pool_nodes().await.unwrap_or_default()));
        p.stop().await;
    }
    proxy.stop().await?;
    Ok(PeersRun {
        report: report?,
        pool_nodes,
    })
}

/// The side-by-side table in plain words: per row, who (Pgpool-II and its
/// threshold, or ryw proxy and its strategy) on which connection, its
/// stale reads, leader share and p99.
pub fn explain(r: &BenchReport) -> String {
    let mut out = String::from(
        "\nIn plain words (same: the read on the connection that paid; other: on a second connection of the same user):\n",
    );
    for s in &r.strategies {
        let who = match s.strategy.split_once('/') {
            Some((pgpool, mode)) if pgpool.starts_with("pgpool") => {
                match pgpool.strip_prefix("pgpool-") {
                    Some(t) => format!("Pgpool-II (delay_threshold {t}), {mode} connection"),
                    None => format!("Pgpool-II, {mode} connection"),
                }
            }
            Some((ryw, mode)) => format!(
                "ryw proxy {}, {mode} connection",
                ryw.trim_start_matches("ryw-")
            ),
            None => s.strategy.clone(),
        };
        out += &format!(
            "- {who}: {} stale of {} fresh reads{}; {:.1}% served by the leader; p99 {:.1} ms.\n",
            s.ryw_violations,
            s.reads,
            match s.stale_not_found {
                0 => String::new(),
                n => format!(" ({n} found no account at all)"),
            },
            s.leader_share * 100.0,
            s.latency_ms.p99
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ReportMeta, RunHistory};
    use std::path::Path;

    #[test]
    fn the_peers_plain_words_name_each_system_and_connection() {
        let lines = [
            r#"{"user":"u","client":"c","strategy":"pgpool/other","kind":"account","sent_us":0,"recv_us":10,"status":201,"version":0}"#,
            r#"{"user":"u","client":"c","strategy":"pgpool/other","kind":"balance","sent_us":20,"recv_us":30,"status":404,"served_by":"follower2","problem":"no-account"}"#,
            r#"{"user":"v","client":"d","strategy":"ryw-causal/same","kind":"account","sent_us":0,"recv_us":10,"status":201,"version":0}"#,
            r#"{"user":"v","client":"d","strategy":"ryw-causal/same","kind":"balance","sent_us":20,"recv_us":30,"status":200,"version":0,"served_by":"follower1"}"#,
        ]
        .join("\n");
        let history = RunHistory::parse(lines.as_bytes(), Path::new("h")).unwrap();
        let text = explain(&BenchReport::from_history(history, ReportMeta::default()));
        assert!(
            text.contains("- Pgpool-II, other connection: 1 stale of 1 fresh reads (1 found no account at all); 0.0% served by the leader"),
            "{text}"
        );
        assert!(
            text.contains("- ryw proxy causal, same connection: 0 stale of 1 fresh reads; 0.0% served by the leader"),
            "{text}"
        );
    }
}
