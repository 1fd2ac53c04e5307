//! `ryw bench scopes`: what each read scope costs through `ryw proxy`, in
//! the pooled-app pattern (a write on one connection, the reads at once on
//! another, no named session), beside Pgpool-II on the same cluster, in
//! one run, rounds interleaved (A B C … A B C …).
//!
//! Each contender gets `clients` writer/reader connection pairs; each pair
//! writes `v = i` to a row of its own, then reads it `reads_per_write`
//! times on the other connection. A read is stale when it returns less
//! than `i` (judged by the value, never by the front's word); the node
//! that served it is the server's own `inet_server_port()`.
//!
//! Contenders: the proxy in this process with each scope (set by the
//! startup option `-c ryw.scope=…`; the default strategy, `hybrid`), and
//! Pgpool-II with `disable_load_balance_on_write = 'always'` and
//! `'transaction'` (its per-connection protections: neither crosses
//! connections) when `pgpool` is on.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ryw_cluster::{ClusterInfo, NodeRole};
use ryw_router::{RouterConfig, Scope};
use serde::Serialize;
use tokio_postgres::{Client, NoTls};

use crate::BenchError;
use crate::fronts::ProxyInProcess;
use crate::peers::{Pgpool, PgpoolOptions};

/// How `ryw bench scopes` runs.
#[derive(Debug, Clone)]
pub struct ScopesOptions {
    /// The cluster folder (`ryw cluster up`).
    pub cluster: PathBuf,
    /// The proxy's session store (for `global`'s mark): the cluster's
    /// Redis when `None` and it has one, else the proxy's memory.
    pub redis_url: Option<String>,
    /// Length of each contender's run in each round.
    pub duration: Duration,
    /// Rounds; each runs every contender once, in the same order.
    pub rounds: usize,
    /// Writer/reader connection pairs per contender.
    pub clients: usize,
    /// Reads on the reader connection after each write.
    pub reads_per_write: usize,
    /// Also run Pgpool-II (`always` and `transaction`).
    pub pgpool: bool,
}

/// One contender's figures in one round (or their medians).
#[derive(Debug, Clone, Serialize)]
pub struct ScopeRow {
    /// `ryw proxy scope=global`, `pgpool on_write=always`, …
    pub contender: String,
    /// Writes made.
    pub writes: u64,
    /// Reads made.
    pub reads: u64,
    /// Reads that returned less than the value written before them.
    pub stale: u64,
    /// Reads a follower served.
    pub on_followers: u64,
    /// Reads per second.
    pub reads_per_s: f64,
    /// Read latency, median, ms.
    pub p50_ms: f64,
    /// Read latency, 99th percentile, ms.
    pub p99_ms: f64,
}

impl ScopeRow {
    /// Share of reads on followers.
    pub fn follower_share(&self) -> f64 {
        if self.reads == 0 {
            0.0
        } else {
            self.on_followers as f64 / self.reads as f64
        }
    }
}

/// Every round's rows and, per contender, the medians (stale and counts
/// summed over the rounds).
#[derive(Debug, Clone, Serialize)]
pub struct ScopesReport {
    /// Each round's rows, in run order.
    pub rounds: Vec<Vec<ScopeRow>>,
    /// Per contender: median reads/s, p50, p99 over the rounds; counts
    /// summed.
    pub medians: Vec<ScopeRow>,
}

/// Where a contender's clients connect.
struct Contender {
    name: String,
    url: String,
    options: String,
}

const TABLE: &str =
    "CREATE TABLE IF NOT EXISTS ryw_bench_scopes (k text PRIMARY KEY, v bigint NOT NULL)";
const UPSERT: &str = "INSERT INTO ryw_bench_scopes (k, v) VALUES ($1, $2) \
                      ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v";
const SELECT: &str =
    "SELECT coalesce((SELECT v FROM ryw_bench_scopes WHERE k = $1), 0), inet_server_port()";

