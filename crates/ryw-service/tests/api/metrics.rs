//! `/metrics` through the Prometheus client: the request latency histogram
//! and the router's wait histogram move with the requests that fed them, and
//! `register_router` (the building block the proxy reuses) exports the same
//! router state as `/metrics`.

use crate::helpers::*;
use ryw_cluster::harness::TestCluster;
use ryw_service::Service;

/// The value of the sample whose line is `series` + `' '` + value.
fn find(text: &str, series: &str) -> Option<f64> {
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))?;
    Some(value.parse().unwrap_or_else(|e| panic!("{series}: {e}")))
}

fn sample(text: &str, series: &str) -> f64 {
    find(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

async fn scrape(app: &axum::Router) -> String {
    let m = call(app, "GET", "/metrics", None, &[], None).await;
    assert_eq!(m.status, 200, "{m:?}");
    assert!(
        m.header("content-type")
            .starts_with("text/plain; version=0.0.4"),
        "{m:?}"
    );
    m.body.as_str().expect("metrics are text").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_wait_histograms_count_the_requests_and_waits_that_fed_them() {
    init_logs();
    let cluster = TestCluster::start(&LAGS).await;
    let service = Service::build(config(&cluster)).await.expect("service");
    let state = service.state();
    wait_followers_in_rotation(&state).await;
    let app = ryw_service::app(state.clone());

    let u = user();
    let r = call(&app, "POST", "/api/account", Some(&u), &[], None).await;
    assert_eq!(r.status, 201, "{r:?}");
    let before = scrape(&app).await;

    // Pay, then read at once through `causal`: neither follower has replayed
    // the payment (they apply commits 100 and 400 ms late), so the read
    // waits for follower1 (budget 200 ms) and tells how long.
    let paid = call(
        &app,
        "POST",
        "/api/payments",
        Some(&u),
        &[],
        Some(r#"{"amount_cents": 100}"#),
    )
    .await;
    assert_eq!(paid.status, 201, "{paid:?}");
    let read = call(
        &app,
        "GET",
        "/api/balance",
        Some(&u),
        &[("x-read-strategy", "causal")],
        None,
    )
    .await;
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(read.i64("version"), paid.i64("version"), "{read:?}");
    let waited_ms: u64 = read.header("x-waited-ms").parse().expect("x-waited-ms");
    assert!(waited_ms > 0, "the read did not wait: {read:?}");

    let after = scrape(&app).await;
    // A series that did not exist before counted nothing yet.
    let moved = |series: &str| sample(&after, series) - find(&before, series).unwrap_or(0.0);

    // The latency histogram: one more 2xx balance read, in the +Inf bucket
    // and in the 10 s bucket (the request time limit is 10 s).
    let route = r#"route="/api/balance",status_class="2xx""#;
    assert_eq!(
        sample(
            &after,
            &format!("ryw_http_request_duration_seconds_count{{{route}}}")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            &format!("ryw_http_request_duration_seconds_bucket{{{route},le=\"10\"}}")
        ),
        1.0
    );
    assert_eq!(
        moved(
            r#"ryw_http_request_duration_seconds_count{route="/api/payments",status_class="2xx"}"#
        ),
        1.0
    );
    assert!(moved(r#"ryw_http_requests_total{route="/metrics",status="200"}"#) >= 1.0);

    // The wait histogram: one more wait, counted in the bucket of its
    // duration. `X-Waited-Ms` is the same duration rounded up to whole ms
    // (the wait lasted more than waited_ms - 1 and at most waited_ms), so
    // every bucket bound ≥ waited_ms moved by one and every bound below did
    // not.
    assert_eq!(moved("ryw_waits_total"), 1.0);
    assert_eq!(moved("ryw_wait_duration_seconds_count"), 1.0);
    assert_eq!(moved(r#"ryw_wait_duration_seconds_bucket{le="+Inf"}"#), 1.0);
    let mut checked = 0;
    for bound in ryw_router::MetricsSnapshot::WAIT_BOUNDS {
        let le = format!(
            "ryw_wait_duration_seconds_bucket{{le=\"{}\"}}",
            bound.as_secs_f64()
        );
        let ms = bound.as_millis() as u64;
        let expected = if ms >= waited_ms { 1.0 } else { 0.0 };
        assert_eq!(moved(&le), expected, "{le} (waited {waited_ms} ms)");
        checked += 1;
    }
    assert_eq!(checked, ryw_router::MetricsSnapshot::WAIT_BOUNDS.len());
    // And by strategy: a causal wait, wasted only if the leader served it
    // after all (follower1 did not catch up within the budget).
    assert_eq!(moved(r#"ryw_strategy_waits_total{strategy="causal"}"#), 1.0);
    let wasted = if read.header("x-served-by") == "leader" {
        1.0
    } else {
        0.0
    };
    assert_eq!(
        moved(r#"ryw_wasted_waits_total{strategy="causal"}"#),
        wasted
    );

    // The reusable building block exports the same router state.
    let mut registry = ryw_service::metrics::Registry::default();
    ryw_service::metrics::register_router(&mut registry, state.router.clone());
    let own = ryw_service::metrics::encode(&registry);
    for series in [
        "ryw_waits_total",
        r#"ryw_wasted_waits_total{strategy="causal"}"#,
        "ryw_wait_duration_seconds_count",
        r#"ryw_wait_duration_seconds_bucket{le="+Inf"}"#,
        r#"ryw_node_in_rotation{node="follower1"}"#,
        "ryw_session_store_healthy",
    ] {
        assert_eq!(sample(&own, series), sample(&after, series), "{series}");
    }
    assert!(!own.contains("ryw_http_requests_total"), "{own}");
}
