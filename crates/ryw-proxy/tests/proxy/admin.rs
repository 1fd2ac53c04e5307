//! The admin endpoint: `/metrics` counts what the proxy did (clients,
//! batches by node and route, the 25006 retry, reads by node and strategy
//! from the router) and `/readyz` follows the leader.

use std::time::Duration;

use crate::support::{Ctx, Setup, direct, read, write};

/// The value of the metric line that starts with `prefix`.
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_proxy_did_and_readyz_follows_the_leader() {
    let ctx = Ctx::start(Setup {
        lags: vec![Duration::ZERO],
        admin: true,
        ..Setup::default()
    })
    .await;
    let admin = ctx.proxy.admin.expect("an admin endpoint");
    let http = reqwest::Client::new();
    let scrape = || async {
        let r = http
            .get(format!("http://{admin}/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };
    let leader = direct(&ctx.cluster.leader_url()).await;
    // A function that says it is STABLE but writes (nextval): the catalog
    // lets it go to a follower, which refuses it (25006), and the proxy
    // runs it on the leader before the client saw anything.
    leader
        .batch_execute(
            "CREATE SEQUENCE sneaky_seq; \
             CREATE FUNCTION sneaky() RETURNS bigint LANGUAGE sql STABLE \
             AS 'SELECT nextval(''sneaky_seq'')'",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let c = ctx.client().await;
    c.batch_execute("SET ryw.strategy = 'causal'")
        .await
        .unwrap();
    for i in 1..=5 {
        write(&c, "admin", i).await;
        assert_eq!(read(&c, "admin").await.0, i);
    }
    // Until the proxy's catalog knows the new function it stays on the
    // leader; once it does, the follower refuses it and it is retried.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut text;
    loop {
        c.query_one("SELECT sneaky()", &[])
            .await
            .expect("answered, on the leader");
        text = scrape().await;
        if value(&text, "ryw_proxy_retries_total{reason=\"read_only\"}") == Some(1.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the liar function was never retried on the leader: {text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(value(&text, "ryw_proxy_clients "), Some(1.0), "{text}");
    assert!(
        value(
            &text,
            "ryw_proxy_batches_total{node=\"follower1\",route=\"read\"}"
        )
        .unwrap_or(0.0)
            >= 5.0,
        "{text}"
    );
    assert!(
        value(
            &text,
            "ryw_proxy_batches_total{node=\"leader\",route=\"leader\"}"
        )
        .unwrap_or(0.0)
            >= 5.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "ryw_proxy_retries_total{reason=\"read_only\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        value(
            &text,
            "ryw_reads_total{node=\"follower1\",freshness=\"fresh\",strategy=\"causal\"}"
        )
        .unwrap_or(0.0)
            >= 5.0,
        "the router's metrics too: {text}"
    );
    assert!(value(&text, "ryw_proxy_ryw_commands_total").unwrap_or(0.0) >= 1.0);

    let ready = http
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    ctx.cluster.stop("leader");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = http
            .get(format!("http://{admin}/readyz"))
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["status"], "leader unreachable");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz never said the leader is gone"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ctx.cluster.start_node("leader").await;
}
