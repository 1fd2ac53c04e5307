//! Follower faults: SIGKILL then restart, and replication cut then repaired.
//! Reads keep working throughout (no 5xx at all), the follower leaves
//! rotation within a second and returns once healthy, nothing is stale.

use crate::helpers::*;
use crate::load::{AFTER, DURING, Load};
use crate::rotation::wait_rotation;
use crate::{ledger, load};
use ryw_cluster::harness::TestClusterOptions;
use std::time::{Duration, Instant};

/// Warm-up under load before the fault, and load kept after recovery.
const STEADY: Duration = Duration::from_secs(2);
/// Generous bound for "leaves rotation within a second" on a shared 2-core
/// machine; the measured figure is printed.
const LEAVE_MAX: Duration = Duration::from_millis(2500);

fn opts() -> TestClusterOptions {
    TestClusterOptions {
        lags: LAGS.to_vec(),
        redis: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_mid_load_leaves_rotation_and_returns_with_nothing_stale_or_failed() {
    let t = TestApp::start_with(opts(), |_| {}).await;
    let load = Load::start(&t.app).await;
    tokio::time::sleep(STEADY).await;

    load.phase(DURING);
    let fault = Instant::now();
    tokio::task::block_in_place(|| t.cluster.kill("follower1"));
    let left = wait_rotation(&t.app, "follower1", false, fault, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let restart = Instant::now();
    t.cluster.start_node("follower1").await;
    let back = wait_rotation(&t.app, "follower1", true, restart, Duration::from_secs(20)).await;
    load.phase(AFTER);
    tokio::time::sleep(STEADY).await;

    let report = load.stop().await;
    let ledger = ledger::check(&t.cluster.leader_url(), &report).await;
    println!(
        "follower1 SIGKILLed: out of rotation after {left:?}, back {back:?} after start_node\n{report}\n  {ledger}"
    );
    report.assert_consistent();
    let total = report.total();
    assert_eq!(total.unavailable(), 0, "no request may fail: {report}");
    assert!(
        left <= LEAVE_MAX,
        "follower1 left rotation only after {left:?}"
    );
    assert!(
        report.phases[DURING].fresh.ok > 0,
        "no reads during the fault: {report}"
    );
    // Reads kept going to followers during the fault (follower2) and after it.
    assert!(
        report.phases[DURING].stale_ok.served_by_followers() > 0,
        "{report}"
    );
    assert!(
        report.phases[load::AFTER]
            .stale_ok
            .by_node
            .contains_key("follower1")
            || report.phases[load::AFTER]
                .fresh
                .by_node
                .contains_key("follower1"),
        "follower1 served nothing after its return: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_replication_is_cut_leaves_rotation_and_returns_after_repair() {
    let t = TestApp::start_with(opts(), |cfg| {
        // Small limits so a frozen follower is out within a second or two
        // under this load (the defaults are 10 s / 16 MiB).
        cfg.router.max_lag_time = Duration::from_millis(1500);
        cfg.router.max_lag_bytes = 256 * 1024;
    })
    .await;
    let load = Load::start(&t.app).await;
    tokio::time::sleep(STEADY).await;

    load.phase(DURING);
    let fault = Instant::now();
    t.cluster.cut_replication("follower1").await;
    let left = wait_rotation(&t.app, "follower1", false, fault, Duration::from_secs(10)).await;
    // Keep writing while it is frozen: it must stay out, nobody reads it.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let repair = Instant::now();
    t.cluster.repair_replication("follower1").await;
    let back = wait_rotation(&t.app, "follower1", true, repair, Duration::from_secs(20)).await;
    load.phase(AFTER);
    tokio::time::sleep(STEADY).await;

    let report = load.stop().await;
    let ledger = ledger::check(&t.cluster.leader_url(), &report).await;
    println!(
        "follower1 replication cut: out of rotation after {left:?}, back {back:?} after repair\n{report}\n  {ledger}"
    );
    report.assert_consistent();
    assert_eq!(
        report.total().unavailable(),
        0,
        "no request may fail: {report}"
    );
    assert!(
        left <= LEAVE_MAX,
        "follower1 left rotation only after {left:?}"
    );
    assert!(report.phases[DURING].fresh.ok > 0, "{report}");
    assert!(
        report.phases[AFTER]
            .stale_ok
            .by_node
            .contains_key("follower1")
            || report.phases[AFTER].fresh.by_node.contains_key("follower1"),
        "follower1 served nothing after its repair: {report}"
    );
}
