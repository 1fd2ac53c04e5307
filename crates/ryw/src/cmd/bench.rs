//! `ryw bench`, `ryw bench check FILE`, `ryw bench calibrate`, `ryw bench
//! model` (`ryw bench peers`, `ryw bench overhead` and the SQL front are in
//! `peers.rs`): flags to `ryw_bench`'s options, its results printed.

use crate::cli::{BenchArgs, BenchCommand, BenchRunArgs, CalibrateArgs, ModelArgs};
use anyhow::{Context, bail};
use ryw_bench::fronts::{ServiceInProcess, cluster_redis, local_service_config};
use ryw_bench::{BenchConfig, BenchReport, Load, StrategySpec, Think};
use std::path::Path;

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
        Some(BenchCommand::Scopes(a)) => scopes(a).await,
        Some(BenchCommand::Spread(a)) => {
            ryw_bench::spread::spread(ryw_bench::spread::SpreadOptions {
                cluster: a.cluster,
                rounds: a.rounds,
                duration: a.duration.0,
                connections: a.connections,
                users: a.users,
                writes: a.writes,
                read_connections: a.read_connections,
                generator: a.generator,
                json: a.json,
            })
            .await
        }
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
            let report = ryw_bench::read_report(file)?;
            let rows = model::compare(&report, &input).map_err(anyhow::Error::msg)?;
            println!(
                "{}",
                model::compare_heading(&report, &file.display().to_string())
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
            let redis = match args.redis {
                true => Some(cluster_redis(dir)?),
                false => None,
            };
            let service =
                ServiceInProcess::start(local_service_config(dir, redis, "127.0.0.1:0".parse()?)?)
                    .await?;
            let cfg = bench_config(&args, vec![service.url()])?;
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

/// `ryw bench calibrate`: see [`ryw_bench::calibrate()`].
async fn calibrate(args: CalibrateArgs) -> anyhow::Result<()> {
    let opts = ryw_bench::CalibrateOptions {
        cluster: args.cluster,
        rounds: args.rounds,
        duration: args.duration.0,
        connections: args.connections,
        generator: args.generator.parse()?,
        compare: args.compare,
    };
    let calibration = ryw_bench::calibrate(&opts).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&calibration.to_json())?);
    } else {
        print!("{}", calibration.text());
    }
    Ok(())
}

/// `ryw bench scopes`: the comparison, then its table (or JSON).
async fn scopes(a: crate::cli::ScopesArgs) -> anyhow::Result<()> {
    let report = ryw_bench::scopes::scopes(&ryw_bench::scopes::ScopesOptions {
        cluster: a.cluster,
        redis_url: a.redis_url,
        duration: a.duration.0,
        rounds: a.rounds,
        clients: a.clients,
        reads_per_write: a.reads_per_write,
        pgpool: a.pgpool,
    })
    .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", ryw_bench::scopes::table(&report));
    }
    Ok(())
}
