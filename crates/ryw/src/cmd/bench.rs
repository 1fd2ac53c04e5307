//! `ryw bench`, `ryw bench check FILE`, `ryw bench calibrate` (`ryw bench
//! peers` and `ryw bench overhead` are in `peers.rs`).

use super::serve::{InProcess, local_config};
use crate::cli::{BenchArgs, BenchCommand, BenchRunArgs, CalibrateArgs, ModelArgs};
use anyhow::{Context, bail};
use ryw_bench::{BenchConfig, BenchReport, Load, LoadSpec, StrategySpec, Think};
use serde_json::Value;
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
        Some(BenchCommand::Peers(p)) => super::peers::peers(p).await,
        Some(BenchCommand::Overhead(o)) => super::peers::overhead(o).await,
        Some(BenchCommand::Model(m)) => model(m),
        Some(BenchCommand::Spread(a)) => super::spread::spread(a).await,
        None if args.run.proxy.is_some() => super::peers::bench_proxy(args.run).await,
        None => run_bench(args.run).await,
    }
}

/// `ryw bench model`: the scaling model's prediction, or the prediction
/// beside a bench report.
fn model(args: ModelArgs) -> anyhow::Result<()> {
    use ryw_bench::model::{self, Input, Mix, Rate};
    let input = Input {
        think: args.think.parse::<Think>()?,
        mix: match args.mix.as_deref() {
            None => Mix::bench(args.profile_every, args.products_every),
            Some(&[writes, fresh_reads, stale_ok_reads])
                if [writes, fresh_reads, stale_ok_reads]
                    .iter()
                    .all(|x| x.is_finite() && *x >= 0.0) =>
            {
                Mix {
                    writes,
                    fresh_reads,
                    stale_ok_reads,
                }
            }
            Some(m) => bail!("--mix {m:?}: three non-negative numbers: writes,fresh,stale-ok"),
        },
        rate: match args.rate {
            Some(r) if r.is_finite() && r >= 0.0 => Rate::Open {
                iterations_per_s: r,
            },
            Some(r) => bail!("--rate {r}: must be a number of iterations per second"),
            None => Rate::Closed {
                users: args.users as f64,
                request: args.request_time.0,
            },
        },
        followers: args.lags.iter().map(|d| d.0).collect(),
        poll_interval: args.poll_interval.0,
        instances: args.instances,
        feed: args.feed,
        measured_gaps: None,
    };
    match &args.compare {
        Some(file) => {
            // A `--report DIR` folder: its report.json, and the history
            // for the requests each node served.
            let (json, history) = if file.is_dir() {
                (file.join("report.json"), Some(file.join("history.jsonl")))
            } else {
                (file.clone(), None)
            };
            let text = std::fs::read_to_string(&json)
                .with_context(|| format!("reading {}", json.display()))?;
            let mut report: BenchReport = serde_json::from_str(&text).with_context(|| {
                format!("{} is not a `ryw bench --json` report", json.display())
            })?;
            if let Some(h) = history.filter(|h| h.exists()) {
                report.history = ryw_bench::History::read(&h)?;
            }
            let rows = model::compare(&report, &input).map_err(anyhow::Error::msg)?;
            println!(
                "{}: think {}, {:.1} s, followers' median lag {}; p = predicted, m = measured",
                file.display(),
                report.think.as_deref().unwrap_or("?"),
                report.elapsed_s,
                report
                    .followers
                    .iter()
                    .map(|f| format!("{} {:.0} ms", f.node, f.median_ms))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            print!("{}", model::compare_table(&rows));
        }
        None => {
            let strategies = StrategySpec::parse_list(&args.strategies)?;
            print!(
                "{}",
                model::table(&input, &model::predict(&input, &strategies))
            );
        }
    }
    Ok(())
}

/// The bench configuration from the flags, against `targets`.
pub fn bench_config(args: &BenchRunArgs, targets: Vec<String>) -> anyhow::Result<BenchConfig> {
    let cfg = BenchConfig {
        targets,
        strategies: StrategySpec::parse_list(&args.strategies)?,
        users: args.users,
        duration: args.duration.0,
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
                Some(info.redis_url().context(
                    "--redis: this cluster has no Redis (`ryw cluster up --redis` or `--redis-cluster 3`)",
                )?)
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

pub async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("interrupted: finishing the report");
}

/// The request every HTTP contender of calibrate gets: the same user and
/// the same strategy header (a `--compare` service picks `causal` by it too).
fn balance_headers(user: &str) -> Vec<(String, String)> {
    vec![
        ("X-Demo-UserId".into(), user.to_string()),
        ("X-Read-Strategy".into(), "causal".into()),
    ]
}

/// Interleaved rounds on one follower (FACTS: measure interleaved and
/// quote medians and ratios, not single figures), each round in this order:
/// `pgbench -n -S -M prepared -c8 -j2`; `GET /api/balance` (causal) through
/// the whole ryw stack; the same request on the minimal no-routing server
/// (same follower, same query), the benchmark's ceiling; then each
/// `--compare` service. ryw and the minimal server run in this process, on
/// this runtime, side by side, so the comparison is fair.
async fn calibrate(args: CalibrateArgs) -> anyhow::Result<()> {
    let info = ryw_cluster::ClusterInfo::load(&args.cluster)?;
    let follower = info
        .followers()
        .next()
        .context("the cluster has no follower")?
        .clone();
    let secs = args.duration.0.as_secs().max(1);
    let generator = args.generator.parse::<ryw_bench::Generator>()?.resolve();
    for (i, c) in args.compare.iter().enumerate() {
        if args.compare[..i].iter().any(|o| o.name == c.name) {
            bail!("--compare {}: the name is given twice", c.name);
        }
    }
    let port = follower.port.to_string();

    // The service on the leader and this one follower only, causal by default.
    let mut cfg = local_config(&args.cluster, None, "127.0.0.1:0".parse()?)?;
    cfg.nodes
        .followers
        .retain(|(name, _)| *name == follower.name);
    cfg.router.default_strategy = ryw_router::Strategy::Causal;
    let service = InProcess::start(cfg).await?;
    let base = format!("http://{}", service.addr);
    let user = uuid::Uuid::new_v4().to_string();
    let headers = balance_headers(&user);
    prepare_user(&base, &user).await?;
    let expected = balance(&base, &headers)
        .await
        .context("ryw's own GET /api/balance")?;
    for c in &args.compare {
        prepare_compared(c, &user, &headers, &expected)
            .await
            .with_context(|| format!("--compare {}={}", c.name, c.base_url))?;
    }

    // pgbench's tables, then wait until the follower has them.
    ryw_cluster::ops::pgbench_init(&info).await?;
    prewarm(&follower.url).await;
    let minimal = ryw_bench::MinimalServer::start(&follower.url, "127.0.0.1:0".parse()?).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let contenders: Vec<(ryw_bench::Series, String)> = [
        (
            ryw_bench::Series::new(
                "ryw",
                "ryw req/s",
                format!(
                    "GET /api/balance (causal) through ryw in this process, on the leader and {}",
                    follower.name
                ),
            ),
            base.clone(),
        ),
        (
            ryw_bench::Series::new(
                "minimal",
                "minimal req/s",
                format!(
                    "GET /api/balance on a minimal no-routing server in this process: one axum \
                     handler, one shared tokio-postgres client to {}, the same query",
                    follower.name
                ),
            ),
            minimal.url(),
        ),
    ]
    .into_iter()
    .chain(args.compare.iter().map(|c| {
        (
            ryw_bench::Series::new(
                c.name.clone(),
                format!("{} req/s", c.name),
                format!("GET /api/balance (causal) at {}", c.base_url),
            ),
            c.base_url.clone(),
        )
    }))
    .collect();
    let measured = async {
        wait_for_answer(&minimal.url(), &headers, &expected)
            .await
            .with_context(|| format!("the minimal server on {}", follower.name))?;
        let pgbench = ryw_bench::Series::new(
            "pgbench",
            "pgbench TPS",
            format!("pgbench -n -S -M prepared -c8 -j2 on {}", follower.name),
        );
        let spec = LoadSpec {
            headers: headers.clone(),
            connections: args.connections,
            duration: Duration::from_secs(secs),
            ..LoadSpec::default()
        };
        let contenders = (pgbench, contenders);
        rounds(&info, &port, args.rounds, contenders, generator, &spec).await
    }
    .await;
    minimal.stop().await?;
    service.stop().await?;
    let mut rounds = measured?;
    rounds.add_ratio("ryw", "minimal");
    rounds.add_ratio("minimal", "pgbench");
    rounds.add_ratio("ryw", "pgbench");
    for c in &args.compare {
        rounds.add_ratio(&c.name, "ryw");
    }

    let generator = format!("{generator:?}").to_lowercase();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "follower": follower.name,
                "generator": generator,
                "connections": args.connections,
                "duration_s": secs,
                "rounds": rounds.len(),
                "series": rounds.series,
                "ratios": rounds.ratios,
            }))?
        );
    } else {
        for s in &rounds.series {
            println!("{}: {}", s.name, s.what);
        }
        println!(
            "HTTP load: {generator}, {} connections, {secs} s per measurement\n",
            args.connections
        );
        println!("{}", rounds.table());
    }
    Ok(())
}

