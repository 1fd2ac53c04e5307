//! Every refusal is a problem+json 4xx with a stable type, and changes
//! nothing.

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_problem_json_4xx_and_writes_nothing() {
    let app = TestApp::start().await;
    let u = user();
    app.account(&u).await;
    let other_key = ryw_router::TokenKey::from_secret("another key, also sixteen bytes+").unwrap();
    let foreign = other_key.sign(ryw_router::Lsn::from_u64(1));
    let future = ryw_router::TokenKey::from_secret(KEY)
        .unwrap()
        .sign(ryw_router::Lsn::from_u64(u64::MAX / 2));
    let big = format!(
        r#"{{"amount_cents": 1, "description": "{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let valid = ryw_router::TokenKey::from_secret(KEY)
        .unwrap()
        .sign(ryw_router::Lsn::from_u64(1000));
    let mut tampered = valid.clone();
    tampered.replace_range(3..4, if &valid[3..4] == "0" { "1" } else { "0" });

    // (method, path, headers, body, status, problem type)
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, String)>,
        Option<String>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/api/payments",
            vec![],
            Some("{not json".into()),
            400,
            "malformed-json",
        ),
        (
            "POST",
            "/api/payments",
            vec![],
            Some(r#"{"amount_cents": "100"}"#.into()),
            422,
            "invalid-amount",
        ),
        (
            "POST",
            "/api/payments",
            vec![],
            Some(r#"{"amount_cents": 1.5}"#.into()),
            422,
            "invalid-amount",
        ),
        (
            "POST",
            "/api/payments",
            vec![],
            Some(r#"{"amount_cents": 0}"#.into()),
            422,
            "invalid-amount",
        ),
        (
            "POST",
            "/api/payments",
            vec![],
            Some(r#"{"amount_cents": -100}"#.into()),
            422,
            "invalid-amount",
        ),
        (
            "POST",
            "/api/payments",
            vec![],
            Some(r#"{"amount_cents": 100000001}"#.into()),
            422,
            "invalid-amount",
        ),
        (
            "POST",
            "/api/payments",
            vec![],
            Some(r#"{"amount_cents": 99999999999999999999999}"#.into()),
            422,
            "invalid-amount",
        ),
        (
            "POST",
            "/api/payments",
            vec![],
            Some(r#"{}"#.into()),
            422,
            "invalid-amount",
        ),
        (
            "POST",
            "/api/payments",
            vec![],
            Some(r#"[1,2,3]"#.into()),
            422,
            "invalid-amount",
        ),
        (
            "POST",
            "/api/payments",
            vec![],
            Some(r#"{"amount_cents": 1, "description": 7}"#.into()),
            422,
            "invalid-field",
        ),
        (
            "POST",
            "/api/payments",
            vec![],
            Some(big),
            413,
            "body-too-large",
        ),
        (
            "POST",
            "/api/payments",
            vec![("idempotency-key", "has space".into())],
            Some(r#"{"amount_cents": 1}"#.into()),
            400,
            "bad-idempotency-key",
        ),
        (
            "POST",
            "/api/payments",
            vec![],
            Some(r#"{"amount_cents": 100000000}"#.into()),
            422,
            "insufficient-funds",
        ),
        (
            "GET",
            "/api/balance",
            vec![("x-read-strategy", "fastest".into())],
            None,
            400,
            "unknown-strategy",
        ),
        (
            "GET",
            "/api/balance",
            vec![("x-consistency-token", "garbage".into())],
            None,
            400,
            "bad-token",
        ),
        (
            "GET",
            "/api/balance",
            vec![("x-consistency-token", tampered)],
            None,
            400,
            "bad-token",
        ),
        (
            "GET",
            "/api/balance",
            vec![("x-consistency-token", foreign)],
            None,
            400,
            "bad-token",
        ),
        (
            "POST",
            "/api/me/profile",
            vec![],
            Some(r#"{"email":"nope","name":"A"}"#.into()),
            422,
            "invalid-field",
        ),
        (
            "POST",
            "/api/me/profile",
            vec![],
            Some(r#"{"email":"a@b.io","name":""}"#.into()),
            422,
            "invalid-field",
        ),
        (
            "POST",
            "/api/me/profile",
            vec![],
            Some(r#"{"email":"a@b.io","name":"A","avatarUrl":"ftp://x"}"#.into()),
            422,
            "invalid-field",
        ),
        ("GET", "/api/me", vec![], None, 404, "no-profile"),
        ("GET", "/api/nope", vec![], None, 404, "not-available"),
    ];
    for (method, path, headers, body, status, kind) in cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let started = std::time::Instant::now();
        let r = app.call(method, path, Some(&u), &h, body.as_deref()).await;
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{method} {path} took {:?}",
            started.elapsed()
        );
        assert_eq!(
            r.status.as_u16(),
            status,
            "{method} {path} {headers:?}: {r:?}"
        );
        assert_eq!(
            r.header("content-type"),
            "application/problem+json",
            "{method} {path}: {r:?}"
        );
        assert_eq!(
            r.body["type"],
            format!("{}{kind}", ryw_service::error::PROBLEM_BASE),
            "{method} {path}: {r:?}"
        );
        assert_eq!(r.body["status"], status);
        assert!(!r.body["detail"].as_str().unwrap().is_empty());
        if path.starts_with("/api") {
            assert!(
                !r.header("x-served-by").is_empty() && !r.header("x-consistency-token").is_empty(),
                "{r:?}"
            );
        }
    }
    // A token naming an LSN far in the future is signed, so accepted, but it
    // can never make a read wait past its budget or hang (rule 4).
    let started = std::time::Instant::now();
    let r = app
        .call(
            "GET",
            "/api/balance",
            Some(&u),
            &[
                ("x-read-strategy", "causal"),
                ("x-consistency-token", &future),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.header("x-served-by"), "leader");

    // Identity problems.
    let r = app
        .call("GET", "/api/balance", Some("not-a-uuid"), &[], None)
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body["type"].as_str().unwrap().ends_with("/bad-user-id"));
    let r = app
        .call(
            "POST",
            "/api/payments",
            Some(&user()),
            &[],
            Some(r#"{"amount_cents": 1}"#),
        )
        .await;
    assert_eq!(r.status, 404);
    assert!(r.body["type"].as_str().unwrap().ends_with("/no-account"));

    // Nothing above was written: the account is untouched.
    let b = app.balance(&u, "leader").await;
    assert_eq!((b.i64("balance_cents"), b.i64("version")), (100_000, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_strategy_header_is_refused_unless_allowed() {
    let app = TestApp::start_with(
        ryw_cluster::harness::TestClusterOptions {
            lags: vec![std::time::Duration::ZERO],
            redis: false,
        },
        |cfg| cfg.allow_strategy_header = false,
    )
    .await;
    let u = user();
    app.account(&u).await;
    let r = app.balance(&u, "legacy").await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["type"]
            .as_str()
            .unwrap()
            .ends_with("/strategy-header-not-allowed")
    );
    let r = app.call("GET", "/api/balance", Some(&u), &[], None).await;
    assert_eq!(
        (r.status.as_u16(), r.body["strategy"].as_str().unwrap()),
        (200, "hybrid")
    );
    // Without a header, the demo user is used.
    let r = app.call("POST", "/api/account", None, &[], None).await;
    assert_eq!(
        r.body["user_id"],
        ryw_service::domain::DEFAULT_USER.to_string()
    );
}

/// A fresh read that finds no row is still an answer from one node: its 404
/// names that node and carries the session's token, as a 200 does, so a
/// client (and the bench) can tell whose view of the data said "nothing".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_read_that_finds_nothing_names_the_node_that_answered() {
    let app = TestApp::start().await;
    let key = ryw_router::TokenKey::from_secret(KEY).unwrap();
    let u = user();
    let created = app.call("POST", "/api/account", Some(&u), &[], None).await;
    let written = key.verify(created.header("x-consistency-token")).unwrap();

    // No profile yet, read on the leader.
    let r = app
        .call(
            "GET",
            "/api/me",
            Some(&u),
            &[("x-read-strategy", "leader")],
            None,
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.body["type"].as_str().unwrap().ends_with("/no-profile"));
    assert_eq!(r.header("content-type"), "application/problem+json");
    assert_eq!(r.header("x-served-by"), "leader", "{r:?}");
    let token = key.verify(r.header("x-consistency-token")).unwrap();
    assert!(token >= written, "the session's token is kept: {r:?}");
    assert_eq!(r.header("x-waited-ms"), "0");

    // No account at all, read on a follower: the 404 names that follower.
    let followers: Vec<String> =
        app.call("GET", "/api/cluster", None, &[], None).await.body["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["role"] == "follower")
            .map(|n| n["name"].as_str().unwrap().to_string())
            .collect();
    let r = app.balance(&user(), "legacy").await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.body["type"].as_str().unwrap().ends_with("/no-account"));
    assert!(
        followers.iter().any(|f| f == r.header("x-served-by")),
        "{followers:?}: {r:?}"
    );
    assert!(key.verify(r.header("x-consistency-token")).is_ok(), "{r:?}");
}
