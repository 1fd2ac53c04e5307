//! Issue 14: the default strategy, `hybrid`, on followers 100 ms and 400 ms
//! behind. 1,000 pay-then-read pairs with a think time uniform in 0–1 s:
//! no stale read and no monotonic-read violation, most reads on followers
//! (the old hybrid, sticky for 5 s after every write, sent all of them to
//! the leader), waits only when a follower was about to catch up.
//!
//! Then follower1's replay stops (its delay jumps to an hour): a wrong
//! prediction costs at most the budget, on the leader, never a stale read,
//! and after a short while no read waits for it any more.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::Rng;
use ryw_router::{ReadRequest, Router, RouterConfig, SessionKey, Strategy};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::support::{Ctx, Nodes, StoreKind, ms, secs, session, with, write};

/// The session's own value, a counter others bump all the time, and the
/// server that answered.
const SELECT_BOTH: &str = "SELECT coalesce((SELECT v FROM kv WHERE k = $1), 0), \
     coalesce((SELECT v FROM kv WHERE k = 'clock'), 0), inet_server_port()";

const SESSIONS: usize = 50;
const PAIRS_PER_SESSION: i64 = 20;

/// What one pay-then-read saw.
#[derive(Debug)]
struct Pair {
    /// The value the session had just written, and the one read back.
    wrote: i64,
    own: i64,
    /// The shared counter, and the highest this session had read before.
    clock: i64,
    clock_before: i64,
    node: String,
    /// Since the pair's read was asked for (how long it took in all).
    took: Duration,
    waited: Duration,
    waited_for: Option<String>,
    wasted: bool,
    /// When the read was asked for, since the phase began.
    at: Duration,
}

/// Counts of a batch of pairs.
#[derive(Debug, Default)]
struct Summary {
    pairs: usize,
    stale: usize,
    /// The session's own value went down (the bench's monotonic check).
    own_regressions: usize,
    /// The shared counter went down on a follower (rule 7).
    clock_regressions: usize,
    /// ... on the leader (a PostgreSQL visibility race, see
    /// `docs/architecture.md`, "Known limits"): counted apart.
    leader_clock_regressions: usize,
    on_leader: usize,
    waits: usize,
    wasted: usize,
    longest_wait: Duration,
}

impl Summary {
    fn of(pairs: &[Pair]) -> Summary {
        let mut s = Summary {
            pairs: pairs.len(),
            ..Summary::default()
        };
        let mut last_own = 0;
        for p in pairs {
            s.stale += usize::from(p.own < p.wrote);
            s.own_regressions += usize::from(p.own < last_own);
            last_own = last_own.max(p.own);
            if p.clock < p.clock_before {
                if p.node == "leader" {
                    s.leader_clock_regressions += 1;
                } else {
                    s.clock_regressions += 1;
                }
            }
            s.on_leader += usize::from(p.node == "leader");
            s.waits += usize::from(p.waited > Duration::ZERO);
            s.wasted += usize::from(p.wasted);
            s.longest_wait = s.longest_wait.max(p.waited);
        }
        s
    }

    fn merge(&mut self, o: Summary) {
        self.pairs += o.pairs;
        self.stale += o.stale;
        self.own_regressions += o.own_regressions;
        self.clock_regressions += o.clock_regressions;
        self.leader_clock_regressions += o.leader_clock_regressions;
        self.on_leader += o.on_leader;
        self.waits += o.waits;
        self.wasted += o.wasted;
        self.longest_wait = self.longest_wait.max(o.longest_wait);
    }
}

