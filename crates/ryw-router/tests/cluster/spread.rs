//! Issue 22: fresh reads that every follower could serve are spread over
//! all of them, not sent to the least lagged one. Three followers at replay
//! delays 20, 50 and 100 ms; sessions write, think 400 ms (every follower
//! has the write by then) and read it back fresh.
//!
//! - `causal` and `hybrid` (the default choice, by load): each follower
//!   serves 25–42% of the follower reads, none stale. (The old
//!   least-lagged choice is measured beside it by `ryw bench`, see
//!   `docs/scaling.md`.)
//! - follower3 slowed (its delay 1.5 s): it no longer has the writes when
//!   they are read, and serves almost none of them.
//! - follower2 loaded (reads in flight there, held as a protocol proxy
//!   holds its `Decision`s): it serves almost none, and its count falls
//!   back to 0 once they are dropped; reads run by `Router::query` count
//!   while they run and not after.
//!
//! Judged by the values the test wrote and the port of the server that
//! answered (`inet_server_port()`), never by the router's word.

use std::time::Duration;

use ryw_router::{Freshness, ReadOptions, ReadRequest, Router, RouterConfig, Strategy};
use tokio::task::JoinSet;

use crate::support::{
    Ctx, Nodes, StoreKind, Tally, ms, read, secs, session, wait_view, with, write,
};

const FOLLOWERS: [&str; 3] = ["follower1", "follower2", "follower3"];
/// Longer than every delay plus a poll and some queueing on a busy machine:
/// every follower has the session's write when it is read.
const THINK: Duration = Duration::from_millis(400);

