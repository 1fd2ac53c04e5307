//! Rules 1 and 2, focused: the token `WriteTx::commit` returns (an LSN read
//! after COMMIT returned) is enough. Once a follower's replay position, read in a
//! statement of its own before the read, has reached it, the follower shows
//! the write: every time. An LSN read inside the transaction is not
//! enough: a follower that reached that one still shows the old row, which
//! is what this test would see if rule 1 were broken.

use ryw_router::{Lsn, SessionKey};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::support::{Ctx, direct, follower_url, ms, replay_lsn, secs, session, value_on};

const UPSERT: &str =
    "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v";

/// Polls the follower's replay position (its own statement) until it reaches
/// `lsn`, then reads `s`'s value in the next statement.
async fn value_once_replayed(follower: &tokio_postgres::Client, s: &SessionKey, lsn: Lsn) -> i64 {
    let deadline = Instant::now() + secs(10);
    while replay_lsn(follower).await < lsn {
        assert!(Instant::now() < deadline, "follower never replayed {lsn}");
        tokio::time::sleep(ms(2)).await;
    }
    value_on(follower, s).await
}

/// Runs on the cluster of `pairs` (one cluster fewer to start), against its
/// 400 ms follower.
pub async fn a_follower_at_the_write_token_shows_the_write_but_not_at_an_lsn_read_inside_the_transaction(
    ctx: &Ctx,
    follower: &str,
) {
    let url = follower_url(&ctx.cluster, follower);
    let mut tasks = JoinSet::new();
    for n in 0..25 {
        let router = ctx.router.clone();
        let url = url.clone();
        let s = session(format!("commit-{n}"));
        tasks.spawn(async move {
            let follower = direct(&url).await;
            let (mut early_stale, mut stale) = (0, 0);
            for i in 1..=2i64 {
                let tx = router.begin(&s).await.expect("begin on the leader");
                tx.execute(UPSERT, &[&s.as_str(), &i])
                    .await
                    .expect("upsert");
                // What rule 1 forbids: a position read before COMMIT.
                let inside: String = tx
                    .query_one("SELECT pg_current_wal_lsn()::text", &[])
                    .await
                    .expect("lsn")
                    .get(0);
                let token = tx.commit().await.expect("commit").token.lsn;
                let inside: Lsn = inside.parse().expect("lsn");
                assert!(inside < token, "the token is past the commit record");

                if value_once_replayed(&follower, &s, inside).await < i {
                    early_stale += 1;
                }
                if value_once_replayed(&follower, &s, token).await < i {
                    stale += 1;
                }
            }
            (early_stale, stale)
        });
    }
    let (mut early_stale, mut stale) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (e, s) = r.expect("a session task panicked");
        early_stale += e;
        stale += s;
    }
    eprintln!("50 writes: stale at the in-transaction lsn {early_stale}, at the token {stale}");
    assert_eq!(stale, 0, "a follower at the token did not show the write");
    assert!(
        early_stale > 0,
        "an lsn read inside the transaction should not be enough (400 ms delayed commits)"
    );
}
