//! Faults through the proxy: a cancel request reaches the node that runs
//! the statement; a follower killed or frozen mid-read costs no failed or
//! stale read (rule 8); with the leader down, writes fail at once and
//! reads go on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_postgres::NoTls;

use crate::support::{Ctx, Setup, read, write};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_stops_the_statement_on_the_node_that_runs_it() {
    let ctx = Ctx::start(Setup {
        lags: vec![Duration::ZERO],
        ..Setup::default()
    })
    .await;
    let c = ctx.client().await;
    let nodes: Vec<String> = std::iter::once(ctx.cluster.leader_url())
        .chain(ctx.cluster.follower_urls().into_iter().map(|(_, u)| u))
        .collect();
    for hint in ["", "/* ryw:leader */ "] {
        let token = c.cancel_token();
        let nodes = nodes.clone();
        let canceller = tokio::spawn(async move {
            // As a user would: once the statement runs (a cancel that
            // arrives before it is a no-op, in PostgreSQL too).
            let deadline = Instant::now() + Duration::from_secs(10);
            'running: loop {
                for url in &nodes {
                    let n: i64 = crate::support::direct(url)
                        .await
                        .query_one(
                            "SELECT count(*) FROM pg_stat_activity \
                             WHERE state = 'active' AND query LIKE '%pg_sleep(20)%' \
                             AND pid <> pg_backend_pid()",
                            &[],
                        )
                        .await
                        .unwrap()
                        .get(0);
                    if n > 0 {
                        break 'running;
                    }
                }
                assert!(Instant::now() < deadline, "the statement never started");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            token.cancel_query(NoTls).await
        });
        let started = Instant::now();
        let e = c
            .query_one(&format!("{hint}SELECT pg_sleep(20)"), &[])
            .await
            .expect_err("cancelled");
        canceller
            .await
            .unwrap()
            .expect("the cancel request was sent");
        assert_eq!(e.code().map(|c| c.code()), Some("57014"), "{e:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        c.query_one("SELECT 1", &[])
            .await
            .expect("usable after a cancel");
    }
}

/// What one phase of a load saw: reads, stale reads, failures, reads by
/// node.
#[derive(Debug, Default)]
struct Phase {
    reads: usize,
    stale: usize,
    failures: Vec<String>,
    by_node: BTreeMap<String, usize>,
}

/// Readers and writers that go on all along; counts per phase.
struct Load {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    set: JoinSet<Vec<(usize, usize, usize, String)>>,
}

impl Load {
    async fn start(ctx: &Ctx, sessions: usize) -> Load {
        let (stop, phase) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let mut set = JoinSet::new();
        for n in 0..sessions {
            let c = ctx.client().await;
            c.batch_execute("SET ryw.strategy = 'causal'")
                .await
                .unwrap();
            let (stop, phase, ports) = (stop.clone(), phase.clone(), ctx.node_names());
            set.spawn(async move {
                // (phase, reads, stale, error or node)
                let mut out = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let at = phase.load(Ordering::Relaxed);
                    let key = format!("load-{n}");
                    if let Err(e) = c.execute(crate::support::UPSERT, &[&key, &i]).await {
                        out.push((at, 0, 0, format!("write failed: {e:?}")));
                        continue;
                    }
                    match c.query_one(crate::support::SELECT, &[&key]).await {
                        Ok(r) => {
                            let stale = usize::from(r.get::<_, i64>(0) < i);
                            out.push((at, 1, stale, ports.name(r.get(1))));
                        }
                        Err(e) => out.push((at, 0, 0, format!("read failed: {e:?}"))),
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                out
            });
        }
        Load { stop, phase, set }
    }

    /// What each phase saw.
    async fn finish(mut self) -> Vec<Phase> {
        self.stop.store(true, Ordering::Relaxed);
        let mut phases: Vec<Phase> = (0..4).map(|_| Phase::default()).collect();
        while let Some(r) = self.set.join_next().await {
            for (at, reads, stale, what) in r.unwrap() {
                let p = &mut phases[at];
                p.reads += reads;
                p.stale += stale;
                if reads == 0 {
                    p.failures.push(what);
                } else {
                    *p.by_node.entry(what).or_insert(0) += 1;
                }
            }
        }
        phases
    }
}

async fn rotation(ctx: &Ctx, follower: usize, want: bool, within: Duration) -> Duration {
    let started = Instant::now();
    let c = crate::support::direct(&ctx.cluster.leader_url()).await;
    drop(c);
    let deadline = started + within;
    let mut watch = ctx.proxy_router().watch_cluster();
    loop {
        if watch.borrow_and_update().nodes[follower].in_rotation == want {
            return started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "follower {follower} in rotation = {want} not within {within:?}"
        );
        let _ = tokio::time::timeout(Duration::from_millis(50), watch.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_or_frozen_mid_read_costs_no_failed_or_stale_read() {
    let ctx = Ctx::start(Setup {
        lags: vec![Duration::ZERO, Duration::ZERO],
        ..Setup::default()
    })
    .await;
    let load = Load::start(&ctx, 4).await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    load.phase.store(1, Ordering::Relaxed);
    ctx.cluster.kill("follower1");
    let out = rotation(&ctx, 0, false, Duration::from_secs(2)).await;
    eprintln!("follower1 killed: out of rotation in {out:?}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    ctx.cluster.start_node("follower1").await;
    rotation(&ctx, 0, true, Duration::from_secs(15)).await;

    load.phase.store(2, Ordering::Relaxed);
    ctx.cluster.pause("follower2");
    let out = rotation(&ctx, 1, false, Duration::from_secs(3)).await;
    eprintln!("follower2 frozen: out of rotation in {out:?}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    ctx.cluster.resume("follower2");
    rotation(&ctx, 1, true, Duration::from_secs(10)).await;
    load.phase.store(3, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(800)).await;

    let phases = load.finish().await;
    for (name, p) in ["before", "follower1 killed", "follower2 frozen", "after"]
        .iter()
        .zip(&phases)
    {
        eprintln!(
            "{name}: {} reads, {} stale, {} failed, by node {:?}",
            p.reads,
            p.stale,
            p.failures.len(),
            p.by_node
        );
        assert!(p.failures.is_empty(), "{name}: {:?}", p.failures);
        assert_eq!(p.stale, 0, "{name}");
        assert!(p.reads > 10, "{name}: {} reads", p.reads);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_leader_down_writes_fail_at_once_and_reads_go_on() {
    let ctx = Ctx::start(Setup {
        lags: vec![Duration::ZERO],
        ..Setup::default()
    })
    .await;
    let c = ctx.client().await;
    c.batch_execute("SET ryw.strategy = 'causal'")
        .await
        .unwrap();
    write(&c, "before", 1).await;
    assert_eq!(read(&c, "before").await.0, 1);
    ctx.cluster.stop("leader");
    let started = Instant::now();
    let e = c
        .execute(crate::support::UPSERT, &[&"during", &2i64])
        .await
        .expect_err("no leader, no write");
    eprintln!(
        "a write with the leader down: {e:?} after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let (v, port) = read(&c, "before").await;
    assert_eq!(v, 1, "the session's write is still read");
    assert_eq!(
        ctx.node_names().name(port),
        "follower1",
        "from the follower"
    );
    // A new client can still connect for reads.
    let fresh = ctx.client().await;
    assert_eq!(read(&fresh, "before").await.0, 1);
    ctx.cluster.start_node("leader").await;
}

/// A client whose server notices are kept (`NOTICE`/`WARNING` messages).
async fn client_with_notices(
    addr: std::net::SocketAddr,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::error::DbError>,
) {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(addr.ip().to_string())
        .port(addr.port())
        .user("postgres")
        .dbname(ryw_cluster::DATABASE);
    let (client, mut conn) = cfg.connect(NoTls).await.expect("connect");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notice(n) = m {
                let _ = tx.send(n);
            }
        }
    });
    (client, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_writes_reach_the_new_leader_and_a_connection_is_told_its_write_was_lost()
{
    let ctx = Ctx::start(Setup {
        lags: vec![Duration::ZERO, Duration::ZERO],
        ..Setup::default()
    })
    .await;
    let (c, mut notices) = client_with_notices(ctx.proxy.addr).await;
    c.batch_execute("SET ryw.strategy = 'causal'")
        .await
        .unwrap();
    write(&c, "kept", 1).await;
    assert_eq!(read(&c, "kept").await.0, 1);
    // A partition, then a write the old leader acknowledges and no
    // follower receives.
    for f in ["follower1", "follower2"] {
        ctx.cluster.cut_replication(f).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    write(&c, "lost", 2).await;
    let report = ctx
        .cluster
        .failover(ryw_cluster::FailoverOptions::kill())
        .await;
    let promoted = Instant::now();
    let mut watch = ctx.proxy_router().watch_cluster();
    tokio::time::timeout(
        Duration::from_secs(5),
        watch.wait_for(|v| v.leader_node() == Some(report.new_leader.as_str())),
    )
    .await
    .expect("the proxy follows the promotion")
    .unwrap();
    eprintln!(
        "proxy: {} leads {:?} after the failover returned",
        report.new_leader,
        promoted.elapsed()
    );

    // The next statement of that connection tells it, as a WARNING.
    let (v, _) = read(&c, "kept").await;
    assert_eq!(v, 1, "what survived is read");
    let n = tokio::time::timeout(Duration::from_secs(2), notices.recv())
        .await
        .expect("a notice")
        .expect("a notice");
    eprintln!(
        "notice: {} {} {}",
        n.severity(),
        n.code().code(),
        n.message()
    );
    assert_eq!(n.code().code(), ryw_proxy::LOST_WRITE_SQLSTATE);
    assert!(
        n.message().contains("lost in a failover"),
        "{}",
        n.message()
    );
    // Once.
    assert_eq!(read(&c, "kept").await.0, 1);
    assert!(notices.try_recv().is_err(), "told once");

    // Writes go to the new leader, through the same connection.
    write(&c, "after", 3).await;
    let leader = crate::support::direct(&ctx.cluster.url_of(&report.new_leader)).await;
    let rows: Vec<(String, i64)> = leader
        .query("SELECT k, v FROM kv ORDER BY k", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        [("after".to_owned(), 3), ("kept".to_owned(), 1)],
        "the lost write is not in the new history"
    );
    assert_eq!(read(&c, "after").await.0, 3, "read your write");
}
