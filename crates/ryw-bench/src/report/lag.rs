//! The followers' lag while the bench ran, summarised per follower from the
//! `/api/cluster` samples (and the configured delays, when known).

use super::{FollowerLag, median, ratio};
use crate::history::RunHistory;
use std::collections::BTreeMap;

pub(super) fn follower_lag(history: &RunHistory, configured: &[(String, u64)]) -> Vec<FollowerLag> {
    let mut by_node: BTreeMap<&str, (Vec<f64>, u64, u64)> = BTreeMap::new();
    for s in &history.lag {
        let e = by_node.entry(&s.node).or_default();
        if let Some(l) = s.lag_ms.filter(|l| l.is_finite()) {
            e.0.push(l);
        }
        if let Some(r) = s.in_rotation {
            e.1 += 1;
            e.2 += u64::from(r);
        }
    }
    for (name, _) in configured {
        by_node.entry(name).or_default();
    }
    by_node
        .into_iter()
        .map(|(node, (mut lags, known, in_rot))| {
            lags.sort_by(f64::total_cmp);
            FollowerLag {
                node: node.to_string(),
                samples: lags.len(),
                min_ms: lags.first().copied().unwrap_or(0.0),
                median_ms: median(&lags),
                max_ms: lags.last().copied().unwrap_or(0.0),
                in_rotation_share: (known > 0).then(|| ratio(in_rot, known)),
                configured_delay_ms: configured.iter().find(|(n, _)| n == node).map(|(_, d)| *d),
            }
        })
        .collect()
}
