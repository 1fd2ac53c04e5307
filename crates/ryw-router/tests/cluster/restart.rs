//! Rule 3: a follower's position is trusted only while it stays up.
//!
//! The follower replays a session's write; then it gets a one-minute replay
//! delay, is killed (SIGKILL), loses its local WAL, and is started again. It
//! replays from its last restartpoint (made on purpose just before the write)
//! with WAL streamed again from the leader, and the delay now holds back the
//! write's commit record: it comes back streaming, in rotation, and *behind*
//! the session's token, showing the old row. A router that kept the
//! pre-restart position would send the session there and serve it stale;
//! this one forgets the position (new epoch, lower LSN) and does not.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ryw_router::{Freshness, RouterConfig, Strategy};
use tokio::time::Instant;

use crate::support::{
    Ctx, StoreKind, Tally, blocking, direct, follower_url, ms, read, replay_lsn, secs, session,
    value_on, wait_view, with, write,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_restarted_behind_a_session_token_never_serves_that_session_stale() {
    let cfg = RouterConfig {
        reconnect_max: ms(250),
        ..RouterConfig::default()
    };
    let ctx = Ctx::start(&[Duration::ZERO], cfg, StoreKind::Memory).await;
    let router = &ctx.router;
    let follower = direct(&follower_url(&ctx.cluster, "follower1")).await;
    // A restartpoint on the follower after the table was created, so that
    // crash recovery replays from there (not from the base backup, whose
    // later commits the delay would hold back too).
    let leader = direct(&ctx.cluster.leader_url()).await;
    leader
        .batch_execute("CHECKPOINT")
        .await
        .expect("checkpoint");
    let checkpoint = replay_lsn_of_leader(&leader).await;
    let deadline = Instant::now() + secs(10);
    while replay_lsn(&follower).await < checkpoint {
        assert!(
            Instant::now() < deadline,
            "follower1 never replayed the checkpoint"
        );
        tokio::time::sleep(ms(5)).await;
    }
    follower
        .batch_execute("CHECKPOINT")
        .await
        .expect("restartpoint");

    let s = session("restart-writer");
    let token = write(router, &s, 1).await;
    wait_view(router, "follower1 replays the write", secs(10), |v| {
        v.nodes[0].lsn.is_some_and(|l| l >= token)
    })
    .await;
    let before = router.cluster_view().nodes[0].clone();
    // While follower1 is known to have the write, the session reads there:
    // it is the follower a router trusting old positions would pick.
    let mut pre = Tally::default();
    for _ in 0..10 {
        let r = read(
            router,
            &ctx.nodes,
            &s,
            Freshness::Fresh,
            with(Strategy::Causal),
            None,
        )
        .await;
        pre.add(&r.expect("read before the restart"), 1);
    }
    assert_eq!((pre.stale, pre.on("follower1")), (0, 10), "{pre:?}");

    // Reads of the session all along, causal: they must show 1.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (router, nodes, s, stop) = (router.clone(), ctx.nodes.clone(), s.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let r = read(
                    &router,
                    &nodes,
                    &s,
                    Freshness::Fresh,
                    with(Strategy::Causal),
                    None,
                )
                .await;
                match r {
                    Ok(r) => tally.add(&r, 1),
                    Err(e) => tally.error(e),
                }
                tokio::time::sleep(ms(2)).await;
            }
            tally
        })
    };
    // A session with nothing to see, to show the follower is used again.
    let idle = session("restart-idle");

    ctx.cluster.set_lag(1, Duration::from_secs(60)).await;
    let restart_at = Instant::now();
    blocking(|| ctx.cluster.kill("follower1"));
    // Without local WAL it must stream the write again, so its WAL receiver
    // runs while the delay holds the commit back (with the WAL on disk it
    // would replay from there and start no receiver until past the delay).
    drop_local_wal(&ctx.cluster, "follower1");
    ctx.cluster.start_node("follower1").await;
    eprintln!("follower1 killed and started in {:?}", restart_at.elapsed());

    // The premise: it came back behind the token, with the old row.
    let follower = direct(&follower_url(&ctx.cluster, "follower1")).await;
    let replay = replay_lsn(&follower).await;
    assert!(
        replay < token,
        "follower1 should come back behind the write ({replay} >= {token})"
    );
    assert_eq!(
        value_on(&follower, &s).await,
        0,
        "follower1 shows the old row"
    );

    // The router relearns it from the new incarnation: lower, new epoch.
    wait_view(router, "follower1 back in rotation", secs(10), |v| {
        v.nodes[0].in_rotation
    })
    .await;
    let after = router.cluster_view().nodes[0].clone();
    eprintln!(
        "before restart: lsn {:?} epoch {}; after: lsn {:?} epoch {}",
        before.lsn, before.epoch, after.lsn, after.epoch
    );
    assert!(after.epoch > before.epoch, "the epoch changed");
    assert!(
        after.lsn.is_some_and(|l| l < token),
        "the view's position for follower1 is the new, lower one"
    );
    let mut idle_tally = Tally::default();
    for _ in 0..20 {
        match crate::support::read(
            router,
            &ctx.nodes,
            &idle,
            Freshness::Fresh,
            with(Strategy::Causal),
            None,
        )
        .await
        {
            Ok(r) => idle_tally.add(&r, 0),
            Err(e) => idle_tally.error(e),
        }
    }
    assert!(idle_tally.errors.is_empty(), "{:?}", idle_tally.errors);
    assert!(
        idle_tally.on("follower1") > 0,
        "follower1 serves reads with nothing to wait for: {idle_tally:?}"
    );

    // Keep reading the writer's session a while with follower1 in rotation.
    tokio::time::sleep(ms(700)).await;
    stop.store(true, Ordering::Relaxed);
    let tally = reader.await.expect("reader panicked");
    eprintln!("reads of the session through the restart: {tally:?}");
    assert!(tally.errors.is_empty(), "{:?}", tally.errors);
    assert_eq!(
        tally.stale, 0,
        "served stale by the restarted follower: {tally:?}"
    );
    assert!(tally.reads > 10, "{tally:?}");
}

async fn replay_lsn_of_leader(leader: &tokio_postgres::Client) -> ryw_router::Lsn {
    let row = leader
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("leader lsn");
    row.get::<_, String>(0).parse().expect("an lsn")
}

/// Removes the WAL segment files of a stopped node.
fn drop_local_wal(cluster: &ryw_cluster::harness::TestCluster, name: &str) {
    let info = cluster.info();
    let node = info.nodes.iter().find(|n| n.name == name).expect("node");
    let pg_wal = node.data_dir.join("pg_wal");
    let mut removed = 0;
    for entry in std::fs::read_dir(&pg_wal).expect("read pg_wal") {
        let path = entry.expect("pg_wal entry").path();
        let is_segment = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()));
        if is_segment {
            std::fs::remove_file(&path).expect("remove a wal segment");
            removed += 1;
        }
    }
    assert!(removed > 0, "no wal segment in {}", pg_wal.display());
}
