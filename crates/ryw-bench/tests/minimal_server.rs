//! The minimal no-routing server of `ryw bench calibrate` (the benchmark's
//! ceiling) on a real cluster: it answers the balance the real service wrote,
//! read from the follower with one shared connection, and takes a second and
//! a half of the calibration's load without a single error.

use ryw_bench::{LoadSpec, MinimalServer, http_load};
use ryw_cluster::harness::TestCluster;
use ryw_router::{NodeUrls, TokenKey};
use ryw_service::{Service, ServiceConfig};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minimal_server_answers_the_services_balance_from_the_follower_under_load() {
    let cluster = TestCluster::start(&[Duration::ZERO]).await;
    // The real service creates the schema, the account and a payment.
    let nodes = NodeUrls {
        leader: cluster.leader_url(),
        followers: cluster.follower_urls(),
    };
    let mut cfg = ServiceConfig::new(nodes, TokenKey::generate());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    let service = Service::build(cfg).await.unwrap();
    let ryw = format!("http://{}", service.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let user = uuid::Uuid::new_v4().to_string();
    let post = |path: &str, body: Value| {
        http.post(format!("{ryw}{path}"))
            .header("X-Demo-UserId", &user)
            .json(&body)
            .send()
    };
    let created = post("/api/account", json!({})).await.unwrap();
    assert_eq!(created.status(), 201);
    let paid = post("/api/payments", json!({"amount_cents": 250}))
        .await
        .unwrap();
    assert_eq!(paid.status(), 201);
    let paid: Value = paid.json().await.unwrap();

    let (_, follower_url) = &cluster.follower_urls()[0];
    let minimal = MinimalServer::start(follower_url, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let balance_url = format!("{}/api/balance", minimal.url());
    let get = |user: &str| http.get(&balance_url).header("X-Demo-UserId", user).send();
    // The follower has no replay delay: the payment shows within
    // milliseconds; ask for at most 5 s.
    let started = Instant::now();
    let body = loop {
        let answer = get(&user).await.unwrap();
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().await.unwrap();
        if body["version"] == paid["version"] || started.elapsed() > Duration::from_secs(5) {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        body,
        json!({"balance_cents": paid["balance_cents"], "version": paid["version"]}),
        "the row the payment wrote: {paid}"
    );
    assert_eq!(paid["version"], 1);
    let through_ryw: Value = http
        .get(format!("{ryw}/api/balance"))
        .header("X-Demo-UserId", &user)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (&through_ryw["balance_cents"], &through_ryw["version"]),
        (&body["balance_cents"], &body["version"]),
        "ryw answers the same"
    );
    let unknown = get(&uuid::Uuid::new_v4().to_string()).await.unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(get("not-a-uuid").await.unwrap().status(), 400);

    // The calibration's request, as calibrate sends it to every contender.
    let load = http_load(&LoadSpec {
        url: balance_url.clone(),
        headers: vec![
            ("X-Demo-UserId".into(), user.clone()),
            ("X-Read-Strategy".into(), "causal".into()),
        ],
        connections: 8,
        duration: Duration::from_millis(1500),
        timeout: Duration::from_secs(5),
        ..LoadSpec::default()
    })
    .await
    .unwrap();
    assert!(load.requests > 0, "{load:?}");
    assert_eq!((load.errors, load.non_2xx), (0, 0), "{load:?}");

    // Eight connections' requests, one PostgreSQL connection: they shared it.
    let follower = ryw_cluster::ops::connect(follower_url, "follower1")
        .await
        .unwrap();
    let row = follower
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&ryw_bench::calibrate::APPLICATION_NAME],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);

    minimal.stop().await.unwrap();
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
