//! The report from hand-made histories with known answers.

use super::*;
use crate::history::{LagSample, Op, OpKind, RunHistory};
use std::path::Path;

fn op(
    user: &str,
    strategy: &str,
    kind: OpKind,
    sent_ms: u64,
    recv_ms: u64,
    version: u64,
    served_by: &str,
) -> Op {
    Op {
        user: user.into(),
        client: user.into(),
        strategy: strategy.into(),
        kind,
        sent_us: sent_ms * 1000,
        recv_us: recv_ms * 1000,
        status: 200,
        version: Some(version),
        served_by: Some(served_by.into()),
        waited_ms: None,
        problem: None,
    }
}

fn lag(t_ms: u64, node: &str, lag_ms: f64) -> LagSample {
    LagSample {
        t_us: t_ms * 1000,
        node: node.into(),
        lag_ms: Some(lag_ms),
        lag_bytes: None,
        in_rotation: Some(true),
    }
}

fn sample_history() -> RunHistory {
    use OpKind::*;
    RunHistory {
        ops: vec![
            op("a", "legacy", Pay, 0, 10, 1, "leader"),
            op("a", "legacy", Balance, 15, 17, 0, "follower1"), // 5 ms after: stale
            op("a", "legacy", Balance, 500, 502, 1, "follower1"),
            op("b", "leader", Pay, 0, 10, 1, "leader"),
            op("b", "leader", Balance, 20, 24, 1, "leader"), // 10 ms after
            Op {
                waited_ms: Some(30.0),
                ..op("b", "leader", Balance, 300, 340, 1, "leader")
            },
            Op {
                status: 0,
                version: None,
                served_by: None,
                ..op("b", "leader", Products, 400, 900, 0, "")
            },
        ],
        lag: vec![
            lag(0, "follower1", 90.0),
            lag(250, "follower1", 110.0),
            lag(500, "follower1", 100.0),
            lag(0, "follower2", 400.0),
            lag(250, "follower2", 420.0),
        ],
    }
}

#[test]
fn the_report_counts_per_strategy_and_the_oracle_uses_the_least_lagged_follower() {
    let r = BenchReport::from_history(
        sample_history(),
        ReportMeta {
            strategy_order: vec!["leader".into()],
            elapsed_s: Some(2.0),
            ..ReportMeta::default()
        },
    );
    assert_eq!(
        r.strategies
            .iter()
            .map(|s| s.strategy.as_str())
            .collect::<Vec<_>>(),
        ["leader", "legacy"]
    );
    let leader = &r.strategies[0];
    assert_eq!(
        (
            leader.reads,
            leader.ryw_violations,
            leader.errors,
            leader.writes
        ),
        (2, 0, 1, 1)
    );
    assert_eq!(leader.leader_share, 1.0);
    assert_eq!((leader.waits, leader.mean_wait_ms), (1, 30.0));
    assert_eq!(
        leader.wasted_waits, 1,
        "it waited 30 ms and the leader served it anyway"
    );
    assert_eq!(leader.reads_per_s, 1.0);
    assert!(
        (leader.latency_ms.p50 - 4.0).abs() < 0.01 && (leader.latency_ms.max - 40.0).abs() < 0.05,
        "{:?}",
        leader.latency_ms
    );
    let legacy = &r.strategies[1];
    assert_eq!(
        (
            legacy.reads,
            legacy.ryw_violations,
            legacy.stale_rate,
            legacy.leader_share
        ),
        (2, 1, 0.5, 0.0)
    );
    assert_eq!(legacy.by_gap[0].label, "<10ms");
    assert_eq!((legacy.by_gap[0].reads, legacy.by_gap[0].stale), (1, 1));
    assert_eq!(legacy.by_gap.last().unwrap().label, "≥2s");

    // follower1's median lag is 100 ms: reads 5 and 10 ms after a write were forced.
    let f1 = &r.followers[0];
    assert_eq!(
        (
            f1.node.as_str(),
            f1.samples,
            f1.min_ms,
            f1.median_ms,
            f1.max_ms
        ),
        ("follower1", 3, 90.0, 100.0, 110.0)
    );
    let o = r.oracle.as_ref().unwrap();
    assert_eq!((o.delay_ms, o.forced, o.fresh_reads), (100.0, 2, 4));
    assert_eq!(o.share, 0.5);
    assert_eq!(legacy.oracle_share, Some(0.5));
    assert_eq!((r.ryw_violations, r.monotonic_violations), (1, 0));
}

