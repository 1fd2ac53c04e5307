//! `pgbench`, as calibrate and the overhead run use it: `-S` (select only)
//! on one port of a `ryw cluster`, and the one parser of its report.

use crate::BenchError;
use ryw_cluster::{ClusterInfo, NodeInfo};
use std::time::Duration;

/// What a pgbench run's report says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PgbenchReport {
    /// Transactions per second (`tps = …`).
    pub tps: f64,
    /// Transactions it ran (`number of transactions actually processed:
    /// N`, or `N/M` with `-t`); `None` where the report does not say.
    pub transactions: Option<f64>,
}

impl PgbenchReport {
    /// Reads `out`, pgbench's standard output; `None` without a `tps` line.
    pub fn parse(out: &str) -> Option<PgbenchReport> {
        Some(PgbenchReport {
            tps: figure(out, "tps")?,
            transactions: figure(out, "number of transactions actually processed:"),
        })
    }
}

/// The number after `label` on the first line of pgbench's report that
/// starts with it (after an optional `=`): `tps = 41234.5 (without …)`
/// gives 41234.5, `number of failed transactions: 0 (0.000%)` gives 0,
/// `…processed: 300/300` gives 300.
pub fn figure(report: &str, label: &str) -> Option<f64> {
    report.lines().find_map(|l| {
        let rest = l.trim().strip_prefix(label)?;
        rest.trim()
            .trim_start_matches('=')
            .split_whitespace()
            .next()?
            .split('/')
            .next()?
            .parse()
            .ok()
    })
}

/// The cluster's first follower: the one calibrate and the overhead run
/// measure.
pub fn first_follower(info: &ClusterInfo) -> Result<NodeInfo, BenchError> {
    info.followers()
        .next()
        .cloned()
        .ok_or_else(|| BenchError::config("cluster", "the cluster has no follower"))
}

/// `pgbench -n -S -M MODE -c8 -j2 -T SECS` against port `port` on
/// 127.0.0.1 (a node, PgBouncer, a proxy), on the cluster's database, with
/// the cluster's own pgbench.
pub async fn select_only(
    info: &ClusterInfo,
    port: u16,
    mode: &str,
    duration: Duration,
) -> Result<PgbenchReport, BenchError> {
    let secs = duration.as_secs().max(1).to_string();
    let args = ["-n", "-S", "-M", mode, "-c", "8", "-j", "2", "-T", &secs];
    let out = ryw_cluster::ops::pgbench_at(info, port, &args).await?;
    PgbenchReport::parse(&out).ok_or_else(|| BenchError::Measure {
        what: format!("pgbench -M {mode} on port {port}"),
        detail: format!("no tps in pgbench output:\n{out}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "pgbench (15.10 (Debian 15.10-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 1
query mode: prepared
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 5 s
number of transactions actually processed: 206483
number of failed transactions: 0 (0.000%)
latency average = 0.193 ms
initial connection time = 6.140 ms
tps = 41321.853420 (without initial connection time)
";

    #[test]
    fn the_report_gives_tps_and_transactions() {
        assert_eq!(
            PgbenchReport::parse(REPORT),
            Some(PgbenchReport {
                tps: 41321.85342,
                transactions: Some(206483.0),
            })
        );
        assert_eq!(figure(REPORT, "number of failed transactions:"), Some(0.0));
        assert_eq!(figure(REPORT, "latency average"), Some(0.193));
    }

    #[test]
    fn a_fixed_count_reads_as_what_was_processed_and_no_tps_is_no_report() {
        let fixed = "number of transactions actually processed: 300/400\ntps = 10.5 (x)\n";
        assert_eq!(
            PgbenchReport::parse(fixed).map(|r| r.transactions),
            Some(Some(300.0))
        );
        assert_eq!(
            PgbenchReport::parse("pgbench: error: connection refused"),
            None
        );
        assert_eq!(figure("tpsx = 3", "tps"), None);
    }
}
