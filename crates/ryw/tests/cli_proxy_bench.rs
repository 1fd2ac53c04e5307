//! The bench through a SQL front, through the real binary on a real
//! cluster (lags 100 ms / 400 ms): `ryw bench --cluster D --proxy` starts
//! `ryw proxy` in-process, creates the service's tables with the service's
//! migrations, and judges reads on the paying connection and on another
//! one bound to the same `ryw.session`; `ryw bench peers` puts Pgpool-II
//! beside it on the same cluster. Figures are the machine's: the test
//! checks the rows are there, that no strategy promising read-your-writes
//! broke it, and that nothing is left running.

use ryw_cluster::harness::TestCluster;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

async fn ryw(args: &[&str], dir: &Path) -> Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_ryw"))
        .args(args)
        .arg("--cluster")
        .arg(dir)
        .args(["--json", "-", "--quiet"])
        .output()
        .await
        .expect("running ryw");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ryw {args:?} failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// The report's row `name`: (reads, stale, non-monotonic, errors, leader share).
fn row(report: &Value, name: &str) -> (u64, u64, u64, u64, f64) {
    let s = report["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["strategy"] == name)
        .unwrap_or_else(|| panic!("no row {name} in {report:#}"));
    let n = |k: &str| s[k].as_u64().unwrap();
    (
        n("reads"),
        n("ryw_violations"),
        n("monotonic_violations"),
        n("errors"),
        s["leader_share"].as_f64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_through_the_proxy_and_beside_pgpool_on_one_cluster() {
    let cluster =
        TestCluster::start(&[Duration::from_millis(100), Duration::from_millis(400)]).await;
    let dir = cluster.dir();
    let common = ["--duration", "4s", "--users", "8", "--think", "0ms..200ms"];

    let mut args = vec!["bench", "--proxy", "--strategies", "legacy,causal"];
    args.extend(["--read-on", "both"]);
    args.extend(common);
    let report = ryw(&args, &dir).await;
    for name in ["legacy/same", "legacy/other", "causal/same", "causal/other"] {
        let (reads, _, _, errors, _) = row(&report, name);
        assert!(reads >= 10, "{name}: {reads} reads");
        assert_eq!(errors, 0, "{name} had errors");
    }
    for name in ["causal/same", "causal/other"] {
        let (_, stale, non_mono, _, _) = row(&report, name);
        assert_eq!((stale, non_mono), (0, 0), "{name}");
    }
    // The lag came from the nodes themselves (no /api/cluster here).
    assert_eq!(report["followers"].as_array().unwrap().len(), 2);

    let mut args = vec!["bench", "peers", "--strategies", "causal"];
    args.extend(["--delay-threshold", "10000000"]);
    args.extend(common);
    let report = ryw(&args, &dir).await;
    for name in [
        "pgpool/same",
        "pgpool/other",
        "ryw-causal/same",
        "ryw-causal/other",
    ] {
        let (reads, _, _, errors, _) = row(&report, name);
        assert!(reads >= 10, "{name}: {reads} reads");
        assert_eq!(errors, 0, "{name} had errors");
    }
    for name in ["ryw-causal/same", "ryw-causal/other"] {
        let (_, stale, non_mono, _, _) = row(&report, name);
        assert_eq!((stale, non_mono), (0, 0), "{name}");
    }
    // Pgpool-II ran from the cluster's folder, and no process of it is left.
    let conf = dir.join("pgpool-10000000/pgpool.conf");
    assert!(conf.exists(), "no {}", conf.display());
    let conf = conf.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !cmdline.contains(&conf),
            "still running: {} {cmdline}",
            entry.path().display()
        );
    }
}