#[test]
fn configured_delays_win_over_the_samples() {
    let meta = ReportMeta {
        follower_delays_ms: vec![("follower1".into(), 8), ("follower2".into(), 400)],
        ..ReportMeta::default()
    };
    let r = BenchReport::from_history(sample_history(), meta);
    let o = r.oracle.unwrap();
    assert_eq!(
        (o.delay_ms, o.forced),
        (8.0, 1),
        "only the read 5 ms after the write is under 8 ms"
    );
    assert!(o.source.contains("cluster.json"));
    assert_eq!(r.followers[1].configured_delay_ms, Some(400));
}

#[test]
fn the_table_shows_every_strategy_the_lag_and_the_oracle() {
    let r = BenchReport::from_history(
        sample_history(),
        ReportMeta {
            elapsed_s: Some(2.0),
            ..ReportMeta::default()
        },
    );
    let t = r.table();
    let lines: Vec<&str> = t.lines().collect();
    assert!(
        lines[0].starts_with("strategy  users  reads  reads/s  stale  stale%"),
        "{t}"
    );
    assert!(
        lines[1].starts_with("leader  ") && lines[2].starts_with("legacy  "),
        "{t}"
    );
    assert!(lines[2].contains(" 50.0 "), "stale% of legacy: {t}");
    assert!(t.contains("follower1"), "{t}");
    assert!(t.contains("oracle: 50.0% of fresh reads (2 of 4)"), "{t}");
    assert!(
        t.contains("1 read-your-writes violations, 0 monotonic-read violations"),
        "{t}"
    );
    assert!(t.contains("ReadYourWrites at op #1: balance a"), "{t}");
    // columns line up: every row of the strategy table is as wide as the header
    assert_eq!(lines[1].chars().count(), lines[0].chars().count());
}

#[test]
fn missed_arrivals_are_told_apart_by_cause() {
    let meta = |missed, busy| ReportMeta {
        missed_arrivals: missed,
        missed_no_idle_user: busy,
        ..ReportMeta::default()
    };
    let r = BenchReport::from_history(sample_history(), meta(7, 2));
    assert!(
        r.table().contains(
            "open loop: 7 offered arrivals never started: 2 found no idle user (add users), \
             5 came due while the bench itself ran late (a busy machine)"
        ),
        "{}",
        r.table()
    );
    let json: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
    assert_eq!(
        (&json["missed_arrivals"], &json["missed_no_idle_user"]),
        (&serde_json::json!(7), &serde_json::json!(2))
    );
    let quiet = BenchReport::from_history(sample_history(), meta(0, 0));
    assert!(!quiet.table().contains("open loop"));
}

#[test]
fn the_json_report_round_trips() {
    let r = BenchReport::from_history(sample_history(), ReportMeta::default());
    let json = r.to_json().unwrap();
    let back: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(back["strategies"][1]["ryw_violations"], 1);
    assert_eq!(back["oracle"]["forced"], 2);
    assert!(back.get("history").is_none());
}

/// Writes `DIR/cluster.json` as `ryw cluster up` does, with these nodes'
/// names and apply delays (the first node is the leader).
fn cluster_file(dir: &Path, nodes: &[(&str, Option<u64>)]) {
    use ryw_cluster::{ClusterInfo, NodeInfo, NodeRole};
    let info = ClusterInfo {
        version: 1,
        dir: dir.to_path_buf(),
        pg_bin: "/usr/lib/postgresql/15/bin".into(),
        os_user: "postgres".into(),
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(i, &(name, delay_ms))| NodeInfo {
                name: name.into(),
                role: if i == 0 {
                    NodeRole::Leader
                } else {
                    NodeRole::Follower
                },
                port: 25432 + i as u16,
                pid: 0,
                url: format!("postgres://postgres@127.0.0.1:{}/ryw", 25432 + i),
                data_dir: dir.join(name),
                log: dir.join(format!("{name}.log")),
                delay_ms,
            })
            .collect(),
        redis: None,
        redis_cluster: None,
        up_secs: 0.0,
    };
    info.save().unwrap();
}

