//! Reports without a live run: a recorded history file judged offline, and
//! the followers' configured delays of a cluster folder for the oracle line.

use super::{BenchReport, ReportMeta};
use crate::BenchError;
use crate::history::History;
use serde::Deserialize;
use std::path::Path;

/// A follower's configured delay as `cluster.json` (written by `ryw cluster
/// up`) records it. Only the fields the bench needs.
#[derive(Deserialize)]
struct ClusterFile {
    nodes: Vec<ClusterNode>,
}

#[derive(Deserialize)]
struct ClusterNode {
    name: String,
    role: String,
    #[serde(default)]
    delay_ms: Option<u64>,
}

/// Reads the followers' configured apply delays (`delay_ms`) from a `ryw
/// cluster` folder's `cluster.json`.
pub fn follower_delays(cluster_dir: &Path) -> Result<Vec<(String, u64)>, BenchError> {
    let path = cluster_dir.join("cluster.json");
    let text = std::fs::read_to_string(&path).map_err(BenchError::io("reading", &path))?;
    let file: ClusterFile = serde_json::from_str(&text)?;
    Ok(file
        .nodes
        .into_iter()
        .filter(|n| n.role == "follower")
        .filter_map(|n| Some((n.name, n.delay_ms?)))
        .collect())
}

/// Judges a recorded history file offline (`ryw bench check FILE`): the same
/// checker and report as a live run. `cluster_dir` gives the apply delays for
/// the oracle line.
pub fn check_file(path: &Path, cluster_dir: Option<&Path>) -> Result<BenchReport, BenchError> {
    let history = History::read(path)?;
    let follower_delays_ms = match cluster_dir {
        Some(dir) => follower_delays(dir)?,
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
