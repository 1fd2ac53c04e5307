//! The peers ryw is measured against, run on a `ryw cluster` (its
//! `cluster.json`): [`Pgpool`] (Pgpool-II in streaming-replication mode
//! with load balancing, for read-your-writes) and [`PgBouncer`] (session
//! pooling in front of one follower, for the overhead). Each runs in the
//! foreground as the cluster's OS user (`postgres` when we are root), its
//! configuration written into the cluster's folder (`pgpool/`,
//! `pgbouncer/`, with its log), and is stopped and waited for by `stop()`
//! or on drop, so a test that panics leaves nothing running.
//!
//! [`peer_groups`] gives the comparison's groups: Pgpool-II and `ryw
//! proxy` under the same workload (pay in a transaction, then read the
//! balance on the same connection and on another one).
//!
//! - `daemon.rs`: the binary, a free port, the process and its stop.
//! - `pgpool.rs`, `pgbouncer.rs`: their configuration and start-up.
//! - `side_by_side.rs`: [`side_by_side()`], the whole of `ryw bench peers`
//!   (ryw proxy and the Pgpool-IIs started, the workload, all stopped), and
//!   [`explain()`], its outcome in plain words.

mod daemon;
mod pgbouncer;
mod pgpool;
mod side_by_side;

pub use pgbouncer::PgBouncer;
pub use pgpool::{Pgpool, PgpoolOptions};
pub use side_by_side::{PeersOptions, PeersRun, explain, side_by_side};

use crate::config::StrategySpec;
use crate::sql::{ReadOn, SqlGroup};

/// The side-by-side groups: for each Pgpool-II (`(name, url)`, e.g.
/// `("pgpool", url)`), `NAME/same` and `NAME/other`; then for each
/// strategy `ryw-<strategy>/same` and `ryw-<strategy>/other` on `ryw
/// proxy` at `ryw_url` (the reading connection bound to the paying one's
/// `ryw.session`).
pub fn peer_groups(
    pgpools: &[(String, String)],
    ryw_url: &str,
    strategies: &[StrategySpec],
) -> Vec<SqlGroup> {
    let both = [ReadOn::Same, ReadOn::Other];
    let mut groups: Vec<SqlGroup> = pgpools
        .iter()
        .flat_map(|(name, url)| SqlGroup::plain(url, name, &both))
        .collect();
    groups.extend(SqlGroup::ryw(ryw_url, "ryw-", strategies, &both));
    groups
}

/// The name of a Pgpool-II in the comparison: `pgpool` when it is the only
/// one, else `pgpool-<delay_threshold>` (`pgpool-1B`, `pgpool-10MB`).
pub fn pgpool_name(delay_threshold: u64, only_one: bool) -> String {
    if only_one {
        return "pgpool".to_string();
    }
    let t = delay_threshold;
    let text = match t {
        _ if t >= 1_000_000 && t.is_multiple_of(1_000_000) => format!("{}MB", t / 1_000_000),
        _ if t >= 1_000 && t.is_multiple_of(1_000) => format!("{}kB", t / 1_000),
        _ => format!("{t}B"),
    };
    format!("pgpool-{text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_comparison_has_pgpool_then_ryw_each_on_the_same_and_another_connection() {
        let s = StrategySpec::parse_list("causal,causal:0ms").unwrap();
        let pgpool = [("pgpool".to_string(), "postgres://p@h:1/d".to_string())];
        let labels: Vec<String> = peer_groups(&pgpool, "postgres://r@h:2/d", &s)
            .into_iter()
            .map(|g| g.label)
            .collect();
        assert_eq!(
            labels,
            [
                "pgpool/same",
                "pgpool/other",
                "ryw-causal/same",
                "ryw-causal/other",
                "ryw-causal:0ms/same",
                "ryw-causal:0ms/other"
            ]
        );
    }

    #[test]
    fn several_pgpools_are_named_by_their_delay_threshold() {
        assert_eq!(pgpool_name(1, true), "pgpool");
        assert_eq!(pgpool_name(1, false), "pgpool-1B");
        assert_eq!(pgpool_name(8_000, false), "pgpool-8kB");
        assert_eq!(pgpool_name(10_000_000, false), "pgpool-10MB");
        assert_eq!(pgpool_name(1_048_576, false), "pgpool-1048576B");
    }
}
