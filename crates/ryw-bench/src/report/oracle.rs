//! The oracle: the smallest follower apply delay, and the share of fresh
//! reads sent sooner than that after the user's own write (see [`Oracle`](super::Oracle)).

use super::FollowerLag;

/// The smallest follower apply delay: configured (`cluster.json`) if known,
/// else the median lag of the least-lagged follower in the samples.
pub fn smallest_apply_delay(
    followers: &[FollowerLag],
    configured: &[(String, u64)],
) -> Option<(f64, String)> {
    if let Some(min) = configured.iter().map(|(_, d)| *d).min() {
        return Some((
            min as f64,
            "cluster.json (configured recovery_min_apply_delay)".into(),
        ));
    }
    followers
        .iter()
        .filter(|f| f.samples > 0)
        .map(|f| f.median_ms)
        .min_by(f64::total_cmp)
        .map(|d| {
            (
                d,
                "median lag of the least-lagged follower in /api/cluster samples".into(),
            )
        })
}

/// The largest follower apply delay: configured (`cluster.json`) if known,
/// else the largest median lag in the samples.
pub fn largest_apply_delay(followers: &[FollowerLag], configured: &[(String, u64)]) -> Option<f64> {
    if let Some(max) = configured.iter().map(|(_, d)| *d).max() {
        return Some(max as f64);
    }
    followers
        .iter()
        .filter(|f| f.samples > 0)
        .map(|f| f.median_ms)
        .max_by(f64::total_cmp)
}

/// Share of reads that were forced to the leader: sent less than `delay_ms`
/// after the user's latest acknowledged write. Returns (forced, reads).
pub fn oracle_count(
    since_write_us: impl IntoIterator<Item = Option<u64>>,
    delay_ms: f64,
) -> (u64, u64) {
    let mut forced = 0;
    let mut reads = 0;
    for gap in since_write_us {
        reads += 1;
        if gap.is_some_and(|g| (g as f64) < delay_ms * 1000.0) {
            forced += 1;
        }
    }
    (forced, reads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oracle_arithmetic() {
        let gaps = [Some(0), Some(99_999), Some(100_000), Some(250_000), None];
        assert_eq!(
            oracle_count(gaps, 100.0),
            (2, 5),
            "strictly less than the delay; no write yet is never forced"
        );
        assert_eq!(oracle_count(gaps, 0.0), (0, 5));
        assert_eq!(oracle_count([], 100.0), (0, 0));
        let f = |node: &str, samples, median_ms| FollowerLag {
            node: node.into(),
            samples,
            min_ms: 0.0,
            median_ms,
            max_ms: 0.0,
            in_rotation_share: None,
            configured_delay_ms: None,
        };
        assert_eq!(
            smallest_apply_delay(
                &[f("f1", 3, 400.0), f("f2", 2, 101.0), f("f3", 0, 0.0)],
                &[]
            )
            .unwrap()
            .0,
            101.0
        );
        assert_eq!(smallest_apply_delay(&[], &[]), None);
    }
}
