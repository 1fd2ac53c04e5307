//! Rule 3 and rule 8 at their boundary: which failures of a read mean "the
//! follower's connection is gone". A read whose backend is terminated
//! (57P01 admin_shutdown) makes the router forget the follower and the read
//! is served elsewhere; a read that is cancelled (57014 query_canceled, the
//! same SQLSTATE class 57) is the statement's own failure: the caller gets
//! the error, the follower keeps its position and its connection. Counting
//! all of class 57 as lost (as the router once did) fails the second half.

use std::time::Duration;

use ryw_router::{Error, ReadRequest, RouterConfig};

use crate::support::{Ctx, StoreKind, direct, follower_url, ms, secs, session, wait_view};

/// Sleeps on the server that runs it, then says which one it was.
const SLOW: &str = "SELECT pg_sleep(1.5)::text AS slept, inet_server_port() AS port";

/// Waits until `SLOW` runs on the server behind `admin`; returns its pid.
async fn running_pid(admin: &tokio_postgres::Client) -> i32 {
    let deadline = tokio::time::Instant::now() + secs(5);
    loop {
        let row = admin
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE state = 'active' \
                 AND query LIKE '%pg_sleep(1.5)%' AND pid <> pg_backend_pid() LIMIT 1",
                &[],
            )
            .await
            .expect("pg_stat_activity");
        if let Some(row) = row {
            return row.get(0);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow read never started"
        );
        tokio::time::sleep(ms(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_read_forgets_the_follower_and_is_served_elsewhere_but_a_cancelled_one_does_not()
 {
    let ctx = Ctx::start(
        &[Duration::ZERO],
        RouterConfig::default(),
        StoreKind::Memory,
    )
    .await;
    let router = ctx.router.clone();
    let admin = direct(&follower_url(&ctx.cluster, "follower1")).await;
    let s = session("lost");
    let follower_port = ctx
        .cluster
        .info()
        .nodes
        .iter()
        .find(|n| n.name == "follower1")
        .map(|n| i32::from(n.port))
        .expect("follower1");

    // Cancelled: the caller's error, nothing forgotten, nothing retried.
    let epoch = router.cluster_view().nodes[0].epoch;
    let before = router.metrics();
    let read = {
        let router = router.clone();
        let s = s.clone();
        tokio::spawn(async move { router.query(&ReadRequest::stale_ok(&s), SLOW, &[]).await })
    };
    let pid = running_pid(&admin).await;
    // A cancel that lands between the statement's protocol messages is
    // dropped by the server (seen once in CI): cancel until the read ends.
    while !read.is_finished() {
        admin
            .execute("SELECT pg_cancel_backend($1)", &[&pid])
            .await
            .expect("cancel");
        tokio::time::sleep(ms(100)).await;
    }
    let err = read
        .await
        .expect("read task")
        .expect_err("a cancelled read fails");
    match &err {
        Error::Query { node, source } => {
            assert_eq!(node, "follower1");
            assert_eq!(source.code().map(|c| c.code()), Some("57014"), "{err}");
        }
        other => panic!("expected the statement's own error, got {other}"),
    }
    let after = router.metrics();
    assert_eq!(
        after.forgets, before.forgets,
        "a cancel is not a lost connection"
    );
    assert_eq!(
        after.retries, before.retries,
        "a cancelled read is not run again"
    );
    let view = router.cluster_view();
    assert!(view.nodes[0].in_rotation, "{view:?}");
    assert_eq!(view.nodes[0].epoch, epoch, "the position was kept");
    // The same shared connection serves the next read.
    let again = router
        .query_one(&ReadRequest::stale_ok(&s), "SELECT inet_server_port()", &[])
        .await
        .expect("a read after the cancel");
    assert_eq!(again.value.get::<_, Option<i32>>(0), Some(follower_port));

    // Terminated: the follower is forgotten and the read runs elsewhere.
    let read = {
        let router = router.clone();
        let s = s.clone();
        tokio::spawn(async move {
            router
                .query_one(&ReadRequest::stale_ok(&s), SLOW, &[])
                .await
        })
    };
    let pid = running_pid(&admin).await;
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .expect("terminate");
    let read = read
        .await
        .expect("read task")
        .expect("a terminated read is served elsewhere");
    // Where it ran again depends on whether the tracker's next poll (every
    // 10 ms) has vouched for follower1 again: the leader, or follower1 on a
    // new connection. Either is right; the answer must be there.
    let port: Option<i32> = read.value.get("port");
    assert!(port.is_some(), "{read:?}");
    let after = router.metrics();
    assert!(after.forgets > before.forgets, "the follower was forgotten");
    assert!(after.retries > before.retries, "the read ran again");
    // The tracker's next poll brings it back.
    wait_view(&router, "follower1 back in rotation", secs(5), |v| {
        v.nodes[0].in_rotation
    })
    .await;
}
