//! Real-cluster tests of `ryw cluster up --sync`, `failover` and `rejoin`:
//! real promotions, real timelines, a real `pg_rewind`.
//!
//! "Rule N" in comments: the correctness rules, listed in
//! `docs/architecture.md#correctness-rules` with the code and tests of each.

use ryw_cluster::failover::{ChosenBecause, DelayFrom, StopKind};
use ryw_cluster::harness::TestCluster;
use ryw_cluster::{ClusterError, FailoverOptions, NodeRole, RejoinOptions, ops};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::types::PgLsn;

const ZERO: Duration = Duration::ZERO;

async fn client(url: &str) -> tokio_postgres::Client {
    ops::connect(url, "test").await.expect("connect")
}

async fn lsn(c: &tokio_postgres::Client, sql: &str) -> u64 {
    let row = c.query_one(sql, &[]).await.unwrap();
    row.get::<_, Option<PgLsn>>(0).map(u64::from).unwrap_or(0)
}

/// The commit LSN of an insert (read after COMMIT returned, rule 1).
async fn insert(c: &tokio_postgres::Client, id: i64) -> u64 {
    c.execute("INSERT INTO t (id) VALUES ($1)", &[&id])
        .await
        .unwrap();
    lsn(c, "SELECT pg_current_wal_lsn()").await
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < Duration::from_secs(15), "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_replayed(url: &str, target: u64) {
    let c = client(url).await;
    wait_until(&format!("{url} replays {target:X}"), || async {
        lsn(&c, "SELECT pg_last_wal_replay_lsn()").await >= target
    })
    .await;
}

async fn wait_received(url: &str, target: u64) {
    let c = client(url).await;
    wait_until(&format!("{url} receives {target:X}"), || async {
        lsn(&c, "SELECT pg_last_wal_receive_lsn()").await >= target
    })
    .await;
}

async fn streaming(url: &str) -> bool {
    let c = client(url).await;
    c.query_opt(
        "SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'",
        &[],
    )
    .await
    .unwrap()
    .is_some()
}

/// Cuts a follower's replication and waits until its WAL receiver is gone.
async fn cut(cluster: &TestCluster, name: &str) {
    cluster.cut_replication(name).await;
    let url = cluster.url_of(name);
    wait_until(&format!("{name} stops streaming"), || async {
        !streaming(&url).await
    })
    .await;
}

