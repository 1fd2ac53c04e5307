//! Payments: exactly once per Idempotency-Key, never an overdraw, the ledger
//! always adds up.

use crate::helpers::*;
use futures_util::future::join_all;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_concurrent_identical_clicks_charge_exactly_once() {
    let app = TestApp::start().await;
    let u = user();
    app.account(&u).await;
    let key = uuid::Uuid::new_v4().to_string();
    let resps = join_all((0..12).map(|_| app.pay(&u, 10_000, Some(&key)))).await;
    let created = resps.iter().filter(|r| r.status == 201).count();
    let replayed = resps.iter().filter(|r| r.status == 200).count();
    assert_eq!((created, replayed), (1, 11), "{resps:?}");
    let ids: std::collections::HashSet<_> =
        resps.iter().map(|r| r.body["payment_id"].clone()).collect();
    assert_eq!(ids.len(), 1, "different payments for one key: {ids:?}");
    assert!(
        resps
            .iter()
            .all(|r| r.i64("balance_cents") == 90_000 && r.i64("version") == 1)
    );
    assert!(
        resps
            .iter()
            .filter(|r| r.status == 200)
            .all(|r| r.header("idempotent-replay") == "true")
    );

    let b = app.balance(&u, "leader").await;
    assert_eq!((b.i64("balance_cents"), b.i64("version")), (90_000, 1));
    let leader = ryw_cluster::ops::connect(&app.cluster.leader_url(), "test")
        .await
        .unwrap();
    let uid: uuid::Uuid = u.parse().unwrap();
    let n: i64 = leader
        .query_one("SELECT count(*) FROM payments WHERE user_id = $1", &[&uid])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);

    // The same key with another amount is refused, and charges nothing.
    let other = app.pay(&u, 5_000, Some(&key)).await;
    assert_eq!(other.status, 422, "{other:?}");
    assert!(
        other.body["type"]
            .as_str()
            .unwrap()
            .ends_with("/idempotency-key-reused")
    );
    let b = app.balance(&u, "leader").await;
    assert_eq!(b.i64("balance_cents"), 90_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_payments_never_overdraw_and_the_ledger_adds_up() {
    let app = TestApp::start().await;
    let u = user();
    app.account(&u).await;
    // 30 payments of $50 against $1000: exactly 20 can succeed.
    let resps = join_all((0..30).map(|_| app.pay(&u, 5_000, None))).await;
    let ok = resps.iter().filter(|r| r.status == 201).count();
    let refused: Vec<_> = resps.iter().filter(|r| r.status == 422).collect();
    assert_eq!(ok, 20, "{resps:?}");
    assert_eq!(refused.len(), 10);
    assert!(refused.iter().all(|r| {
        r.body["type"]
            .as_str()
            .unwrap()
            .ends_with("/insufficient-funds")
    }));
    let mut versions: Vec<i64> = resps
        .iter()
        .filter(|r| r.status == 201)
        .map(|r| r.i64("version"))
        .collect();
    versions.sort();
    assert_eq!(
        versions,
        (1..=20).collect::<Vec<_>>(),
        "lost or duplicated updates"
    );

    let leader = ryw_cluster::ops::connect(&app.cluster.leader_url(), "test")
        .await
        .unwrap();
    let row = leader
        .query_one(
            "SELECT a.opening_cents, a.balance_cents, a.version, coalesce(sum(p.amount_cents), 0)::bigint, count(p.*) \
             FROM accounts a LEFT JOIN payments p USING (user_id) WHERE a.user_id = $1 GROUP BY a.user_id",
            &[&u.parse::<uuid::Uuid>().unwrap()],
        )
        .await
        .unwrap();
    let (opening, balance, version, paid, count): (i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!(balance, 0);
    assert_eq!(opening - paid, balance, "ledger does not add up");
    assert_eq!((version, count), (20, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_write_response_carries_the_new_state_and_a_token_that_reads_it() {
    let app = TestApp::start().await;
    let u = user();
    assert_eq!(app.account(&u).await, 0);
    let paid = app.pay(&u, 2_500, Some("k1")).await;
    assert_eq!(paid.status, 201);
    assert_eq!(
        (paid.i64("balance_cents"), paid.i64("version")),
        (97_500, 1)
    );
    assert_eq!(paid.body["served_by"], "leader");
    let token = paid.header("x-consistency-token").to_owned();
    assert!(token.starts_with("v2."), "{token}");
    // Another "device" of the same user: carries only the token.
    let r = app
        .call(
            "GET",
            "/api/balance",
            Some(&u),
            &[
                ("x-read-strategy", "causal"),
                ("x-consistency-token", &token),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.i64("version") >= 1);
    let list = app
        .call(
            "GET",
            "/api/payments",
            Some(&u),
            &[("x-read-strategy", "causal")],
            None,
        )
        .await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["payments"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["payments"][0]["amount_cents"], 2_500);

    // The .NET + Redis demo's flow: profile write then /api/me.
    let p = app
        .call("POST", "/api/me/profile", Some(&u), &[], Some(r#"{"email":"akbar@example.com","name":"Akbar","avatarUrl":"https://example.com/a.jpg"}"#))
        .await;
    assert_eq!(p.status, 200, "{p:?}");
    assert_eq!(p.i64("version"), 1);
    for _ in 0..20 {
        let me = app
            .call(
                "GET",
                "/api/me",
                Some(&u),
                &[("x-read-strategy", "hybrid")],
                None,
            )
            .await;
        assert_eq!(me.status, 200, "{me:?}");
        assert_eq!(me.body["name"], "Akbar");
    }
    let products = app.call("GET", "/api/products", Some(&u), &[], None).await;
    assert_eq!(products.status, 200);
    assert_eq!(products.body["products"].as_array().unwrap().len(), 3);
    assert_ne!(
        products.header("x-served-by"),
        "leader",
        "stale-ok reads go to followers"
    );
}
