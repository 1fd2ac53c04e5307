//! The workload engine: virtual users paying, thinking and reading their
//! balance (and now and then their profile and the catalogue) against one or
//! more service instances, one group of users per strategy, all groups at the
//! same time. Every request is recorded in the history; each user also checks
//! its own reads as it goes, for the live counts on the progress bar (the
//! report's numbers come from [`crate::check_history`] over the whole history).
//!
//! [`run()`] (this file) orchestrates one run: preflight, one task per user
//! or per open-loop group, the lag sampler and the progress ticker, the
//! deadline or the shutdown future, then the report.
//!
//! - `user`: one virtual user — its requests, token echo, live checks.
//! - `sql_user`: one virtual user on a SQL front (`crate::sql`): pay in a
//!   transaction on one connection, read on it or on a second one.
//! - `schedule`: when iterations start (closed loop, open-loop arrivals).
//! - `sampler`: `GET /api/cluster` samples of the followers' lag.
//! - `node_sampler`: the same samples read from the nodes, for runs with
//!   SQL fronts only.
//! - `progress`: the live counts and the progress bar.
//! - `preflight`: refuses to start against a target that cannot serve the run.
//! - `fake` (tests only): an in-process fake of the service.

mod node_sampler;
mod preflight;
mod progress;
mod sampler;
mod schedule;
mod sql_user;
mod user;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use crate::BenchError;
use crate::config::{BenchConfig, Load};
use crate::history::{Op, RunHistory};
use crate::report::{BenchReport, ReportMeta, follower_delays};
use preflight::{preflight, preflight_sql};
use progress::{Live, progress_bar, progress_message};
use ryw_cluster::ClusterInfo;
use sampler::sample_cluster;
use schedule::{closed_loop, open_loop};
use sql_user::{NodeNames, SqlUser};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;
use user::User;

// The request and response headers of the service's HTTP contract
// (`docs/http-contract.md`) that the engine sends or reads.
const H_USER: &str = "x-demo-userid";
const H_STRATEGY: &str = "x-read-strategy";
const H_TOKEN: &str = "x-consistency-token";
const H_SERVED_BY: &str = "x-served-by";
const H_WAITED: &str = "x-waited-ms";
const H_IDEMPOTENCY: &str = "idempotency-key";

/// What every task of a run shares: the configuration, the HTTP client,
/// the clock, the operations recorded so far and the live counters.
#[derive(Debug)]
struct RunState {
    config: BenchConfig,
    client: reqwest::Client,
    start: Instant,
    ops: Mutex<Vec<Op>>,
    live: Live,
}

