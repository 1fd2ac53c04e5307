//! Rule 8 with a crash: a follower SIGKILLed while reads run. Reads keep
//! working (the read protocol runs a broken read once more elsewhere), the follower
//! leaves rotation within a second, and it is used again after it restarts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use ryw_router::{Freshness, ReadOptions, RouterConfig, Strategy};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::support::{
    Ctx, StoreKind, Tally, blocking, ms, read, secs, session, wait_view, with, write,
};

const BEFORE: usize = 0;
/// From the moment follower1 is seen out of rotation until it is started.
const DOWN: usize = 1;
/// While it starts and rejoins (it may serve again before we notice).
const RESTARTING: usize = 2;
const BACK: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_a_killed_follower_which_leaves_rotation_and_returns_after_restart() {
    let ctx = Ctx::start(
        &[Duration::ZERO, Duration::ZERO],
        RouterConfig::default(),
        StoreKind::Memory,
    )
    .await;
    let phase = Arc::new(AtomicUsize::new(BEFORE));
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = JoinSet::new();
    for n in 0..6 {
        let (router, nodes) = (ctx.router.clone(), ctx.nodes.clone());
        let (phase, stop) = (phase.clone(), stop.clone());
        let s = session(format!("kill-{n}"));
        readers.spawn(async move {
            let mut tallies: [Tally; 4] = Default::default();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                write(&router, &s, i).await;
                for (freshness, opts) in [
                    (Freshness::Fresh, with(Strategy::Causal)),
                    (Freshness::StaleOk, ReadOptions::default()),
                ] {
                    let at = phase.load(Ordering::Relaxed);
                    let r = read(&router, &nodes, &s, freshness, opts, None).await;
                    let t = &mut tallies[at];
                    // Stale-ok reads promise nothing about the write.
                    let expected = if freshness == Freshness::Fresh { i } else { 0 };
                    match r {
                        Ok(r) => t.add(&r, expected),
                        Err(e) => t.error(e),
                    }
                    tokio::time::sleep(ms(20)).await;
                }
            }
            tallies
        });
    }

    tokio::time::sleep(secs(1)).await;
    let kill_at = Instant::now();
    blocking(|| ctx.cluster.kill("follower1"));
    let killed = kill_at.elapsed();
    let left = wait_view(&ctx.router, "follower1 leaves rotation", secs(1), |v| {
        !v.nodes[0].in_rotation
    })
    .await;
    phase.store(DOWN, Ordering::Relaxed);
    eprintln!(
        "follower1 gone {killed:?} after SIGKILL, out of rotation {left:?} later ({:?} in all)",
        kill_at.elapsed()
    );

    tokio::time::sleep(secs(1)).await;
    phase.store(RESTARTING, Ordering::Relaxed);
    let start_at = Instant::now();
    ctx.cluster.start_node("follower1").await;
    let started = start_at.elapsed();
    let back = wait_view(
        &ctx.router,
        "follower1 returns to rotation",
        secs(10),
        |v| v.nodes[0].in_rotation,
    )
    .await;
    phase.store(BACK, Ordering::Relaxed);
    eprintln!("follower1 restarted in {started:?}, back in rotation {back:?} later");

    tokio::time::sleep(secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut tallies: [Tally; 4] = Default::default();
    while let Some(r) = readers.join_next().await {
        for (total, t) in tallies.iter_mut().zip(r.expect("a reader panicked")) {
            total.merge(t);
        }
    }
    for (name, t) in ["before", "down", "restarting", "back"]
        .iter()
        .zip(&tallies)
    {
        eprintln!("{name}: {t:?}");
        assert!(t.errors.is_empty(), "{name}: reads failed: {:?}", t.errors);
        assert_eq!(t.stale, 0, "{name}: {t:?}");
        assert!(t.reads > 5, "{name}: {t:?}");
    }
    assert!(tallies[BEFORE].on("follower1") > 0, "{:?}", tallies[BEFORE]);
    assert_eq!(tallies[DOWN].on("follower1"), 0, "{:?}", tallies[DOWN]);
    assert!(tallies[BACK].on("follower1") > 0, "{:?}", tallies[BACK]);
}
