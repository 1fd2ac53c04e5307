//! The report: per strategy, what the checker found and what it cost, the
//! followers' lag meanwhile, and the oracle line. Built from a
//! [`RunHistory`](crate::RunHistory) alone, so a recorded history gives the same
//! report offline. Rendered as a terminal table ([`BenchReport::table`]) or
//! JSON (serde); the HTML page is in [`crate::html`].
//!
//! - `types`: what a report holds ([`BenchReport`], [`StrategyReport`],
//!   [`FollowerLag`], [`Oracle`], [`Latency`]) and what it is given
//!   ([`ReportMeta`]).
//! - `build`: [`BenchReport::from_history`] — the checker over the history,
//!   then the per-strategy figures (latency, leader share, waits, stale rate
//!   by time since the write).
//! - `lag`: the followers' lag summary from the `/api/cluster` samples.
//! - `oracle`: the smallest apply delay and the share of reads it forces to
//!   the leader.
//! - `table`: the terminal table.
//! - `offline`: [`check_file`] (`ryw bench check FILE`) and the configured
//!   delays of a cluster folder.
//! - `words`: [`plain_words`], the table in plain words and what the default
//!   costs and saves against the fixed strategies (`ryw demo`).

mod build;
mod lag;
mod offline;
mod oracle;
mod table;
mod types;
mod words;

#[cfg(test)]
mod tests;

pub use offline::{check_file, follower_delays, read_report};
pub use oracle::{oracle_count, smallest_apply_delay};
pub use types::{
    BenchReport, FollowerLag, FollowerShare, GAP_EDGES_MS, GapBucket, Latency,
    MAX_LISTED_VIOLATIONS, Oracle, ReportMeta, StrategyReport,
};
pub use words::plain_words;

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}
