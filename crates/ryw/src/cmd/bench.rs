//! `ryw bench`, `ryw bench check FILE`, `ryw bench calibrate`.

use super::serve::{InProcess, local_config};
use crate::cli::{BenchArgs, BenchCommand, BenchRunArgs, CalibrateArgs};
use anyhow::{Context, bail};
use ryw_bench::{BenchConfig, BenchReport, Load, LoadSpec, StrategySpec, Think};
use std::path::Path;
use std::time::Duration;

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        Some(BenchCommand::Check {
            file,
            cluster,
            json,
        }) => {
            let report = ryw_bench::check_file(&file, cluster.as_deref())?;
            if json {
                println!("{}", report.to_json()?);
            } else {
                println!("{}", report.table());
            }
            let n = report.ryw_violations + report.monotonic_violations;
            if n > 0 {
                bail!("{n} violations in {}", file.display());
            }
            Ok(())
        }
        Some(BenchCommand::Calibrate(c)) => calibrate(c).await,
        None => run_bench(args.run).await,
    }
}

/// The bench configuration from the flags, against `targets`.
pub fn bench_config(args: &BenchRunArgs, targets: Vec<String>) -> anyhow::Result<BenchConfig> {
    let cfg = BenchConfig {
        targets,
        strategies: StrategySpec::parse_list(&args.strategies)?,
        users: args.users,
        duration: ryw_cluster::parse_duration(&args.duration).context("--duration")?,
        think: args.think.parse::<Think>()?,
        load: args.load.parse::<Load>()?,
        send_token: !args.no_token,
        cluster_dir: args.cluster.clone(),
        progress: !args.quiet,
        ..BenchConfig::default()
    };
    cfg.validate()?;
    Ok(cfg)
}

async fn run_bench(args: BenchRunArgs) -> anyhow::Result<()> {
    let (report, service) = match &args.cluster {
        Some(dir) => {
            let redis = if args.redis {
                let info = ryw_cluster::ClusterInfo::load(dir)?;
                Some(
                    info.redis
                        .map(|r| r.url)
                        .context("--redis: this cluster has no Redis (`ryw cluster up --redis`)")?,
                )
            } else {
                None
            };
            let service =
                InProcess::start(local_config(dir, redis, "127.0.0.1:0".parse()?)?).await?;
            let cfg = bench_config(&args, vec![format!("http://{}", service.addr)])?;
            (ryw_bench::run(cfg, ctrl_c()).await, Some(service))
        }
        None if args.targets.is_empty() => bail!(
            "give --target URL (a running `ryw serve --allow-strategy-header`) or --cluster DIR"
        ),
        None => (
            ryw_bench::run(bench_config(&args, args.targets.clone())?, ctrl_c()).await,
            None,
        ),
    };
    if let Some(s) = service {
        s.stop().await?;
    }
    let report = report?;
    emit(&report, args.json.as_deref(), args.report.as_deref())
}

/// Prints the table, and writes the JSON and the HTML report when asked.
pub fn emit(report: &BenchReport, json: Option<&Path>, dir: Option<&Path>) -> anyhow::Result<()> {
    match json {
        Some(p) if p == Path::new("-") => println!("{}", report.to_json()?),
        Some(p) => {
            std::fs::write(p, report.to_json()?)
                .with_context(|| format!("writing {}", p.display()))?;
            println!("{}", report.table());
            println!("JSON report: {}", p.display());
        }
        None => println!("{}", report.table()),
    }
    if let Some(dir) = dir {
        let page = ryw_bench::write_report_dir(report, dir)?;
        println!("HTML report: {}", page.display());
    }
    Ok(())
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("interrupted: finishing the report");
}

/// A B A B: `pgbench -n -S -M prepared -c8 -j2` on follower1, then `GET
/// /api/balance` (causal) through the whole ryw stack on the same follower.
async fn calibrate(args: CalibrateArgs) -> anyhow::Result<()> {
    let info = ryw_cluster::ClusterInfo::load(&args.cluster)?;
    let follower = info
        .followers()
        .next()
        .context("the cluster has no follower")?
        .clone();
    let secs = ryw_cluster::parse_duration(&args.duration)?
        .as_secs()
        .max(1);
    let generator = args.generator.parse::<ryw_bench::Generator>()?.resolve();
    let leader_port = info.leader().port.to_string();
    let port = follower.port.to_string();

    // pgbench's tables, then wait until the follower has them.
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
    // The service on the leader and this one follower only, causal by default.
    let mut cfg = local_config(&args.cluster, None, "127.0.0.1:0".parse()?)?;
    cfg.nodes
        .followers
        .retain(|(name, _)| *name == follower.name);
    cfg.router.default_strategy = ryw_router::Strategy::Causal;
    let service = InProcess::start(cfg).await?;
    let base = format!("http://{}", service.addr);
    let user = uuid::Uuid::new_v4().to_string();
    prepare_user(&base, &user).await?;
    prewarm(&follower.url).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let out = ryw_cluster::ops::pgbench(
            &info,
            &[
                "-n",
                "-S",
                "-M",
                "prepared",
                "-c",
                "8",
                "-j",
                "2",
                "-T",
                &secs.to_string(),
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                ryw_cluster::DATABASE,
            ],
        )
        .await?;
        let tps = parse_tps(&out).with_context(|| format!("no tps in pgbench output:\n{out}"))?;
        eprintln!(
            "round {round}: pgbench -S on {}: {tps:.0} TPS",
            follower.name
        );
        a.push(tps);
        let spec = LoadSpec {
            url: format!("{base}/api/balance"),
            headers: vec![("X-Demo-UserId".into(), user.clone())],
            connections: args.connections,
            duration: Duration::from_secs(secs),
            ..LoadSpec::default()
        };
        let r = ryw_bench::load(generator, &spec).await?;
        eprintln!(
            "round {round}: GET /api/balance (causal, {generator:?}): {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, non-2xx {}",
            r.requests_per_s, r.latency_ms.p50, r.latency_ms.p99, r.non_2xx
        );
        if r.non_2xx > 0 || r.errors > 0 {
            bail!(
                "{} non-2xx answers and {} errors during calibration",
                r.non_2xx,
                r.errors
            );
        }
        b.push(r.requests_per_s);
    }
    service.stop().await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"pgbench_tps": a, "ryw_balance_rps": b, "generator": format!("{generator:?}").to_lowercase()})
        );
    } else {
        println!(
            "{}",
            ryw_bench::ab_table(
                "pgbench -S (TPS)",
                &a,
                "ryw GET /api/balance causal (req/s)",
                &b
            )
        );
    }
    Ok(())
}

fn parse_tps(out: &str) -> Option<f64> {
    out.lines()
        .find(|l| l.starts_with("tps = "))?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// Creates the calibration user's account and one payment.
async fn prepare_user(base: &str, user: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for (path, body) in [
        ("/api/account", ""),
        ("/api/payments", r#"{"amount_cents": 1}"#),
    ] {
        let resp = client
            .post(format!("{base}{path}"))
            .header("X-Demo-UserId", user)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        if !resp.status().is_success() {
            bail!("POST {path} answered {}", resp.status());
        }
    }
    Ok(())
}

async fn prewarm(url: &str) {
    if let Ok(c) = ryw_cluster::ops::connect(url, "prewarm").await {
        for rel in [
            "accounts",
            "accounts_pkey",
            "pgbench_accounts",
            "pgbench_accounts_pkey",
        ] {
            let _ = c.execute("SELECT pg_prewarm($1::regclass)", &[&rel]).await;
        }
    }
}
