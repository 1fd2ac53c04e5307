//! Follower faults: SIGKILL then restart, replication cut then repaired, and
//! a node frozen by SIGSTOP then resumed.
//! Reads keep working throughout (no 5xx at all), the follower leaves
//! rotation within a second and returns once healthy, nothing is stale.

use crate::helpers::*;
use crate::ledger;
use crate::load::{AFTER, DURING, Load};
use crate::rotation::wait_rotation;
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
        report.phases[AFTER].read_from("follower1"),
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
        report.phases[AFTER].read_from("follower1"),
        "follower1 served nothing after its repair: {report}"
    );
}

/// The `ryw_read_stalls_total` counter from `/metrics`.
async fn read_stalls(t: &TestApp) -> u64 {
    let r = t.call("GET", "/metrics", None, &[], None).await;
    let text = r.body.as_str().expect("metrics are text").to_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("ryw_read_stalls_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("ryw_read_stalls_total in /metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_hangs_mid_load_is_timed_out_and_nothing_fails_or_goes_stale() {
    // A frozen node keeps its sockets open and answers nothing: reads in
    // flight on it must be timed out and retried elsewhere (rule 8), the
    // tracker's polls time out (500 ms) and take it out of rotation.
    const READ_TIMEOUT: Duration = Duration::from_millis(1000);
    let t = TestApp::start_with(opts(), |cfg| cfg.router.read_timeout = READ_TIMEOUT).await;
    let load = Load::start(&t.app).await;
    tokio::time::sleep(STEADY).await;
    let stalls_before = read_stalls(&t).await;

    load.phase(DURING);
    let fault = Instant::now();
    tokio::task::block_in_place(|| t.cluster.pause("follower1"));
    let left = wait_rotation(&t.app, "follower1", false, fault, Duration::from_secs(10)).await;
    // Hung for a while under load: nobody may wait on it for long.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let resume = Instant::now();
    tokio::task::block_in_place(|| t.cluster.resume("follower1"));
    let back = wait_rotation(&t.app, "follower1", true, resume, Duration::from_secs(20)).await;
    load.phase(AFTER);
    tokio::time::sleep(STEADY).await;

    let report = load.stop().await;
    let stalls = read_stalls(&t).await - stalls_before;
    let ledger = ledger::check(&t.cluster.leader_url(), &report).await;
    let during = &report.phases[DURING];
    let slowest = during
        .fresh
        .max_ms
        .max(during.stale_ok.max_ms)
        .max(during.pay.max_ms);
    println!(
        "follower1 SIGSTOPped: out of rotation after {left:?}, back {back:?} after SIGCONT, \
         {stalls} reads timed out and retried, slowest answer meanwhile {slowest} ms\n{report}\n  {ledger}"
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
    // A read stuck on the frozen node waits at most the read timeout, then
    // once more on another node.
    assert!(
        slowest < 2 * READ_TIMEOUT.as_millis() as u64 + 1500,
        "a request took {slowest} ms during the hang: {report}"
    );
    assert!(during.fresh.ok > 0, "{report}");
    assert!(
        report.phases[AFTER].read_from("follower1"),
        "follower1 served nothing after it resumed: {report}"
    );
}