/// `sessions` sessions at once, `rounds` times each: write `i`, think, a
/// fresh read that must show at least `i`.
async fn paced_pairs(
    ctx: &Ctx,
    label: &str,
    opts: ReadOptions,
    sessions: usize,
    rounds: i64,
) -> Tally {
    let mut tasks = JoinSet::new();
    for n in 0..sessions {
        let router = ctx.router.clone();
        let nodes = ctx.nodes.clone();
        let s = session(format!("{label}-{n}"));
        tasks.spawn(async move {
            let mut tally = Tally::default();
            for i in 1..=rounds {
                write(&router, &s, i).await;
                tokio::time::sleep(THINK).await;
                match read(&router, &nodes, &s, Freshness::Fresh, opts, None).await {
                    Ok(r) => tally.add(&r, i),
                    Err(e) => tally.error(e),
                }
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(t) = tasks.join_next().await {
        total.merge(t.expect("a session task panicked"));
    }
    eprintln!(
        "{label:>22}: {} reads, {} stale, shares {:?}, by node {:?}",
        total.reads,
        total.stale,
        shares(&total),
        total.by_node
    );
    assert!(total.errors.is_empty(), "{label}: {:?}", total.errors);
    assert_eq!(
        total.stale, 0,
        "{label} read its own write stale: {total:?}"
    );
    assert_eq!(total.reads, sessions * rounds as usize);
    total
}

/// Each follower's share (%) of the reads followers served.
fn shares(t: &Tally) -> Vec<f64> {
    let off = t.off_leader().max(1) as f64;
    FOLLOWERS
        .iter()
        .map(|f| (t.on(f) as f64 * 1000.0 / off).round() / 10.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_reads_every_follower_could_serve_are_spread_by_load_not_sent_to_the_least_lagged() {
    let ctx = Ctx::start(
        &[ms(20), ms(50), ms(100)],
        RouterConfig::default(),
        StoreKind::Memory,
    )
    .await;

    let runs =
        [("causal", Strategy::Causal), ("hybrid", Strategy::Hybrid)].map(|(label, strategy)| {
            let ctx = &ctx;
            async move { (label, paced_pairs(ctx, label, with(strategy), 24, 25).await) }
        });
    for (label, t) in futures_util::future::join_all(runs).await {
        assert!(
            t.on("leader") * 20 <= t.reads,
            "{label}: every follower had the writes, yet {} of {} reads went to the leader",
            t.on("leader"),
            t.reads
        );
        let shares = shares(&t);
        for (f, share) in FOLLOWERS.iter().zip(&shares) {
            assert!(
                (25.0..=42.0).contains(share),
                "{label}: {f} served {share}% of follower reads: {shares:?}"
            );
        }
    }

    a_slowed_follower_serves_fewer_reads(&ctx).await;
    a_loaded_follower_serves_fewer_reads_until_its_reads_are_done(&ctx).await;
    reads_run_by_the_router_count_while_they_run(&ctx.router, &ctx.nodes).await;
}

/// follower3's delay goes to 1.5 s: a write read 400 ms later is not there
/// yet, so it serves (almost) none of those reads; never a stale one.
async fn a_slowed_follower_serves_fewer_reads(ctx: &Ctx) {
    ctx.cluster.set_lag(3, secs(1) + ms(500)).await;
    // Let the delay apply (a reload, within 200 ms) and a write go by.
    tokio::time::sleep(ms(500)).await;
    let t = paced_pairs(
        ctx,
        "causal-follower3-slowed",
        with(Strategy::Causal),
        12,
        8,
    )
    .await;
    assert!(
        t.on("follower3") * 10 <= t.off_leader(),
        "a follower 1.5 s behind served {} of {} follower reads",
        t.on("follower3"),
        t.off_leader()
    );
    ctx.cluster.set_lag(3, ms(100)).await;
    let router = &ctx.router;
    let leader = router.cluster_view().leader_lsn().expect("leader position");
    wait_view(router, "follower3 caught up again", secs(20), |v| {
        v.named("follower3")
            .is_some_and(|f| f.in_rotation && f.lsn.is_some_and(|l| l >= leader))
    })
    .await;
}

/// Six reads in flight on follower2, as a proxy holds them (the decision
/// of `front_read`, kept until its read is done): fresh reads go elsewhere;
/// once the decisions are dropped, follower2 counts none.
async fn a_loaded_follower_serves_fewer_reads_until_its_reads_are_done(ctx: &Ctx) {
    let router = &ctx.router;
    let holder = session("holder");
    let mut held = Vec::new();
    // `legacy` picks a random follower whatever the load: keep the ones
    // that land on follower2.
    let legacy = ReadRequest::fresh(&holder).options(with(Strategy::Legacy));
    for _ in 0..500 {
        let d = router.front_read(&legacy).await.expect("plan");
        if &*d.decision().node == "follower2" {
            held.push(d);
            if held.len() == 6 {
                break;
            }
        }
    }
    assert_eq!(held.len(), 6, "legacy never picked follower2");
    assert_eq!(in_flight(router, "follower2"), 6);
    assert_eq!(
        in_flight(router, "follower1") + in_flight(router, "follower3"),
        0
    );
    let t = paced_pairs(
        ctx,
        "causal-follower2-loaded",
        with(Strategy::Causal),
        12,
        8,
    )
    .await;
    assert!(
        t.on("follower2") * 10 <= t.off_leader(),
        "a follower with 6 reads in flight served {} of {} follower reads",
        t.on("follower2"),
        t.off_leader()
    );
    let clone = held[0].decision().clone();
    held.truncate(1);
    assert_eq!(
        in_flight(router, "follower2"),
        1,
        "a clone shares its read's count"
    );
    drop(held);
    assert_eq!(in_flight(router, "follower2"), 1);
    drop(clone);
    assert_eq!(in_flight(router, "follower2"), 0);
}

/// Six slow stale-ok reads through `Router::query`: in flight while they
/// run, spread over the followers, and not once they have answered (the
/// caller may keep the decision as long as it likes).
async fn reads_run_by_the_router_count_while_they_run(router: &Router, nodes: &Nodes) {
    const SLOW: &str = "SELECT pg_sleep(0.6)::text, inet_server_port()";
    let reader = session("slow-reader");
    let mut tasks = JoinSet::new();
    for _ in 0..6 {
        let router = router.clone();
        let reader = reader.clone();
        let nodes = nodes.clone();
        tasks.spawn(async move {
            let read = router
                .query_one(&ReadRequest::stale_ok(&reader), SLOW, &[])
                .await
                .expect("slow read");
            (nodes.name(read.value.get(1)), read.decision)
        });
    }
    tokio::time::sleep(ms(300)).await;
    let during: u32 = FOLLOWERS.iter().map(|f| in_flight(router, f)).sum();
    let mut decisions = Vec::new();
    let mut served = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (node, decision) = r.expect("a reader panicked");
        served.push(node);
        decisions.push(decision);
    }
    served.sort();
    eprintln!("slow stale-ok reads served by {served:?}; in flight while they ran: {during}");
    assert_eq!(during, 6, "every slow read counts while it runs");
    let after: u32 = FOLLOWERS.iter().map(|f| in_flight(router, f)).sum();
    assert_eq!(
        after, 0,
        "a read that answered no longer counts, decision kept or not"
    );
    assert!(served.iter().all(|n| FOLLOWERS.contains(&n.as_str())));
    drop(decisions);
}

fn in_flight(router: &Router, node: &str) -> u32 {
    router
        .reads_in_flight()
        .into_iter()
        .find(|(n, _)| &**n == node)
        .map_or(0, |(_, c)| c)
}
