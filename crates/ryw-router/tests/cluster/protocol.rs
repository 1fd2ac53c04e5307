//! The one-call read and write protocols, on a real cluster: what a caller
//! gets back, and what a write that did not commit leaves (nothing).

use std::time::Duration;

use ryw_router::{Error, Freshness, ReadOptions, ReadRequest, RouterConfig, Strategy};

use crate::support::{Ctx, StoreKind, direct, ms, session, value_on};

const UPSERT: &str =
    "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_return_the_callers_columns_in_order_and_every_fresh_read_raises_the_token() {
    let ctx = Ctx::start(
        &[Duration::ZERO],
        RouterConfig::default(),
        StoreKind::Memory,
    )
    .await;
    let router = &ctx.router;
    let s = session("protocol-reader");
    let causal = ReadRequest::fresh(&s).options(ReadOptions::strategy(Strategy::Causal));

    // The router's position column is stripped; the rows keep their order.
    let read = router
        .query(
            &causal,
            "SELECT g, g * 2 AS twice FROM generate_series(1, 50) g ORDER BY g DESC;",
            &[],
        )
        .await
        .expect("a fresh read");
    let got: Vec<i32> = read.value.iter().map(|r| r.get(0)).collect();
    assert_eq!(got, (1..=50).rev().collect::<Vec<_>>(), "order kept");
    let row = &read.value[0];
    assert_eq!(row.len(), 2);
    let names: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
    assert_eq!(names, ["g", "twice"]);
    assert_eq!(row.get::<_, i32>("twice"), 100);
    assert!(matches!(row.try_get::<_, i32>(2), Err(Error::Column(_))));
    assert!(matches!(
        row.try_get::<_, i32>("ryw_position"),
        Err(Error::Column(_))
    ));
    let first = read.decision.token.expect("a fresh read leaves a token");
    assert!(read.decision.seen.is_none_or(|seen| first.lsn >= seen));

    // A statement that cannot be a subquery is served as written, and its
    // position read after it.
    let show = router
        .query_one(&causal, "SHOW server_version_num", &[])
        .await
        .expect("SHOW as a fresh read");
    assert_eq!(show.value.len(), 1);
    let version: String = show.value.get(0);
    assert!(
        version.parse::<u32>().is_ok_and(|v| v >= 130000),
        "{version}"
    );
    assert!(show.decision.token >= Some(first), "tokens never go back");

    // Nothing found is an observation too: the token rises.
    let none = router
        .query_opt(&causal, "SELECT v FROM kv WHERE k = $1", &[&"nobody"])
        .await
        .expect("a read that finds nothing");
    assert!(none.value.is_none());
    assert!(none.decision.token >= show.decision.token);

    // Row counts are checked; the caller's SQL errors are its own.
    let two = router
        .query_one(&causal, "SELECT 1 UNION ALL SELECT 2", &[])
        .await;
    assert!(matches!(two, Err(Error::RowCount(2))), "{two:?}");
    let bad = router.query(&causal, "SELECT nope FROM nowhere", &[]).await;
    match bad {
        Err(Error::Query { source, .. }) => {
            assert_eq!(source.code().map(|c| c.code()), Some("42P01"))
        }
        other => panic!("expected the statement's own error, got {other:?}"),
    }

    // Stale-ok reads add nothing to the statement.
    let stale = router
        .query_one(&ReadRequest::stale_ok(&s), "SELECT 41 + 1 AS answer", &[])
        .await
        .expect("a stale-ok read");
    assert_eq!(stale.value.len(), 1);
    assert_eq!(stale.value.get::<_, i32>(0), 42);
    assert_eq!(stale.decision.freshness, Freshness::StaleOk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_or_failed_transaction_leaves_nothing_and_reports_not_committed() {
    // One pooled connection: a transaction left open on it would be the
    // next write's, and would commit with it.
    let cfg = RouterConfig {
        pool_size: 1,
        ..RouterConfig::default()
    };
    let ctx = Ctx::start(&[Duration::ZERO], cfg, StoreKind::Memory).await;
    let router = &ctx.router;
    let leader = direct(&ctx.cluster.leader_url()).await;
    let (dropped, failed, after) = (
        session("protocol-dropped"),
        session("protocol-failed"),
        session("protocol-after"),
    );

    // Dropped without commit (an early return): rolled back.
    {
        let tx = router.begin(&dropped).await.expect("begin");
        tx.execute(UPSERT, &[&dropped.as_str(), &1i64])
            .await
            .expect("upsert");
    }

    // A statement failed, the caller went on to commit: refused.
    let tx = router.begin(&failed).await.expect("begin");
    tx.execute(UPSERT, &[&failed.as_str(), &1i64])
        .await
        .expect("upsert");
    assert!(tx.execute("SELECT 1 / 0", &[]).await.is_err());
    match tx.commit().await {
        Err(Error::NotCommitted(e)) => {
            assert_eq!(e.code().map(|c| c.code()), Some("25P02"), "{e:?}")
        }
        other => panic!("a failed transaction must not pass for committed: {other:?}"),
    }

    // The one connection is clean again: this write commits alone.
    let written = router
        .write_query(&after, UPSERT, &[&after.as_str(), &7i64])
        .await
        .expect("a write after them");
    let read = router
        .query_one(
            &ReadRequest::fresh(&after).options(ReadOptions::strategy(Strategy::Causal)),
            "SELECT v FROM kv WHERE k = $1",
            &[&after.as_str()],
        )
        .await
        .expect("read back");
    assert_eq!(read.value.get::<_, i64>(0), 7);
    assert!(read.decision.token >= Some(written.token));

    tokio::time::sleep(ms(100)).await;
    assert_eq!(
        value_on(&leader, &dropped).await,
        0,
        "the dropped write left a row"
    );
    assert_eq!(
        value_on(&leader, &failed).await,
        0,
        "the failed write left a row"
    );
    assert_eq!(value_on(&leader, &after).await, 7);
}
