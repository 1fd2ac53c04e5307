//! The shared position feed across real `ryw serve` processes (README,
//! "Several instances: the position feed"): three instances on one cluster
//! with Redis; the one holding the feed's lease is killed with SIGKILL (no
//! chance to give the lease back);
//! another takes over within a second, and fresh reads through the
//! survivors stay fresh throughout, judged by the account `version`.

use rand::Rng;
use ryw_cluster::harness::{TestCluster, TestClusterOptions};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const KEY: &str = "feed test key of at least sixteen bytes";

/// A `ryw serve` child process, killed on drop.
struct Serve {
    child: Child,
    port: u16,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts `ryw serve --cluster DIR` (the cluster's Redis, so the feed
    /// is on) and waits until it answers `/readyz`.
    async fn start(dir: &str, http: &reqwest::Client) -> Serve {
        for _ in 0..5 {
            let port = rand::rng().random_range(20_000..31_000u16);
            let child = Command::new(env!("CARGO_BIN_EXE_ryw"))
                .args(["serve", "--cluster", dir, "--allow-strategy-header"])
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .env("RYW_TOKEN_KEY", KEY)
                .env_remove("RYW_REDIS_URL")
                .env_remove("RYW_FEED")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("running ryw serve");
            let mut serve = Serve { child, port };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if serve.child.try_wait().unwrap().is_some() {
                    break; // the port was taken: another one
                }
                let ready = http.get(format!("{}/readyz", serve.base())).send().await;
                if ready.is_ok_and(|r| r.status() == 200) {
                    return serve;
                }
                assert!(Instant::now() < deadline, "ryw serve never became ready");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        panic!("no free port for ryw serve after 5 tries");
    }
}

/// One sample of `name` (no labels) from an instance's `/metrics`.
async fn metric(http: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name || k == format!("{name}_total")).then(|| v.trim().parse().ok())?
    })
}

/// The index of the one instance holding the lease, once exactly one does.
async fn holder(http: &reqwest::Client, bases: &[String], limit: Duration) -> usize {
    let t = Instant::now();
    loop {
        let mut holders = Vec::new();
        for (i, b) in bases.iter().enumerate() {
            if metric(http, b, "ryw_feed_holder").await == Some(1.0) {
                holders.push(i);
            }
        }
        if let [h] = holders[..] {
            return h;
        }
        assert!(
            t.elapsed() < limit,
            "no single feed holder after {limit:?}: {holders:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn polls(http: &reqwest::Client, base: &str) -> f64 {
    metric(http, base, "ryw_tracker_polls")
        .await
        .expect("ryw_tracker_polls")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_feed_holder_is_replaced_within_a_second_and_reads_stay_fresh() {
    let cluster = TestCluster::start_with(TestClusterOptions {
        lags: vec![Duration::from_millis(30), Duration::from_millis(60)],
        redis: true,
    })
    .await;
    let dir = cluster.dir();
    let dir = dir.to_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let mut serves = Vec::new();
    for _ in 0..3 {
        serves.push(Some(Serve::start(&dir, &http).await));
    }
    let bases: Vec<String> = serves.iter().map(|s| s.as_ref().unwrap().base()).collect();

    // One holder; the others send (almost) no polls of their own: in some
    // 1 s window (a loaded machine can stall the feed for a moment, and a
    // subscriber then polls, by design) each polls under a quarter of the
    // holder's.
    let h = holder(&http, &bases, Duration::from_secs(5)).await;
    quiet_subscribers(&http, &bases, h).await;

    // Reads through the survivors, before, over and after the kill.
    let survivors: Vec<String> = (0..3)
        .filter(|&i| i != h)
        .map(|i| bases[i].clone())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let stale = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let on_followers = Arc::new(AtomicU64::new(0));
    let reader = {
        let (http, stop, stale, reads, on_followers) = (
            http.clone(),
            stop.clone(),
            stale.clone(),
            reads.clone(),
            on_followers.clone(),
        );
        let survivors = survivors.clone();
        tokio::spawn(async move {
            let user = uuid::Uuid::new_v4().to_string();
            let post = |path: &str| {
                http.post(format!("{}{path}", survivors[0]))
                    .header("x-demo-userid", &user)
                    .header("content-type", "application/json")
            };
            post("/api/account").send().await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                let paid: serde_json::Value = post("/api/payments")
                    .body(r#"{"amount_cents": 1}"#)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let version = paid["version"].as_i64().expect("payment version");
                for base in &survivors {
                    let r = http
                        .get(format!("{base}/api/balance"))
                        .header("x-demo-userid", &user)
                        .header("x-read-strategy", "causal")
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    let served = r.headers()["x-served-by"].to_str().unwrap().to_owned();
                    let body: serde_json::Value = r.json().await.unwrap();
                    reads.fetch_add(1, Ordering::Relaxed);
                    if body["version"].as_i64().unwrap() < version {
                        stale.fetch_add(1, Ordering::Relaxed);
                    }
                    if served != "leader" {
                        on_followers.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;

    // SIGKILL: the lease is not given back; it must expire and be taken.
    let killed_at = Instant::now();
    drop(serves[h].take());
    let new_holder = holder(&http, &survivors, Duration::from_secs(3)).await;
    let takeover = killed_at.elapsed();
    println!("takeover by survivor {new_holder} after {takeover:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let followers_before_end = on_followers.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    reader.await.expect("the reader ran to the end");

    let (stale, reads, on_followers) = (
        stale.load(Ordering::Relaxed),
        reads.load(Ordering::Relaxed),
        on_followers.load(Ordering::Relaxed),
    );
    println!(
        "{reads} fresh reads through the survivors, {on_followers} on followers, {stale} stale"
    );
    assert!(
        takeover < Duration::from_secs(1),
        "takeover took {takeover:?}"
    );
    assert_eq!(stale, 0, "stale fresh reads over the takeover");
    assert!(reads >= 20, "too few reads to judge: {reads}");
    assert!(
        on_followers > followers_before_end,
        "no fresh read reached a follower after the takeover"
    );
    // The new holder polls; the other survivor lives on its feed again.
    quiet_subscribers(&http, &survivors, new_holder).await;
}

/// Asserts that, in one of five 1 s windows, every instance but `holder`
/// sent under a quarter of the holder's polls (and received its feed).
async fn quiet_subscribers(http: &reqwest::Client, bases: &[String], holder: usize) {
    let mut seen = Vec::new();
    for _ in 0..5 {
        let before = futures_join(http, bases).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = futures_join(http, bases).await;
        let rate: Vec<f64> = before.iter().zip(&after).map(|(b, a)| a - b).collect();
        let mut feed = Vec::new();
        for b in bases {
            feed.push((
                metric(http, b, "ryw_feed_messages").await,
                metric(http, b, "ryw_feed_fallbacks").await,
            ));
        }
        println!(
            "polls in 1 s per instance: {rate:?} (holder {holder}); feed messages, fallbacks: {feed:?}"
        );
        if (0..bases.len()).all(|i| i == holder || rate[i] * 4.0 <= rate[holder]) {
            return;
        }
        seen.push(rate);
    }
    panic!("subscribers kept polling (holder {holder}): {seen:?}");
}

/// Every instance's poll counter, in order.
async fn futures_join(http: &reqwest::Client, bases: &[String]) -> Vec<f64> {
    let mut out = Vec::new();
    for b in bases {
        out.push(polls(http, b).await);
    }
    out
}