impl RunState {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

/// A virtual user of either front.
#[derive(Debug)]
enum VirtualUser {
    /// On `ryw serve`'s HTTP API.
    Http(Box<User>),
    /// On a SQL front.
    Sql(Box<SqlUser>),
}

impl VirtualUser {
    async fn iteration(&mut self, sh: &RunState) {
        match self {
            VirtualUser::Http(u) => u.iteration(sh).await,
            VirtualUser::Sql(u) => u.iteration(sh).await,
        }
    }
}

/// Resolves once the run is told to stop (every loop selects on it).
async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs the bench: every strategy of `config` at once, one group of users
/// each, until `config.duration` has passed or `shutdown` completes (the
/// binary wires it to Ctrl-C), then checks the history and reports.
///
/// Fails only before the workload starts (bad config, unreachable target,
/// refused strategy header); failed requests during the run are recorded and
/// counted, and an early stop still gives a report (`interrupted`).
pub async fn run(
    config: BenchConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<BenchReport, BenchError> {
    config.validate()?;
    let cluster = match &config.cluster_dir {
        Some(dir) => Some(ClusterInfo::load(dir)?),
        None => None,
    };
    let follower_delays_ms = cluster.as_ref().map(follower_delays).unwrap_or_default();
    // Node names by port: a SQL read names the server that ran it.
    let nodes: Arc<NodeNames> = Arc::new(
        cluster
            .iter()
            .flat_map(|c| &c.nodes)
            .map(|n| (i32::from(n.port), n.name.clone()))
            .collect(),
    );
    let groups = config.group_sizes();
    let total_users: usize = groups.iter().sum();
    let client = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .connect_timeout(config.request_timeout)
        .pool_max_idle_per_host(total_users + 2)
        .tcp_nodelay(true)
        .no_proxy()
        .build()?;
    preflight(&client, &config).await?;
    preflight_sql(&config).await?;

    let sh = Arc::new(RunState {
        config: config.clone(),
        client,
        start: Instant::now(),
        ops: Mutex::new(Vec::new()),
        live: Live::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    // Open loop: missed arrivals, and of those, arrivals with no idle user.
    let missed = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let mut tasks = JoinSet::new();
    let mut index = 0;
    let http = config.strategies.iter().map(|spec| {
        Box::new(move |index| VirtualUser::Http(Box::new(User::new(index, spec))))
            as Box<dyn Fn(usize) -> VirtualUser + '_>
    });
    let sql = config.sql.iter().map(|g| {
        let (g, nodes) = (Arc::new(g.clone()), nodes.clone());
        Box::new(move |index| {
            VirtualUser::Sql(Box::new(SqlUser::new(index, g.clone(), nodes.clone())))
        }) as Box<dyn Fn(usize) -> VirtualUser + '_>
    });
    for (make, &size) in http.chain(sql).zip(&groups) {
        let users: Vec<VirtualUser> = (0..size)
            .map(|_| {
                index += 1;
                make(index)
            })
            .collect();
        match config.load {
            Load::Closed => {
                for u in users {
                    tasks.spawn(closed_loop(u, sh.clone(), stop_rx.clone()));
                }
            }
            Load::Open { iterations_per_s } => {
                let rate = iterations_per_s / groups.len() as f64;
                tasks.spawn(open_loop(
                    users,
                    rate,
                    sh.clone(),
                    stop_rx.clone(),
                    missed.clone(),
                ));
            }
        }
    }
    // Lag samples: from the service when there is one, else from the nodes.
    let sampler = match (config.strategies.is_empty(), cluster) {
        (false, _) => tokio::spawn(sample_cluster(sh.clone(), stop_rx.clone())),
        (true, Some(info)) => tokio::spawn(node_sampler::sample_nodes(
            sh.clone(),
            info,
            stop_rx.clone(),
        )),
        (true, None) => tokio::spawn(async { Vec::new() }),
    };

    let bar = progress_bar(&config);
    let ticker = {
        let (sh, bar, stop) = (sh.clone(), bar.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let ticking = async {
                loop {
                    bar.set_position(sh.start.elapsed().as_millis() as u64);
                    bar.set_message(progress_message(&sh.live));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            };
            tokio::select! {
                _ = ticking => {}
                _ = stopped(stop) => {}
            }
        })
    };

    let interrupted = tokio::select! {
        _ = tokio::time::sleep(config.duration) => false,
        _ = shutdown => true,
    };
    let elapsed_s = sh.start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    // Every loop watches the stop signal and drops its request in flight; the
    // guard only covers a task that would not come back.
    let joined = tokio::time::timeout(config.request_timeout + Duration::from_secs(1), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if joined.is_err() {
        tasks.shutdown().await;
    }
    let lag = sampler.await.unwrap_or_default();
    let _ = ticker.await;
    bar.finish_and_clear();

    let ops = std::mem::take(&mut *sh.ops.lock().expect("history lock"));
    let mut targets = match config.strategies.is_empty() {
        true => Vec::new(),
        false => config.targets.clone(),
    };
    for g in &config.sql {
        if !targets.contains(&g.url) {
            targets.push(g.url.clone());
        }
    }
    let meta = ReportMeta {
        targets,
        think: Some(config.think.to_string()),
        load: Some(config.load.to_string()),
        send_token: Some(config.send_token),
        elapsed_s: Some(elapsed_s),
        interrupted,
        missed_arrivals: missed[0].load(Relaxed),
        missed_no_idle_user: missed[1].load(Relaxed),
        strategy_order: config
            .strategies
            .iter()
            .map(|s| s.to_string())
            .chain(config.sql.iter().map(|g| g.label.clone()))
            .collect(),
        follower_delays_ms,
    };
    Ok(BenchReport::from_history(RunHistory { ops, lag }, meta))
}
