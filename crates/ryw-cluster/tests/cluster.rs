//! Real-cluster tests of `ryw cluster`: real `postgres` processes, real
//! streaming replication, real replay delay.
//!
//! "Rule N" in comments: the correctness rules, listed in
//! `docs/architecture.md#correctness-rules` with the code and tests of each.

use ryw_cluster::harness::TestCluster;
use ryw_cluster::{ClusterError, UpOptions, ops};
use std::time::{Duration, Instant};
use tokio_postgres::types::PgLsn;

async fn client(url: &str) -> tokio_postgres::Client {
    ops::connect(url, "test").await.expect("connect")
}

async fn replay_lsn(follower: &tokio_postgres::Client) -> u64 {
    let row = follower
        .query_one("SELECT pg_last_wal_replay_lsn()", &[])
        .await
        .unwrap();
    u64::from(row.get::<_, PgLsn>(0))
}

/// Updates the row to `v` and returns the commit's LSN, read with its own
/// statement after the commit returned (correctness rule 1), and when the
/// update was sent. A follower's `recovery_min_apply_delay` counts from the
/// commit record's timestamp, taken on the leader before the commit is
/// flushed and acknowledged; on a slow disk that flush and the LSN query
/// take tens of milliseconds, so catch-up is timed from the send, which is
/// never later.
async fn bump(leader: &tokio_postgres::Client, v: i64) -> (u64, Instant) {
    let sent = Instant::now();
    leader
        .execute("UPDATE t SET v = $1 WHERE id = 1", &[&v])
        .await
        .unwrap();
    let row = leader
        .query_one("SELECT pg_current_wal_lsn()", &[])
        .await
        .unwrap();
    (u64::from(row.get::<_, PgLsn>(0)), sent)
}

