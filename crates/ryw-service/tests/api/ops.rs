//! Cluster status, health, metrics, OpenAPI, the docs viewer and the
//! dashboard page.

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_health_metrics_docs_and_dashboard_are_served() {
    let app = TestApp::start().await;
    let u = user();
    app.account(&u).await;
    app.pay(&u, 100, None).await;
    app.balance(&u, "causal").await;

    let c = app.call("GET", "/api/cluster", None, &[], None).await;
    assert_eq!(c.status, 200);
    let nodes = c.body["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes[0]["role"], "leader");
    assert!(
        nodes
            .iter()
            .all(|n| n["in_rotation"] == true && n["lsn"].is_string()),
        "{c:?}"
    );
    assert!(nodes[1]["lag_ms"].is_u64() && nodes[1]["lag_bytes"].is_u64());
    assert_eq!(c.body["session_store"]["kind"], "memory");
    assert_eq!(c.body["session_store"]["healthy"], true);
    assert_eq!(c.body["lag_control"], true);
    // The configured windows (defaults here), which the dashboard shows.
    assert_eq!(c.body["sticky_window_ms"], 5000);
    assert_eq!(c.body["causal_wait_ms"], 200);

    let r = app.call("GET", "/readyz", None, &[], None).await;
    assert_eq!(
        (r.status.as_u16(), r.body["status"].as_str().unwrap()),
        (200, "ready")
    );
    assert_eq!(
        app.call("GET", "/healthz", None, &[], None).await.status,
        200
    );

    let m = app.call("GET", "/metrics", None, &[], None).await;
    let text = m.body.as_str().unwrap();
    for needle in [
        "ryw_http_requests_total{route=\"/api/payments\",status=\"201\"} 1",
        "ryw_reads_total{node=",
        "strategy=\"causal\"",
        "ryw_follower_lag_bytes{node=\"follower1\"}",
        "ryw_session_store_healthy 1",
        "ryw_fallbacks_to_leader_total",
        "ryw_waits_total",
    ] {
        assert!(text.contains(needle), "metrics lack {needle:?}:\n{text}");
    }

    let doc = app.call("GET", "/openapi.json", None, &[], None).await;
    assert_eq!(doc.status, 200);
    for path in [
        "/api/account",
        "/api/payments",
        "/api/balance",
        "/api/me",
        "/api/me/profile",
        "/api/products",
        "/api/cluster",
    ] {
        assert!(doc.body["paths"][path].is_object(), "openapi lacks {path}");
    }
    let docs = app.call("GET", "/docs/", None, &[], None).await;
    assert_eq!(docs.status, 200);
    assert!(docs.body.as_str().unwrap().contains("swagger"), "{docs:?}");
    let page = app.call("GET", "/", None, &[], None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.as_str().unwrap().contains("Pay $100"));
    assert!(
        app.call("GET", "/app.js", None, &[], None)
            .await
            .body
            .as_str()
            .unwrap()
            .contains("X-Read-Strategy")
    );

    // The dashboard's lag control changes a follower's delay on a local cluster.
    let r = app
        .call(
            "POST",
            "/api/cluster/lag",
            None,
            &[],
            Some(r#"{"follower":"follower1","delay_ms":250}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        ryw_cluster::ClusterInfo::load(&app.cluster.dir())
            .unwrap()
            .follower("1")
            .unwrap()
            .delay_ms,
        Some(250)
    );
    let r = app
        .call(
            "POST",
            "/api/cluster/lag",
            None,
            &[],
            Some(r#"{"follower":"follower9","delay_ms":250}"#),
        )
        .await;
    assert_eq!(r.status, 422, "{r:?}");
    // The leader is no follower: a client's mistake, not a server error.
    let r = app
        .call(
            "POST",
            "/api/cluster/lag",
            None,
            &[],
            Some(r#"{"follower":"leader","delay_ms":250}"#),
        )
        .await;
    assert_eq!(r.status, 422, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_listening_server_serves_and_shuts_down_gracefully() {
    let cluster = ryw_cluster::harness::TestCluster::start(&[std::time::Duration::ZERO]).await;
    let service = ryw_service::Service::build(config(&cluster)).await.unwrap();
    let addr = service.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = String::new();
    stream.read_to_string(&mut buf).await.unwrap();
    assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("graceful shutdown")
        .unwrap()
        .unwrap();
}
