//! `ryw bench spread`: fresh-read throughput over every follower, with
//! followers chosen by load (the default, `causal`) against the old
//! least-lagged choice (`causal@least-lagged`), interleaved A B A B in one
//! run (FACTS: measure interleaved, quote medians and ratios).
//!
//! One in-process service on the leader and every follower of the cluster
//! (causal by default); `--users` readers whose accounts every follower
//! has, each request by the next of them, so each session reads now and
//! then (a session reading all the time raises its token, rule 7 of
//! `docs/architecture.md#correctness-rules`, to the
//! freshest position it saw, which only the least-lagged follower has); a
//! writer paying `--writes` times a second meanwhile, so the followers'
//! positions differ (on an idle cluster they tie, and the least-lagged
//! choice spreads by its random tie-break too). Each measurement is
//! `GET /api/balance` with one choice's `X-Read-Strategy`; the reads each
//! follower served come from the service's own counters (`/metrics`,
//! before and after). So does where the CPU went: the machine's busy share
//! (`/proc/stat`), this process (the service), the generator (`wrk`, a
//! child, once it exited; the built-in one is in this process), and each
//! node (its postmaster and every process under it), per request.

use crate::calibrate::run::{prepare_user, prewarm};
use crate::fronts::{ServiceInProcess, local_service_config};
use crate::{LoadSpec, Series};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The two choices, by the name of their series and their header value.
const CHOICES: [(&str, &str); 2] = [("load", "causal"), ("least-lagged", "causal@least-lagged")];

/// What `ryw bench spread` measures (its flags).
#[derive(Clone, Debug)]
pub struct SpreadOptions {
    /// The cluster folder (3 followers at 20, 50 and 100 ms).
    pub cluster: PathBuf,
    /// Rounds; each measures both choices once, in the same order.
    pub rounds: usize,
    /// Length of each measurement.
    pub duration: Duration,
    /// Concurrent HTTP connections.
    pub connections: usize,
    /// Readers (accounts created first).
    pub users: usize,
    /// Payments per second meanwhile.
    pub writes: u32,
    /// Shared read connections per node in the service.
    pub read_connections: usize,
    /// HTTP load generator: `wrk`, `builtin` or `auto`.
    pub generator: String,
    /// Print JSON instead of the table.
    pub json: bool,
}

