//! Transaction pooling (`--pool-mode transaction`): many clients on a few
//! server connections per node, with read-your-writes and prepared
//! statements as in session mode.
//!
//! How many connections the proxy holds is read from each node's own
//! `pg_stat_activity` while the clients run (never from the proxy's
//! figures); staleness from the values written.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::clients::{figure, program, venv};
use crate::support::{Ctx, SELECT, Setup, UPSERT, connect_to, direct};

/// Every node's client connections other than the proxy's own (the
/// router's and the tracker's, `ryw-*` in `pg_stat_activity`) and the
/// one asking, every 50 ms until `stop`: the most each node had.
fn watch_connections(
    ctx: &Ctx,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<BTreeMap<String, i64>> {
    let nodes: Vec<(String, String)> = ctx
        .cluster
        .info()
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.url.clone()))
        .collect();
    tokio::spawn(async move {
        let mut clients = Vec::new();
        for (name, url) in &nodes {
            clients.push((name.clone(), direct(url).await));
        }
        let mut most = BTreeMap::new();
        while !stop.load(Ordering::Relaxed) {
            for (name, c) in &clients {
                let n: i64 = c
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity \
                         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
                           AND application_name NOT LIKE 'ryw-%'",
                        &[],
                    )
                    .await
                    .expect("pg_stat_activity")
                    .get(0);
                let e = most.entry(name.clone()).or_insert(0);
                *e = (*e).max(n);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        most
    })
}

/// pgbench through the proxy; its report.
async fn pgbench(ctx: &Ctx, args: &[&str]) -> String {
    let port = ctx.proxy.addr.port().to_string();
    let out = tokio::process::Command::new(program(ctx, "pgbench"))
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "30")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), out)
        .await
        .unwrap_or_else(|_| panic!("pgbench {args:?} did not finish in 180 s"))
        .expect("pgbench runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pgbench {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_share_twenty_server_connections_per_node() {
    let ctx = Ctx::start(Setup {
        pool_mode: ryw_proxy::PoolMode::Transaction,
        pool_size: 20,
        max_clients: 1100,
        ..Setup::default()
    })
    .await;
    // pgbench's tables, made on the leader, replayed everywhere.
    let init = tokio::process::Command::new(program(&ctx, "pgbench"))
        .args(["-i", "-q", "-s", "1"])
        .arg(ctx.cluster.leader_url())
        .output()
        .await
        .expect("pgbench -i");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    tokio::time::sleep(Duration::from_millis(800)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let during = watch_connections(&ctx, stop.clone());
    let db = ryw_cluster::DATABASE;
    let mut runs = Vec::new();
    for (label, args) in [
        (
            "-c 1000 -S",
            vec!["-n", "-S", "-c", "1000", "-j", "2", "-T", "6", db],
        ),
        (
            "-c 200 TPC-B -M extended",
            vec![
                "-n", "-c", "200", "-j", "2", "-T", "6", "-M", "extended", db,
            ],
        ),
        (
            "-c 200 TPC-B -M prepared",
            vec![
                "-n", "-c", "200", "-j", "2", "-T", "6", "-M", "prepared", db,
            ],
        ),
    ] {
        let report = pgbench(&ctx, &args).await;
        let done = figure(&report, "number of transactions actually processed:").unwrap_or(0.0);
        let failed = figure(&report, "number of failed transactions:").unwrap_or(-1.0);
        let tps = figure(&report, "tps").unwrap_or(0.0);
        eprintln!("pgbench {label}: {done} transactions, {failed} failed, {tps:.0} tps");
        runs.push((label, done, failed));
    }
    stop.store(true, Ordering::Relaxed);
    let most = during.await.unwrap();
    eprintln!("server connections per node from the proxy for its clients, at most: {most:?}");
    for (label, done, failed) in &runs {
        assert!(*done > 100.0, "pgbench {label}: {done} transactions");
        assert_eq!(*failed, 0.0, "pgbench {label}: failed transactions");
    }
    for (node, n) in &most {
        assert!(
            *n <= 20,
            "{node} had {n} connections for clients: more than the pool (20)"
        );
    }
    assert!(
        most.values().all(|n| *n > 0),
        "the runs used every node's pool: {most:?}"
    );

    // Every TPC-B transaction was all-or-nothing on the leader.
    let leader = direct(&ctx.cluster.leader_url()).await;
    let sums = leader
        .query_one(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts)::int8, \
                    (SELECT sum(bbalance) FROM pgbench_branches)::int8, \
                    (SELECT sum(tbalance) FROM pgbench_tellers)::int8, \
                    (SELECT count(*) FROM pgbench_history)::int8",
            &[],
        )
        .await
        .unwrap();
    let (a, b, t, h): (i64, i64, i64, i64) = (sums.get(0), sums.get(1), sums.get(2), sums.get(3));
    eprintln!("balances: accounts {a}, branches {b}, tellers {t}; {h} history rows");
    assert!(h > 100, "the TPC-B runs wrote");
    assert_eq!((a, a), (b, t), "the balances add up");
}

