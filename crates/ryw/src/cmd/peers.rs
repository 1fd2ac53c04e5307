//! The bench through a SQL front (`ryw bench --proxy`), `ryw bench peers`
//! (Pgpool-II and `ryw proxy` side by side) and `ryw bench overhead`
//! (pgbench straight to a follower, through PgBouncer and through `ryw
//! proxy`, interleaved).

use super::bench::{ctrl_c, emit, parse_tps};
use super::proxied::{ProxyInProcess, migrate_cluster};
use crate::cli::{BenchRunArgs, OverheadArgs, PeersArgs};
use anyhow::{Context, bail};
use ryw_bench::peers::{PgBouncer, Pgpool, PgpoolOptions, peer_groups, pgpool_name};
use ryw_bench::{BenchConfig, BenchReport, Load, ReadOn, Rounds, Series, SqlGroup, StrategySpec};
use ryw_router::{RouterConfig, Strategy};
use std::path::Path;
use std::time::Duration;

/// The cluster's Redis URL when `--redis` asks for it.
fn cluster_redis(dir: &Path, redis: bool) -> anyhow::Result<Option<String>> {
    if !redis {
        return Ok(None);
    }
    let info = ryw_cluster::ClusterInfo::load(dir)?;
    Ok(Some(info.redis.map(|r| r.url).context(
        "--redis: this cluster has no Redis (`ryw cluster up --redis`)",
    )?))
}

/// `ryw bench --proxy [PGURL]`: the bench's workload through a SQL front,
/// one group per strategy (and per `--read-on` mode).
pub async fn bench_proxy(args: BenchRunArgs) -> anyhow::Result<()> {
    let read_on = ReadOn::parse_list(&args.read_on)?;
    let strategies = StrategySpec::parse_list(&args.strategies)?;
    let given = args.proxy.clone().flatten();
    let (url, proxy) = match (given, &args.cluster) {
        (Some(url), Some(dir)) => {
            migrate_cluster(dir).await?;
            (url, None)
        }
        (Some(url), None) => (url, None),
        (None, Some(dir)) => {
            let redis = cluster_redis(dir, args.redis)?;
            let p = ProxyInProcess::start(dir, None, RouterConfig::default(), redis, true).await?;
            eprintln!("ryw proxy in this process: {}", p.url());
            (p.url(), Some(p))
        }
        (None, None) => bail!(
            "--proxy without a URL starts ryw proxy in this process on a cluster: add --cluster DIR \
             (or give a running proxy: --proxy postgres://postgres@127.0.0.1:6432/ryw)"
        ),
    };
    let cfg = BenchConfig {
        targets: Vec::new(),
        strategies: Vec::new(),
        sql: SqlGroup::ryw(&url, "", &strategies, &read_on),
        users: args.users,
        duration: args.duration.0,
        think: args.think.parse()?,
        load: args.load.parse::<Load>()?,
        cluster_dir: args.cluster.clone(),
        progress: !args.quiet,
        ..BenchConfig::default()
    };
    let report = match cfg.validate() {
        Ok(()) => ryw_bench::run(cfg, ctrl_c()).await.map_err(Into::into),
        Err(e) => Err(anyhow::Error::from(e)),
    };
    if let Some(p) = proxy {
        p.stop().await?;
    }
    emit(&report?, args.json.as_deref(), args.report.as_deref())
}

