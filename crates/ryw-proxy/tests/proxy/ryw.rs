//! Read-your-writes and monotonic reads through the proxy.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::support::{Ctx, Setup, connect_to, read, start_proxy, write};

/// Write-then-read pairs: `pairs` per task, `tasks` at once. `same`:
/// write and read on one connection; else the write on one connection and
/// the read on another bound to the same `ryw.session`. Returns (stale
/// reads with what they saw, reads by node).
async fn pairs(
    ctx: &Ctx,
    label: &str,
    tasks: usize,
    pairs: usize,
    same: bool,
    strategy: &str,
) -> (Vec<String>, BTreeMap<String, usize>) {
    let mut set = JoinSet::new();
    for t in 0..tasks {
        let session = format!("{label}-{t}");
        let (w, r) = if same {
            (ctx.client().await, None)
        } else {
            (
                ctx.client_in(&session).await,
                Some(ctx.client_in(&session).await),
            )
        };
        for c in std::iter::once(&w).chain(r.as_ref()) {
            c.batch_execute(&format!("SET ryw.strategy = '{strategy}'"))
                .await
                .expect("SET ryw.strategy");
        }
        let ports = ctx.node_names();
        set.spawn(async move {
            let reader = r.as_ref().unwrap_or(&w);
            let (mut stale, mut by_node) = (Vec::new(), BTreeMap::new());
            for i in 1..=pairs as i64 {
                write(&w, &session, i).await;
                let (v, port) = read(reader, &session).await;
                let node = ports.name(port);
                if v < i {
                    stale.push(format!("{session}: wrote {i}, read {v} on {node}"));
                }
                *by_node.entry(node).or_insert(0) += 1;
            }
            (stale, by_node)
        });
    }
    let (mut stale, mut by_node) = (Vec::new(), BTreeMap::new());
    while let Some(r) = set.join_next().await {
        let (s, n) = r.expect("a pair task panicked");
        stale.extend(s);
        for (node, c) in n {
            *by_node.entry(node).or_insert(0) += c;
        }
    }
    eprintln!(
        "{label}: {} pairs, {} stale, reads by node {by_node:?}",
        tasks * pairs,
        stale.len()
    );
    (stale, by_node)
}