/// Runs the comparison.
pub async fn scopes(opts: &ScopesOptions) -> Result<ScopesReport, BenchError> {
    if opts.rounds == 0 || opts.clients == 0 || opts.reads_per_write == 0 {
        return Err(BenchError::Config {
            what: "scopes",
            detail: "--rounds, --clients and --reads-per-write must be at least 1".into(),
        });
    }
    let info = ClusterInfo::load(&opts.cluster)?;
    let leader = info
        .nodes
        .iter()
        .find(|n| n.role == NodeRole::Leader)
        .ok_or_else(|| BenchError::Config {
            what: "cluster",
            detail: "no node leads".into(),
        })?;
    let leader_port = i32::from(leader.port);
    create_table(&info).await?;
    let redis = opts.redis_url.clone().or_else(|| info.redis_url());
    let proxy =
        ProxyInProcess::start(&opts.cluster, None, RouterConfig::default(), redis, false).await?;
    let mut contenders: Vec<Contender> = Scope::ALL
        .into_iter()
        .map(|scope| Contender {
            name: format!("ryw proxy scope={scope}"),
            url: proxy.url(),
            options: format!("-c ryw.scope={scope}"),
        })
        .collect();
    let mut pgpools = Vec::new();
    if opts.pgpool {
        for on_write in ["always", "transaction"] {
            let pool = PgpoolOptions {
                num_init_children: (2 * opts.clients as u32 + 4).clamp(8, 512),
                on_write: on_write.to_owned(),
                ..PgpoolOptions::default()
            };
            let p = Pgpool::start_in(&info, &pool, &format!("pgpool-scopes-{on_write}")).await?;
            contenders.push(Contender {
                name: format!("pgpool on_write={on_write}"),
                url: p.url(),
                options: String::new(),
            });
            pgpools.push(p);
        }
    }
    let mut rounds = Vec::new();
    let mut failure = None;
    'rounds: for round in 0..opts.rounds {
        let mut rows = Vec::new();
        for c in &contenders {
            match run_one(c, opts, leader_port).await {
                Ok(row) => {
                    eprintln!(
                        "round {}: {:<30} {:>8.0} reads/s, {:>5.1}% on followers, {} stale of {}, p50 {:.2} ms, p99 {:.2} ms",
                        round + 1,
                        row.contender,
                        row.reads_per_s,
                        100.0 * row.follower_share(),
                        row.stale,
                        row.reads,
                        row.p50_ms,
                        row.p99_ms
                    );
                    rows.push(row);
                }
                Err(e) => {
                    failure = Some(e);
                    break 'rounds;
                }
            }
        }
        rounds.push(rows);
    }
    for p in pgpools {
        p.stop().await;
    }
    proxy.stop().await?;
    if let Some(e) = failure {
        return Err(e);
    }
    let medians = contenders
        .iter()
        .map(|c| medians(&c.name, &rounds))
        .collect();
    Ok(ScopesReport { rounds, medians })
}

/// The figures' table (medians), with each row's plain-words reading.
pub fn table(report: &ScopesReport) -> String {
    let mut s = String::from(
        "| contender | reads/s | on followers | stale | p50 ms | p99 ms |\n| --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in &report.medians {
        s.push_str(&format!(
            "| {} | {:.0} | {:.1}% | {} of {} | {:.2} | {:.2} |\n",
            r.contender,
            r.reads_per_s,
            100.0 * r.follower_share(),
            r.stale,
            r.reads,
            r.p50_ms,
            r.p99_ms
        ));
    }
    s
}

fn medians(name: &str, rounds: &[Vec<ScopeRow>]) -> ScopeRow {
    let rows: Vec<&ScopeRow> = rounds
        .iter()
        .flatten()
        .filter(|r| r.contender == name)
        .collect();
    let median = |f: fn(&ScopeRow) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(|r| f(r)).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    ScopeRow {
        contender: name.to_owned(),
        writes: rows.iter().map(|r| r.writes).sum(),
        reads: rows.iter().map(|r| r.reads).sum(),
        stale: rows.iter().map(|r| r.stale).sum(),
        on_followers: rows.iter().map(|r| r.on_followers).sum(),
        reads_per_s: median(|r| r.reads_per_s),
        p50_ms: median(|r| r.p50_ms),
        p99_ms: median(|r| r.p99_ms),
    }
}

