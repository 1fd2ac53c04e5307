//! A short real bench run: a real cluster (lags 100 ms / 400 ms), the real
//! service, every strategy at once. `legacy` must show stale reads; the
//! strategies that promise read-your-writes must show none — judged by the
//! checker from versions, never from `served_by`. A read that finds nothing
//! (404 from a follower that has not replayed the account's or profile's
//! creation) is a stale read too, not an error: no strategy has errors.

use ryw_bench::{BenchConfig, StrategySpec, Think};
use ryw_cluster::harness::TestCluster;
use ryw_router::{NodeUrls, TokenKey};
use ryw_service::{Service, ServiceConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_bench_finds_stale_reads_only_under_legacy() {
    let cluster =
        TestCluster::start(&[Duration::from_millis(100), Duration::from_millis(400)]).await;
    let nodes = NodeUrls {
        leader: cluster.leader_url(),
        followers: cluster.follower_urls(),
    };
    let mut cfg = ServiceConfig::new(nodes, TokenKey::generate());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.allow_strategy_header = true;
    let service = Service::build(cfg).await.unwrap();
    let addr = service.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    let bench = BenchConfig {
        targets: vec![format!("http://{addr}")],
        strategies: StrategySpec::parse_list(
            "leader,legacy,sticky:5s,causal,causal:0ms,hybrid,per-read-check",
        )
        .unwrap(),
        users: 21,
        duration: Duration::from_secs(8),
        // Short think times: most reads land inside the followers' lag.
        think: "0ms..200ms".parse::<Think>().unwrap(),
        cluster_dir: Some(cluster.dir()),
        progress: false,
        ..BenchConfig::default()
    };
    let report = ryw_bench::run(bench, std::future::pending()).await.unwrap();
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();

    let by = |name: &str| {
        report
            .strategies
            .iter()
            .find(|s| s.strategy == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let legacy = by("legacy");
    assert!(
        legacy.ryw_violations > 0,
        "legacy showed no stale read:\n{}",
        report.table()
    );
    assert_eq!(legacy.errors, 0, "legacy had errors:\n{}", report.table());
    for name in [
        "leader",
        "sticky:5s",
        "causal",
        "causal:0ms",
        "hybrid",
        "per-read-check",
    ] {
        let s = by(name);
        assert!(s.reads >= 50, "{name}: only {} reads", s.reads);
        assert_eq!(
            (s.ryw_violations, s.monotonic_violations),
            (0, 0),
            "{name}:\n{}",
            report.table()
        );
        assert_eq!(s.errors, 0, "{name} had errors:\n{}", report.table());
    }
    assert_eq!(by("leader").leader_share, 1.0);
    assert!(
        by("causal:0ms").leader_share < 1.0,
        "causal never used a follower:\n{}",
        report.table()
    );
    let oracle = report.oracle.as_ref().expect("oracle line");
    assert!(oracle.share > 0.0 && oracle.share < 1.0);
    // The configured delays come from the cluster folder (`ClusterInfo`).
    assert_eq!(
        (oracle.delay_ms, oracle.source.contains("cluster.json")),
        (100.0, true),
        "{oracle:?}"
    );
    let delays: Vec<_> = report
        .followers
        .iter()
        .map(|f| f.configured_delay_ms)
        .collect();
    assert_eq!(delays, [Some(100), Some(400)]);
}
