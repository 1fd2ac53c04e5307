//! `ryw cluster up | status | lag | down` through the real binary.

use rand::Rng;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn ryw(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ryw"))
        .args(args)
        .output()
        .expect("running ryw")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn cluster_commands_bring_up_report_change_lag_and_tear_down() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("c");
    let dir = dir.to_str().unwrap();
    // A random block below 32768; retry on a lost port race.
    let mut up = None;
    for _ in 0..5 {
        let port = rand::rng().random_range(20_000..31_000u16).to_string();
        let o = ryw(&[
            "cluster",
            "up",
            "--dir",
            dir,
            "--port",
            &port,
            "--lag",
            "0,200ms",
            "--shared-buffers",
            "32MB",
        ]);
        if o.status.success() {
            up = Some(o);
            break;
        }
        assert!(text(&o).contains("in use"), "up failed: {}", text(&o));
    }
    let up = up.expect("no free port block after 5 tries");
    let out = text(&up);
    assert!(
        out.contains("follower2") && out.contains("postgres://postgres@127.0.0.1:"),
        "{out}"
    );

    let st = ryw(&["cluster", "status", "--dir", dir, "--json"]);
    assert!(st.status.success(), "{}", text(&st));
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().all(|n| n["alive"] == true), "{v}");
    assert_eq!(nodes[1]["streaming"], true);
    assert_eq!(nodes[2]["delay_ms"], 200);

    let lag = ryw(&[
        "cluster",
        "lag",
        "--dir",
        dir,
        "--replica",
        "2",
        "--delay",
        "900ms",
    ]);
    assert!(lag.status.success(), "{}", text(&lag));
    let st = ryw(&["cluster", "status", "--dir", dir, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["nodes"][2]["delay_ms"], 900);

    let bad = ryw(&[
        "cluster",
        "lag",
        "--dir",
        dir,
        "--replica",
        "7",
        "--delay",
        "1s",
    ]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("no replica"), "{}", text(&bad));

    let twice = ryw(&["cluster", "up", "--dir", dir]);
    assert!(!twice.status.success());
    assert!(
        text(&twice).contains("already holds a running cluster"),
        "{}",
        text(&twice)
    );

    let down = ryw(&["cluster", "down", "--dir", dir, "--purge"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(
        text(&down).contains("stopped follower2, follower1, leader"),
        "{}",
        text(&down)
    );
    let again = ryw(&["cluster", "down", "--dir", dir]);
    assert!(again.status.success());
    assert!(text(&again).contains("nothing running"), "{}", text(&again));
}

#[test]
fn status_of_a_folder_without_a_cluster_says_how_to_start_one() {
    let tmp = tempfile::tempdir().unwrap();
    let o = ryw(&["cluster", "status", "--dir", tmp.path().to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("ryw cluster up"), "{}", text(&o));
}

#[test]
fn a_sync_cluster_fails_over_and_the_old_leader_rejoins_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("c");
    let dir = dir.to_str().unwrap();
    let mut up = None;
    for _ in 0..5 {
        let port = rand::rng().random_range(20_000..31_000u16).to_string();
        let o = ryw(&[
            "cluster",
            "up",
            "--dir",
            dir,
            "--port",
            &port,
            "--sync",
            "--lag",
            "0,100ms",
            "--shared-buffers",
            "32MB",
        ]);
        if o.status.success() {
            up = Some(o);
            break;
        }
        assert!(text(&o).contains("in use"), "up failed: {}", text(&o));
    }
    let up = up.expect("no free port block after 5 tries");
    assert!(
        text(&up).contains("synchronous replication"),
        "{}",
        text(&up)
    );
    let st = ryw(&["cluster", "status", "--dir", dir, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["sync"], true, "{v}");
    assert_eq!(v["nodes"][1]["sync_state"], "quorum", "{v}");

    let fo = ryw(&[
        "cluster",
        "failover",
        "--dir",
        dir,
        "--kill",
        "--to",
        "follower2",
        "--json",
    ]);
    assert!(fo.status.success(), "{}", text(&fo));
    let r: serde_json::Value = serde_json::from_slice(&fo.stdout).unwrap();
    assert_eq!(r["new_leader"], "follower2", "{r}");
    assert_eq!(r["stop"], "killed", "{r}");
    assert_eq!(r["timeline"], 2, "{r}");
    assert_eq!(
        r["synchronous_standby_names"], "ANY 1 (\"follower1\")",
        "{r}"
    );
    assert_eq!(r["followers"][0]["streaming"], true, "{r}");
    assert!(r["timings"]["promote_ms"].as_f64().unwrap() > 0.0, "{r}");

    let st = ryw(&["cluster", "status", "--dir", dir, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["timeline"], 2, "{v}");
    assert_eq!(v["nodes"][0]["role"], "failed", "{v}");
    assert_eq!(v["nodes"][2]["role"], "leader", "{v}");
    assert_eq!(v["nodes"][1]["upstream"], "follower2", "{v}");

    let running = ryw(&["cluster", "rejoin", "follower1", "--dir", dir]);
    assert!(!running.status.success());
    assert!(text(&running).contains("is running"), "{}", text(&running));

    let rj = ryw(&["cluster", "rejoin", "leader", "--dir", dir]);
    assert!(rj.status.success(), "{}", text(&rj));
    assert!(
        text(&rj).contains("rejoin: leader follows follower2 on timeline 2"),
        "{}",
        text(&rj)
    );
    let again = ryw(&["cluster", "failover", "--dir", dir, "--to", "follower2"]);
    assert!(!again.status.success());
    assert!(text(&again).contains("is the leader"), "{}", text(&again));

    let down = ryw(&["cluster", "down", "--dir", dir, "--purge"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(
        text(&down).contains("stopped follower1, leader, follower2"),
        "{}",
        text(&down)
    );
}

#[test]
fn a_redis_cluster_comes_up_with_the_cluster_and_goes_down_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = tmp.path().join("c");
    let dir = dir.to_str().unwrap();
    let both = ryw(&[
        "cluster",
        "up",
        "--dir",
        dir,
        "--redis",
        "--redis-cluster",
        "3",
    ]);
    assert!(
        !both.status.success(),
        "--redis with --redis-cluster was accepted"
    );
    let mut up = None;
    for _ in 0..5 {
        // The Redis nodes take the ports after the followers'.
        let port = rand::rng().random_range(20_000..30_000u16).to_string();
        let o = ryw(&[
            "cluster",
            "up",
            "--dir",
            dir,
            "--port",
            &port,
            "--replicas",
            "1",
            "--shared-buffers",
            "32MB",
            "--redis-cluster",
            "3",
            "--redis-replicas",
            "1",
        ]);
        if o.status.success() {
            up = Some(o);
            break;
        }
        assert!(text(&o).contains("in use"), "up failed: {}", text(&o));
    }
    let up = up.expect("no free port block after 5 tries");
    assert!(
        text(&up).contains("redis+cluster://127.0.0.1:"),
        "{}",
        text(&up)
    );

    let st = ryw(&["cluster", "status", "--dir", dir, "--json"]);
    assert!(st.status.success(), "{}", text(&st));
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let rc = &v["redis_cluster"];
    assert!(
        rc["url"].as_str().unwrap().starts_with("redis+cluster://"),
        "{v}"
    );
    let nodes = rc["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 6, "{v}");
    assert!(nodes.iter().all(|n| n["alive"] == true), "{v}");
    let roles: Vec<&str> = nodes.iter().map(|n| n["role"].as_str().unwrap()).collect();
    assert_eq!(
        roles,
        ["master", "master", "master", "slave", "slave", "slave"]
    );
    let pids: Vec<i64> = nodes.iter().map(|n| n["pid"].as_i64().unwrap()).collect();

    let down = ryw(&["cluster", "down", "--dir", dir, "--purge"]);
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(text(&down).matches("redis ").count(), 6, "{}", text(&down));
    for pid in pids {
        // Gone, or a zombie its parent (PID 1: daemonized) has not reaped.
        let running = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
            !st.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        });
        assert!(!running, "redis-server {pid} still runs");
    }
}