/// Runs the measurement and prints it.
pub async fn spread(args: SpreadOptions) -> anyhow::Result<()> {
    let info = ryw_cluster::ClusterInfo::load(&args.cluster)?;
    let followers: Vec<String> = info.followers().map(|f| f.name.clone()).collect();
    if followers.len() < 2 {
        bail!(
            "the cluster has {} follower(s): spreading needs several (`ryw cluster up --replicas 3 --lag 20ms,50ms,100ms`)",
            followers.len()
        );
    }
    let generator = args.generator.parse::<crate::Generator>()?.resolve();
    let mut cfg = local_service_config(&args.cluster, None, "127.0.0.1:0".parse()?)?;
    cfg.router.default_strategy = ryw_router::Strategy::Causal;
    cfg.router.read_connections = args.read_connections;
    let service = ServiceInProcess::start(cfg).await?;
    let base = format!("http://{}", service.addr);

    let readers = create_accounts(&base, args.users).await?;
    let writer = uuid::Uuid::new_v4().to_string();
    prepare_user(&base, &writer)
        .await
        .map_err(anyhow::Error::msg)?;
    for f in info.followers() {
        prewarm(&f.url).await;
    }
    // Every follower has the readers' accounts before the first round.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let paid = Arc::new(AtomicU64::new(0));
    let writes = tokio::spawn(write_steadily(
        base.clone(),
        writer,
        args.writes,
        stop.clone(),
        paid.clone(),
    ));

    let secs = args.duration.as_secs().max(1);
    let mut series: Vec<Series> = CHOICES
        .iter()
        .map(|(name, header)| {
            Series::new(
                *name,
                format!("{name} req/s"),
                format!(
                    "GET /api/balance (X-Read-Strategy: {header}) through ryw on the leader and {}",
                    followers.join(", ")
                ),
            )
        })
        .collect();
    let mut shares: BTreeMap<&str, Vec<Vec<f64>>> = BTreeMap::new();
    let nodes: Vec<(String, std::path::PathBuf)> = info
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.data_dir.clone()))
        .collect();
    let mut cpu: BTreeMap<&str, Vec<Cpu>> = BTreeMap::new();
    let measured: anyhow::Result<()> = async {
        for round in 1..=args.rounds {
            for ((name, header), s) in CHOICES.iter().zip(&mut series) {
                let before = reads_by_node(&base).await?;
                let cpu_before = Cpu::now(&nodes);
                let spec = LoadSpec {
                    url: format!("{base}/api/balance"),
                    headers: vec![("X-Read-Strategy".to_string(), header.to_string())],
                    rotate: ("X-Demo-UserId".to_string(), readers.clone()),
                    connections: args.connections,
                    duration: Duration::from_secs(secs),
                    ..LoadSpec::default()
                };
                let r = crate::load(generator, &spec).await?;
                let used = Cpu::now(&nodes).since(&cpu_before);
                let after = reads_by_node(&base).await?;
                if r.non_2xx > 0 || r.errors > 0 {
                    bail!("{name}: {} non-2xx answers and {} errors", r.non_2xx, r.errors);
                }
                let served: Vec<f64> = followers
                    .iter()
                    .map(|f| after.get(f).copied().unwrap_or(0.0) - before.get(f).copied().unwrap_or(0.0))
                    .collect();
                let total: f64 = served.iter().sum::<f64>().max(1.0);
                let split: Vec<f64> = served.iter().map(|n| 100.0 * n / total).collect();
                let leader = after.get("leader").copied().unwrap_or(0.0)
                    - before.get("leader").copied().unwrap_or(0.0);
                eprintln!(
                    "round {round}: {name}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms; by follower {} %, leader {leader:.0} reads",
                    r.requests_per_s,
                    r.latency_ms.p50,
                    r.latency_ms.p99,
                    split
                        .iter()
                        .map(|p| format!("{p:.0}"))
                        .collect::<Vec<_>>()
                        .join("/")
                );
                eprintln!("round {round}: {name}: {}", used.per_request(r.requests));
                s.rounds.push(r.requests_per_s);
                s.latency_ms.push(r.latency_ms);
                shares.entry(name).or_default().push(split);
                cpu.entry(name).or_default().push(used.per_1k(r.requests));
            }
        }
        Ok(())
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = writes.await;
    service.stop().await?;
    measured?;

    let mut rounds = crate::Rounds::new(series);
    rounds.add_ratio("load", "least-lagged");
    // Each follower's median share per choice.
    let median_shares: BTreeMap<&str, Vec<f64>> = shares
        .iter()
        .map(|(name, per_round)| {
            let per_follower = (0..followers.len())
                .map(|i| {
                    let mut v: Vec<f64> = per_round.iter().map(|r| r[i]).collect();
                    v.sort_by(f64::total_cmp);
                    v[v.len() / 2]
                })
                .collect();
            (*name, per_follower)
        })
        .collect();
    let median_cpu: BTreeMap<&str, Cpu> = cpu
        .iter()
        .map(|(name, per_round)| (*name, Cpu::median(per_round)))
        .collect();
    let writes_per_s = paid.load(Ordering::Relaxed) as f64
        / (args.rounds as f64 * CHOICES.len() as f64 * secs as f64).max(1.0);
    let generator = format!("{generator:?}").to_lowercase();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "followers": followers,
                "generator": generator,
                "connections": args.connections,
                "duration_s": secs,
                "writes_per_s": writes_per_s,
                "readers": args.users,
                "read_connections": args.read_connections,
                "series": rounds.series,
                "ratios": rounds.ratios,
                "follower_share_pct": median_shares,
                "cpu_per_1k_requests": median_cpu,
            }))?
        );
    } else {
        for s in &rounds.series {
            println!("{}: {}", s.name, s.what);
        }
        println!(
            "HTTP load: {generator}, {} connections, {} readers in turn, {secs} s per measurement; {writes_per_s:.0} payments/s meanwhile; {} read connection(s) per node\n",
            args.connections, args.users, args.read_connections
        );
        println!("{}", rounds.table());
        println!("share of the follower reads (median of the rounds, %):");
        println!("{:<14} {}", "choice", followers.join("  "));
        for (name, v) in &median_shares {
            println!(
                "{name:<14} {}",
                v.iter()
                    .zip(&followers)
                    .map(|(p, f)| format!("{p:>width$.1}", width = f.len()))
                    .collect::<Vec<_>>()
                    .join("  ")
            );
        }
        println!(
            "\nwhere the CPU went (median of the rounds): machine busy %, CPU ms per 1,000 requests"
        );
        for (name, c) in &median_cpu {
            println!("{name:<14} {}", c.summary());
        }
    }
    Ok(())
}

/// CPU used: the machine's busy share, and seconds by component.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct Cpu {
    /// Busy ticks / all ticks of the machine (all cores).
    machine_busy: f64,
    busy_ticks: u64,
    total_ticks: u64,
    /// This process (the service; the built-in generator too).
    service: f64,
    /// Children this process waited for (`wrk`).
    generator: f64,
    /// Each node's postmaster and its processes, by name.
    nodes: BTreeMap<String, f64>,
}

