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
    Ok(Some(info.redis_url().context(
        "--redis: this cluster has no Redis (`ryw cluster up --redis` or `--redis-cluster 3`)",
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

/// One contender of the overhead run: a name, the port pgbench uses, and
/// the process whose CPU time it costs (none for pgbench straight to the
/// follower).
struct Contender {
    series: Series,
    cpu: Series,
    port: u16,
    pid: Option<u32>,
}

/// A `ryw proxy` of `--proxy-variant`, a process of its own.
struct ProxyVariant {
    name: String,
    port: u16,
    child: tokio::process::Child,
}

impl ProxyVariant {
    /// Starts `spec` (`NAME=PROGRAM [ARGS…]`) on the leader and `follower`
    /// and waits until it answers (and its tracker has had time to put the
    /// follower in rotation).
    async fn start(
        spec: &str,
        leader: &ryw_cluster::NodeInfo,
        follower: &ryw_cluster::NodeInfo,
        dir: &Path,
    ) -> anyhow::Result<ProxyVariant> {
        let (name, command) = spec
            .split_once('=')
            .with_context(|| format!("--proxy-variant {spec:?}: expected NAME=PROGRAM [ARGS]"))?;
        let mut words = command.split_whitespace();
        let program = words
            .next()
            .with_context(|| format!("--proxy-variant {spec:?}: no program"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = dir.join(format!("proxy-variant-{name}.log"));
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = tokio::process::Command::new(program)
            .arg("proxy")
            .args(["--leader-url", &leader.url])
            .args([
                "--follower-url",
                &format!("{}={}", follower.name, follower.url),
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--strategy", "causal"])
            .args(words)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {program} (--proxy-variant {name})"))?;
        let mut v = ProxyVariant {
            name: name.to_string(),
            port,
            child,
        };
        let url = format!(
            "postgres://postgres@127.0.0.1:{port}/{}",
            ryw_cluster::DATABASE
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(c) = ryw_cluster::ops::connect(&url, name).await
                && c.simple_query("SELECT 1").await.is_ok()
            {
                break;
            }
            if v.child.try_wait()?.is_some() || std::time::Instant::now() > deadline {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                v.stop().await;
                bail!("--proxy-variant {name} did not start; its log:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The tracker's first polls: the follower enters rotation.
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(v)
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// User + system CPU time of process `pid` so far, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: fields 3.. (utime is 14, stime 15).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// pgbench's count of transactions (`number of transactions actually
/// processed: N/M`).
fn parse_transactions(out: &str) -> Option<f64> {
    out.lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))?
        .split('/')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// `ryw bench overhead`: pgbench -S on follower1 straight, through
/// PgBouncer and through ryw proxy (in this process, or each
/// `--proxy-variant`), interleaved, per query mode.
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
    ryw_cluster::ops::pgbench_init(&info).await?;
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
    let mut proxy = None;
    let mut variants = Vec::new();
    let started: anyhow::Result<()> = async {
        if args.proxy_variants.is_empty() {
            let router = RouterConfig {
                default_strategy: Strategy::Causal,
                ..RouterConfig::default()
            };
            let only = [follower.name.clone()];
            proxy = Some(ProxyInProcess::start(dir, Some(&only), router, None, false).await?);
        }
        for spec in &args.proxy_variants {
            variants.push(ProxyVariant::start(spec, &leader, &follower, dir).await?);
        }
        Ok(())
    }
    .await;
    let measured = match started {
        Ok(()) => {
            let mut proxies: Vec<(String, String, u16, Option<u32>)> = Vec::new();
            if let Some(p) = &proxy {
                proxies.push((
                    "proxy".into(),
                    "ryw proxy (in this process)".into(),
                    p.addr.port(),
                    Some(std::process::id()),
                ));
            }
            for v in &variants {
                proxies.push((
                    format!("proxy-{}", v.name),
                    format!("ryw proxy {:?}", v.name),
                    v.port,
                    v.child.id(),
                ));
            }
            measure(&info, &args, &modes, &secs, &follower, &bouncer, &proxies).await
        }
        Err(e) => Err(e),
    };
    bouncer.stop().await;
    for v in variants {
        v.stop().await;
    }
    if let Some(p) = proxy {
        p.stop().await?;
    }
    let (tables, loads) = measured?;

    if args.json {
        let json: Vec<_> = modes
            .iter()
            .zip(&tables)
            .map(|(mode, (t, cpu))| {
                serde_json::json!({"mode": mode, "series": t.series, "ratios": t.ratios, "cpu_us_per_transaction": cpu.series})
            })
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
         pool of 16); through ryw proxy (leader + {}, causal): {}",
        follower.name,
        follower.url,
        follower.name,
        if args.proxy_variants.is_empty() {
            "in this process".to_string()
        } else {
            args.proxy_variants.join("; ")
        }
    );
    for (r, l) in loads.iter().enumerate() {
        println!("load average before round {}: {l}", r + 1);
    }
    for (mode, (t, cpu)) in modes.iter().zip(&tables) {
        println!("\n-M {mode}\n{}", t.table());
        println!(
            "\n-M {mode}: CPU time (user + system) of the relay's process per transaction, µs \
             (the in-process proxy's figure includes this command's own)\n{}",
            cpu.table()
        );
    }
    Ok(())
}

/// The interleaved rounds: per round, per mode, direct, PgBouncer, each
/// proxy (`(name, what, port, pid)`). Returns per mode the TPS table and
/// the CPU table, and the load average before each round.
async fn measure(
    info: &ryw_cluster::ClusterInfo,
    args: &OverheadArgs,
    modes: &[String],
    secs: &str,
    follower: &ryw_cluster::NodeInfo,
    bouncer: &PgBouncer,
    proxies: &[(String, String, u16, Option<u32>)],
) -> anyhow::Result<(Vec<(Rounds, Rounds)>, Vec<String>)> {
    let mut per_mode: Vec<Vec<Contender>> = modes
        .iter()
        .map(|m| {
            let c =
                |name: &str, label: &str, what: String, port: u16, pid: Option<u32>| Contender {
                    series: Series::new(name, label, what.clone()),
                    cpu: Series::new(name, format!("{name} µs/tx"), what),
                    port,
                    pid,
                };
            let mut cs = vec![
                c(
                    "direct",
                    "direct TPS",
                    format!("pgbench -M {m} straight to {}", follower.name),
                    follower.port,
                    None,
                ),
                c(
                    "pgbouncer",
                    "PgBouncer TPS",
                    format!("pgbench -M {m} through PgBouncer (session pooling)"),
                    bouncer.port,
                    bouncer.pid(),
                ),
            ];
            for (name, what, port, pid) in proxies {
                cs.push(c(
                    name,
                    &format!("{name} TPS"),
                    format!("pgbench -M {m} through {what} (causal)"),
                    *port,
                    *pid,
                ));
            }
            cs
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
                let cpu_before = c.pid.and_then(cpu_seconds);
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
                let cpu_after = c.pid.and_then(cpu_seconds);
                let tps =
                    parse_tps(&out).with_context(|| format!("no tps in pgbench output:\n{out}"))?;
                let us_per_tx = match (cpu_before, cpu_after, parse_transactions(&out)) {
                    (Some(a), Some(b), Some(n)) if n > 0.0 => (b - a) * 1e6 / n,
                    _ => f64::NAN,
                };
                eprintln!(
                    "round {round}: -M {mode} {}: {tps:.0} TPS, {us_per_tx:.1} µs CPU/tx",
                    c.series.name
                );
                c.series.rounds.push(tps);
                c.cpu.rounds.push(us_per_tx);
            }
        }
    }
    let names: Vec<String> = proxies.iter().map(|p| p.0.clone()).collect();
    let tables = per_mode
        .into_iter()
        .map(|cs| {
            let (series, cpu): (Vec<Series>, Vec<Series>) =
                cs.into_iter().map(|c| (c.series, c.cpu)).unzip();
            let mut t = Rounds::new(series);
            for n in &names {
                t.add_ratio(n, "direct");
                t.add_ratio(n, "pgbouncer");
            }
            for n in names.iter().skip(1) {
                t.add_ratio(n, &names[0]);
            }
            t.add_ratio("pgbouncer", "direct");
            let cpu = Rounds::new(cpu.into_iter().filter(|s| s.name != "direct").collect());
            (t, cpu)
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