fn followers_served(by_node: &BTreeMap<String, usize>) -> usize {
    by_node
        .iter()
        .filter(|(n, _)| n.starts_with("follower"))
        .map(|(_, c)| c)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_a_write_sees_it_on_the_same_connection_and_on_another_bound_to_the_session() {
    let ctx = Ctx::start(Setup::default()).await;

    let (stale, by_node) = pairs(&ctx, "same", 10, 100, true, "causal").await;
    assert!(
        stale.is_empty(),
        "{} stale:\n{}",
        stale.len(),
        stale.join("\n")
    );
    assert!(
        followers_served(&by_node) * 2 > 1000,
        "followers served most reads: {by_node:?}"
    );

    let (stale, by_node) = pairs(&ctx, "across", 10, 100, false, "causal").await;
    assert!(
        stale.is_empty(),
        "{} stale:\n{}",
        stale.len(),
        stale.join("\n")
    );
    assert!(followers_served(&by_node) * 2 > 1000, "{by_node:?}");

    // The default strategy keeps it too.
    let (stale, _) = pairs(&ctx, "default", 4, 25, false, "hybrid").await;
    assert!(stale.is_empty(), "{}", stale.join("\n"));

    // Without a strategy that keeps it, the problem shows: `legacy` reads a
    // random follower right after the write.
    let (stale, _) = pairs(&ctx, "legacy", 4, 25, false, "legacy").await;
    assert!(
        stale.len() > 10,
        "legacy must read stale right after writes at 100/400 ms lag, got {}",
        stale.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_threads_keep_read_your_writes_on_one_connection_and_across_connections() {
    // Clients handed in turn to the test's runtime and to two relay threads
    // of the proxy's own; named sessions in Redis, whose connection lives
    // on the test's runtime.
    let ctx = Ctx::start(Setup {
        threads: 3,
        redis: true,
        ..Setup::default()
    })
    .await;
    for (label, same) in [("threads-same", true), ("threads-across", false)] {
        let (stale, by_node) = pairs(&ctx, label, 6, 50, same, "causal").await;
        assert!(
            stale.is_empty(),
            "{} stale:\n{}",
            stale.len(),
            stale.join("\n")
        );
        assert!(
            followers_served(&by_node) * 2 > 300,
            "followers served most reads: {by_node:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_proxy_is_read_through_another_sharing_redis() {
    let setup = Setup {
        redis: true,
        ..Setup::default()
    };
    let ctx = Ctx::start(setup.clone()).await;
    let second = start_proxy(&ctx.cluster, &setup, ctx.key.clone()).await;
    let ports = ctx.node_names();
    let mut set = JoinSet::new();
    for t in 0..4 {
        let session = format!("two-proxies-{t}");
        let w = ctx.client_in(&session).await;
        let r = connect_to(second.addr, &format!("-c ryw.session={session}")).await;
        for c in [&w, &r] {
            c.batch_execute("SET ryw.strategy = 'causal'")
                .await
                .unwrap();
        }
        let ports = ports.clone();
        set.spawn(async move {
            let mut stale = Vec::new();
            let mut on_followers = 0;
            for i in 1..=50 {
                write(&w, &session, i).await;
                let (v, port) = read(&r, &session).await;
                if v < i {
                    stale.push(format!(
                        "{session}: wrote {i}, read {v} on {}",
                        ports.name(port)
                    ));
                }
                on_followers += usize::from(ports.name(port).starts_with("follower"));
            }
            (stale, on_followers)
        });
    }
    let (mut stale, mut on_followers) = (Vec::new(), 0);
    while let Some(r) = set.join_next().await {
        let (s, f) = r.unwrap();
        stale.extend(s);
        on_followers += f;
    }
    eprintln!(
        "two proxies: 200 pairs, {} stale, {on_followers} on followers",
        stale.len()
    );
    assert!(stale.is_empty(), "{}", stale.join("\n"));
    // Followers serve a good share (so 0 stale is not the leader's doing):
    // more than 100 of 200 in the runs before; a causal wait that runs out of
    // its 200 ms budget on a loaded one goes to the leader (99 at a load
    // average of 16).
    assert!(
        on_followers > 40,
        "followers served a good share of reads: {on_followers}"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_never_reads_an_older_version_across_followers() {
    let setup = Setup {
        lags: vec![Duration::ZERO, Duration::from_millis(150)],
        ..Setup::default()
    };
    let ctx = Ctx::start(setup).await;
    let writer = ctx.client().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut v = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                v += 1;
                write(&writer, "counter", v).await;
            }
            v
        })
    };
    let ports = ctx.node_names();
    let mut readers = JoinSet::new();
    // Three readers whose strategies keep tokens, and a control reader on
    // `legacy` (a random follower, no token): the control shows that the
    // test sees a regression when there is one.
    for (n, strategy) in [
        (0, "causal:20ms"),
        (1, "causal:0ms"),
        (2, "hybrid"),
        (3, "legacy"),
    ] {
        let c = ctx.client().await;
        c.batch_execute(&format!("SET ryw.strategy = '{strategy}'"))
            .await
            .unwrap();
        let ports = ports.clone();
        readers.spawn(async move {
            let (mut newest, mut regressions, mut by_node) = (0, Vec::new(), BTreeMap::new());
            for i in 0..100 {
                let (v, port) = read(&c, "counter").await;
                let node = ports.name(port);
                if v < newest {
                    regressions.push(format!("reader {n} read {i}: {v} on {node} after {newest}"));
                }
                newest = newest.max(v);
                *by_node.entry(node).or_insert(0) += 1;
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
            (strategy == "legacy", regressions, by_node)
        });
    }
    let (mut regressions, mut control, mut by_node) = (Vec::new(), Vec::new(), BTreeMap::new());
    while let Some(r) = readers.join_next().await {
        let (is_control, reg, n) = r.unwrap();
        if is_control {
            control.extend(reg);
            continue;
        }
        regressions.extend(reg);
        for (node, c) in n {
            *by_node.entry(node).or_insert(0) += c;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let versions = writing.await.unwrap();
    eprintln!(
        "{versions} versions; 300 reads by node {by_node:?}; {} regressions; {} in the legacy \
         control reader's 100",
        regressions.len(),
        control.len()
    );
    assert!(
        !control.is_empty(),
        "the legacy control reader saw no regression: the test could not see one"
    );
    let on_followers: Vec<&String> = regressions
        .iter()
        .filter(|r| !r.contains("on leader"))
        .collect();
    assert!(on_followers.is_empty(), "{}", regressions.join("\n"));
    assert!(
        by_node.get("follower1").is_some_and(|&c| c > 0),
        "reads must land on followers for this to show anything: {by_node:?}"
    );
}