impl Cpu {
    fn now(nodes: &[(String, std::path::PathBuf)]) -> Cpu {
        let (busy_ticks, total_ticks) = ryw_cluster::proc::machine_cpu_ticks().unwrap_or((0, 0));
        let (service, generator) =
            ryw_cluster::proc::cpu_seconds(std::process::id() as i32).unwrap_or((0.0, 0.0));
        Cpu {
            machine_busy: 0.0,
            busy_ticks,
            total_ticks,
            service,
            generator,
            nodes: nodes
                .iter()
                .map(|(n, d)| {
                    (
                        n.clone(),
                        ryw_cluster::proc::node_cpu_seconds(d).unwrap_or(0.0),
                    )
                })
                .collect(),
        }
    }

    /// What was used between `before` and this.
    fn since(&self, before: &Cpu) -> Cpu {
        let busy = self.busy_ticks.saturating_sub(before.busy_ticks);
        let total = self.total_ticks.saturating_sub(before.total_ticks);
        Cpu {
            machine_busy: if total > 0 {
                busy as f64 / total as f64
            } else {
                0.0
            },
            busy_ticks: busy,
            total_ticks: total,
            service: self.service - before.service,
            generator: self.generator - before.generator,
            nodes: self
                .nodes
                .iter()
                .map(|(n, s)| (n.clone(), s - before.nodes.get(n).copied().unwrap_or(0.0)))
                .collect(),
        }
    }

    /// Seconds per 1,000 requests (the machine's share unchanged).
    fn per_1k(&self, requests: u64) -> Cpu {
        let k = (requests as f64 / 1000.0).max(1e-9);
        Cpu {
            service: self.service / k,
            generator: self.generator / k,
            nodes: self.nodes.iter().map(|(n, s)| (n.clone(), s / k)).collect(),
            ..self.clone()
        }
    }

    fn per_request(&self, requests: u64) -> String {
        self.per_1k(requests).summary()
    }

    fn summary(&self) -> String {
        let ms = |s: f64| format!("{:.0}", s * 1000.0);
        format!(
            "machine {:.0}% busy; per 1k requests: service {} ms, generator {} ms, {}",
            self.machine_busy * 100.0,
            ms(self.service),
            ms(self.generator),
            self.nodes
                .iter()
                .map(|(n, s)| format!("{n} {}", ms(*s)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// The median of each figure.
    fn median(all: &[Cpu]) -> Cpu {
        let med = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        Cpu {
            machine_busy: med(all.iter().map(|c| c.machine_busy).collect()),
            busy_ticks: 0,
            total_ticks: 0,
            service: med(all.iter().map(|c| c.service).collect()),
            generator: med(all.iter().map(|c| c.generator).collect()),
            nodes: all
                .first()
                .map(|c| c.nodes.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .map(|n| {
                    let v = med(all
                        .iter()
                        .map(|c| c.nodes.get(&n).copied().unwrap_or(0.0))
                        .collect());
                    (n, v)
                })
                .collect(),
        }
    }
}

/// `n` new users with an account each, 32 at a time.
async fn create_accounts(base: &str, n: usize) -> anyhow::Result<Vec<String>> {
    use futures_util::StreamExt;
    let client = reqwest::Client::new();
    let users: Vec<String> = (0..n.max(1))
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(users.iter().cloned())
        .map(|user| {
            let client = client.clone();
            async move {
                let resp = client
                    .post(format!("{base}/api/account"))
                    .header("X-Demo-UserId", &user)
                    .send()
                    .await
                    .context("POST /api/account")?;
                if !resp.status().is_success() {
                    bail!("POST /api/account answered {}", resp.status());
                }
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<()>>()?;
    Ok(users)
}

/// Pays 1 cent `per_s` times a second as `user` until `stop`.
async fn write_steadily(
    base: String,
    user: String,
    per_s: u32,
    stop: Arc<AtomicBool>,
    paid: Arc<AtomicU64>,
) {
    if per_s == 0 {
        return;
    }
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_s);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let ok = client
            .post(format!("{base}/api/payments"))
            .header("X-Demo-UserId", &user)
            .header("Content-Type", "application/json")
            .body(r#"{"amount_cents": 1}"#)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            paid.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Fresh `causal` reads routed so far, per node, from the service's
/// `/metrics` (`ryw_reads_total{node=…,freshness="fresh",strategy="causal"}`).
async fn reads_by_node(base: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .context("GET /metrics")?
        .text()
        .await?;
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("ryw_reads_total{")) {
        if !line.contains(r#"freshness="fresh""#) || !line.contains(r#"strategy="causal""#) {
            continue;
        }
        let Some(node) = line
            .split("node=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        *out.entry(node.to_owned()).or_default() += value;
    }
    Ok(out)
}
