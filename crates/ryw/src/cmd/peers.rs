//! The bench through a SQL front (`ryw bench --proxy`), `ryw bench peers`
//! (Pgpool-II and `ryw proxy` side by side) and `ryw bench overhead`
//! (pgbench straight to a follower, through PgBouncer and through `ryw
//! proxy`, interleaved): flags to `ryw_bench`'s options, results printed.

use super::bench::{ctrl_c, emit};
use crate::cli::{BenchRunArgs, OverheadArgs, PeersArgs};
use anyhow::{Context, bail};
use ryw_bench::fronts::{SqlFrontAt, bench_sql_front, cluster_redis};
use ryw_bench::overhead::{OverheadOptions, overhead as measure_overhead, query_modes};
use ryw_bench::peers::{PeersOptions, explain, side_by_side};
use ryw_bench::{BenchConfig, Load, ReadOn, StrategySpec};
use std::path::Path;

/// `ryw bench --proxy [PGURL]`: the bench's workload through a SQL front,
/// one group per strategy (and per `--read-on` mode).
pub async fn bench_proxy(args: BenchRunArgs) -> anyhow::Result<()> {
    let read_on = ReadOn::parse_list(&args.read_on)?;
    let strategies = StrategySpec::parse_list(&args.strategies)?;
    let at = match (args.proxy.clone().flatten(), &args.cluster) {
        (Some(url), cluster) => SqlFrontAt::Running {
            url,
            cluster: cluster.clone(),
        },
        (None, Some(dir)) => SqlFrontAt::InProcess {
            cluster: dir.clone(),
            redis_url: match args.redis {
                true => Some(cluster_redis(dir)?),
                false => None,
            },
        },
        (None, None) => bail!(
            "--proxy without a URL starts ryw proxy in this process on a cluster: add --cluster DIR \
             (or give a running proxy: --proxy postgres://postgres@127.0.0.1:6432/ryw)"
        ),
    };
    let cfg = BenchConfig {
        targets: Vec::new(),
        strategies: Vec::new(),
        users: args.users,
        duration: args.duration.0,
        think: args.think.parse()?,
        load: args.load.parse::<Load>()?,
        cluster_dir: args.cluster.clone(),
        progress: !args.quiet,
        ..BenchConfig::default()
    };
    let report = bench_sql_front(at, &strategies, &read_on, cfg, ctrl_c()).await?;
    emit(&report, args.json.as_deref(), args.report.as_deref())
}

/// `ryw bench peers`: see [`ryw_bench::peers::side_by_side()`].
pub async fn peers(args: PeersArgs) -> anyhow::Result<()> {
    let opts = PeersOptions {
        strategies: StrategySpec::parse_list(&args.strategies)?,
        users: args.users,
        duration: args.duration.0,
        think: args.think.parse()?,
        delay_thresholds: args
            .delay_threshold
            .split(',')
            .map(|t| t.trim().parse::<u64>())
            .collect::<Result<_, _>>()
            .context("--delay-threshold: WAL bytes, comma-separated (e.g. 1,10000000)")?,
        redis_url: match args.redis {
            true => Some(cluster_redis(&args.cluster)?),
            false => None,
        },
        progress: !args.quiet,
        cluster: args.cluster,
    };
    // With `--json -`, stdout is the JSON alone.
    let to_stdout = args.json.as_deref() != Some(Path::new("-"));
    let say = |line: String| match to_stdout {
        true => println!("{line}"),
        false => eprintln!("{line}"),
    };
    let run = side_by_side(&opts, say, ctrl_c()).await?;
    emit(&run.report, args.json.as_deref(), args.report.as_deref())?;
    if to_stdout {
        for (name, rows) in run.pool_nodes {
            println!("{name}: SHOW pool_nodes at the end:");
            for n in rows {
                println!("  {n}");
            }
        }
        println!("{}", explain(&run.report));
    }
    Ok(())
}

/// `ryw bench overhead`: see [`ryw_bench::overhead::overhead()`].
pub async fn overhead(args: OverheadArgs) -> anyhow::Result<()> {
    let opts = OverheadOptions {
        cluster: args.cluster,
        rounds: args.rounds,
        duration: args.duration.0,
        modes: query_modes(&args.modes)?,
        proxy_variants: args.proxy_variants,
        pool_modes: ryw_bench::overhead::pool_modes(&args.pool_modes)?,
    };
    let measured = measure_overhead(&opts).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&measured.to_json())?);
    } else {
        print!("{}", measured.text());
    }
    Ok(())
}