/// The table, created on the leader and replayed by every follower.
async fn create_table(info: &ClusterInfo) -> Result<(), BenchError> {
    let leader = info
        .nodes
        .iter()
        .find(|n| n.role == NodeRole::Leader)
        .map(|n| n.url.clone())
        .unwrap_or_default();
    let c = connect(&leader, "").await?;
    c.batch_execute(TABLE)
        .await
        .map_err(|source| BenchError::Postgres {
            what: "creating the scopes table",
            source,
        })?;
    for n in info.nodes.iter().filter(|n| n.role != NodeRole::Leader) {
        let f = connect(&n.url, "").await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let row = f
                .query_one("SELECT to_regclass('ryw_bench_scopes') IS NOT NULL", &[])
                .await
                .map_err(|source| BenchError::Postgres {
                    what: "waiting for the scopes table",
                    source,
                })?;
            if row.get::<_, bool>(0) {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::Measure {
                    what: "scopes".into(),
                    detail: format!("{} never replayed the table", n.name),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

async fn connect(url: &str, options: &str) -> Result<Client, BenchError> {
    let mut cfg: tokio_postgres::Config = url.parse().map_err(|source| BenchError::Postgres {
        what: "a contender's url",
        source,
    })?;
    cfg.connect_timeout(Duration::from_secs(5));
    if !options.is_empty() {
        cfg.options(options);
    }
    let (client, conn) = cfg
        .connect(NoTls)
        .await
        .map_err(|source| BenchError::Postgres {
            what: "connecting a bench client",
            source,
        })?;
    tokio::spawn(conn);
    Ok(client)
}

/// One contender for `opts.duration`.
async fn run_one(
    c: &Contender,
    opts: &ScopesOptions,
    leader_port: i32,
) -> Result<ScopeRow, BenchError> {
    let started = Instant::now();
    let deadline = started + opts.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..opts.clients {
        let writer = connect(&c.url, &c.options).await?;
        let reader = connect(&c.url, &c.options).await?;
        let row = format!("{}-{i}", c.name.replace(' ', "-"));
        let reads_per_write = opts.reads_per_write;
        tasks.spawn(async move {
            pair_loop(writer, reader, row, reads_per_write, deadline, leader_port).await
        });
    }
    let (mut writes, mut stale, mut on_followers) = (0, 0, 0);
    let mut latencies: Vec<Duration> = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.map_err(|e| BenchError::Measure {
            what: c.name.clone(),
            detail: format!("a client task: {e}"),
        })?;
        let r = r.map_err(|source| BenchError::Measure {
            what: c.name.clone(),
            detail: source.to_string(),
        })?;
        writes += r.writes;
        stale += r.stale;
        on_followers += r.on_followers;
        latencies.extend(r.latencies);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(ScopeRow {
        contender: c.name.clone(),
        writes,
        reads: latencies.len() as u64,
        stale,
        on_followers,
        reads_per_s: latencies.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

struct PairFigures {
    writes: u64,
    stale: u64,
    on_followers: u64,
    latencies: Vec<Duration>,
}

async fn pair_loop(
    writer: Client,
    reader: Client,
    row: String,
    reads_per_write: usize,
    deadline: Instant,
    leader_port: i32,
) -> Result<PairFigures, tokio_postgres::Error> {
    let upsert = writer.prepare(UPSERT).await?;
    let select = reader.prepare(SELECT).await?;
    let mut f = PairFigures {
        writes: 0,
        stale: 0,
        on_followers: 0,
        latencies: Vec::new(),
    };
    let mut i: i64 = 0;
    while Instant::now() < deadline {
        i += 1;
        writer.execute(&upsert, &[&row, &i]).await?;
        f.writes += 1;
        for _ in 0..reads_per_write {
            let t = Instant::now();
            let r = reader.query_one(&select, &[&row]).await?;
            f.latencies.push(t.elapsed());
            let (v, port): (i64, Option<i32>) = (r.get(0), r.get(1));
            f.stale += u64::from(v < i);
            f.on_followers += u64::from(port.is_some_and(|p| p != leader_port));
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, rps: f64, stale: u64) -> ScopeRow {
        ScopeRow {
            contender: name.into(),
            writes: 10,
            reads: 20,
            stale,
            on_followers: 5,
            reads_per_s: rps,
            p50_ms: rps / 100.0,
            p99_ms: rps / 10.0,
        }
    }

    #[test]
    fn medians_take_the_middle_round_and_sum_the_counts() {
        let rounds = vec![
            vec![row("a", 100.0, 1), row("b", 5.0, 0)],
            vec![row("a", 300.0, 0), row("b", 7.0, 0)],
            vec![row("a", 200.0, 2), row("b", 6.0, 0)],
        ];
        let m = medians("a", &rounds);
        assert_eq!(m.reads_per_s, 200.0);
        assert_eq!((m.stale, m.reads, m.on_followers), (3, 60, 15));
        assert!((m.follower_share() - 0.25).abs() < 1e-9);
        let t = table(&ScopesReport {
            rounds: rounds.clone(),
            medians: vec![m],
        });
        assert!(t.contains("| a | 200 | 25.0% | 3 of 60 |"), "{t}");
    }
}
