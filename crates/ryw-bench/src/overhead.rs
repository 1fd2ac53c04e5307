//! `ryw bench overhead`: what `ryw proxy` costs. `pgbench -n -S -c8 -j2`
//! on the cluster's first follower straight, through PgBouncer (session
//! pooling) and through `ryw proxy` (in this process, or each proxy
//! variant, a process of its own), interleaved A B C A B C per query mode;
//! TPS and, per transaction, each relay's CPU time, its user part and its
//! involuntary context switches (from `/proc`).

use crate::BenchError;
use crate::calibrate::{Rounds, Series};
use crate::fronts::ProxyInProcess;
use crate::peers::PgBouncer;
use crate::pgbench;
use ryw_cluster::{ClusterInfo, NodeInfo};
use ryw_router::{RouterConfig, Strategy};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Debug, Clone)]
pub struct OverheadOptions {
    /// The `ryw cluster` folder; pgbench's tables are (re)created on it and
    /// PgBouncer's files go into it.
    pub cluster: PathBuf,
    /// Rounds; each runs every contender once per mode, in the same order.
    pub rounds: usize,
    /// Length of each pgbench run.
    pub duration: Duration,
    /// pgbench query modes (see [`query_modes`]).
    pub modes: Vec<String>,
    /// `NAME=PROGRAM [ARGS…]` each: ryw proxy builds or settings measured
    /// as processes of their own instead of the proxy in this process.
    pub proxy_variants: Vec<String>,
    /// Pool modes (`session`, `transaction`): PgBouncer and the proxy in
    /// this process, each in every one of them.
    pub pool_modes: Vec<String>,
}

/// `session,transaction`: pool modes, comma-separated.
pub fn pool_modes(list: &str) -> Result<Vec<String>, BenchError> {
    let modes: Vec<String> = list
        .split(',')
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect();
    if let Some(bad) = modes
        .iter()
        .find(|m| !["session", "transaction"].contains(&m.as_str()))
    {
        return Err(BenchError::config(
            "--pool-modes",
            format!("{bad:?} is not a pool mode (session, transaction)"),
        ));
    }
    if modes.is_empty() {
        return Err(BenchError::config("--pool-modes", "no mode given"));
    }
    Ok(modes)
}

/// A relay's name in pool mode `mode`: `pgbouncer`, `pgbouncer-tx`.
fn in_mode(name: &str, mode: &str) -> String {
    match mode {
        "session" => name.to_string(),
        _ => format!("{name}-tx"),
    }
}

/// `prepared,simple`: pgbench query modes, comma-separated.
pub fn query_modes(list: &str) -> Result<Vec<String>, BenchError> {
    let modes: Vec<String> = list
        .split(',')
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect();
    if let Some(bad) = modes
        .iter()
        .find(|m| !["prepared", "simple", "extended"].contains(&m.as_str()))
    {
        return Err(BenchError::config(
            "--modes",
            format!("{bad:?} is not a pgbench query mode (prepared, simple, extended)"),
        ));
    }
    if modes.is_empty() {
        return Err(BenchError::config("--modes", "no mode given"));
    }
    Ok(modes)
}

/// One query mode's tables.
#[derive(Debug, Clone)]
pub struct ModeTables {
    /// `prepared`, `simple` or `extended`.
    pub mode: String,
    /// TPS per contender and round, with every proxy's ratios to the
    /// follower straight and to PgBouncer (and to the first proxy).
    pub tps: Rounds,
    /// CPU µs per transaction of each relay's process.
    pub cpu: Rounds,
    /// The user-space part of it, µs per transaction.
    pub user: Rounds,
    /// Times the relay's process was switched out while it could run
    /// (involuntary context switches), per transaction: a relay that runs
    /// longer per wake-up is preempted more by the processes it wakes.
    pub preempted: Rounds,
}

/// What an overhead run measured.
#[derive(Debug, Clone)]
pub struct Overhead {
    /// The follower pgbench read from.
    pub follower: String,
    /// Its URL.
    pub follower_url: String,
    /// Seconds per pgbench run.
    pub duration_s: u64,
    /// Rounds run.
    pub rounds: usize,
    /// The load average before each round.
    pub loads: Vec<String>,
    /// The proxies: `in this process`, or the variants given.
    pub proxies: String,
    /// Per query mode.
    pub modes: Vec<ModeTables>,
}

