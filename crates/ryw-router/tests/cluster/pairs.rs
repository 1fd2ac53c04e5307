//! Issue 3, "what it must show": write-then-read pairs on a cluster whose
//! followers lag 100 ms and 400 ms. `legacy` reads its own writes stale;
//! every other strategy never does (rules 1 and 2 end to end). And `causal`
//! with no wait budget still serves reads made long enough after the write
//! from followers.

use std::time::Duration;

use ryw_router::{Freshness, ReadOptions, RouterConfig, Strategy};
use tokio::task::JoinSet;

use crate::support::{Ctx, StoreKind, Tally, ms, read, session, with, write};

const SESSIONS: usize = 25;
const PAIRS_PER_SESSION: i64 = 40;

/// `SESSIONS` sessions at once, each `PAIRS_PER_SESSION` times: write `i`,
/// then at once a fresh read that must show at least `i`.
async fn pairs(ctx: &Ctx, label: &str, opts: ReadOptions) -> Tally {
    let mut tasks = JoinSet::new();
    for n in 0..SESSIONS {
        let router = ctx.router.clone();
        let nodes = ctx.nodes.clone();
        let s = session(format!("{label}-{n}"));
        tasks.spawn(async move {
            let mut tally = Tally::default();
            for i in 1..=PAIRS_PER_SESSION {
                write(&router, &s, i).await;
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
        "{label:>15}: {} pairs, {} stale, served by {:?}",
        total.reads, total.stale, total.by_node
    );
    assert!(total.errors.is_empty(), "{label}: {:?}", total.errors);
    assert_eq!(total.reads, SESSIONS * PAIRS_PER_SESSION as usize);
    total
}

/// On one cluster: the pairs per strategy, `causal` without a budget, and
/// the token-versus-in-transaction-LSN check of `commit_lsn`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_reads_right_after_a_write_are_stale_only_under_legacy() {
    let ctx = Ctx::start(
        &[ms(100), ms(400)],
        RouterConfig::default(),
        StoreKind::Memory,
    )
    .await;

    let legacy = pairs(&ctx, "legacy", with(Strategy::Legacy)).await;
    assert!(
        legacy.stale > 0,
        "legacy must show the stale-read problem on lagging followers: {legacy:?}"
    );

    let sticky = ReadOptions {
        sticky_window: Some(Duration::from_secs(5)),
        ..with(Strategy::Sticky)
    };
    for (label, opts) in [
        ("leader", with(Strategy::Leader)),
        ("sticky", sticky),
        ("causal", with(Strategy::Causal)),
        ("hybrid", with(Strategy::Hybrid)),
        ("per-read-check", with(Strategy::PerReadCheck)),
    ] {
        let t = pairs(&ctx, label, opts).await;
        assert_eq!(t.stale, 0, "{label} served its own writes stale: {t:?}");
    }

    causal_without_a_wait_budget_serves_old_enough_writes_from_followers(&ctx).await;
    crate::commit_lsn::a_follower_at_the_write_token_shows_the_write_but_not_at_an_lsn_read_inside_the_transaction(&ctx, "follower2").await;
}

/// With no wait budget, `causal` never waits; a read issued long enough after
/// the write (600 ms > both lags) finds a follower that has it.
async fn causal_without_a_wait_budget_serves_old_enough_writes_from_followers(ctx: &Ctx) {
    let opts = ReadOptions {
        wait_budget: Some(Duration::ZERO),
        ..with(Strategy::Causal)
    };
    let mut tasks = JoinSet::new();
    for n in 0..20 {
        let router = ctx.router.clone();
        let nodes = ctx.nodes.clone();
        let s = session(format!("late-{n}"));
        tasks.spawn(async move {
            let mut tally = Tally::default();
            for i in 1..=3 {
                write(&router, &s, i).await;
                tokio::time::sleep(ms(600)).await;
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
    eprintln!("causal, 0 ms budget, read 600 ms after the write: {total:?}");
    assert!(total.errors.is_empty(), "{:?}", total.errors);
    assert_eq!(total.stale, 0, "{total:?}");
    assert_eq!(
        total.on("leader"),
        0,
        "every read had a caught-up follower: {total:?}"
    );
    assert_eq!(total.reads, 60);
}