/// `ryw bench peers`: Pgpool-II and `ryw proxy` on one cluster, in one run.
pub async fn peers(args: PeersArgs) -> anyhow::Result<()> {
    let dir = &args.cluster;
    let info = ryw_cluster::ClusterInfo::load(dir)?;
    let strategies = StrategySpec::parse_list(&args.strategies)?;
    let think = args.think.parse()?;
    let redis = cluster_redis(dir, args.redis)?;
    let thresholds: Vec<u64> = args
        .delay_threshold
        .split(',')
        .map(|t| t.trim().parse::<u64>())
        .collect::<Result<_, _>>()
        .context("--delay-threshold: WAL bytes, comma-separated (e.g. 1,10000000)")?;
    anyhow::ensure!(!thresholds.is_empty(), "--delay-threshold: none given");
    let proxy = ProxyInProcess::start(dir, None, RouterConfig::default(), redis, true).await?;
    let mut pgpools: Vec<(String, Pgpool)> = Vec::new();
    for &t in &thresholds {
        let opts = PgpoolOptions {
            delay_threshold: t,
            // One process per client connection: the users' two each, and
            // the preflight's.
            num_init_children: (2 * args.users as u32 + 4).clamp(8, 512),
            ..PgpoolOptions::default()
        };
        // Each in a folder of its own inside the cluster's.
        match Pgpool::start_in(&info, &opts, &format!("pgpool-{t}")).await {
            Ok(p) => pgpools.push((pgpool_name(t, thresholds.len() == 1), p)),
            Err(e) => {
                for (_, p) in pgpools {
                    p.stop().await;
                }
                proxy.stop().await?;
                return Err(e.into());
            }
        }
    }
    // With `--json -`, stdout is the JSON alone.
    let to_stdout = args.json.as_deref() != Some(Path::new("-"));
    let say = |line: String| match to_stdout {
        true => println!("{line}"),
        false => eprintln!("{line}"),
    };
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
        args.users,
        2 * pgpools.len() + 2 * strategies.len(),
        args.duration.0
    ));
    let urls: Vec<(String, String)> = pgpools.iter().map(|(n, p)| (n.clone(), p.url())).collect();
    let cfg = BenchConfig {
        targets: Vec::new(),
        strategies: Vec::new(),
        sql: peer_groups(&urls, &proxy.url(), &strategies),
        users: args.users,
        duration: args.duration.0,
        think,
        cluster_dir: Some(dir.clone()),
        progress: !args.quiet,
        ..BenchConfig::default()
    };
    let report = ryw_bench::run(cfg, ctrl_c()).await;
    let mut nodes = Vec::new();
    for (name, p) in pgpools {
        nodes.push((name, p.pool_nodes().await.unwrap_or_default()));
        p.stop().await;
    }
    proxy.stop().await?;
    let report = report?;
    emit(&report, args.json.as_deref(), args.report.as_deref())?;
    if to_stdout {
        for (name, rows) in nodes {
            println!("{name}: SHOW pool_nodes at the end:");
            for n in rows {
                println!("  {n}");
            }
        }
        println!("{}", explain_peers(&report));
    }
    Ok(())
}

/// The peers table in plain words.
fn explain_peers(r: &BenchReport) -> String {
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

/// One contender of the overhead run: a name and the port pgbench uses.
struct Contender {
    series: Series,
    port: u16,
}

/// `ryw bench overhead`: pgbench -S on follower1 straight, through
/// PgBouncer and through ryw proxy, interleaved, per query mode.
pub async fn overhead(args: OverheadArgs) -> anyhow::Result<()> {
    let dir = &args.cluster;
    let info = ryw_cluster::ClusterInfo::load(dir)?;
    let follower = info
        .followers()
        .next()
        .context("the cluster has no follower")?
        .clone();
    let modes: Vec<String> = args
        .modes
        .split(',')
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect();
    if let Some(bad) = modes
        .iter()
        .find(|m| !["prepared", "simple", "extended"].contains(&m.as_str()))
    {
        bail!("--modes: {bad:?} is not a pgbench query mode (prepared, simple, extended)");
    }
    anyhow::ensure!(!modes.is_empty(), "--modes: no mode given");
    let secs = args.duration.0.as_secs().max(1).to_string();

    // pgbench's tables on the leader (and pg_prewarm), replayed by the follower.
    let leader = info.leader().clone();
    let admin = ryw_cluster::ops::connect(&leader.url, "leader").await?;
    let _ = admin
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        .await;
    let leader_port = leader.port.to_string();
    ryw_cluster::ops::pgbench(
        &info,
        &[
            "-i",
            "-q",
            "-s",
            "1",
            "-h",
            "127.0.0.1",
            "-p",
            &leader_port,
            "-U",
            "postgres",
            ryw_cluster::DATABASE,
        ],
    )
    .await?;
    let lsn: String = admin
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    let f = ryw_cluster::ops::connect(&follower.url, &follower.name).await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let replayed: bool = f
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .await?
            .get(0);
        if replayed {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{} had not replayed pgbench's tables after 30 s",
            follower.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for rel in ["pgbench_accounts", "pgbench_accounts_pkey"] {
        let _ = f.execute("SELECT pg_prewarm($1::regclass)", &[&rel]).await;
    }

    let bouncer = PgBouncer::start(&info, &follower.name, 16).await?;
    let router = RouterConfig {
        default_strategy: Strategy::Causal,
        ..RouterConfig::default()
    };
    let only = [follower.name.clone()];
    let proxy = match ProxyInProcess::start(dir, Some(&only), router, None, false).await {
        Ok(p) => p,
        Err(e) => {
            bouncer.stop().await;
            return Err(e);
        }
    };
    let measured = measure(&info, &args, &modes, &secs, &follower, &bouncer, &proxy).await;
    bouncer.stop().await;
    proxy.stop().await?;
    let (tables, loads) = measured?;

    if args.json {
        let json: Vec<_> = modes
            .iter()
            .zip(&tables)
            .map(|(mode, t)| serde_json::json!({"mode": mode, "series": t.series, "ratios": t.ratios}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "follower": follower.name,
                "duration_s": secs.parse::<u64>().unwrap_or(0),
                "rounds": args.rounds,
                "load_average_before_round": loads,
                "modes": json,
            }))?
        );
        return Ok(());
    }
    println!(
        "pgbench -n -S -c8 -j2 -T {secs} on {} ({}): direct to it; through PgBouncer (session pooling, \
         pool of 16); through ryw proxy in this process (leader + {}, causal)",
        follower.name, follower.url, follower.name
    );
    for (r, l) in loads.iter().enumerate() {
        println!("load average before round {}: {l}", r + 1);
    }
    for (mode, t) in modes.iter().zip(&tables) {
        println!("\n-M {mode}\n{}", t.table());
    }
    Ok(())
}