impl Overhead {
    /// The JSON of `ryw bench overhead --json`.
    pub fn to_json(&self) -> Value {
        let modes: Vec<Value> = self
            .modes
            .iter()
            .map(|m| {
                serde_json::json!({
                    "mode": m.mode,
                    "series": m.tps.series,
                    "ratios": m.tps.ratios,
                    "cpu_us_per_transaction": m.cpu.series,
                    "user_us_per_transaction": m.user.series,
                    "involuntary_switches_per_transaction": m.preempted.series,
                })
            })
            .collect();
        serde_json::json!({
            "follower": self.follower,
            "duration_s": self.duration_s,
            "rounds": self.rounds,
            "load_average_before_round": self.loads,
            "modes": modes,
        })
    }

    /// What was measured, the load, and the tables per mode.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "pgbench -n -S -c8 -j2 -T {} on {} ({}): direct to it; through PgBouncer (pools of \
             16; `-tx`: transaction pooling); through ryw proxy (leader + {}, causal; `-tx`: \
             transaction pooling, pools of 16): {}",
            self.duration_s, self.follower, self.follower_url, self.follower, self.proxies
        );
        for (r, l) in self.loads.iter().enumerate() {
            let _ = writeln!(s, "load average before round {}: {l}", r + 1);
        }
        for m in &self.modes {
            let _ = writeln!(s, "\n-M {}\n{}", m.mode, m.tps.table());
            let _ = writeln!(
                s,
                "\n-M {}: CPU time (user + system) of the relay's process per transaction, µs \
                 (the in-process proxy's figure includes this command's own)\n{}",
                m.mode,
                m.cpu.table_with(1)
            );
            let _ = writeln!(
                s,
                "\n-M {}: of which user time, µs per transaction\n{}",
                m.mode,
                m.user.table_with(1)
            );
            let _ = writeln!(
                s,
                "\n-M {}: involuntary context switches of the relay's process per transaction \
                 (switched out while it could run)\n{}",
                m.mode,
                m.preempted.table_with(2)
            );
        }
        s
    }
}

/// A relay measured: a name, a description, the port pgbench uses, and
/// the process whose CPU time it costs.
#[derive(Debug, Clone)]
struct Relay {
    name: String,
    what: String,
    port: u16,
    pid: Option<u32>,
    /// A proxy's PgBouncer to compare with (the one in its pool mode).
    pgbouncer: Option<String>,
}

/// Runs the whole measurement: pgbench's tables on the cluster (read by
/// the follower, prewarmed), PgBouncer and the proxies started, the
/// interleaved rounds (progress on stderr), everything stopped.
pub async fn overhead(opts: &OverheadOptions) -> Result<Overhead, BenchError> {
    let info = ClusterInfo::load(&opts.cluster)?;
    let follower = pgbench::first_follower(&info)?;
    let leader = info.leader().clone();
    prepare_follower(&info, &follower).await?;

    let mut bouncers = Vec::new();
    let mut proxies = Vec::new();
    let mut variants = Vec::new();
    let started: Result<(), BenchError> = async {
        for mode in &opts.pool_modes {
            bouncers.push((
                mode.clone(),
                PgBouncer::start_in(&info, &follower.name, 16, mode).await?,
            ));
            if opts.proxy_variants.is_empty() {
                let router = RouterConfig {
                    default_strategy: Strategy::Causal,
                    ..RouterConfig::default()
                };
                let only = [follower.name.clone()];
                let pool_mode = match mode.as_str() {
                    "transaction" => ryw_proxy::PoolMode::Transaction,
                    _ => ryw_proxy::PoolMode::Session,
                };
                proxies.push((
                    mode.clone(),
                    ProxyInProcess::start_pooled(
                        &opts.cluster,
                        Some(&only),
                        router,
                        None,
                        false,
                        pool_mode,
                        16,
                    )
                    .await?,
                ));
            }
        }
        for spec in &opts.proxy_variants {
            variants.push(ProxyVariant::start(spec, &leader, &follower, &opts.cluster).await?);
        }
        Ok(())
    }
    .await;
    let measured = match started {
        Ok(()) => {
            let mut relays = vec![Relay {
                name: "direct".into(),
                what: format!("straight to {}", follower.name),
                port: follower.port,
                pid: None,
                pgbouncer: None,
            }];
            for (mode, b) in &bouncers {
                relays.push(Relay {
                    name: in_mode("pgbouncer", mode),
                    what: format!("through PgBouncer ({mode} pooling)"),
                    port: b.port,
                    pid: b.pid(),
                    pgbouncer: None,
                });
            }
            for (mode, p) in &proxies {
                relays.push(Relay {
                    name: in_mode("proxy", mode),
                    what: format!("through ryw proxy (in this process, {mode} pooling) (causal)"),
                    port: p.addr.port(),
                    pid: Some(std::process::id()),
                    pgbouncer: Some(in_mode("pgbouncer", mode)),
                });
            }
            for v in &variants {
                relays.push(Relay {
                    name: format!("proxy-{}", v.name),
                    what: format!("through ryw proxy {:?} (causal)", v.name),
                    port: v.port,
                    pid: v.child.id(),
                    pgbouncer: Some(in_mode("pgbouncer", &v.pool_mode)),
                });
            }
            measure(&info, opts, &relays).await
        }
        Err(e) => Err(e),
    };
    for (_, b) in bouncers {
        b.stop().await;
    }
    for v in variants {
        v.stop().await;
    }
    for (_, p) in proxies {
        p.stop().await?;
    }
    let (modes, loads) = measured?;
    Ok(Overhead {
        follower: follower.name,
        follower_url: follower.url,
        duration_s: opts.duration.as_secs().max(1),
        rounds: opts.rounds,
        loads,
        proxies: if opts.proxy_variants.is_empty() {
            "in this process".to_string()
        } else {
            opts.proxy_variants.join("; ")
        },
        modes,
    })
}

