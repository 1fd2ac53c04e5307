//! Issue 22: a Redis Cluster (3 masters, a replica each: `ryw cluster up
//! --redis-cluster 3 --redis-replicas 1`) as the session store and the
//! position feed of two `ryw serve` instances and one `ryw proxy`, all in
//! this process, on one PostgreSQL cluster.
//!
//! - A user pays through one instance and reads at once through another
//!   (the other service over HTTP, or the proxy over SQL on a connection
//!   bound to the user's session): 0 stale of 480 reads, judged by the
//!   account `version`, many of them on followers.
//! - The feed's lease is held by exactly one of the three, and the others
//!   send (almost) no polls of their own, as with one Redis.
//! - The .NET + Redis demo's key (`user:ID:last_write_utc`, another slot than the
//!   session's own keys) still counts: a session known only by it reads
//!   from the leader within the sticky window.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ryw_cluster::RedisClusterSpec;
use ryw_cluster::harness::TestCluster;
use ryw_proxy::{Proxy, ProxyConfig};
use ryw_router::{FeedConfig, NodeUrls, Router, TokenKey};
use ryw_service::{Service, ServiceConfig};
use serde_json::Value;
use tokio::task::JoinSet;

const KEY: &str = "redis cluster test key, sixteen bytes at least";
const USERS: usize = 30;
const PAYMENTS_PER_USER: usize = 16;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What every instance shares: the nodes, the token key, the Redis Cluster
/// for sessions and the feed.
fn nodes(cluster: &TestCluster) -> NodeUrls {
    NodeUrls {
        leader: cluster.leader_url(),
        followers: cluster.follower_urls(),
    }
}

/// A `ryw serve` in this process on a free port.
async fn serve(cluster: &TestCluster, url: &str) -> (SocketAddr, Router) {
    let mut cfg = ServiceConfig::new(nodes(cluster), TokenKey::from_secret(KEY).unwrap());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.allow_strategy_header = true;
    cfg.redis_url = Some(url.to_owned());
    cfg.router.feed = Some(FeedConfig::new(url));
    let service = Service::build(cfg).await.expect("ryw serve starts");
    let addr = service.local_addr();
    let router = service.state().router.clone();
    tokio::spawn(service.run_until_stopped(std::future::pending()));
    (addr, router)
}

/// A `ryw proxy` in this process on a free port.
async fn proxy(cluster: &TestCluster, url: &str) -> (SocketAddr, Router) {
    let mut cfg = ProxyConfig::new(nodes(cluster), TokenKey::from_secret(KEY).unwrap());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.redis_url = Some(url.to_owned());
    cfg.router.feed = Some(FeedConfig::new(url));
    let proxy = Proxy::build(cfg).await.expect("ryw proxy starts");
    let addr = proxy.local_addr();
    let router = proxy.router().clone();
    tokio::spawn(async move {
        let _ = proxy.run_until_stopped(std::future::pending()).await;
    });
    (addr, router)
}

async fn in_rotation(router: &Router) {
    let mut watch = router.watch_cluster();
    tokio::time::timeout(
        Duration::from_secs(20),
        watch.wait_for(|v| v.followers().all(|f| f.in_rotation)),
    )
    .await
    .expect("followers in rotation within 20 s")
    .expect("tracker running");
}

