//! Failover under load (README, "Failover"). Six clients pay and read, three
//! on `causal` and three on `hybrid`; replication to both followers is cut
//! (a partition: the leader keeps acknowledging what no follower receives),
//! then the leader is SIGKILLed and `ryw cluster failover` promotes the
//! follower that received the most WAL. The load goes on through it.
//!
//! Judged from the clients' own records and the new leader's tables, never
//! from `served_by`:
//! - asynchronous replication: payments acknowledged during the partition
//!   are not in the new history (any number is honest), and the owner of
//!   each was told so by its next request (`X-Ryw-Write-Lost`); no read is
//!   stale against the surviving history, none goes back except across
//!   such a flag, the ledger adds up;
//! - synchronous replication (`--sync`): a commit waits for a follower, so
//!   the partition acknowledges nothing and no acknowledged payment is
//!   lost;
//! - the old leader, rewound and back as a follower, serves fresh reads
//!   again, none stale.
//!
//! Both print the figures (`docs/reliability.md` quotes them).

use crate::helpers::*;
use axum::http::StatusCode;
use ryw_cluster::harness::TestCluster;
use ryw_cluster::{FailoverOptions, RejoinOptions};
use ryw_service::{Service, ServiceConfig};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Replay delays: small, so that reads still mostly go to followers.
const LAGS: [Duration; 2] = [Duration::from_millis(20), Duration::from_millis(60)];
const CLIENTS: [&str; 6] = ["causal", "causal", "causal", "hybrid", "hybrid", "hybrid"];

/// What one client saw.
#[derive(Debug, Default)]
struct Log {
    /// Acknowledged payments: (payment id, version, when).
    acked: Vec<(String, i64, Instant)>,
    /// When a response told this client a write was lost, and the position.
    flags: Vec<(Instant, String)>,
    /// Successful writes: when each was sent and answered, and its id.
    writes_ok: Vec<(Instant, Instant, String)>,
    /// 503s of writes, with how long each took and its slug.
    write_503: Vec<(Duration, String)>,
    read_503: u64,
    /// Reads older than the client's last acknowledged, not lost, payment.
    stale: Vec<String>,
    /// Reads older than the client's previous read, with no flag between.
    regressions: Vec<String>,
    reads: u64,
    /// Stale-ok reads (`/api/products`) that failed.
    stale_ok_failed: u64,
    stale_ok: u64,
    /// Every answer: for a report when something is off.
    trace: Vec<String>,
}