/// Waits for `follower` to replay `lsn`; returns the time since `t`.
async fn wait_replayed(follower: &tokio_postgres::Client, lsn: u64, t: Instant) -> Duration {
    while replay_lsn(follower).await < lsn {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "follower never reached {lsn}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    t.elapsed()
}

async fn value(c: &tokio_postgres::Client) -> i64 {
    c.query_one("SELECT v FROM t WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_invisible_on_a_delayed_follower_until_its_replay_lsn_reaches_the_commit_lsn() {
    let cluster = TestCluster::start(&[Duration::from_millis(500)]).await;
    let leader = client(&cluster.leader_url()).await;
    let follower = client(&cluster.follower_urls()[0].1).await;
    leader
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v bigint); INSERT INTO t VALUES (1, 0)")
        .await
        .unwrap();
    let lsn = u64::from(
        leader
            .query_one("SELECT pg_current_wal_lsn()", &[])
            .await
            .unwrap()
            .get::<_, PgLsn>(0),
    );
    wait_replayed(&follower, lsn, Instant::now()).await;

    for v in 1..=5 {
        let (commit_lsn, sent) = bump(&leader, v).await;
        // Right after the commit, the 500 ms delayed follower shows the old row.
        assert_eq!(
            value(&follower).await,
            v - 1,
            "the delayed follower already had write {v}"
        );
        assert!(replay_lsn(&follower).await < commit_lsn);
        // Once its replay LSN (checked in a statement of its own, before the
        // read) reaches the commit LSN, the row is there.
        let waited = wait_replayed(&follower, commit_lsn, sent).await;
        assert_eq!(
            value(&follower).await,
            v,
            "replay LSN ≥ commit LSN but the write is not visible"
        );
        assert!(
            waited >= Duration::from_millis(300),
            "caught up after only {waited:?} with a 500 ms delay"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_lag_changes_the_observed_catch_up_time() {
    let cluster = TestCluster::start(&[Duration::from_millis(100)]).await;
    let leader = client(&cluster.leader_url()).await;
    let follower = client(&cluster.follower_urls()[0].1).await;
    leader
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v bigint); INSERT INTO t VALUES (1, 0)")
        .await
        .unwrap();

    let mut fast = Vec::new();
    for v in 1..=3 {
        let (lsn, sent) = bump(&leader, v).await;
        fast.push(wait_replayed(&follower, lsn, sent).await);
    }
    ryw_cluster::set_lag(&cluster.dir(), "1", Duration::from_millis(800))
        .await
        .unwrap();
    // The reload takes effect within ~200 ms; let it land before measuring.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut slow = Vec::new();
    for v in 4..=6 {
        let (lsn, sent) = bump(&leader, v).await;
        slow.push(wait_replayed(&follower, lsn, sent).await);
    }
    fast.sort();
    slow.sort();
    assert!(
        fast[1] >= Duration::from_millis(80) && fast[1] < Duration::from_millis(600),
        "100 ms delay: {fast:?}"
    );
    assert!(
        slow[1] >= Duration::from_millis(750),
        "800 ms delay: {slow:?}"
    );
    let saved = ryw_cluster::ClusterInfo::load(&cluster.dir()).unwrap();
    assert_eq!(saved.follower("1").unwrap().delay_ms, Some(800));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_leaves_no_process_and_no_listening_port_and_is_idempotent() {
    let cluster = TestCluster::start(&[Duration::ZERO, Duration::ZERO]).await;
    let info = cluster.info();
    let (_, status) = ryw_cluster::status(&info.dir).await.unwrap();
    assert!(status.iter().all(|s| s.alive), "{status:?}");
    assert!(
        status
            .iter()
            .filter(|s| s.streaming.is_some())
            .all(|s| s.streaming == Some(true)),
        "{status:?}"
    );
    let pids: Vec<i32> = status.iter().map(|s| s.pid.unwrap()).collect();

    let report = ryw_cluster::down(&info.dir, false).unwrap();
    assert_eq!(report.stopped, vec!["follower2", "follower1", "leader"]);
    for pid in pids {
        assert!(!ops::is_alive(pid), "pid {pid} survived down");
    }
    for n in &info.nodes {
        ryw_cluster::up::check_port(n.port).unwrap_or_else(|e| panic!("{}: {e}", n.name));
    }
    let again = ryw_cluster::down(&info.dir, false).unwrap();
    assert!(
        again.stopped.is_empty(),
        "second down stopped {:?}",
        again.stopped
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_twice_on_the_same_dir_is_a_clear_error() {
    let cluster = TestCluster::start(&[Duration::ZERO]).await;
    let opts = UpOptions {
        dir: cluster.dir(),
        replicas: 1,
        port: 20_000,
        ..UpOptions::default()
    };
    let err = ryw_cluster::up(&opts).await.unwrap_err();
    assert!(
        matches!(err, ClusterError::AlreadyRunning { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("ryw cluster down"), "{err}");
    // The running cluster was not disturbed.
    let (_, status) = ryw_cluster::status(&cluster.dir()).await.unwrap();
    assert!(status.iter().all(|s| s.alive));
}

#[tokio::test]
async fn a_missing_binary_folder_is_a_clear_error_naming_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let opts = UpOptions {
        dir: dir.path().join("c"),
        pg_bin: Some(empty.path().into()),
        ..UpOptions::default()
    };
    let err = ryw_cluster::up(&opts).await.unwrap_err().to_string();
    assert!(err.contains("apt-get install postgresql"), "{err}");
    assert!(
        !dir.path().join("c").exists(),
        "a failed up left a folder behind"
    );
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let opts = UpOptions {
        dir: dir.path().join("c"),
        port,
        replicas: 1,
        ..UpOptions::default()
    };
    let err = ryw_cluster::up(&opts).await.unwrap_err();
    assert!(
        matches!(err, ClusterError::PortInUse { port: p } if p == port),
        "{err:?}"
    );
    assert!(err.to_string().contains("--port"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_redis_starts_stops_and_restarts_on_its_port() {
    let cluster =
        ryw_cluster::harness::TestCluster::start_with(ryw_cluster::harness::TestClusterOptions {
            lags: vec![Duration::ZERO],
            redis: true,
        })
        .await;
    let port = cluster.info().redis.unwrap().port;
    assert!(port < 32768);
    assert!(ryw_cluster::redis::ping(port));
    cluster.stop_redis();
    assert!(!ryw_cluster::redis::ping(port));
    cluster.start_redis().await;
    assert!(ryw_cluster::redis::ping(port));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_follower_restarts_and_streams_again() {
    let cluster = TestCluster::start(&[Duration::ZERO]).await;
    let (_, before) = ryw_cluster::status(&cluster.dir()).await.unwrap();
    cluster.kill("follower1");
    let (_, dead) = ryw_cluster::status(&cluster.dir()).await.unwrap();
    assert!(!dead[1].alive);
    cluster.start_node("follower1").await;
    let t = Instant::now();
    loop {
        let (_, st) = ryw_cluster::status(&cluster.dir()).await.unwrap();
        if st[1].streaming == Some(true) {
            assert_ne!(st[1].pid, before[1].pid);
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "follower1 never streamed again: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
