//! Rule 5: when the session store (a real Redis) cannot be reached, fresh
//! reads go to the leader, `store_health()` says degraded, and no read
//! fails or hangs. When it is back (empty: it keeps nothing on disk), fresh
//! reads stay on the leader for the recovery grace, then follower reads
//! resume.

use std::time::Duration;

use ryw_router::{Freshness, ReadOptions, RouterConfig, Strategy};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::support::{Ctx, StoreKind, Tally, ms, read, secs, session, with, write};

const SESSIONS: usize = 10;

/// Reads right after a write (any strategy) and reads 300 ms after it (when
/// a 100 ms follower has it).
#[derive(Debug, Default)]
struct Phase {
    early: Tally,
    late: Tally,
    slowest: Duration,
}

/// Each session writes `round`, reads at once under each session-aware
/// strategy, waits 300 ms, and reads again with `causal` and with `sticky`
/// (200 ms window, so past it).
async fn phase(ctx: &Ctx, label: &str, round: i64) -> Phase {
    let sticky = ReadOptions {
        sticky_window: Some(ms(200)),
        ..with(Strategy::Sticky)
    };
    let early_opts = [
        sticky,
        with(Strategy::Causal),
        with(Strategy::Hybrid),
        with(Strategy::PerReadCheck),
    ];
    let late_opts = [with(Strategy::Causal), sticky];
    let mut tasks = JoinSet::new();
    for n in 0..SESSIONS {
        let (router, nodes) = (ctx.router.clone(), ctx.nodes.clone());
        let s = session(format!("store-{n}"));
        tasks.spawn(async move {
            let mut p = Phase::default();
            write(&router, &s, round).await;
            for opts in early_opts {
                match read(&router, &nodes, &s, Freshness::Fresh, opts, None).await {
                    Ok(r) => {
                        p.slowest = p.slowest.max(r.elapsed);
                        p.early.add(&r, round);
                    }
                    Err(e) => p.early.error(e),
                }
            }
            tokio::time::sleep(ms(300)).await;
            for opts in late_opts {
                match read(&router, &nodes, &s, Freshness::Fresh, opts, None).await {
                    Ok(r) => {
                        p.slowest = p.slowest.max(r.elapsed);
                        p.late.add(&r, round);
                    }
                    Err(e) => p.late.error(e),
                }
            }
            p
        });
    }
    let mut total = Phase::default();
    while let Some(p) = tasks.join_next().await {
        let p = p.expect("a session task panicked");
        total.early.merge(p.early);
        total.late.merge(p.late);
        total.slowest = total.slowest.max(p.slowest);
    }
    eprintln!("{label}: {total:?}");
    for t in [&total.early, &total.late] {
        assert!(t.errors.is_empty(), "{label}: reads failed: {:?}", t.errors);
        assert_eq!(t.stale, 0, "{label}: stale reads: {t:?}");
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_fresh_reads_go_to_the_leader_and_follower_reads_resume_after_the_grace() {
    let grace = secs(2);
    let cfg = RouterConfig {
        store_recovery_grace: grace,
        max_lag_time: secs(1),
        ..RouterConfig::default()
    };
    let ctx = Ctx::start(&[ms(100)], cfg, StoreKind::Redis).await;
    assert_eq!(ctx.router.store_backend(), "redis");
    assert!(
        ctx.router.store_health().is_ok(),
        "{:?}",
        ctx.router.store_health()
    );

    let before = phase(&ctx, "redis up", 1).await;
    assert_eq!(before.late.on("leader"), 0, "followers serve: {before:?}");

    ctx.cluster.stop_redis();
    let down = phase(&ctx, "redis down", 2).await;
    assert_eq!(down.early.off_leader(), 0, "{down:?}");
    assert_eq!(down.late.off_leader(), 0, "{down:?}");
    assert!(
        down.slowest < secs(1),
        "a dead store must not slow reads down: {:?}",
        down.slowest
    );
    assert!(
        !ctx.router.store_health().is_ok(),
        "health says degraded while Redis is down"
    );

    ctx.cluster.start_redis().await;
    let back_at = Instant::now();
    // Until the grace after the last failure has passed, fresh reads stay on
    // the leader: writes made during the outage are missing from the store.
    let waiter = session("store-waiter");
    let mut recovering = Tally::default();
    let deadline = back_at + secs(10);
    while !ctx.router.store_health().is_ok() {
        assert!(Instant::now() < deadline, "the store never recovered");
        let started = back_at.elapsed();
        let r = read(
            &ctx.router,
            &ctx.nodes,
            &waiter,
            Freshness::Fresh,
            with(Strategy::Causal),
            None,
        )
        .await
        .expect("read while recovering");
        if started < secs(1) {
            recovering.add(&r, 0);
        }
        tokio::time::sleep(ms(20)).await;
    }
    let recovered = back_at.elapsed();
    eprintln!("store healthy {recovered:?} after Redis returned; first second: {recovering:?}");
    assert!(recovering.reads > 0);
    assert_eq!(recovering.off_leader(), 0, "{recovering:?}");
    assert!(
        recovered >= secs(1),
        "the grace was honoured: {recovered:?}"
    );

    let after = phase(&ctx, "redis back", 3).await;
    assert_eq!(
        after.late.on("leader"),
        0,
        "followers serve again: {after:?}"
    );
}