/// pgbench's tables on the leader (and `pg_prewarm`), replayed by the
/// follower and loaded into its buffers.
async fn prepare_follower(info: &ClusterInfo, follower: &NodeInfo) -> Result<(), BenchError> {
    let pg = |what| move |source| BenchError::Postgres { what, source };
    let admin = ryw_cluster::ops::connect(&info.leader().url, "leader").await?;
    let _ = admin
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        .await;
    ryw_cluster::ops::pgbench_init(info).await?;
    let lsn: String = admin
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(pg("the leader's position"))?
        .get(0);
    let f = ryw_cluster::ops::connect(&follower.url, &follower.name).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let replayed: bool = f
            .query_one(
                "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                &[&lsn],
            )
            .await
            .map_err(pg("the follower's position"))?
            .get(0);
        if replayed {
            break;
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Measure {
                what: follower.name.clone(),
                detail: "it had not replayed pgbench's tables after 30 s".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for rel in ["pgbench_accounts", "pgbench_accounts_pkey"] {
        let _ = f.execute("SELECT pg_prewarm($1::regclass)", &[&rel]).await;
    }
    Ok(())
}

/// The interleaved rounds: per round, per mode, every relay in order.
/// Returns per mode the TPS table and the CPU table, and the load average
/// before each round.
async fn measure(
    info: &ClusterInfo,
    opts: &OverheadOptions,
    relays: &[Relay],
) -> Result<(Vec<ModeTables>, Vec<String>), BenchError> {
    // Per mode, per relay: TPS and what its process spent.
    let mut per_mode: Vec<Vec<Measured>> = opts
        .modes
        .iter()
        .map(|m| {
            relays
                .iter()
                .map(|r| {
                    let what = format!("pgbench -M {m} {}", r.what);
                    let label = match r.name.as_str() {
                        "direct" => "direct TPS".to_string(),
                        "pgbouncer" => "PgBouncer TPS".to_string(),
                        n => format!("{n} TPS"),
                    };
                    Measured {
                        tps: Series::new(r.name.clone(), label, what.clone()),
                        cpu: Series::new(r.name.clone(), format!("{} µs/tx", r.name), what.clone()),
                        user: Series::new(
                            r.name.clone(),
                            format!("{} user µs/tx", r.name),
                            what.clone(),
                        ),
                        preempted: Series::new(
                            r.name.clone(),
                            format!("{} switches/tx", r.name),
                            what,
                        ),
                    }
                })
                .collect()
        })
        .collect();
    let mut loads = Vec::new();
    for round in 1..=opts.rounds {
        loads.push(load_average().unwrap_or_default());
        for (mode, contenders) in opts.modes.iter().zip(&mut per_mode) {
            for (relay, m) in relays.iter().zip(contenders) {
                let before = relay.pid.and_then(proc_times);
                let report = match pgbench::select_only(info, relay.port, mode, opts.duration).await
                {
                    Ok(r) => r,
                    // PgBouncer before 1.21 has no prepared statements in
                    // transaction pooling: said, not fatal.
                    Err(e) if relay.name.starts_with("pgbouncer") => {
                        eprintln!(
                            "round {round}: -M {mode} {}: failed ({})",
                            relay.name,
                            e.to_string()
                                .lines()
                                .rev()
                                .find(|l| l.contains("error"))
                                .unwrap_or("see its log")
                        );
                        m.push(f64::NAN, None);
                        continue;
                    }
                    Err(e) => {
                        return Err(BenchError::Measure {
                            what: format!("pgbench -M {mode} via {}", relay.name),
                            detail: e.to_string(),
                        });
                    }
                };
                let after = relay.pid.and_then(proc_times);
                let per_tx = match (before, after, report.transactions) {
                    (Some(a), Some(b), Some(n)) if n > 0.0 => Some(b.since(&a).per(n)),
                    _ => None,
                };
                eprintln!(
                    "round {round}: -M {mode} {}: {:.0} TPS, {:.1} µs CPU/tx",
                    relay.name,
                    report.tps,
                    per_tx.map_or(f64::NAN, |p| p.cpu_us())
                );
                m.push(report.tps, per_tx);
            }
        }
    }
    let proxies: Vec<(&str, Option<&str>)> = relays
        .iter()
        .filter(|r| r.name.starts_with("proxy"))
        .map(|r| (r.name.as_str(), r.pgbouncer.as_deref()))
        .collect();
    let bouncers: Vec<&str> = relays
        .iter()
        .map(|r| r.name.as_str())
        .filter(|n| n.starts_with("pgbouncer"))
        .collect();
    let tables = opts
        .modes
        .iter()
        .zip(per_mode)
        .map(|(mode, cs)| {
            let mut tps = Vec::new();
            let (mut cpu, mut user, mut preempted) = (Vec::new(), Vec::new(), Vec::new());
            for m in cs {
                tps.push(m.tps);
                if m.cpu.name != "direct" {
                    cpu.push(m.cpu);
                    user.push(m.user);
                    preempted.push(m.preempted);
                }
            }
            let mut t = Rounds::new(tps);
            for (n, bouncer) in &proxies {
                t.add_ratio(n, "direct");
                if let Some(b) = bouncer
                    && bouncers.contains(b)
                {
                    t.add_ratio(n, b);
                }
            }
            for b in &bouncers {
                t.add_ratio(b, "direct");
            }
            ModeTables {
                mode: mode.clone(),
                tps: t,
                cpu: Rounds::new(cpu),
                user: Rounds::new(user),
                preempted: Rounds::new(preempted),
            }
        })
        .collect();
    Ok((tables, loads))
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`), space-separated.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// One relay's figures, per round.
struct Measured {
    tps: Series,
    cpu: Series,
    user: Series,
    preempted: Series,
}

impl Measured {
    /// A round: its TPS and what the process spent per transaction
    /// (`None`: not known, a gap in those tables).
    fn push(&mut self, tps: f64, per_tx: Option<ProcTimes>) {
        self.tps.rounds.push(tps);
        let p = per_tx.unwrap_or(ProcTimes {
            user_s: f64::NAN,
            system_s: f64::NAN,
            involuntary: f64::NAN,
        });
        self.cpu.rounds.push(p.cpu_us());
        self.user.rounds.push(p.user_s * 1e6);
        self.preempted.rounds.push(p.involuntary);
    }
}

/// What a process has spent so far (or between two readings, or per
/// transaction): CPU seconds in user space and in the kernel, and
/// involuntary context switches.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProcTimes {
    user_s: f64,
    system_s: f64,
    involuntary: f64,
}

impl ProcTimes {
    fn since(&self, earlier: &ProcTimes) -> ProcTimes {
        ProcTimes {
            user_s: self.user_s - earlier.user_s,
            system_s: self.system_s - earlier.system_s,
            involuntary: self.involuntary - earlier.involuntary,
        }
    }

    fn per(&self, n: f64) -> ProcTimes {
        ProcTimes {
            user_s: self.user_s / n,
            system_s: self.system_s / n,
            involuntary: self.involuntary / n,
        }
    }

    /// User + system, in µs.
    fn cpu_us(&self) -> f64 {
        (self.user_s + self.system_s) * 1e6
    }
}

/// What process `pid` has spent so far: its CPU time (`/proc/PID/stat`,
/// the whole process's) and its threads' involuntary switches (each
/// thread's `status`; a thread that ended takes its count with it).
fn proc_times(pid: u32) -> Option<ProcTimes> {
    let (user_s, system_s) =
        cpu_split_in(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let mut involuntary = 0.0;
    for thread in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        if let Ok(status) = std::fs::read_to_string(thread.path().join("status")) {
            involuntary += involuntary_switches_in(&status).unwrap_or(0.0);
        }
    }
    Some(ProcTimes {
        user_s,
        system_s,
        involuntary,
    })
}

/// User and system CPU time in a `/proc/PID/stat` line, in seconds (at
/// 100 clock ticks a second, Linux's `USER_HZ`).
fn cpu_split_in(stat: &str) -> Option<(f64, f64)> {
    // After the command name in parentheses (which may hold spaces and
    // parentheses): fields 3.. (utime is 14, stime 15).
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let user: f64 = f.get(11)?.parse().ok()?;
    let system: f64 = f.get(12)?.parse().ok()?;
    Some((user / 100.0, system / 100.0))
}

/// The `nonvoluntary_ctxt_switches` of a thread's `status`.
fn involuntary_switches_in(status: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))?
        .trim()
        .parse()
        .ok()
}

/// A `ryw proxy` of a proxy variant, a process of its own.
#[derive(Debug)]
struct ProxyVariant {
    name: String,
    port: u16,
    child: tokio::process::Child,
    /// `transaction` when its arguments say `--pool-mode transaction`.
    pool_mode: String,
}

impl ProxyVariant {
    /// Starts `spec` (`NAME=PROGRAM [ARGS…]`) on the leader and `follower`
    /// and waits until it answers (and its tracker has had time to put the
    /// follower in rotation). Its log goes to `dir`.
    async fn start(
        spec: &str,
        leader: &NodeInfo,
        follower: &NodeInfo,
        dir: &Path,
    ) -> Result<ProxyVariant, BenchError> {
        let bad =
            |detail: &str| BenchError::config("--proxy-variant", format!("{spec:?}: {detail}"));
        let (name, command) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=PROGRAM [ARGS]"))?;
        let mut words = command.split_whitespace();
        let program = words.next().ok_or_else(|| bad("no program"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(BenchError::io("binding", "127.0.0.1:0"))?
            .port();
        let log = dir.join(format!("proxy-variant-{name}.log"));
        let out = std::fs::File::create(&log).map_err(BenchError::io("creating", &log))?;
        let err = out.try_clone().map_err(BenchError::io("creating", &log))?;
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
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Measure {
                what: format!("--proxy-variant {name}"),
                detail: format!("starting {program}: {e}"),
            })?;
        let pool_mode = if command.contains("--pool-mode transaction")
            || command.contains("--pool-mode=transaction")
        {
            "transaction"
        } else {
            "session"
        };
        let mut v = ProxyVariant {
            name: name.to_string(),
            port,
            child,
            pool_mode: pool_mode.to_string(),
        };
        let url = format!(
            "postgres://postgres@127.0.0.1:{port}/{}",
            ryw_cluster::DATABASE
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(c) = ryw_cluster::ops::connect(&url, name).await
                && c.simple_query("SELECT 1").await.is_ok()
            {
                break;
            }
            if v.child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                v.stop().await;
                return Err(BenchError::Measure {
                    what: format!("--proxy-variant {name}"),
                    detail: format!("it did not start; its log:\n{text}"),
                });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name_whatever_it_holds() {
        // utime 250 and stime 150 ticks: 2.5 s and 1.5 s.
        let stat = "4242 (ryw (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 150 0 0 20 0 \
                    3 0 1234 100000 200 18446744073709551615";
        assert_eq!(cpu_split_in(stat), Some((2.5, 1.5)));
        assert_eq!(cpu_split_in("4242 (ryw) S 1"), None);
        assert_eq!(cpu_split_in("garbage"), None);
    }

    #[test]
    fn involuntary_switches_are_read_from_their_own_line() {
        let status = "Name:\tryw\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t37\n";
        assert_eq!(involuntary_switches_in(status), Some(37.0));
        assert_eq!(involuntary_switches_in("Name:\tryw\n"), None);
    }

    #[test]
    fn per_transaction_figures_are_differences_divided() {
        let a = ProcTimes {
            user_s: 1.0,
            system_s: 2.0,
            involuntary: 10.0,
        };
        let b = ProcTimes {
            user_s: 1.5,
            system_s: 3.0,
            involuntary: 60.0,
        };
        let p = b.since(&a).per(100_000.0);
        assert!((p.cpu_us() - 15.0).abs() < 1e-9);
        assert!((p.user_s * 1e6 - 5.0).abs() < 1e-9);
        assert!((p.involuntary - 0.0005).abs() < 1e-12);
    }

    #[test]
    fn query_modes_are_pgbench_s_and_at_least_one() {
        assert_eq!(
            query_modes("prepared, simple").unwrap(),
            ["prepared", "simple"]
        );
        assert!(query_modes("fast").is_err());
        assert!(query_modes(" , ").is_err());
    }
}