/// `n` pay-then-read pairs of session `s`, each read after a think time
/// uniform in `think`, through `hybrid`.
async fn pairs(
    router: Router,
    nodes: Nodes,
    s: SessionKey,
    n: i64,
    think: std::ops::Range<u64>,
    started: Instant,
) -> Result<Vec<Pair>, String> {
    let mut out = Vec::new();
    let mut clock_before = 0;
    for i in 1..=n {
        write(&router, &s, i).await;
        let pause = rand::rng().random_range(think.clone());
        tokio::time::sleep(ms(pause)).await;
        let asked = Instant::now();
        let req = ReadRequest::fresh(&s).options(with(Strategy::Hybrid));
        let read = router
            .query_one(&req, SELECT_BOTH, &[&s.as_str()])
            .await
            .map_err(|e| format!("{s} read {i}: {e}"))?;
        let d = &read.decision;
        let pair = Pair {
            wrote: i,
            own: read.value.get(0),
            clock: read.value.get(1),
            clock_before,
            node: nodes.name(read.value.get(2)),
            took: asked.elapsed(),
            waited: if d.did_wait { d.waited } else { Duration::ZERO },
            waited_for: d.waited_for.as_deref().map(str::to_owned),
            wasted: d.wasted_wait(),
            at: asked - started,
        };
        clock_before = clock_before.max(pair.clock);
        out.push(pair);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_pays_then_reads_never_stale_mostly_on_followers_and_a_stopped_follower_costs_at_most_the_budget()
 {
    let budget = RouterConfig::default().hybrid_wait;
    let ctx = Ctx::start(
        &[ms(100), ms(400)],
        RouterConfig::default(),
        StoreKind::Memory,
    )
    .await;

    // Someone else writes all the time: the counter whose reads must never
    // go back (rule 7), and enough traffic for the tracker to learn each
    // follower's pace.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (router, stop) = (ctx.router.clone(), stop.clone());
        tokio::spawn(async move {
            let s = session("clock");
            let mut v = 0;
            while !stop.load(Ordering::Relaxed) {
                v += 1;
                write(&router, &s, v).await;
                tokio::time::sleep(ms(10)).await;
            }
        })
    };

    // 1,000 pairs: 50 sessions at once, 20 pairs each, think 0–1 s.
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for n in 0..SESSIONS {
        let s = session(format!("hybrid-{n}"));
        let (router, nodes) = (ctx.router.clone(), ctx.nodes.clone());
        tasks.spawn(pairs(router, nodes, s, PAIRS_PER_SESSION, 0..1000, started));
    }
    let mut all = Summary::default();
    let mut saved_by_waiting = 0;
    while let Some(done) = tasks.join_next().await {
        let got = done.expect("a session panicked").expect("a read failed");
        saved_by_waiting += got
            .iter()
            .filter(|p| p.waited > Duration::ZERO && p.node != "leader")
            .count();
        all.merge(Summary::of(&got));
    }
    let m = ctx.router.metrics();
    eprintln!(
        "hybrid, 1,000 pairs in {:?}: {all:?}; {saved_by_waiting} served by a follower after a wait; router: waits {:?}",
        started.elapsed(),
        m.waits_by_strategy
    );
    assert_eq!(all.pairs, SESSIONS * PAIRS_PER_SESSION as usize);
    assert_eq!(all.stale, 0, "{all:?}");
    assert_eq!(all.own_regressions, 0, "{all:?}");
    assert_eq!(all.clock_regressions, 0, "{all:?}");
    assert!(all.leader_clock_regressions <= 10, "{all:?}");
    // Think times of 0–1 s against a 100 ms follower: about a tenth of the
    // reads come before any follower could have the write. The old hybrid
    // (sticky for 5 s) read all of them from the leader.
    assert!(
        all.on_leader * 4 < all.pairs,
        "hybrid must offload: {all:?}"
    );
    assert!(
        saved_by_waiting > 0,
        "reads just before follower1's catch-up wait for it: {all:?}"
    );
    assert!(
        all.longest_wait <= budget + ms(30),
        "no wait past the budget (plus scheduling): {all:?}"
    );
    assert!(
        all.wasted * 5 <= all.waits.max(5),
        "a wait is rarely wasted: {all:?}"
    );

    // Follower1's replay stops. Reads asked for right after a write would
    // have waited for it; for a short while they still do (its old pace
    // says so) and waste the budget; then none waits for it any more.
    ctx.cluster.set_lag(1, secs(3600)).await;
    let stopped = Instant::now();
    let mut tasks = JoinSet::new();
    for n in 0..20 {
        let s = session(format!("stopped-{n}"));
        let (router, nodes) = (ctx.router.clone(), ctx.nodes.clone());
        tasks.spawn(pairs(router, nodes, s, 25, 60..120, stopped));
    }
    let mut after = Summary::default();
    let mut late_waits = Vec::new();
    let mut slowest = Duration::ZERO;
    while let Some(done) = tasks.join_next().await {
        let got = done.expect("a session panicked").expect("a read failed");
        // The new delay takes effect within 200 ms of the reload; then at
        // most follower1's pace (about 110 ms) plus the budget passes
        // before it is late enough to be dropped.
        late_waits.extend(
            got.iter()
                .filter(|p| {
                    p.at > ms(1500) && (p.waited > Duration::ZERO || p.waited_for.is_some())
                })
                .map(|p| format!("{p:?}")),
        );
        slowest = got
            .iter()
            .map(|p| p.took)
            .max()
            .unwrap_or_default()
            .max(slowest);
        after.merge(Summary::of(&got));
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    eprintln!(
        "follower1 stopped: {after:?} over {:?}; slowest read {slowest:?}",
        stopped.elapsed()
    );
    assert_eq!(after.stale, 0, "{after:?}");
    assert_eq!(
        after.own_regressions + after.clock_regressions,
        0,
        "{after:?}"
    );
    assert!(
        after.longest_wait <= budget + ms(30),
        "a wrong prediction costs at most the budget: {after:?}"
    );
    assert!(
        late_waits.is_empty(),
        "after 1.5 s no read waits for the stopped follower: {late_waits:#?}"
    );
}
