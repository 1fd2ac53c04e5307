//! The example on a real cluster (a primary and two streaming followers
//! whose replay is delayed 100 ms and 400 ms): 300 write-then-read pairs,
//! each read sent the moment its write was answered, and not one returns an
//! older status than the one the test just wrote. Judged by the text the
//! test wrote, never by the server's word for where it read.
//!
//! The router runs `causal` (a follower that has replayed the write, after
//! a bounded wait, else the leader), so that followers serve most of the
//! reads: a router that sent every read to the leader would also pass the
//! stale count, and the test checks that it does not.

use std::sync::Arc;
use std::time::Duration;

use ryw_cluster::harness::TestCluster;
use ryw_example_status::{SCHEMA, Status, app};
use ryw_router::{MemoryStore, NodeUrls, Router, RouterConfig, SessionKey, Strategy, TokenKey};

const USERS: usize = 10;
const PAIRS_PER_USER: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_write_then_read_pairs_never_read_an_older_status() {
    let cluster =
        TestCluster::start(&[Duration::from_millis(100), Duration::from_millis(400)]).await;
    let urls = NodeUrls {
        leader: cluster.leader_url(),
        followers: cluster.follower_urls(),
    };
    let cfg = RouterConfig {
        default_strategy: Strategy::Causal,
        ..RouterConfig::default()
    };
    let db = Router::connect(cfg, urls, Arc::new(MemoryStore::default()))
        .await
        .expect("router");
    let setup = SessionKey::new("setup").unwrap();
    let schema = db.write_query(&setup, SCHEMA, &[]).await.expect("schema");
    assert!(
        db.wait_replayed(schema.token.lsn, Duration::from_secs(10))
            .await,
        "the followers replay the schema"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/status", listener.local_addr().unwrap());
    let server =
        tokio::spawn(async move { axum::serve(listener, app(db, TokenKey::generate())).await });

    let http = reqwest::Client::new();
    let mut users = tokio::task::JoinSet::new();
    for u in 0..USERS {
        let (http, base) = (http.clone(), base.clone());
        users.spawn(async move {
            let user = format!("user-{u}");
            let (mut stale, mut by_node) = (Vec::new(), std::collections::BTreeMap::new());
            for i in 0..PAIRS_PER_USER {
                let text = format!("{user} status {i}");
                let put = http
                    .put(&base)
                    .header("x-user", &user)
                    .body(text.clone())
                    .send()
                    .await
                    .expect("PUT");
                assert_eq!(put.status(), 200, "{:?}", put.text().await);
                assert!(put.headers().contains_key("x-consistency-token"));
                let got: Status = http
                    .get(&base)
                    .header("x-user", &user)
                    .send()
                    .await
                    .expect("GET")
                    .json()
                    .await
                    .expect("a status");
                if got.text.as_deref() != Some(text.as_str()) {
                    stale.push(format!(
                        "wrote {text:?}, read {:?} from {}",
                        got.text, got.served_by
                    ));
                }
                *by_node.entry(got.served_by).or_insert(0) += 1;
            }
            (stale, by_node)
        });
    }
    let (mut stale, mut by_node) = (Vec::new(), std::collections::BTreeMap::new());
    while let Some(r) = users.join_next().await {
        let (s, n) = r.expect("a user panicked");
        stale.extend(s);
        for (node, count) in n {
            *by_node.entry(node).or_insert(0) += count;
        }
    }
    server.abort();
    eprintln!(
        "{} pairs, reads served by {by_node:?}",
        USERS * PAIRS_PER_USER
    );
    assert_eq!(
        by_node.values().sum::<usize>(),
        USERS * PAIRS_PER_USER,
        "every pair read back"
    );
    assert!(
        stale.is_empty(),
        "{} stale reads:\n{}",
        stale.len(),
        stale.join("\n")
    );
    let on_leader = by_node.get("leader").copied().unwrap_or(0);
    assert!(
        on_leader * 2 < USERS * PAIRS_PER_USER,
        "followers served most reads: {by_node:?}"
    );
}