/// The interleaved rounds: per round, per mode, direct, PgBouncer, ryw
/// proxy. Returns a table per mode and the load average before each round.
async fn measure(
    info: &ryw_cluster::ClusterInfo,
    args: &OverheadArgs,
    modes: &[String],
    secs: &str,
    follower: &ryw_cluster::NodeInfo,
    bouncer: &PgBouncer,
    proxy: &ProxyInProcess,
) -> anyhow::Result<(Vec<Rounds>, Vec<String>)> {
    let mut per_mode: Vec<Vec<Contender>> = modes
        .iter()
        .map(|m| {
            let c = |name: &str, label: &str, what: String, port: u16| Contender {
                series: Series::new(name, label, what),
                port,
            };
            vec![
                c(
                    "direct",
                    "direct TPS",
                    format!("pgbench -M {m} straight to {}", follower.name),
                    follower.port,
                ),
                c(
                    "pgbouncer",
                    "PgBouncer TPS",
                    format!("pgbench -M {m} through PgBouncer (session pooling)"),
                    bouncer.port,
                ),
                c(
                    "proxy",
                    "ryw proxy TPS",
                    format!("pgbench -M {m} through ryw proxy (causal)"),
                    proxy.addr.port(),
                ),
            ]
        })
        .collect();
    let mut loads = Vec::new();
    for round in 1..=args.rounds {
        loads.push(
            std::fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        );
        for (mode, contenders) in modes.iter().zip(&mut per_mode) {
            for c in contenders {
                let port = c.port.to_string();
                let out = ryw_cluster::ops::pgbench(
                    info,
                    &[
                        "-n",
                        "-S",
                        "-M",
                        mode,
                        "-c",
                        "8",
                        "-j",
                        "2",
                        "-T",
                        secs,
                        "-h",
                        "127.0.0.1",
                        "-p",
                        &port,
                        "-U",
                        "postgres",
                        ryw_cluster::DATABASE,
                    ],
                )
                .await
                .with_context(|| format!("pgbench -M {mode} via {}", c.series.name))?;
                let tps =
                    parse_tps(&out).with_context(|| format!("no tps in pgbench output:\n{out}"))?;
                eprintln!("round {round}: -M {mode} {}: {tps:.0} TPS", c.series.name);
                c.series.rounds.push(tps);
            }
        }
    }
    let tables = per_mode
        .into_iter()
        .map(|cs| {
            let mut t = Rounds::new(cs.into_iter().map(|c| c.series).collect());
            t.add_ratio("proxy", "direct");
            t.add_ratio("proxy", "pgbouncer");
            t.add_ratio("pgbouncer", "direct");
            t
        })
        .collect();
    Ok((tables, loads))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ryw_bench::{History, ReportMeta};

    #[test]
    fn the_peers_plain_words_name_each_system_and_connection() {
        let lines = [
            r#"{"user":"u","client":"c","strategy":"pgpool/other","kind":"account","sent_us":0,"recv_us":10,"status":201,"version":0}"#,
            r#"{"user":"u","client":"c","strategy":"pgpool/other","kind":"balance","sent_us":20,"recv_us":30,"status":404,"served_by":"follower2","problem":"no-account"}"#,
            r#"{"user":"v","client":"d","strategy":"ryw-causal/same","kind":"account","sent_us":0,"recv_us":10,"status":201,"version":0}"#,
            r#"{"user":"v","client":"d","strategy":"ryw-causal/same","kind":"balance","sent_us":20,"recv_us":30,"status":200,"version":0,"served_by":"follower1"}"#,
        ]
        .join("\n");
        let history = History::parse(lines.as_bytes(), Path::new("h")).unwrap();
        let text = explain_peers(&BenchReport::from_history(history, ReportMeta::default()));
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
