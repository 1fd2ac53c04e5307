//! Two service instances on one cluster and one Redis (the .NET demo's
//! NGINX picture): a user who pays through one and reads through the other
//! still reads their own writes — without carrying any token, because the session
//! lives in Redis, keyed by user.

use crate::helpers::*;
use ryw_cluster::harness::TestClusterOptions;
use ryw_service::Service;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_instance_is_read_through_the_other() {
    // Build both instances on one cluster with Redis.
    let cluster = ryw_cluster::harness::TestCluster::start_with(TestClusterOptions {
        lags: LAGS.to_vec(),
        redis: true,
    })
    .await;
    let mut apps = Vec::new();
    for _ in 0..2 {
        let mut cfg = config(&cluster);
        cfg.redis_url = cluster.redis_url();
        let s = Service::build(cfg).await.unwrap();
        wait_followers_in_rotation(&s.state()).await;
        apps.push(ryw_service::app(s.state()));
    }
    let (one, two) = (&apps[0], &apps[1]);
    for strategy in ["causal", "hybrid", "sticky"] {
        let mut stale = 0;
        for _ in 0..10 {
            let u = user();
            call(one, "POST", "/api/account", Some(&u), &[], None).await;
            for _ in 0..10 {
                let paid = call(
                    one,
                    "POST",
                    "/api/payments",
                    Some(&u),
                    &[],
                    Some(r#"{"amount_cents": 1}"#),
                )
                .await;
                assert_eq!(paid.status, 201, "{paid:?}");
                let read = call(
                    two,
                    "GET",
                    "/api/balance",
                    Some(&u),
                    &[("x-read-strategy", strategy)],
                    None,
                )
                .await;
                assert_eq!(read.status, 200, "{read:?}");
                if read.i64("version") < paid.i64("version") {
                    stale += 1;
                }
            }
        }
        assert_eq!(
            stale, 0,
            "{strategy}: {stale} stale reads across instances in 100 pairs"
        );
    }
    // And the instances accept each other's tokens (same key).
    let u = user();
    call(one, "POST", "/api/account", Some(&u), &[], None).await;
    let paid = call(
        one,
        "POST",
        "/api/payments",
        Some(&u),
        &[],
        Some(r#"{"amount_cents": 1}"#),
    )
    .await;
    let token = paid.header("x-consistency-token").to_owned();
    let read = call(
        two,
        "GET",
        "/api/balance",
        Some(&u),
        &[("x-consistency-token", &token)],
        None,
    )
    .await;
    assert_eq!(read.status, 200, "{read:?}");
    assert!(read.i64("version") >= paid.i64("version"));
}
