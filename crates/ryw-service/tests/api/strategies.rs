//! Pay, then read the balance at once, through each strategy: `legacy`
//! shows stale balances; `leader`, `sticky`, `causal` and `hybrid` never do.
//! Staleness is judged by the account `version` the payment returned, never
//! by `served_by`.

use crate::helpers::*;
use futures_util::future::join_all;

/// Runs `pairs` pay-then-read pairs spread over `users` concurrent users;
/// returns (stale reads, reads served by a follower).
async fn pairs(
    app: &TestApp,
    strategy: &str,
    users: usize,
    pairs_per_user: usize,
) -> (usize, usize) {
    let runs = (0..users).map(|_| async {
        let u = user();
        app.account(&u).await;
        let (mut stale, mut on_follower) = (0, 0);
        for _ in 0..pairs_per_user {
            let paid = app.pay(&u, 1, None).await;
            assert_eq!(paid.status, 201, "{paid:?}");
            let read = app.balance(&u, strategy).await;
            // A follower that has not replayed the account's creation yet
            // answers 404: that is a stale read too.
            if read.status == 404 {
                stale += 1;
                continue;
            }
            assert_eq!(read.status, 200, "{read:?}");
            if read.i64("version") < paid.i64("version") {
                stale += 1;
            }
            if read.header("x-served-by") != "leader" {
                on_follower += 1;
            }
        }
        (stale, on_follower)
    });
    join_all(runs)
        .await
        .into_iter()
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_reads_right_after_a_payment_are_stale_only_under_legacy() {
    let app = TestApp::start().await;
    let (legacy_stale, _) = pairs(&app, "legacy", 10, 20).await;
    assert!(
        legacy_stale > 0,
        "legacy routing showed no stale balance in 200 pairs"
    );
    for strategy in ["leader", "sticky", "causal", "hybrid"] {
        let (stale, _) = pairs(&app, strategy, 25, 20).await;
        assert_eq!(
            stale, 0,
            "{strategy}: {stale} stale reads in 500 pay-then-read pairs"
        );
    }
    // causal serves from followers whenever one has caught up: with a 0 ms
    // budget and reads 600 ms after the write, every read is a follower read.
    let u = user();
    app.account(&u).await;
    let paid = app.pay(&u, 1, None).await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    for _ in 0..20 {
        let r = app.balance(&u, "causal:0ms").await;
        assert!(r.i64("version") >= paid.i64("version"));
        assert_ne!(r.header("x-served-by"), "leader", "{r:?}");
    }
}
