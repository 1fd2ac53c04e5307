//! `ryw bench calibrate` through the real binary on a real cluster, with a
//! `--compare` service: one short round of every contender (pgbench, ryw,
//! the minimal no-routing server, the compared service), every figure and
//! every ratio in the JSON; and a compared service that cannot take the
//! same request stops the run with a message that says why.

use ryw_cluster::harness::TestCluster;
use ryw_router::{NodeUrls, TokenKey};
use ryw_service::{Service, ServiceConfig};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// A running `ryw serve` (in this process) on the test cluster: what
/// `--compare` measures.
async fn serve(cluster: &TestCluster, allow_strategy_header: bool) -> String {
    let nodes = NodeUrls {
        leader: cluster.leader_url(),
        followers: cluster.follower_urls(),
    };
    let mut cfg = ServiceConfig::new(nodes, TokenKey::generate());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.allow_strategy_header = allow_strategy_header;
    let service = Service::build(cfg).await.unwrap();
    let url = format!("http://{}", service.local_addr());
    // Stops with the test's runtime.
    tokio::spawn(service.run_until_stopped(std::future::pending()));
    url
}

async fn calibrate(dir: &Path, compare: &str) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ryw"))
        .args(["bench", "calibrate", "--cluster"])
        .arg(dir)
        .args(["--rounds", "1", "--duration", "1s", "--connections", "4"])
        .args(["--generator", "builtin", "--json", "--compare", compare])
        .output()
        .await
        .expect("running ryw")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calibrate_measures_ryw_the_minimal_server_pgbench_and_a_compared_service_in_one_run() {
    let cluster = TestCluster::start(&[Duration::ZERO]).await;
    let dir = cluster.dir();

    // Failures first (they stop before any measurement): nothing listening,
    // and a service that refuses the strategy header.
    let out = calibrate(&dir, "gone=http://127.0.0.1:9").await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--compare gone=http://127.0.0.1:9: cannot reach"),
        "{}",
        text(&out)
    );
    let strict = serve(&cluster, false).await;
    let out = calibrate(&dir, &format!("strict={strict}")).await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("must run with --allow-strategy-header"),
        "{}",
        text(&out)
    );

    let before = serve(&cluster, true).await;
    let out = calibrate(&dir, &format!("before={before}")).await;
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&json["rounds"], &json["generator"]),
        (&1.into(), &"builtin".into())
    );
    let names = |key: &str| -> Vec<String> {
        json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("series"), ["pgbench", "ryw", "minimal", "before"]);
    assert_eq!(
        names("ratios"),
        [
            "ryw/minimal",
            "minimal/pgbench",
            "ryw/pgbench",
            "before/ryw"
        ]
    );
    // Every contender answered (a non-2xx answer or an error stops the run)
    // and so every ratio has its round.
    for key in ["series", "ratios"] {
        for s in json[key].as_array().unwrap() {
            let first = s["rounds"][0].as_f64().unwrap_or(0.0);
            assert!(first > 0.0 && s["median"] == s["rounds"][0], "{s}");
        }
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    for name in ["pgbench -S", "ryw", "minimal", "before"] {
        assert!(
            stderr.contains(&format!("round 1: {name}: ")),
            "{name}: {stderr}"
        );
    }
}

/// `ryw bench spread` on three followers (20, 50, 100 ms) while payments
/// go on: by load every follower serves a good part of the fresh reads;
/// the old least-lagged choice gives follower1 most of them. One short
/// round, the built-in generator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spread_measures_both_follower_choices_and_each_followers_share() {
    let ms = Duration::from_millis;
    let cluster = TestCluster::start(&[ms(20), ms(50), ms(100)]).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ryw"))
        .args(["bench", "spread", "--cluster"])
        .arg(cluster.dir())
        .args(["--rounds", "1", "--duration", "2s", "--connections", "8"])
        .args(["--users", "300", "--writes", "50"])
        .args(["--generator", "builtin", "--json"])
        .output()
        .await
        .expect("running ryw");
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = json["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["load", "least-lagged"], "{json}");
    assert!(
        json["series"][0]["median"].as_f64().unwrap() > 0.0,
        "{json}"
    );
    let share = |choice: &str| -> Vec<f64> {
        json["follower_share_pct"][choice]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let (load, old) = (share("load"), share("least-lagged"));
    assert!((load.iter().sum::<f64>() - 100.0).abs() < 0.5, "{json}");
    assert!(load.iter().all(|&p| p >= 15.0), "by load: {load:?}");
    assert!(old[0] > 60.0, "least-lagged: {old:?}");
}
