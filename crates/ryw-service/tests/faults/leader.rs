//! The leader stopped (`pg_ctl stop -m fast`) or killed (SIGKILL, then crash
//! recovery) under load: writes answer 503 problem+json quickly
//! (no hang), stale-ok reads go on from the followers, fresh reads come from
//! a follower that provably has the session's writes or answer 503 — never
//! stale. After it restarts, every acknowledged payment is there, and the
//! payments that got a 503 are retried with their key and charged once.

use crate::helpers::*;
use crate::ledger;
use crate::load::{AFTER, DURING, Load};
use ryw_cluster::harness::TestClusterOptions;
use std::time::{Duration, Instant};

/// A write to a dead leader must be answered within this.
const WRITE_MAX: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_stopped_mid_load_refuses_writes_fast_and_serves_nothing_stale() {
    leader_down(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_mid_load_loses_no_acknowledged_payment_and_serves_nothing_stale() {
    leader_down(true).await;
}

/// The leader goes away mid-load (`kill`: SIGKILL, else a clean stop) and
/// comes back 4 s later.
async fn leader_down(kill: bool) {
    let how = if kill { "killed (SIGKILL)" } else { "stopped" };
    let t = TestApp::start_with(
        TestClusterOptions {
            lags: LAGS.to_vec(),
            redis: false,
        },
        |_| {},
    )
    .await;
    let app = &t.app;
    let load = Load::start(app).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    load.phase(DURING);
    tokio::task::block_in_place(|| {
        if kill {
            t.cluster.kill("leader")
        } else {
            t.cluster.stop("leader")
        }
    });
    let down = Instant::now();
    // A probe of its own: a write to the dead leader is a quick 503.
    let u = user();
    let probe_started = Instant::now();
    let probe = t.pay(&u, 1, None).await;
    let probe_took = probe_started.elapsed();
    assert_eq!(probe.status, 503, "{probe:?}");
    assert_eq!(probe.header("content-type"), "application/problem+json");
    // `/readyz` follows the tracker, which sees a killed leader at its next
    // poll (10 ms): wait for it, within a bound.
    let ready = loop {
        let r = t.call("GET", "/readyz", None, &[], None).await;
        if r.status == 503 || down.elapsed() > Duration::from_secs(3) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let ready_after = down.elapsed();
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(down.elapsed())).await;

    t.cluster.start_node("leader").await;
    load.phase(AFTER);
    let up = Instant::now();
    // Writes come back once the router reconnects.
    loop {
        let r = t.call("POST", "/api/account", Some(&u), &[], None).await;
        if r.status.is_success() {
            break;
        }
        assert!(
            up.elapsed() < Duration::from_secs(15),
            "writes never came back: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let writes_back = up.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let report = load.stop().await;
    let ledger = ledger::check(&t.cluster.leader_url(), &report).await;
    println!(
        "leader {how}: probe write 503 in {probe_took:?}; readyz {} after {ready_after:?}; writes back {writes_back:?} after start\n{report}\n  {ledger}",
        ready.status
    );
    report.assert_consistent();
    assert!(
        probe_took < WRITE_MAX,
        "a write to a dead leader took {probe_took:?}"
    );
    assert_eq!(ready.status, 503, "readyz with the leader down: {ready:?}");
    let during = &report.phases[DURING];
    assert!(
        during.pay.max_ms < WRITE_MAX.as_millis() as u64,
        "a write took {} ms with the leader down: {report}",
        during.pay.max_ms
    );
    assert!(
        during.pay.unavailable > 0,
        "no write saw the leader down: {report}"
    );
    // Stale-ok reads go on from the followers.
    assert!(during.stale_ok.served_by_followers() > 0, "{report}");
    assert_eq!(
        during.stale_ok.unavailable, 0,
        "catalogue reads failed: {report}"
    );
    // Before the fault nothing fails but the requests still in flight when
    // the leader went down (at most one per client).
    assert!(
        report.phases[0].unavailable() <= crate::load::CLIENTS as u64,
        "{report}"
    );
    assert!(report.phases[AFTER].pay.ok > 0, "{report}");
}