/// One HTTP call; the status and the JSON body.
async fn call(
    http: &reqwest::Client,
    addr: SocketAddr,
    method: reqwest::Method,
    path: &str,
    user: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let mut req = http
        .request(method, format!("http://{addr}{path}"))
        .header("x-demo-userid", user)
        .timeout(Duration::from_secs(10));
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_owned());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// How one read went.
#[derive(Debug, Default)]
struct Tally {
    reads: usize,
    stale: usize,
    by_node: HashMap<String, usize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_and_a_proxy_share_sessions_and_the_feed_through_a_redis_cluster() {
    let cluster =
        TestCluster::start_with_redis_cluster(&[ms(20), ms(50)], RedisClusterSpec::new(3, 1)).await;
    let url = cluster.redis_url().expect("a Redis Cluster");
    let (one, one_router) = serve(&cluster, &url).await;
    let (two, two_router) = serve(&cluster, &url).await;
    let (sql, proxy_router) = proxy(&cluster, &url).await;
    let routers = [one_router, two_router, proxy_router];
    for r in &routers {
        in_rotation(r).await;
        assert_eq!(r.store_backend(), "redis-cluster");
    }
    feed_is_held_by_one_and_the_others_do_not_poll(&routers).await;

    let ports: Arc<HashMap<i32, String>> = Arc::new(
        cluster
            .info()
            .nodes
            .iter()
            .map(|n| (i32::from(n.port), n.name.clone()))
            .collect(),
    );
    let http = reqwest::Client::new();
    let mut tasks = JoinSet::new();
    for u in 0..USERS {
        let (http, ports) = (http.clone(), ports.clone());
        tasks.spawn(async move {
            let user = uuid::Uuid::new_v4().to_string();
            let (status, _) = call(&http, one, reqwest::Method::POST, "/api/account", &user, None).await;
            assert!(status == 201 || status == 200, "account: {status}");
            let (client, conn) = tokio_postgres::Config::new()
                .host("127.0.0.1")
                .port(sql.port())
                .user("postgres")
                .dbname("ryw")
                // The proxy's named session is `postgres/<user>` in the
                // store (a named session belongs to its role), not the
                // services' `<user>`: what makes the services' payments
                // visible to it is scope `global` (the fleet-wide mark,
                // in a slot of its own on the Redis Cluster). Bound to
                // `<user>` alone, 5-39 of 480 reads were stale, all of
                // them here.
                .options(format!("-c ryw.session={user} -c ryw.scope=global"))
                .connect(tokio_postgres::NoTls)
                .await
                .expect("connect to the proxy");
            tokio::spawn(conn);
            let mut tally = Tally::default();
            for i in 0..PAYMENTS_PER_USER {
                // Pay through one service; read at once through the other
                // service or through the proxy.
                let (payer, other) = if (u + i) % 2 == 0 { (one, two) } else { (two, one) };
                let (status, paid) = call(
                    &http,
                    payer,
                    reqwest::Method::POST,
                    "/api/payments",
                    &user,
                    Some(r#"{"amount_cents": 1}"#),
                )
                .await;
                assert_eq!(status, 201, "payment: {paid}");
                let wrote = paid["version"].as_i64().expect("version");
                let (seen, node) = if i % 3 == 2 {
                    let row = client
                        .query_one(
                            "SELECT version, inet_server_port() FROM accounts WHERE user_id = $1::text::uuid",
                            &[&user],
                        )
                        .await
                        .expect("read through the proxy");
                    let port: Option<i32> = row.get(1);
                    let node = port
                        .and_then(|p| ports.get(&p).cloned())
                        .unwrap_or_else(|| format!("port {port:?}"));
                    (row.get::<_, i64>(0), node)
                } else {
                    let (status, read) =
                        call(&http, other, reqwest::Method::GET, "/api/balance", &user, None).await;
                    assert_eq!(status, 200, "balance: {read}");
                    (
                        read["version"].as_i64().expect("version"),
                        read["served_by"].as_str().unwrap_or("?").to_owned(),
                    )
                };
                tally.reads += 1;
                tally.stale += usize::from(seen < wrote);
                *tally.by_node.entry(node).or_default() += 1;
            }
            tally
        });
    }
    let mut total = Tally::default();
    while let Some(t) = tasks.join_next().await {
        let t = t.expect("a user task panicked");
        total.reads += t.reads;
        total.stale += t.stale;
        for (n, c) in t.by_node {
            *total.by_node.entry(n).or_default() += c;
        }
    }
    let errors: Vec<u64> = routers.iter().map(|r| r.metrics().store_errors).collect();
    eprintln!("{total:?}; session store errors per instance {errors:?}");
    assert_eq!(total.reads, USERS * PAYMENTS_PER_USER);
    assert!(total.reads >= 450);
    assert_eq!(total.stale, 0, "stale reads across instances: {total:?}");
    let on_followers: usize = total
        .by_node
        .iter()
        .filter(|(n, _)| n.starts_with("follower"))
        .map(|(_, c)| c)
        .sum();
    // Read at once after the write, so the leader serves those no
    // follower has yet (13–46% of the services' reads in runs on a busy
    // 2-core machine, 80% in one CI run) and nearly every scope-global
    // read through the proxy (the mark moves with every user's payment);
    // followers must still serve some, or the store is not being trusted.
    assert!(
        on_followers * 20 >= total.reads,
        "followers served too few reads: {total:?}"
    );

    a_seed_003_write_sends_its_session_to_the_leader(&http, two, &url).await;
}

/// Exactly one of the three holds the lease; over some second, each of the
/// others polls less than a quarter of what the holder does (a busy
/// machine may stall the feed for a moment, and a subscriber then polls,
/// by design).
async fn feed_is_held_by_one_and_the_others_do_not_poll(routers: &[Router]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let holder = loop {
        let holders: Vec<usize> = (0..routers.len())
            .filter(|&i| routers[i].metrics().feed_holder)
            .collect();
        if let [h] = holders[..] {
            break h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no single feed holder: {holders:?}"
        );
        tokio::time::sleep(ms(20)).await;
    };
    let mut seen = Vec::new();
    for _ in 0..5 {
        let before: Vec<u64> = routers.iter().map(|r| r.metrics().tracker_polls).collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rate: Vec<u64> = routers
            .iter()
            .zip(&before)
            .map(|(r, b)| r.metrics().tracker_polls - b)
            .collect();
        let messages: Vec<u64> = routers.iter().map(|r| r.metrics().feed_messages).collect();
        eprintln!("polls in 1 s: {rate:?} (holder {holder}); feed messages so far {messages:?}");
        if (0..routers.len()).all(|i| i == holder || rate[i] * 4 <= rate[holder]) {
            assert!(
                (0..routers.len()).all(|i| i == holder || messages[i] > 0),
                "every other instance hears the feed"
            );
            return;
        }
        seen.push(rate);
    }
    panic!("the others kept polling (holder {holder}): {seen:?}");
}

/// A user known only by the .NET + Redis demo's key, written just now by
/// that demo: the sticky window sends its fresh read to the
/// leader (hybrid), though that key lives on another shard than the
/// session's own; a user with no key at all reads from a follower.
async fn a_seed_003_write_sends_its_session_to_the_leader(
    http: &reqwest::Client,
    service: SocketAddr,
    url: &str,
) {
    let seeds: Vec<String> = url
        .trim_start_matches("redis+cluster://")
        .split(',')
        .map(|h| format!("redis://{h}/"))
        .collect();
    let redis = redis::cluster::ClusterClient::new(seeds).expect("cluster client");
    let mut con = redis
        .get_async_connection()
        .await
        .expect("cluster connection");
    for (seeded, expect_leader) in [(true, true), (false, false)] {
        let user = uuid::Uuid::new_v4().to_string();
        let (status, _) = call(
            http,
            service,
            reqwest::Method::POST,
            "/api/account",
            &user,
            None,
        )
        .await;
        assert!(status == 201 || status == 200);
        // Past the account's own write and its sticky window's reach:
        // only the demo's key can send the read to the leader.
        if seeded {
            let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            let _: () = redis::cmd("SET")
                .arg(format!("user:{user}:last_write_utc"))
                .arg(now.to_string())
                .query_async(&mut con)
                .await
                .expect("SET the seed key");
        }
        tokio::time::sleep(ms(300)).await;
        let (status, read) = call(
            http,
            service,
            reqwest::Method::GET,
            "/api/balance",
            &user,
            None,
        )
        .await;
        assert_eq!(status, 200, "{read}");
        let served_by = read["served_by"].as_str().unwrap_or("?");
        assert_eq!(
            served_by == "leader",
            expect_leader,
            "seed key {seeded}: served by {served_by}"
        );
    }
}