/// `rounds` rounds of pgbench on `port` for `spec.duration`, then every HTTP
/// contender (`(series, base URL)`): `GET {base}/api/balance` as `spec`
/// says, by `generator`. Any non-2xx answer or error stops the run.
async fn rounds(
    info: &ryw_cluster::ClusterInfo,
    port: &str,
    rounds: usize,
    (mut pgbench, mut http): (ryw_bench::Series, Vec<(ryw_bench::Series, String)>),
    generator: ryw_bench::Generator,
    spec: &LoadSpec,
) -> anyhow::Result<ryw_bench::Rounds> {
    let secs = spec.duration.as_secs().max(1).to_string();
    for round in 1..=rounds {
        let out = ryw_cluster::ops::pgbench(
            info,
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
                &secs,
                "-h",
                "127.0.0.1",
                "-p",
                port,
                "-U",
                "postgres",
                ryw_cluster::DATABASE,
            ],
        )
        .await?;
        let tps = parse_tps(&out).with_context(|| format!("no tps in pgbench output:\n{out}"))?;
        eprintln!("round {round}: pgbench -S: {tps:.0} TPS");
        pgbench.rounds.push(tps);
        for (series, url) in &mut http {
            let spec = LoadSpec {
                url: format!("{url}/api/balance"),
                ..spec.clone()
            };
            let r = ryw_bench::load(generator, &spec).await?;
            eprintln!(
                "round {round}: {}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, non-2xx {}",
                series.name, r.requests_per_s, r.latency_ms.p50, r.latency_ms.p99, r.non_2xx
            );
            if r.non_2xx > 0 || r.errors > 0 {
                bail!(
                    "{}: {} non-2xx answers and {} errors during calibration",
                    series.name,
                    r.non_2xx,
                    r.errors
                );
            }
            series.rounds.push(r.requests_per_s);
            series.latency_ms.push(r.latency_ms);
        }
    }
    Ok(ryw_bench::Rounds::new(
        std::iter::once(pgbench)
            .chain(http.into_iter().map(|(s, _)| s))
            .collect(),
    ))
}

