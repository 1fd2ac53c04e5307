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

/// `X-Ryw-Scope`: an unknown scope is a 400 that changes nothing; with
/// `global`, a read by a user who never wrote, through the other
/// instance, starts from every write acknowledged before it (its token
/// covers the other user's payment), where `session` does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_scope_reads_start_from_every_instances_writes_and_a_bad_scope_is_a_400() {
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
    let key = ryw_router::TokenKey::from_secret(KEY).unwrap();
    let (writer, reader) = (user(), user());
    for u in [&writer, &reader] {
        call(one, "POST", "/api/account", Some(u), &[], None).await;
    }

    // A bad scope: 400 problem+json, and the payment is not made.
    let refused = call(
        one,
        "POST",
        "/api/payments",
        Some(&writer),
        &[("x-ryw-scope", "everything")],
        Some(r#"{"amount_cents": 1}"#),
    )
    .await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(refused.header("content-type"), "application/problem+json");
    assert!(
        refused.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("connection, session, global, cluster")),
        "{refused:?}"
    );
    let before = call(one, "GET", "/api/balance", Some(&writer), &[], None).await;
    assert_eq!(before.i64("version"), 0, "nothing was charged: {before:?}");
    // The followers replay the reader's own account (400 ms behind at most):
    // under `session` its reads may then go to them.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;

    let mut behind = [0, 0];
    for (i, scope) in ["session", "global"].into_iter().enumerate() {
        for _ in 0..20 {
            let paid = call(
                one,
                "POST",
                "/api/payments",
                Some(&writer),
                &[],
                Some(r#"{"amount_cents": 1}"#),
            )
            .await;
            assert_eq!(paid.status, 201, "{paid:?}");
            let written = key.verify(paid.header("x-consistency-token")).unwrap();
            let read = call(
                two,
                "GET",
                "/api/balance",
                Some(&reader),
                &[("x-ryw-scope", scope)],
                None,
            )
            .await;
            assert_eq!(read.status, 200, "{read:?}");
            let seen = key.verify(read.header("x-consistency-token")).unwrap();
            behind[i] += usize::from(seen < written);
        }
    }
    eprintln!(
        "reads whose token was behind the other user's write: session {}, global {}",
        behind[0], behind[1]
    );
    assert!(
        behind[0] > 0,
        "the control: session scope knows nothing of other users' writes"
    );
    assert_eq!(
        behind[1], 0,
        "global reads start from every acknowledged write"
    );
}