async fn client(
    app: axum::Router,
    user: String,
    strategy: &'static str,
    stop: Arc<AtomicBool>,
) -> Log {
    let mut log = Log::default();
    let r = call(&app, "POST", "/api/account", Some(&user), &[], None).await;
    assert!(r.status.is_success(), "{r:?}");
    // The version every read must reach (a payment's), and the last read's.
    let mut expected = r.i64("version");
    let mut last_read = 0;
    let mut token = r.header("x-consistency-token").to_owned();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        // A payment of one cent: 100,000 of them fit the opening balance.
        let key = uuid::Uuid::new_v4().to_string();
        let started = Instant::now();
        let p = call(
            &app,
            "POST",
            "/api/payments",
            Some(&user),
            &[("idempotency-key", &key), ("x-consistency-token", &token)],
            Some(r#"{"amount_cents": 1}"#),
        )
        .await;
        if !p.header("x-consistency-token").is_empty() {
            token = p.header("x-consistency-token").to_owned();
        }
        let lost = p.header("x-ryw-write-lost").to_owned();
        if !lost.is_empty() {
            log.flags.push((Instant::now(), lost.clone()));
        }
        log.trace.push(format!(
            "pay {} v{} token {:?} lost {lost:?}",
            p.status,
            p.body["version"],
            decode(&token)
        ));
        match p.status {
            StatusCode::CREATED => {
                let v = p.i64("version");
                let id = p.body["payment_id"].as_str().unwrap().to_owned();
                log.acked.push((id.clone(), v, Instant::now()));
                log.writes_ok.push((started, Instant::now(), id));
                // After a flag, the new leader's version is the truth.
                expected = if lost.is_empty() { expected.max(v) } else { v };
                if !lost.is_empty() {
                    last_read = v;
                }
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                let slug = p.body["type"]
                    .as_str()
                    .unwrap_or("")
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_owned();
                log.write_503.push((started.elapsed(), slug));
            }
            other => panic!("{user}: payment answered {other}: {}", p.body),
        }

        let b = call(
            &app,
            "GET",
            "/api/balance",
            Some(&user),
            &[
                ("x-read-strategy", strategy),
                ("x-consistency-token", &token),
            ],
            None,
        )
        .await;
        if !b.header("x-consistency-token").is_empty() {
            token = b.header("x-consistency-token").to_owned();
        }
        log.trace.push(format!(
            "read {} v{} by {} token {:?} lost {:?}",
            b.status,
            b.body["version"],
            b.header("x-served-by"),
            decode(&token),
            b.header("x-ryw-write-lost")
        ));
        match b.status {
            StatusCode::OK => {
                log.reads += 1;
                let v = b.i64("version");
                let lost = b.header("x-ryw-write-lost").to_owned();
                assert_eq!(
                    b.body["write_lost"].as_str().unwrap_or(""),
                    lost,
                    "the JSON and the header agree"
                );
                if !lost.is_empty() {
                    log.flags.push((Instant::now(), lost));
                    // The surviving history starts again here.
                    expected = v;
                    last_read = v;
                    continue;
                }
                let served = b.header("x-served-by").to_owned();
                if v < expected {
                    log.stale
                        .push(format!("read v{v} from {served} after paying v{expected}"));
                }
                if v < last_read {
                    log.regressions.push(format!(
                        "read v{v} from {served} after reading v{last_read}"
                    ));
                }
                last_read = last_read.max(v);
            }
            StatusCode::SERVICE_UNAVAILABLE => log.read_503 += 1,
            other => panic!("{user}: balance answered {other}: {}", b.body),
        }
        if n.is_multiple_of(4) {
            log.stale_ok += 1;
            let s = call(&app, "GET", "/api/products", Some(&user), &[], None).await;
            if s.status != StatusCode::OK {
                log.stale_ok_failed += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(5 + n % 15)).await;
    }
    log
}

fn decode(token: &str) -> Option<ryw_router::Position> {
    ryw_router::TokenKey::from_secret(KEY)
        .unwrap()
        .verify(token)
        .ok()
}

/// What a run measured.
#[derive(Debug)]
struct Outcome {
    acked: usize,
    lost: usize,
    lost_flagged: usize,
    false_flags: usize,
    kill_to_first_write: Duration,
    write_503: usize,
    slowest_503: Duration,
    read_503: u64,
    reads: u64,
    stale: Vec<String>,
    regressions: Vec<String>,
    stale_ok: u64,
    stale_ok_failed: u64,
}

async fn run(cluster: &TestCluster, sync: bool) -> (Outcome, axum::Router, ryw_service::AppState) {
    let mut cfg: ServiceConfig = config(cluster);
    cfg.nodes = ServiceConfig::nodes_from_cluster(&cluster.dir()).unwrap();
    let service = Service::build(cfg).await.expect("service starts");
    let state = service.state();
    wait_followers_in_rotation(&state).await;
    let app = ryw_service::app(state.clone());

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = CLIENTS
        .iter()
        .map(|s| tokio::spawn(client(app.clone(), user(), s, stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // A partition between the leader and its followers: asynchronous
    // commits go on without them, synchronous ones wait.
    for f in ["follower1", "follower2"] {
        cluster.cut_replication(f).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let killed = Instant::now();
    let report = cluster.failover(FailoverOptions::kill()).await;
    eprintln!(
        "failover ({}): {} promoted on timeline {} at {}, stop {:?}, promote {:?}, total {:?}",
        if sync { "sync" } else { "async" },
        report.new_leader,
        report.timeline,
        report.switch_lsn,
        report.timings.stop,
        report.timings.promote,
        report.timings.total
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut logs = Vec::new();
    for c in clients {
        logs.push(c.await.expect("client"));
    }

    // The surviving history: the new leader's tables.
    let leader = ryw_cluster::ops::connect(&cluster.url_of(&report.new_leader), "test")
        .await
        .expect("new leader");
    let rows = leader
        .query("SELECT payment_id::text FROM payments", &[])
        .await
        .unwrap();
    let present: HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    let ledger = leader
        .query(
            "SELECT count(*) FROM accounts a WHERE a.balance_cents <> a.opening_cents - \
             coalesce((SELECT sum(amount_cents) FROM payments p WHERE p.user_id = a.user_id), 0) \
             OR a.version <> (SELECT count(*) FROM payments p WHERE p.user_id = a.user_id)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        ledger[0].get::<_, i64>(0),
        0,
        "the ledger on the new leader adds up"
    );

    // The first write sent once the old leader was dead that the new leader
    // has. (A SIGKILLed postmaster's backends live on for a moment: a write
    // on a connection they hold can still be acknowledged, and lost.)
    let dead = killed + report.timings.stop;
    let first_write = logs
        .iter()
        .flat_map(|l| l.writes_ok.iter())
        .filter(|(sent, _, id)| *sent > dead && present.contains(id))
        .map(|(_, done, _)| *done)
        .min()
        .expect("writes resumed after the failover");
    let acked_by_orphans = logs
        .iter()
        .flat_map(|l| l.writes_ok.iter())
        .filter(|(sent, _, id)| *sent > dead && !present.contains(id))
        .count();
    let mut lost_by_client: HashMap<usize, Vec<Instant>> = HashMap::new();
    let mut acked = 0;
    for (i, l) in logs.iter().enumerate() {
        acked += l.acked.len();
        for (id, _, at) in &l.acked {
            if !present.contains(id) {
                lost_by_client.entry(i).or_default().push(*at);
            }
        }
    }
    let lost: usize = lost_by_client.values().map(Vec::len).sum();
    for (i, ats) in &lost_by_client {
        if logs[*i].flags.is_empty() {
            let l = &logs[*i];
            eprintln!(
                "client {i} ({}) lost {} payments, never told; its last answers:\n{}",
                CLIENTS[*i],
                ats.len(),
                {
                    let at = l
                        .trace
                        .iter()
                        .position(|t| t.contains("timeline: 2"))
                        .unwrap_or(0);
                    l.trace[at.saturating_sub(10)..(at + 4).min(l.trace.len())].join("\n")
                }
            );
        }
    }
    // Each lost payment's owner was told, after it was acknowledged.
    let lost_flagged = lost_by_client
        .iter()
        .map(|(i, ats)| {
            let told = logs[*i].flags.iter().map(|(t, _)| *t).max();
            ats.iter()
                .filter(|at| told.is_some_and(|t| t > **at))
                .count()
        })
        .sum();
    let false_flags = logs
        .iter()
        .enumerate()
        .filter(|(i, l)| !l.flags.is_empty() && !lost_by_client.contains_key(i))
        .count();
    let outcome = Outcome {
        acked,
        lost,
        lost_flagged,
        false_flags,
        kill_to_first_write: first_write - dead,
        write_503: logs.iter().map(|l| l.write_503.len()).sum(),
        slowest_503: logs
            .iter()
            .flat_map(|l| l.write_503.iter().map(|(d, _)| *d))
            .max()
            .unwrap_or_default(),
        read_503: logs.iter().map(|l| l.read_503).sum(),
        reads: logs.iter().map(|l| l.reads).sum(),
        stale: logs.iter().flat_map(|l| l.stale.clone()).collect(),
        regressions: logs.iter().flat_map(|l| l.regressions.clone()).collect(),
        stale_ok: logs.iter().map(|l| l.stale_ok).sum(),
        stale_ok_failed: logs.iter().map(|l| l.stale_ok_failed).sum(),
    };
    let slugs: HashSet<&str> = logs
        .iter()
        .flat_map(|l| l.write_503.iter().map(|(_, s)| s.as_str()))
        .collect();
    let o = &outcome;
    eprintln!(
        "failover ({}): {} payments acknowledged, {} lost, {} of them told, {} clients told \
         with nothing lost; kill to first surviving write {:?} ({acked_by_orphans} acknowledged \
         after the kill by the dead leader's lingering backends, lost); {} writes answered 503 (slowest {:?}, \
         {slugs:?}), {} of {} reads 503; {} stale, {} regressions; stale-ok reads {} failed \
         of {}",
        if sync { "sync" } else { "async" },
        o.acked,
        o.lost,
        o.lost_flagged,
        o.false_flags,
        o.kill_to_first_write,
        o.write_503,
        o.slowest_503,
        o.read_503,
        o.reads,
        o.stale.len(),
        o.regressions.len(),
        o.stale_ok_failed,
        o.stale_ok
    );
    (outcome, app, state)
}

fn common(o: &Outcome) {
    assert!(o.stale.is_empty(), "stale reads: {:?}", o.stale);
    assert!(
        o.regressions.is_empty(),
        "reads went back: {:?}",
        o.regressions
    );
    assert_eq!(
        o.lost_flagged, o.lost,
        "every lost payment's owner was told: {o:?}"
    );
    // And no one was told of a loss that did not happen: a false alarm
    // could make a user pay twice.
    assert_eq!(o.false_flags, 0, "{o:?}");
    assert!(o.reads > 100 && o.acked > 50, "the load went on: {o:?}");
    // Stale-ok reads go on from the followers; the partition took them
    // out of rotation while the leader was up, so the few sent between
    // the kill and the tracker seeing it went to the dead leader.
    assert!(
        o.stale_ok > 0 && o.stale_ok_failed * 50 <= o.stale_ok,
        "stale-ok reads go on: {o:?}"
    );
    // In the gap a write is refused at once, not after a timeout.
    assert!(o.slowest_503 < Duration::from_secs(3), "{o:?}");
    // Writes resume within a second of the promotion (the failover itself,
    // kill to promoted, takes about 0.2 s; a loaded machine gets slack).
    assert!(o.kill_to_first_write < Duration::from_secs(5), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_asynchronous_failover_under_load_tells_every_owner_of_a_lost_payment_and_serves_nothing_stale()
 {
    init_logs();
    let cluster = TestCluster::start(&LAGS).await;
    let (o, app, state) = run(&cluster, false).await;
    common(&o);
    assert!(
        o.lost > 0,
        "payments acknowledged during the partition are in no follower: {o:?}"
    );

    // The old leader, rewound, follows the new one and serves fresh reads.
    let rejoined = cluster.rejoin("leader", RejoinOptions::default()).await;
    eprintln!(
        "rejoin: rewound {}, diverged at {:?}, total {:?}",
        rejoined.rewound, rejoined.diverged_at, rejoined.timings.total
    );
    let t = Instant::now();
    while !state
        .router
        .cluster_view()
        .named(ryw_router::FORMER_LEADER_NAME)
        .is_some_and(|n| n.in_rotation)
    {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{:?}",
            state.router.cluster_view()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut served, mut stale) = (0, 0);
    for i in 0..150 {
        let u = user();
        let a = call(&app, "POST", "/api/account", Some(&u), &[], None).await;
        assert!(a.status.is_success(), "{a:?}");
        let p = call(
            &app,
            "POST",
            "/api/payments",
            Some(&u),
            &[],
            Some(r#"{"amount_cents": 1}"#),
        )
        .await;
        assert_eq!(p.status, StatusCode::CREATED, "{p:?}");
        tokio::time::sleep(Duration::from_millis(30 + i % 40)).await;
        let b = call(
            &app,
            "GET",
            "/api/balance",
            Some(&u),
            &[("x-read-strategy", "causal")],
            None,
        )
        .await;
        assert_eq!(b.status, StatusCode::OK, "{b:?}");
        if b.i64("version") < p.i64("version") {
            stale += 1;
        }
        if b.header("x-served-by") == ryw_router::FORMER_LEADER_NAME {
            served += 1;
        }
    }
    eprintln!(
        "after rejoin: 150 pay-then-read pairs, {served} read on the former leader, {stale} stale"
    );
    assert_eq!(stale, 0);
    assert!(served > 0, "the rejoined node serves reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_synchronous_failover_under_load_loses_no_acknowledged_payment() {
    init_logs();
    let cluster = TestCluster::start_sync(&LAGS).await;
    let (o, _, _) = run(&cluster, true).await;
    common(&o);
    assert_eq!(o.lost, 0, "synchronous commits wait for a follower: {o:?}");
    assert_eq!(o.false_flags, 0, "{o:?}");
}
