//! Reports without a live run: a recorded history file judged offline, and
//! the followers' configured delays of a cluster folder for the oracle line.

use super::{BenchReport, ReportMeta};
use crate::BenchError;
use crate::history::RunHistory;
use ryw_cluster::ClusterInfo;
use std::path::Path;

/// The followers' configured apply delays (`recovery_min_apply_delay`, as
/// `ryw cluster up` and `ryw cluster lag` record it in `cluster.json`): the
/// oracle's delay when known, better than one estimated from lag samples.
pub fn follower_delays(cluster: &ClusterInfo) -> Vec<(String, u64)> {
    cluster
        .followers()
        .filter_map(|n| Some((n.name.clone(), n.delay_ms?)))
        .collect()
}

/// Judges a recorded history file offline (`ryw bench check FILE`): the same
/// checker and report as a live run. `cluster_dir` gives the apply delays for
/// the oracle line.
pub fn check_file(path: &Path, cluster_dir: Option<&Path>) -> Result<BenchReport, BenchError> {
    let history = RunHistory::read(path)?;
    let follower_delays_ms = match cluster_dir {
        Some(dir) => follower_delays(&ClusterInfo::load(dir)?),
        None => Vec::new(),
    };
    Ok(BenchReport::from_history(
        history,
        ReportMeta {
            follower_delays_ms,
            ..ReportMeta::default()
        },
    ))
}

/// A saved report: a `ryw bench --json FILE` file, or a `--report DIR`
/// folder (its `report.json`, with the history beside it, which gives the
/// requests each node served).
pub fn read_report(path: &Path) -> Result<BenchReport, BenchError> {
    let (json, history) = if path.is_dir() {
        (path.join("report.json"), Some(path.join("history.jsonl")))
    } else {
        (path.to_path_buf(), None)
    };
    let text = std::fs::read_to_string(&json).map_err(BenchError::io("reading", &json))?;
    let mut report: BenchReport = serde_json::from_str(&text).map_err(|e| {
        BenchError::config(
            "report",
            format!("{} is not a `ryw bench --json` report: {e}", json.display()),
        )
    })?;
    if let Some(h) = history.filter(|h| h.exists()) {
        report.history = RunHistory::read(&h)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_report_reads_back_from_its_folder_with_its_history_or_from_its_json_alone() {
        let lines = [
            r#"{"user":"u","client":"c","strategy":"causal","kind":"account","sent_us":0,"recv_us":10,"status":201,"version":0}"#,
            r#"{"user":"u","client":"c","strategy":"causal","kind":"balance","sent_us":20,"recv_us":30,"status":200,"version":0,"served_by":"follower1"}"#,
        ]
        .join("\n");
        let history = RunHistory::parse(lines.as_bytes(), Path::new("h")).unwrap();
        let report = BenchReport::from_history(history, ReportMeta::default());
        let dir = tempfile::tempdir().unwrap();
        crate::write_report_dir(&report, dir.path()).unwrap();

        let from_dir = read_report(dir.path()).unwrap();
        assert_eq!(from_dir.history.ops.len(), 2);
        assert_eq!(from_dir.strategies.len(), report.strategies.len());
        let from_json = read_report(&dir.path().join("report.json")).unwrap();
        assert!(from_json.history.ops.is_empty());
        assert_eq!(from_json.strategies[0].reads, report.strategies[0].reads);

        let bad = dir.path().join("index.html");
        let err = read_report(&bad).unwrap_err().to_string();
        assert!(err.contains("is not a `ryw bench --json` report"), "{err}");
    }
}
