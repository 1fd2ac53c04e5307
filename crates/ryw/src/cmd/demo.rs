//! `ryw demo`: the main job. A local cluster in a temporary folder (lags
//! 100 ms and 400 ms), the service in-process, the bench over every
//! strategy and the causal budget sweep ([`DEMO_STRATEGIES`]), the
//! comparison table and the HTML report (with the trade-off chart); then
//! everything is torn down (also on Ctrl-C, and on error).

use super::bench::emit;
use crate::cli::DemoArgs;
use anyhow::Context;
use ryw_bench::fronts::{ProxyInProcess, ServiceInProcess, local_service_config};
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
    let mut service_cfg = local_service_config(dir, redis.clone(), listen)?;
    // The demo's dashboard changes the local cluster's lag on purpose.
    service_cfg.lag_control = true;
    let service = ServiceInProcess::start(service_cfg).await?;
    // The service has created the tables; the proxy shares its session store.
    let proxy = match args.proxy {
        true => Some(
            ProxyInProcess::start(dir, None, ryw_router::RouterConfig::default(), redis, false)
                .await?,
        ),
        false => None,
    };
    let cfg = BenchConfig {
        targets: vec![service.url()],
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
            println!(
                "{}",
                ryw_bench::plain_words(&report, RouterConfig::default().hybrid_wait)
            );
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