async fn ids(url: &str) -> Vec<i64> {
    client(url)
        .await
        .query("SELECT id FROM t ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_async_failover_the_followers_and_the_rewound_old_leader_follow_the_follower_with_the_most_wal()
 {
    // follower2 (the middle one, with a replay delay) will have received the
    // most: neither the first nor the last follower.
    let cluster = TestCluster::start(&[ZERO, Duration::from_millis(200), ZERO]).await;
    let leader = client(&cluster.leader_url()).await;
    leader
        .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY)")
        .await
        .unwrap();
    let mut last = 0;
    for id in 1..=10 {
        last = insert(&leader, id).await;
    }
    for (_, url) in cluster.follower_urls() {
        wait_replayed(&url, last).await;
    }
    cut(&cluster, "follower1").await;
    for id in 11..=20 {
        last = insert(&leader, id).await;
    }
    wait_received(&cluster.url_of("follower3"), last).await;
    cut(&cluster, "follower3").await;
    for id in 21..=30 {
        last = insert(&leader, id).await;
    }
    wait_received(&cluster.url_of("follower2"), last).await;
    cut(&cluster, "follower2").await;
    // Acknowledged by the asynchronous leader, received by no follower.
    let lost_lsn = insert(&leader, 31).await;

    let report = cluster.failover(FailoverOptions::kill()).await;
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert_eq!(report.old_leader, "leader");
    assert_eq!(report.stop, StopKind::Killed);
    assert_eq!(report.new_leader, "follower2");
    assert_eq!(report.chosen_because, ChosenBecause::MostWal);
    let received = |name: &str| {
        report
            .candidates
            .iter()
            .find(|c| c.name == name)
            .unwrap()
            .received
            .map(u64::from)
            .unwrap()
    };
    assert!(received("follower2") > received("follower3"));
    assert!(received("follower3") > received("follower1"));
    assert_eq!(report.timeline, 2);
    assert!(u64::from(report.switch_lsn) >= last);
    assert!(u64::from(report.switch_lsn) < lost_lsn);
    assert_eq!(report.synchronous_standby_names, None);
    assert!(
        report.followers.iter().all(|f| f.alive && f.streaming),
        "{:?}",
        report.followers
    );
    assert!(
        report.timings.promote < Duration::from_secs(5),
        "{:?}",
        report.timings
    );

    assert_eq!(cluster.leader_name(), "follower2");
    assert_eq!(cluster.role_of("leader"), NodeRole::Failed);
    let saved = ryw_cluster::ReplicationInfo::load(&cluster.dir()).unwrap();
    assert_eq!(saved.timeline, 2);
    assert_eq!(saved.failovers[0].switch_lsn, report.switch_lsn.to_string());

    // The new history has what follower2 received and not the lost write.
    let new_leader = client(&cluster.leader_url()).await;
    assert_eq!(
        ids(&cluster.leader_url()).await,
        (1..=30).collect::<Vec<_>>()
    );
    // A write on the new leader reaches the re-pointed followers.
    let w = insert(&new_leader, 100).await;
    for name in ["follower1", "follower3"] {
        wait_replayed(&cluster.url_of(name), w).await;
        assert!(ids(&cluster.url_of(name)).await.contains(&100), "{name}");
    }
    let (_, status) = ryw_cluster::status(&cluster.dir()).await.unwrap();
    for s in status.iter().filter(|s| s.role == NodeRole::Follower) {
        assert_eq!(s.upstream.as_deref(), Some("follower2"), "{s:?}");
        assert_eq!(s.timeline, Some(2), "{s:?}");
        assert_eq!(s.streaming, Some(true), "{s:?}");
    }

    // The old leader, rewound, follows the new one and loses write 31.
    let r = cluster.rejoin("leader", RejoinOptions::default()).await;
    eprintln!("{}", serde_json::to_string_pretty(&r).unwrap());
    assert!(r.rewound);
    assert_eq!(r.diverged_at, Some(report.switch_lsn));
    assert_eq!((r.delay_ms, r.delay_from), (0, DelayFrom::FormerLeader));
    assert_eq!(r.timeline, 2);
    assert_eq!(cluster.role_of("leader"), NodeRole::Follower);
    let w = insert(&new_leader, 101).await;
    wait_replayed(&cluster.url_of("leader"), w).await;
    let on_old = ids(&cluster.url_of("leader")).await;
    assert!(on_old.contains(&100) && on_old.contains(&101));
    assert!(
        !on_old.contains(&31),
        "the rewound node kept the lost write"
    );
    let (_, status) = ryw_cluster::status(&cluster.dir()).await.unwrap();
    let old = status.iter().find(|s| s.name == "leader").unwrap();
    assert_eq!(old.upstream.as_deref(), Some("follower2"), "{old:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sync_a_commit_waits_for_a_follower_flush_and_a_failover_loses_no_acknowledged_write()
{
    let cluster = TestCluster::start_sync(&[ZERO, Duration::from_millis(100)]).await;
    let (_, status) = ryw_cluster::status(&cluster.dir()).await.unwrap();
    for s in status.iter().filter(|s| s.role == NodeRole::Follower) {
        assert_eq!(s.sync_state.as_deref(), Some("quorum"), "{s:?}");
    }
    let leader = client(&cluster.leader_url()).await;
    leader
        .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY)")
        .await
        .unwrap();

    // No follower receiving: the commit does not return.
    cut(&cluster, "follower1").await;
    cut(&cluster, "follower2").await;
    let waiting = client(&cluster.leader_url()).await;
    let cancel = waiting.cancel_token();
    let mut commit = tokio::spawn(async move {
        let t = Instant::now();
        let r = waiting
            .execute("INSERT INTO t (id) VALUES (0)", &[])
            .await
            .map(drop);
        (r, t.elapsed())
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut commit)
            .await
            .is_err(),
        "a commit returned with no follower receiving"
    );
    let wait_event: Option<String> = leader
        .query_one(
            "SELECT max(wait_event) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO t (id) VALUES (0)%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(wait_event.as_deref(), Some("SyncRep"));
    // One follower flushing is enough (ANY 1): it returns.
    cluster.repair_replication("follower2").await;
    let (r, took) = match tokio::time::timeout(Duration::from_secs(10), &mut commit).await {
        Ok(done) => done.unwrap(),
        Err(_) => {
            let _ = cancel.cancel_query(tokio_postgres::NoTls).await;
            panic!("the commit did not return once follower2 streamed again");
        }
    };
    r.unwrap();
    assert!(took >= Duration::from_secs(1), "{took:?}");
    cluster.repair_replication("follower1").await;
    let t = Instant::now();
    insert(&leader, -1).await;
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());

    // Writers commit as fast as they can; the leader is SIGKILLed once 200
    // writes were acknowledged; every acknowledged one must survive.
    let next = Arc::new(AtomicI64::new(1));
    let acked = Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let mut writers = Vec::new();
    for _ in 0..4 {
        let c = client(&cluster.leader_url()).await;
        let (next, acked) = (next.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let id = next.fetch_add(1, Ordering::Relaxed);
                match c.execute("INSERT INTO t (id) VALUES ($1)", &[&id]).await {
                    Ok(_) => acked.lock().unwrap().push(id),
                    Err(_) => return,
                }
            }
        }));
    }
    wait_until("200 acknowledged writes", || async {
        acked.lock().unwrap().len() >= 200
    })
    .await;
    let report = cluster.failover(FailoverOptions::kill()).await;
    for w in writers {
        w.await.unwrap();
    }
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    let acked = acked.lock().unwrap().clone();
    let attempted = next.load(Ordering::Relaxed) - 1;
    let on_new = ids(&cluster.leader_url()).await;
    let lost: Vec<i64> = acked
        .iter()
        .copied()
        .filter(|id| on_new.binary_search(id).is_err())
        .collect();
    eprintln!(
        "acknowledged {} of {attempted} attempted writes; lost {}; the new leader has {} rows",
        acked.len(),
        lost.len(),
        on_new.len()
    );
    assert!(acked.len() >= 200);
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");

    // The new leader is synchronous with the remaining follower.
    let other = if report.new_leader == "follower1" {
        "follower2"
    } else {
        "follower1"
    };
    assert_eq!(
        report.synchronous_standby_names.as_deref(),
        Some(format!("ANY 1 (\"{other}\")").as_str())
    );
    let new_leader = client(&cluster.leader_url()).await;
    let t = Instant::now();
    let w = insert(&new_leader, 1_000_000).await;
    assert!(t.elapsed() < Duration::from_secs(5));
    wait_replayed(&cluster.url_of(other), w).await;

    // The rejoined old leader becomes a synchronous candidate too.
    let r = cluster.rejoin("leader", RejoinOptions::default()).await;
    assert_eq!(
        r.synchronous_standby_names.as_deref(),
        Some(format!("ANY 1 (\"leader\", \"{other}\")").as_str())
    );
    let w = insert(&new_leader, 1_000_001).await;
    wait_replayed(&cluster.url_of("leader"), w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_and_rejoin_refuse_what_they_cannot_do_and_a_planned_failover_needs_no_rewind() {
    let cluster = TestCluster::start(&[Duration::from_millis(50), ZERO]).await;
    let leader = client(&cluster.leader_url()).await;
    leader
        .batch_execute("CREATE TABLE t (id bigint PRIMARY KEY)")
        .await
        .unwrap();
    let leader_alive = || async {
        let (_, st) = ryw_cluster::status(&cluster.dir()).await.unwrap();
        st.iter().find(|s| s.name == "leader").unwrap().alive
    };

    let err = cluster
        .try_failover(FailoverOptions::to("follower9"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::NoSuchNode { .. }), "{err:?}");
    assert!(err.to_string().contains("follower1, follower2"), "{err}");

    let err = cluster
        .try_failover(FailoverOptions::to("leader"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::NotAFollower { .. }), "{err:?}");

    cut(&cluster, "follower1").await;
    let err = cluster
        .try_failover(FailoverOptions::to("follower1"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::NotPromotable { .. }), "{err:?}");
    assert!(err.to_string().contains("not streaming"), "{err}");
    assert!(
        leader_alive().await,
        "a refused failover stopped the leader"
    );
    cluster.repair_replication("follower1").await;

    cluster.kill("follower2");
    let err = cluster
        .try_failover(FailoverOptions::to("follower2"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not running"), "{err}");
    cluster.kill("follower1");
    let err = cluster
        .try_failover(FailoverOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClusterError::NoFollowerAlive { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("follower1 down"), "{err}");
    assert!(leader_alive().await);
    let w = insert(&leader, 1).await;
    cluster.start_node("follower1").await;
    cluster.start_node("follower2").await;
    for name in ["follower1", "follower2"] {
        let url = cluster.url_of(name);
        wait_until(&format!("{name} streams"), || streaming(&url)).await;
        wait_replayed(&url, w).await;
    }

    let err = cluster
        .try_rejoin("leader", RejoinOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is the leader"), "{err}");
    let err = cluster
        .try_rejoin("follower1", RejoinOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::NotStopped { .. }), "{err:?}");
    assert!(err.to_string().contains("pg_ctl"), "{err}");

    // Someone promoted follower1 by hand: "already failed over". (follower2
    // stops receiving first, so that it has nothing past follower1's switch
    // point and can follow it.)
    cut(&cluster, "follower2").await;
    client(&cluster.url_of("follower1"))
        .await
        .batch_execute("SELECT pg_promote()")
        .await
        .unwrap();
    let err = cluster
        .try_failover(FailoverOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClusterError::AlreadyPromoted { node, .. } if node == "follower1"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("ryw cluster failover --to follower1"),
        "{err}"
    );
    // … and naming it finishes that failover.
    let report = cluster.failover(FailoverOptions::to("follower1")).await;
    assert_eq!(report.chosen_because, ChosenBecause::AlreadyPromoted);
    assert_eq!(report.stop, StopKind::Fast);
    assert_eq!(cluster.leader_name(), "follower1");
    assert!(report.followers[0].streaming, "{report:?}");

    // A pg_rewind that fails says why.
    let old = cluster.info().node("leader").unwrap().data_dir.clone();
    let control = old.join("global/pg_control");
    std::fs::rename(&control, old.join("global/pg_control.away")).unwrap();
    let err = cluster
        .try_rejoin("leader", RejoinOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::RewindFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("pg_control"), "{err}");
    std::fs::rename(old.join("global/pg_control.away"), &control).unwrap();
    cluster
        .rejoin(
            "leader",
            RejoinOptions {
                delay: Some(Duration::from_millis(30)),
                ..RejoinOptions::default()
            },
        )
        .await;

    // A planned failover: the fast shutdown sends the followers everything,
    // so the old leader has nothing to undo.
    let w = insert(&client(&cluster.leader_url()).await, 2).await;
    wait_replayed(&cluster.url_of("follower2"), w).await;
    let report = cluster.failover(FailoverOptions::to("follower2")).await;
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert_eq!(report.old_leader, "follower1");
    assert_eq!(report.stop, StopKind::Fast);
    assert_eq!(report.timeline, 3);
    assert!(report.followers.iter().all(|f| f.streaming), "{report:?}");
    let r = cluster.rejoin("follower1", RejoinOptions::default()).await;
    eprintln!("{}", serde_json::to_string_pretty(&r).unwrap());
    assert!(!r.rewound, "{r:?}");
    assert_eq!((r.delay_ms, r.delay_from), (50, DelayFrom::Recorded));
    assert_eq!(ids(&cluster.url_of("follower1")).await, vec![1, 2]);
    let saved = ryw_cluster::ReplicationInfo::load(&cluster.dir()).unwrap();
    assert_eq!(
        saved
            .failovers
            .iter()
            .map(|f| (f.from.as_str(), f.to.as_str(), f.timeline))
            .collect::<Vec<_>>(),
        [("leader", "follower1", 2), ("follower1", "follower2", 3)]
    );
}