/// `GET {base}/api/balance` with `headers`: the answer's balance and version,
/// or an error that says what came back.
pub(super) async fn balance(
    base: &str,
    headers: &[(String, String)],
) -> anyhow::Result<(Value, Value)> {
    let mut req = reqwest::Client::new().get(format!("{base}/api/balance"));
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if status == reqwest::StatusCode::BAD_REQUEST {
        bail!(
            "GET /api/balance answered 400 ({body}); a ryw serve must run with --allow-strategy-header"
        );
    }
    if !status.is_success() {
        bail!("GET /api/balance answered {status}: {body}");
    }
    let v: Value = serde_json::from_str(&body)
        .with_context(|| format!("GET /api/balance answered {body:?}"))?;
    Ok((v["balance_cents"].clone(), v["version"].clone()))
}

/// A `--compare` service must answer the same request with the same row:
/// the account exists in the shared database (`POST /api/account` answers
/// 200 and gives the service its own session), and its balance read must
/// show what ryw's showed, or the two do not read the same cluster.
async fn prepare_compared(
    c: &ryw_bench::CompareTarget,
    user: &str,
    headers: &[(String, String)],
    expected: &(Value, Value),
) -> anyhow::Result<()> {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/account", c.base_url))
        .header("X-Demo-UserId", user)
        .send()
        .await
        .with_context(|| format!("cannot reach {}", c.base_url))?;
    if !resp.status().is_success() {
        let status = resp.status();
        bail!(
            "POST /api/account answered {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    let got = balance(&c.base_url, headers).await?;
    if &got != expected {
        bail!(
            "it answered balance {} version {}, ryw {} version {}: is it on the same cluster?",
            got.0,
            got.1,
            expected.0,
            expected.1
        );
    }
    Ok(())
}

/// Waits (at most 10 s, for a follower with a replay delay) until the
/// minimal server reads the row ryw read.
async fn wait_for_answer(
    base: &str,
    headers: &[(String, String)],
    expected: &(Value, Value),
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let got = balance(base, headers).await?;
        if &got == expected {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!(
                "after 10 s it still answers balance {} version {}, ryw {} version {}",
                got.0,
                got.1,
                expected.0,
                expected.1
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) fn parse_tps(out: &str) -> Option<f64> {
    out.lines()
        .find(|l| l.starts_with("tps = "))?
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// Creates the calibration user's account and one payment.
pub(super) async fn prepare_user(base: &str, user: &str) -> anyhow::Result<()> {
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

pub(super) async fn prewarm(url: &str) {
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
