//! The engine's bookkeeping against the in-process fake of the service
//! ([`super::fake`]).

use super::fake::{Fake, spawn_instance};
use super::*;
use crate::config::{StrategySpec, Think};
use crate::history::OpKind;
use std::collections::{BTreeSet, HashMap};

fn config(targets: Vec<String>) -> BenchConfig {
    BenchConfig {
        targets,
        strategies: StrategySpec::parse_list("leader,legacy,causal").unwrap(),
        users: 6,
        duration: Duration::from_millis(1500),
        think: Think::Fixed(Duration::from_millis(5)),
        profile_every: 2,
        products_every: 1,
        progress: false,
        ..BenchConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_records_every_answered_request_and_the_checker_finds_the_two_stale_reads() {
    let fake = Arc::new(Fake::default());
    let targets = vec![
        spawn_instance(0, fake.clone()).await,
        spawn_instance(1, fake.clone()).await,
    ];
    let report = run(config(targets), std::future::pending()).await.unwrap();
    let ops = &report.history.ops;

    // The stale balance and the stale 404 of /api/me, attributed to
    // legacy, neither an error; nothing else.
    assert!(
        fake.stale_served.load(Relaxed) && fake.nothing_served.load(Relaxed),
        "the fake served its stale read and its stale 404"
    );
    assert_eq!(
        (report.ryw_violations, report.monotonic_violations),
        (2, 0),
        "{}",
        report.table()
    );
    let mut found: Vec<_> = report.violations.iter().collect();
    found.sort_by_key(|v| v.read);
    let [balance, me] = &found[..] else {
        panic!("{}", report.table())
    };
    assert_eq!(
        (balance.strategy.as_str(), balance.read, balance.version),
        ("legacy", OpKind::Balance, Some(balance.expected - 1)),
        "one version behind"
    );
    assert_eq!(
        (me.strategy.as_str(), me.read, me.version),
        ("legacy", OpKind::Me, None),
        "found nothing"
    );
    let nothing = ops
        .iter()
        .find(|o| o.found_nothing())
        .expect("the 404 is in the history");
    assert_eq!(
        (
            nothing.kind,
            nothing.problem.as_deref(),
            nothing.served_by.as_deref()
        ),
        (OpKind::Me, Some("no-profile"), Some("follower1"))
    );

    // Every strategy ran at once, on both instances, through the header.
    let names: Vec<&str> = report
        .strategies
        .iter()
        .map(|s| s.strategy.as_str())
        .collect();
    assert_eq!(names, ["leader", "legacy", "causal"]);
    assert_eq!(
        *fake.strategies.lock().unwrap(),
        BTreeSet::from(["causal".to_string(), "leader".into(), "legacy".into()])
    );
    assert!(
        fake.hits.iter().all(|h| h.load(Relaxed) > 10),
        "both instances served"
    );
    for s in &report.strategies {
        assert_eq!(s.users, 2, "{}", s.strategy);
        assert!(
            s.reads > 10 && s.writes > 10 && s.stale_ok_reads > 5,
            "{s:?}"
        );
        assert_eq!(s.errors, 0, "{s:?}");
    }
    let [leader, legacy, causal] = &report.strategies[..] else {
        panic!()
    };
    assert_eq!((leader.leader_share, legacy.leader_share), (1.0, 0.0));
    assert_eq!((causal.waits, causal.mean_wait_ms), (causal.reads, 3.0));
    assert_eq!((legacy.ryw_violations, legacy.stale_not_found), (2, 1));

    // The browser behaviour: the latest token echoed every time, fresh idempotency keys.
    assert_eq!(fake.token_mismatches.load(Relaxed), 0);
    assert!(fake.tokens_received.load(Relaxed) > 0);
    assert_eq!(fake.duplicate_keys.load(Relaxed), 0);

    // Bookkeeping: every answered request is in the history (a request
    // cut off at the deadline may have reached the server: at most one
    // per user), and each user's payments carry 1, 2, 3, …
    let pays = ops.iter().filter(|o| o.kind == OpKind::Pay).count() as u64;
    let server_pays = fake.payments.load(Relaxed);
    assert!(
        pays <= server_pays && server_pays <= pays + 6,
        "{pays} recorded, {server_pays} served"
    );
    let balances = ops.iter().filter(|o| o.kind == OpKind::Balance).count() as u64;
    let server_balances = fake.balance_reads.load(Relaxed);
    assert!(balances <= server_balances && server_balances <= balances + 6);
    let mut by_user: HashMap<&str, Vec<u64>> = HashMap::new();
    for o in ops.iter().filter(|o| o.kind == OpKind::Pay) {
        by_user.entry(&o.user).or_default().push(o.version.unwrap());
    }
    for versions in by_user.values() {
        assert_eq!(*versions, (1..=versions.len() as u64).collect::<Vec<_>>());
    }
    assert!(
        ops.iter()
            .all(|o| o.recv_us >= o.sent_us && o.recv_us <= (report.elapsed_s * 1e6) as u64 + 1000)
    );
    assert!(
        ops.iter()
            .any(|o| o.kind == OpKind::Me && o.version.is_some())
    );

    // Lag samples from /api/cluster, and the oracle from them.
    let f = &report.followers[0];
    assert_eq!((f.node.as_str(), f.median_ms), ("follower1", 100.0));
    assert!(f.samples >= 3, "{f:?}");
    assert_eq!(report.oracle.as_ref().unwrap().delay_ms, 100.0);
    assert!(!report.interrupted && (1.4..3.0).contains(&report.elapsed_s));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_stop_still_reports_and_no_token_sends_none() {
    let fake = Arc::new(Fake::default());
    let target = spawn_instance(0, fake.clone()).await;
    let cfg = BenchConfig {
        duration: Duration::from_secs(60),
        send_token: false,
        ..config(vec![target])
    };
    let started = Instant::now();
    let report = run(cfg, tokio::time::sleep(Duration::from_millis(400)))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped promptly"
    );
    assert!(report.interrupted);
    assert!(report.strategies.iter().all(|s| s.reads > 0));
    assert_eq!(fake.tokens_received.load(Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_strategy_header_stops_the_bench_before_it_starts() {
    let fake = Arc::new(Fake {
        refuse_strategy: Some("causal".into()),
        ..Fake::default()
    });
    let target = spawn_instance(0, fake.clone()).await;
    let err = run(config(vec![target]), std::future::pending())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BenchError::Target { detail, .. } if detail.contains("X-Read-Strategy: causal") && detail.contains("unknown-strategy")),
        "{err}"
    );
    assert_eq!(fake.payments.load(Relaxed), 0);
    let unreachable = run(
        config(vec!["http://127.0.0.1:9".into()]),
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(
        unreachable.to_string().contains("cannot reach"),
        "{unreachable}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_loop_keeps_to_its_arrival_rate() {
    let fake = Arc::new(Fake::default());
    let target = spawn_instance(0, fake.clone()).await;
    let cfg = BenchConfig {
        load: Load::Open {
            iterations_per_s: 60.0,
        },
        duration: Duration::from_secs(1),
        ..config(vec![target])
    };
    let report = run(cfg, std::future::pending()).await.unwrap();
    let pays = report
        .history
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::Pay)
        .count();
    // 60/s over 1 s, split over 3 groups; the first tick of each group fires at once.
    assert!((20..=66).contains(&pays), "{pays} iterations");
    assert_eq!(report.load.as_deref(), Some("open:60"));
    assert_eq!((report.ryw_violations, report.monotonic_violations), (2, 0));
}
