//! The shared position feed (README, "Several instances"): three instances on one
//! cluster and one Redis. One holds the lease and polls; the others apply
//! its feed and send (almost) no polls of their own, and their fresh reads
//! stay fresh and still go to followers. Redis stopped: every instance
//! polls on its own, fresh reads go to the leader (rule 5); Redis back:
//! the feed resumes and, after the grace, fresh reads return to followers.

use crate::helpers::*;
use ryw_cluster::harness::{TestCluster, TestClusterOptions};
use ryw_router::{FeedConfig, MetricsSnapshot, Router};
use ryw_service::Service;
use std::time::{Duration, Instant};

const GRACE: Duration = Duration::from_secs(2);

fn snaps(routers: &[Router]) -> Vec<MetricsSnapshot> {
    routers.iter().map(Router::metrics).collect()
}

/// Polls each instance sent between two snapshots.
fn polls(before: &[MetricsSnapshot], after: &[MetricsSnapshot]) -> Vec<u64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| a.tracker_polls - b.tracker_polls)
        .collect()
}

/// Waits until exactly one instance holds the lease and every other one
/// has stopped polling (the feed carries the positions); returns the
/// holder's index.
async fn one_holder_and_quiet_others(routers: &[Router], limit: Duration) -> usize {
    let t = Instant::now();
    loop {
        let before = snaps(routers);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = snaps(routers);
        let holders: Vec<usize> = (0..routers.len())
            .filter(|&i| after[i].feed_holder)
            .collect();
        let p = polls(&before, &after);
        if let [h] = holders[..]
            && (0..routers.len()).all(|i| i == h || p[i] == 0)
        {
            return h;
        }
        assert!(
            t.elapsed() < limit,
            "no single feed holder with quiet others: holders {holders:?}, polls {p:?}"
        );
    }
}

/// Pays through `pay` and reads the balance (fresh, `causal`) through
/// each of `read`, `rounds` times; returns (stale reads, reads served by a
/// follower, reads).
async fn pay_and_read(
    pay: &axum::Router,
    read: &[&axum::Router],
    rounds: usize,
) -> (usize, usize, usize) {
    let (mut stale, mut on_followers, mut reads) = (0, 0, 0);
    let u = user();
    call(pay, "POST", "/api/account", Some(&u), &[], None).await;
    for _ in 0..rounds {
        let paid = call(
            pay,
            "POST",
            "/api/payments",
            Some(&u),
            &[],
            Some(r#"{"amount_cents": 1}"#),
        )
        .await;
        assert_eq!(paid.status, 201, "{paid:?}");
        for app in read {
            let r = call(
                app,
                "GET",
                "/api/balance",
                Some(&u),
                &[("x-read-strategy", "causal")],
                None,
            )
            .await;
            assert_eq!(r.status, 200, "{r:?}");
            reads += 1;
            if r.i64("version") < paid.i64("version") {
                stale += 1;
            }
            if r.header("x-served-by") != "leader" {
                on_followers += 1;
            }
        }
    }
    (stale, on_followers, reads)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_polls_for_all_and_a_redis_outage_makes_each_poll_on_its_own() {
    init_logs();
    let cluster = TestCluster::start_with(TestClusterOptions {
        lags: vec![Duration::from_millis(30), Duration::from_millis(60)],
        redis: true,
    })
    .await;
    let redis = cluster.redis_url().expect("redis");
    let mut routers = Vec::new();
    let mut apps = Vec::new();
    for _ in 0..3 {
        let mut cfg = config(&cluster);
        cfg.redis_url = Some(redis.clone());
        cfg.router.store_recovery_grace = GRACE;
        cfg.router.max_lag_time = GRACE;
        cfg.router.feed = Some(FeedConfig::new(redis.clone()));
        let s = Service::build(cfg).await.expect("service starts");
        wait_followers_in_rotation(&s.state()).await;
        routers.push(s.state().router.clone());
        apps.push(ryw_service::app(s.state()));
    }

    // (a) One holder; the others poll nothing and live on its feed.
    let holder = one_holder_and_quiet_others(&routers, Duration::from_secs(5)).await;
    let others: Vec<usize> = (0..3).filter(|&i| i != holder).collect();
    let before = snaps(&routers);
    let (stale, on_followers, reads) = pay_and_read(
        &apps[others[0]],
        &others.iter().map(|&i| &apps[i]).collect::<Vec<_>>(),
        15,
    )
    .await;
    let after = snaps(&routers);
    let p = polls(&before, &after);
    println!(
        "feed on: polls per instance {p:?} (holder {holder}); {stale} stale, {on_followers}/{reads} on followers"
    );
    assert_eq!(stale, 0, "stale fresh reads through the feed's subscribers");
    assert!(
        on_followers > 0,
        "subscribers never routed a fresh read to a follower"
    );
    for &i in &others {
        assert!(
            after[i].feed_messages > before[i].feed_messages,
            "instance {i} received no feed"
        );
        assert!(
            p[i] * 2 <= p[holder],
            "instance {i} polled {} times, the holder {}",
            p[i],
            p[holder]
        );
        assert!(!after[i].feed_holder);
    }
    assert!(after[holder].feed_published > before[holder].feed_published);

    // (c) Redis stopped: every instance polls on its own.
    tokio::task::block_in_place(|| cluster.stop_redis());
    let down = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = snaps(&routers);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = snaps(&routers);
    let p = polls(&before, &after);
    println!("redis down: polls per instance in 500 ms {p:?}");
    for (i, n) in p.iter().enumerate() {
        // 3 nodes every 10 ms: 150 in 500 ms; half of it is plenty.
        assert!(
            *n >= 75,
            "instance {i} polled only {n} times with Redis down"
        );
        assert!(!after[i].feed_holder, "instance {i} still holds the lease");
    }
    for &i in &others {
        assert!(after[i].feed_fallbacks > 0, "instance {i} never fell back");
    }
    // Rule 5: the store is unknown, so fresh reads go to the leader.
    let (stale, on_followers, reads) = pay_and_read(&apps[0], &[&apps[1], &apps[2]], 5).await;
    assert_eq!(
        (stale, on_followers),
        (0, 0),
        "{reads} reads with Redis down"
    );

    // Redis back: the feed resumes, and after the grace follower reads too.
    cluster.start_redis().await;
    let up = Instant::now();
    println!("redis was down for {:?}", up - down);
    one_holder_and_quiet_others(&routers, Duration::from_secs(8)).await;
    tokio::time::sleep(GRACE.saturating_sub(up.elapsed())).await;
    let t = Instant::now();
    loop {
        let (stale, on_followers, reads) = pay_and_read(&apps[0], &[&apps[1], &apps[2]], 3).await;
        assert_eq!(stale, 0, "stale reads after Redis returned");
        if on_followers > 0 {
            println!(
                "after redis: {on_followers}/{reads} on followers, {:?} after it returned",
                up.elapsed()
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "fresh reads never returned to followers"
        );
    }
    for r in &routers {
        r.stop().await;
    }
}
