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