/// How many times clients waited for a server connection (`/metrics`).
async fn pool_waits(ctx: &Ctx) -> u64 {
    let admin = ctx.proxy.admin.expect("the admin endpoint");
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with("ryw_proxy_pool_wait_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_holds_under_transaction_pooling_while_two_hundred_clients_load_the_pool()
{
    // A small pool, so the 200 others keep it busy.
    let ctx = Ctx::start(Setup {
        pool_mode: ryw_proxy::PoolMode::Transaction,
        pool_size: 4,
        admin: true,
        // One follower within hybrid's 20 ms budget (fresh reads wait for
        // it), one not (they skip it).
        lags: vec![Duration::from_millis(5), Duration::from_millis(300)],
        ..Setup::default()
    })
    .await;
    // 200 other clients: reads and writes of rows of their own, each about
    // 4 a second (a debug build of the proxy shares 2 cores with them and
    // the cluster).
    let stop = Arc::new(AtomicBool::new(false));
    let loaded = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for i in 0..200 {
        let c = connect_to(ctx.proxy.addr, "").await;
        let (stop, loaded) = (stop.clone(), loaded.clone());
        load.push(tokio::spawn(async move {
            let row = format!("load-{i}");
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                if n % 4 == 0 {
                    c.execute(UPSERT, &[&row, &n]).await.expect("a load write");
                } else {
                    c.query_one(SELECT, &[&row]).await.expect("a load read");
                }
                loaded.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }));
    }
    let names = ctx.node_names();
    let mut stale = Vec::new();
    let mut served: BTreeMap<String, u32> = BTreeMap::new();

    // 1,000 pairs on one connection.
    let one = ctx.client().await;
    for i in 1..=1000i64 {
        one.execute(UPSERT, &[&"one", &i]).await.expect("write");
        let r = one.query_one(SELECT, &[&"one"]).await.expect("read");
        let (v, port): (i64, Option<i32>) = (r.get(0), r.get(1));
        *served.entry(names.name(port)).or_default() += 1;
        if v != i {
            stale.push(format!(
                "one connection: wrote {i}, read {v} on {}",
                names.name(port)
            ));
        }
    }
    // 1,000 pairs across two connections of one named session.
    let w = ctx.client_in("pooled-across").await;
    let r = ctx.client_in("pooled-across").await;
    for i in 1..=1000i64 {
        w.execute(UPSERT, &[&"across", &i]).await.expect("write");
        let row = r.query_one(SELECT, &[&"across"]).await.expect("read");
        let (v, port): (i64, Option<i32>) = (row.get(0), row.get(1));
        *served.entry(names.name(port)).or_default() += 1;
        if v != i {
            stale.push(format!(
                "across: wrote {i}, read {v} on {}",
                names.name(port)
            ));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.expect("a load client");
    }
    let loaded = loaded.load(Ordering::Relaxed);
    let waits = pool_waits(&ctx).await;
    eprintln!(
        "2,000 pairs: {} stale; reads served by {served:?}; {loaded} statements of the 200 other \
         clients meanwhile; {waits} waits for a server connection",
        stale.len()
    );
    assert!(
        stale.is_empty(),
        "{} stale: {:?}",
        stale.len(),
        &stale[..stale.len().min(10)]
    );
    assert!(loaded > 2000, "the other clients ran ({loaded} statements)");
    assert!(
        waits > 0,
        "the pool was busy: clients waited for a connection"
    );
    let on_followers: u32 = served
        .iter()
        .filter(|(n, _)| n.starts_with("follower"))
        .map(|(_, c)| c)
        .sum();
    assert!(
        on_followers > 0,
        "some fresh reads went to followers: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_with_server_side_prepares_run_clean_across_pooled_connections() {
    let ctx = Ctx::start(Setup {
        pool_mode: ryw_proxy::PoolMode::Transaction,
        pool_size: 2,
        ..Setup::default()
    })
    .await;
    let venv = tokio::task::spawn_blocking(venv).await.unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proxy/python/pooled.py");
    let out = tokio::process::Command::new(venv.join("bin/python"))
        .arg(&script)
        .args(["127.0.0.1", &ctx.proxy.addr.port().to_string(), "500"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), out)
        .await
        .expect("the drivers finished in 240 s")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the drivers failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("drivers: {stdout}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    for driver in ["psycopg", "asyncpg"] {
        let r = &report[driver];
        assert!(r["executions"].as_u64().unwrap() >= 500, "{driver}: {r}");
        assert_eq!(r["errors"], serde_json::json!([]), "{driver}: {r}");
        assert_eq!(r["stale"], serde_json::json!([]), "{driver}: {r}");
        // Its statements ran on more server connections than it has
        // client connections: they were shared.
        assert!(
            r["server_connections"].as_u64().unwrap() >= 2,
            "{driver}: {r}"
        );
    }

    // The servers end every pooled connection while it is idle (a restart,
    // pg_terminate_backend, idle_session_timeout): the next client's write
    // and read do not fail, the dead connections are never lent.
    let client = ctx.client().await;
    crate::support::write(&client, "after-terminate", 1).await;
    let mut ended = 0;
    for (_, url) in std::iter::once(("leader".to_owned(), ctx.cluster.leader_url()))
        .chain(ctx.cluster.follower_urls())
    {
        let node = direct(&url).await;
        ended += node
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
                 AND application_name NOT LIKE 'ryw-%'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
    }
    assert!(ended > 0, "pooled connections were there to end");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 2..=20 {
        crate::support::write(&client, "after-terminate", i).await;
        let (v, _) = crate::support::read(&client, "after-terminate").await;
        assert_eq!(v, i, "a read after the pooled connections were ended");
    }
}

/// Runs a driver program; its JSON line.
async fn driver(label: &str, mut cmd: tokio::process::Command) -> serde_json::Value {
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{label} did not finish in 180 s"))
        .unwrap_or_else(|e| panic!("{label} did not start: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{label} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{label}: {stdout}");
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{label} printed no JSON line ({e}): {stdout}"))
}

fn judge(label: &str, r: &serde_json::Value) {
    assert!(r["executions"].as_u64().unwrap() >= 500, "{label}: {r}");
    assert_eq!(r["errors"], serde_json::json!([]), "{label}: {r}");
    assert_eq!(r["stale"], serde_json::json!([]), "{label}: {r}");
    assert!(
        r["server_connections"].as_u64().unwrap() >= 2,
        "{label}: {r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_named_statements_and_jdbc_server_prepares_run_clean_across_pooled_connections()
 {
    use crate::recipes::{cache, cached, java_classpath, must, node_modules};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proxy/pooled");
    let modules = tokio::task::spawn_blocking(node_modules).await.unwrap();
    let classpath = java_classpath();
    let source = dir.join("PooledJdbc.java");
    let stamp = std::fs::read_to_string(&source).unwrap();
    let cp = std::env::join_paths(&classpath).unwrap();
    let classes = cached(&cache("pooled-java"), &stamp, |out| {
        must(
            std::process::Command::new("javac")
                .arg("-d")
                .arg(out)
                .arg("-cp")
                .arg(&cp)
                .arg(&source),
            "install a JDK: apt-get install -y default-jdk-headless (scripts/test does it when missing)",
        );
    });
    let ctx = Ctx::start(Setup {
        pool_mode: ryw_proxy::PoolMode::Transaction,
        pool_size: 2,
        ..Setup::default()
    })
    .await;
    let port = ctx.proxy.addr.port().to_string();
    let mut node = tokio::process::Command::new("node");
    node.arg(dir.join("pooled_node.js"))
        .args(["127.0.0.1", &port, "500"])
        .env("NODE_PATH", &modules);
    let r = driver("node-postgres", node).await;
    judge("node-postgres", &r);
    let mut java_cp = classpath.clone();
    java_cp.push(classes);
    let mut java = tokio::process::Command::new("java");
    java.arg("-cp")
        .arg(std::env::join_paths(java_cp).unwrap())
        .arg("PooledJdbc")
        .args(["127.0.0.1", &port, "500"]);
    let r = driver("pgjdbc", java).await;
    judge("pgjdbc", &r);
}