#[test]
fn a_history_file_is_checked_offline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    std::fs::write(
        &path,
        r#"{"user":"u1","client":"u1-phone","strategy":"legacy","kind":"pay","sent_us":0,"recv_us":5000,"status":201,"version":1,"served_by":"leader"}
{"user":"u1","client":"u1-laptop","strategy":"legacy","kind":"balance","sent_us":6000,"recv_us":7000,"status":200,"version":0,"served_by":"follower2"}
{"user":"u1","client":"u1-laptop","strategy":"legacy","kind":"balance","sent_us":8000,"recv_us":9000,"status":200,"version":1,"served_by":"follower1"}
{"user":"u1","client":"u1-laptop","strategy":"legacy","kind":"balance","sent_us":9500,"recv_us":9900,"status":200,"version":0,"served_by":"follower2"}
{"kind":"lag","t_us":0,"node":"follower1","lag_ms":2}
{"kind":"lag","t_us":0,"node":"follower2","lag_ms":400,"in_rotation":true}
"#,
    )
    .unwrap();
    cluster_file(
        dir.path(),
        &[
            ("leader", None),
            ("follower1", Some(3)),
            ("follower2", Some(400)),
        ],
    );
    let r = check_file(&path, None).unwrap();
    assert_eq!(
        (r.ryw_violations, r.monotonic_violations, r.operations),
        (2, 1, 4)
    );
    assert_eq!(r.oracle.as_ref().unwrap().delay_ms, 2.0);
    let r = check_file(&path, Some(dir.path())).unwrap();
    assert_eq!(r.oracle.as_ref().unwrap().delay_ms, 3.0);
    assert_eq!(
        r.oracle.as_ref().unwrap().forced,
        1,
        "of the reads 1, 3 and 4.5 ms after the write, only the first is under 3 ms"
    );
}

#[test]
fn a_read_that_found_nothing_is_judged_offline_not_counted_as_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.jsonl");
    // 1: no profile yet (right); 2: account created; 3: a follower without
    // the account (stale); 4: another 404 (an error); 5: an older bench's
    // 404 without `problem` (an error, as it was then).
    std::fs::write(
        &path,
        r#"{"user":"u1","client":"c","strategy":"legacy","kind":"me","sent_us":0,"recv_us":900,"status":404,"served_by":"follower1","problem":"no-profile"}
{"user":"u1","client":"c","strategy":"legacy","kind":"account","sent_us":1000,"recv_us":2000,"status":201,"version":0,"served_by":"leader"}
{"user":"u1","client":"c","strategy":"legacy","kind":"balance","sent_us":2100,"recv_us":2500,"status":404,"served_by":"follower2","waited_ms":0,"problem":"no-account"}
{"user":"u1","client":"c","strategy":"legacy","kind":"balance","sent_us":2600,"recv_us":2700,"status":404,"served_by":"none","problem":"not-available"}
{"user":"u1","client":"c","strategy":"legacy","kind":"balance","sent_us":2800,"recv_us":2900,"status":404,"served_by":"none"}
"#,
    )
    .unwrap();
    let r = check_file(&path, None).unwrap();
    assert_eq!((r.ryw_violations, r.monotonic_violations), (1, 0));
    let legacy = &r.strategies[0];
    assert_eq!(
        (
            legacy.reads,
            legacy.ryw_violations,
            legacy.stale_not_found,
            legacy.errors
        ),
        (2, 1, 1, 2)
    );
    assert_eq!(r.violations[0].version, None);
    let t = r.table();
    assert!(
        t.contains(
            "ReadYourWrites at op #2: balance u1 (client c, legacy) found nothing (404) < 0"
        ),
        "{t}"
    );
    assert!(t.contains("served by follower2"), "{t}");
    let json: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
    assert_eq!(json["violations"][0]["version"], serde_json::Value::Null);
}

#[test]
fn the_follower_split_counts_the_reads_every_follower_could_have_served() {
    use OpKind::*;
    let history = RunHistory {
        ops: vec![
            op("a", "causal", Pay, 0, 10, 1, "leader"),
            // 60 ms after the write: only the 50 ms follower could have it.
            op("a", "causal", Balance, 70, 72, 1, "follower1"),
            op("a", "causal", Pay, 100, 110, 2, "leader"),
            // 400 ms after: both could (the largest delay is 200 ms).
            op("a", "causal", Balance, 510, 512, 2, "follower2"),
            op("a", "causal", Pay, 600, 610, 3, "leader"),
            op("a", "causal", Balance, 1000, 1002, 3, "follower1"),
            op("a", "causal", Pay, 1100, 1110, 4, "leader"),
            op("a", "causal", Balance, 1115, 1120, 4, "leader"),
        ],
        lag: Vec::new(),
    };
    let r = BenchReport::from_history(
        history,
        ReportMeta {
            follower_delays_ms: vec![("follower1".into(), 50), ("follower2".into(), 200)],
            ..ReportMeta::default()
        },
    );
    assert_eq!(r.every_follower_after_ms, Some(210.0));
    let causal = &r.strategies[0];
    assert_eq!(
        causal.follower_split,
        [
            FollowerShare {
                node: "follower1".into(),
                reads: 2,
                when_all_could: 1,
            },
            FollowerShare {
                node: "follower2".into(),
                reads: 1,
                when_all_could: 1,
            },
        ]
    );
    let table = r.table();
    assert!(
        table.contains("follower1 50.0%, follower2 50.0%"),
        "{table}"
    );
}
