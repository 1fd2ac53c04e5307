//! Redis (the shared session store) stopped and started again under load
//! (rule 5): while it is down, fresh reads go to the leader, `/readyz` says
//! `degraded` with a 200, `/api/cluster` shows the store unhealthy, and no
//! request fails — payments included. After it is back, follower reads
//! resume once the router's `store_recovery_grace` has passed.

use crate::helpers::*;
use crate::ledger;
use crate::load::{AFTER, DURING, Load};
use ryw_cluster::harness::{TestCluster, TestClusterOptions};
use ryw_service::Service;
use std::time::{Duration, Instant};

const GRACE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_load_sends_fresh_reads_to_the_leader_and_fails_nothing() {
    init_logs();
    let cluster = TestCluster::start_with(TestClusterOptions {
        lags: LAGS.to_vec(),
        redis: true,
    })
    .await;
    let mut cfg = config(&cluster);
    cfg.redis_url = cluster.redis_url();
    cfg.router.store_recovery_grace = GRACE;
    // The grace must cover the lag limit (see `RouterConfig`).
    cfg.router.max_lag_time = GRACE;
    let service = Service::build(cfg).await.expect("service starts");
    wait_followers_in_rotation(&service.state()).await;
    let t = TestApp {
        app: ryw_service::app(service.state()),
        cluster,
    };
    let app = &t.app;
    let cfg_redis = call(app, "GET", "/api/cluster", None, &[], None).await;
    assert_eq!(
        cfg_redis.body["session_store"]["kind"], "redis",
        "{cfg_redis:?}"
    );

    let load = Load::start(app).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    tokio::task::block_in_place(|| t.cluster.stop_redis());
    load.phase(DURING);
    let down = Instant::now();
    let mut degraded_seen = false;
    while down.elapsed() < Duration::from_secs(3) {
        let ready = call(app, "GET", "/readyz", None, &[], None).await;
        assert_eq!(ready.status, 200, "{ready:?}");
        if ready.body["status"] == "degraded" && !store_healthy(app).await {
            degraded_seen = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        degraded_seen,
        "readyz never said degraded while Redis was down"
    );

    t.cluster.start_redis().await;
    load.phase(AFTER);
    let up = Instant::now();
    // Follower reads resume after the grace: wait for the first one.
    let resumed = loop {
        let r = call(
            app,
            "GET",
            "/api/payments",
            Some(&crate::helpers::user()),
            &[("x-read-strategy", "causal")],
            None,
        )
        .await;
        // A new user's (empty) payment list: a fresh read, routed.
        if r.header("x-served-by").starts_with("follower") {
            break up.elapsed();
        }
        assert!(
            up.elapsed() < GRACE + Duration::from_secs(10),
            "fresh reads never returned to followers after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ready = call(app, "GET", "/readyz", None, &[], None).await;
    assert_eq!(ready.body["status"], "ready", "{ready:?}");

    let report = load.stop().await;
    let ledger = ledger::check(&t.cluster.leader_url(), &report).await;
    println!(
        "Redis stopped: follower reads resumed {resumed:?} after it restarted\n{report}\n  {ledger}"
    );
    report.assert_consistent();
    assert_eq!(
        report.total().unavailable(),
        0,
        "no request may fail: {report}"
    );
    let during = &report.phases[DURING];
    assert!(during.pay.ok > 0 && during.fresh.ok > 0, "{report}");
    assert_eq!(
        during.fresh.served_by_followers(),
        0,
        "fresh reads reached followers while Redis was down: {report}"
    );
    assert!(
        resumed >= GRACE - Duration::from_millis(100),
        "resumed before the grace: {resumed:?}"
    );
    assert!(
        report.phases[AFTER].fresh.served_by_followers() > 0,
        "{report}"
    );
}

/// `session_store.healthy` of `GET /api/cluster`.
pub async fn store_healthy(app: &axum::Router) -> bool {
    let r = call(app, "GET", "/api/cluster", None, &[], None).await;
    r.body["session_store"]["healthy"]
        .as_bool()
        .unwrap_or_else(|| panic!("no session_store.healthy in {}", r.body))
}
