//! Counters a service can export (Prometheus or anything else): plain
//! atomics, read as a [`MetricsSnapshot`]. No metrics backend dependency:
//! waits are also counted in fixed buckets
//! ([`MetricsSnapshot::WAIT_BOUNDS`]), so an exporter can publish them as a
//! histogram (a p99 of waits) without the router knowing its format.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::{Freshness, LEADER_NAME, NodeId, Scope, Strategy};

const STRATEGIES: usize = Strategy::ALL.len();
const SCOPES: usize = Scope::ALL.len();
/// Buckets of the wait histogram: one per bound, plus one beyond the last.
const WAIT_BUCKETS: usize = MetricsSnapshot::WAIT_BOUNDS.len() + 1;
/// Buckets of the position-age histogram, likewise.
const AGE_BUCKETS: usize = MetricsSnapshot::AGE_BOUNDS.len() + 1;

/// Where a read (or a front's batch) is counted among per-node counters:
/// on the node that leads, whichever it is (labelled `leader`), or on a
/// node serving as a follower. The one numbering of such counters for the
/// router's metrics and a front's: the leader's slot first, then one per
/// node in the order of [`ClusterView::nodes`](crate::ClusterView).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricSlot {
    /// The node that leads now.
    Leader,
    /// A node serving as a follower.
    Node(NodeId),
}

impl MetricSlot {
    /// Its place in a table of per-node counters laid out by
    /// [`MetricSlot::labels`].
    pub const fn index(self) -> usize {
        match self {
            MetricSlot::Leader => 0,
            MetricSlot::Node(id) => 1 + id.index(),
        }
    }

    /// The labels of such a table, in slot order: `leader`, then `names`
    /// (every node's name, in the order of the view's nodes).
    pub fn labels<T: From<&'static str>>(names: impl IntoIterator<Item = T>) -> Vec<T> {
        std::iter::once(T::from(LEADER_NAME)).chain(names).collect()
    }
}

/// The live counters, shared by the router and the tracker.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Node names by [`MetricSlot`], in the order of `reads`.
    nodes: Vec<Arc<str>>,
    /// `[slot][fresh = 0, stale-ok = 1][strategy]`.
    reads: Vec<[[AtomicU64; STRATEGIES]; 2]>,
    writes: AtomicU64,
    waits: AtomicU64,
    wait_micros: AtomicU64,
    /// Waits by duration: one per bound of `WAIT_BOUNDS`, then one for
    /// waits beyond the last bound.
    wait_buckets: [AtomicU64; WAIT_BUCKETS],
    wait_timeouts: AtomicU64,
    /// Waits per strategy, and those of them that ended on the leader.
    waits_by_strategy: [AtomicU64; STRATEGIES],
    wasted_by_strategy: [AtomicU64; STRATEGIES],
    /// Fresh reads per scope.
    scope_reads: [AtomicU64; SCOPES],
    /// Fetches sent for scope positions (`global`'s mark, `cluster`'s
    /// leader position), and reads that took one (sent or shared).
    scope_fetches: [AtomicU64; SCOPES],
    scope_fetch_reads: [AtomicU64; SCOPES],
    fallbacks_to_leader: AtomicU64,
    evictions: AtomicU64,
    forgets: AtomicU64,
    store_errors: AtomicU64,
    read_checks: AtomicU64,
    absurd_tokens: AtomicU64,
    writes_lost: AtomicU64,
    stalls: AtomicU64,
    retries: AtomicU64,
    tracker_polls: AtomicU64,
    feed_messages: AtomicU64,
    feed_published: AtomicU64,
    feed_late: AtomicU64,
    feed_fallbacks: AtomicU64,
    feed_holder: AtomicBool,
    /// Sampled ages of the positions routing relies on.
    age_buckets: [AtomicU64; AGE_BUCKETS],
    age_micros: AtomicU64,
}

impl Metrics {
    /// Counters for `nodes`, the labels of each [`MetricSlot`]
    /// ([`MetricSlot::labels`]).
    pub fn new(nodes: Vec<Arc<str>>) -> Metrics {
        let reads = nodes.iter().map(|_| Default::default()).collect();
        Metrics {
            nodes,
            reads,
            writes: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            wait_micros: AtomicU64::new(0),
            wait_buckets: Default::default(),
            wait_timeouts: AtomicU64::new(0),
            waits_by_strategy: Default::default(),
            wasted_by_strategy: Default::default(),
            scope_reads: Default::default(),
            scope_fetches: Default::default(),
            scope_fetch_reads: Default::default(),
            fallbacks_to_leader: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            forgets: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            read_checks: AtomicU64::new(0),
            absurd_tokens: AtomicU64::new(0),
            writes_lost: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            tracker_polls: AtomicU64::new(0),
            feed_messages: AtomicU64::new(0),
            feed_published: AtomicU64::new(0),
            feed_late: AtomicU64::new(0),
            feed_fallbacks: AtomicU64::new(0),
            feed_holder: AtomicBool::new(false),
            age_buckets: Default::default(),
            age_micros: AtomicU64::new(0),
        }
    }

    /// One poll statement sent by this instance's tracker.
    pub fn add_tracker_poll(&self) {
        self.tracker_polls.fetch_add(1, Relaxed);
    }

    /// One feed message from another instance applied.
    pub fn add_feed_message(&self) {
        self.feed_messages.fetch_add(1, Relaxed);
    }

    /// One feed message published by this instance.
    pub fn add_feed_published(&self) {
        self.feed_published.fetch_add(1, Relaxed);
    }

    /// One feed message that arrived late.
    pub fn add_feed_late(&self) {
        self.feed_late.fetch_add(1, Relaxed);
    }

    /// The feed went quiet: local polling started.
    pub fn add_feed_fallback(&self) {
        self.feed_fallbacks.fetch_add(1, Relaxed);
    }

    pub fn set_feed_holder(&self, holding: bool) {
        self.feed_holder.store(holding, Relaxed);
    }

    /// A sampled age of a position routing relies on.
    pub fn add_position_age(&self, age: Duration) {
        self.age_micros.fetch_add(age.as_micros() as u64, Relaxed);
        let bucket = MetricsSnapshot::AGE_BOUNDS
            .iter()
            .position(|&le| age <= le)
            .unwrap_or(MetricsSnapshot::AGE_BOUNDS.len());
        self.age_buckets[bucket].fetch_add(1, Relaxed);
    }

    /// A read served by the node of `slot`.
    pub fn add_read(&self, slot: MetricSlot, freshness: Freshness, strategy: Strategy) {
        let f = match freshness {
            Freshness::Fresh => 0,
            Freshness::StaleOk => 1,
        };
        self.reads[slot.index()][f][strategy.index()].fetch_add(1, Relaxed);
    }

    /// A fresh read of `scope`.
    pub fn add_scope_read(&self, scope: Scope) {
        self.scope_reads[scope.index()].fetch_add(1, Relaxed);
    }

    /// A read took `scope`'s coalesced position; `sent`: its own call sent
    /// the fetch.
    pub fn add_scope_fetch(&self, scope: Scope, sent: bool) {
        self.scope_fetch_reads[scope.index()].fetch_add(1, Relaxed);
        if sent {
            self.scope_fetches[scope.index()].fetch_add(1, Relaxed);
        }
    }

    pub fn add_write(&self) {
        self.writes.fetch_add(1, Relaxed);
    }

    pub fn add_wait(&self, waited: Duration, timed_out: bool, strategy: Strategy) {
        self.waits.fetch_add(1, Relaxed);
        self.waits_by_strategy[strategy.index()].fetch_add(1, Relaxed);
        self.wait_micros
            .fetch_add(waited.as_micros() as u64, Relaxed);
        let bucket = MetricsSnapshot::WAIT_BOUNDS
            .iter()
            .position(|&le| waited <= le)
            .unwrap_or(MetricsSnapshot::WAIT_BOUNDS.len());
        self.wait_buckets[bucket].fetch_add(1, Relaxed);
        if timed_out {
            self.wait_timeouts.fetch_add(1, Relaxed);
        }
    }

    /// A read that waited was served by the leader anyway.
    pub fn add_wasted_wait(&self, strategy: Strategy) {
        self.wasted_by_strategy[strategy.index()].fetch_add(1, Relaxed);
    }

    pub fn add_fallback(&self) {
        self.fallbacks_to_leader.fetch_add(1, Relaxed);
    }

    pub fn add_evictions(&self, n: u64) {
        if n > 0 {
            self.evictions.fetch_add(n, Relaxed);
        }
    }

    pub fn add_forget(&self) {
        self.forgets.fetch_add(1, Relaxed);
    }

    pub fn add_store_error(&self) {
        self.store_errors.fetch_add(1, Relaxed);
    }

    pub fn add_read_check(&self) {
        self.read_checks.fetch_add(1, Relaxed);
    }

    pub fn add_write_lost(&self) {
        self.writes_lost.fetch_add(1, Relaxed);
    }

    pub fn add_absurd_token(&self) {
        self.absurd_tokens.fetch_add(1, Relaxed);
    }

    pub fn add_stall(&self) {
        self.stalls.fetch_add(1, Relaxed);
    }

    pub fn add_retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    /// Reads every counter (each one atomically; not all at one instant).
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut reads = Vec::new();
        for (node, per_node) in self.nodes.iter().zip(&self.reads) {
            for (freshness, per_f) in [Freshness::Fresh, Freshness::StaleOk]
                .into_iter()
                .zip(per_node)
            {
                for (strategy, count) in Strategy::ALL.into_iter().zip(per_f) {
                    let count = count.load(Relaxed);
                    if count > 0 {
                        reads.push(ReadCount {
                            node: node.clone(),
                            freshness,
                            strategy,
                            count,
                        });
                    }
                }
            }
        }
        let waits_by_strategy: Vec<StrategyWaits> = Strategy::ALL
            .into_iter()
            .map(|strategy| StrategyWaits {
                strategy,
                waits: self.waits_by_strategy[strategy.index()].load(Relaxed),
                wasted: self.wasted_by_strategy[strategy.index()].load(Relaxed),
            })
            .filter(|w| w.waits > 0 || w.wasted > 0)
            .collect();
        let scopes = Scope::ALL
            .into_iter()
            .map(|scope| ScopeReads {
                scope,
                reads: self.scope_reads[scope.index()].load(Relaxed),
                fetches: self.scope_fetches[scope.index()].load(Relaxed),
                fetched_reads: self.scope_fetch_reads[scope.index()].load(Relaxed),
            })
            .filter(|s| s.reads > 0 || s.fetched_reads > 0)
            .collect();
        MetricsSnapshot {
            reads,
            scopes,
            writes: self.writes.load(Relaxed),
            wasted_waits: waits_by_strategy.iter().map(|w| w.wasted).sum(),
            waits_by_strategy,
            waits: self.waits.load(Relaxed),
            wait_time: Duration::from_micros(self.wait_micros.load(Relaxed)),
            wait_buckets: self.wait_buckets.iter().map(|b| b.load(Relaxed)).collect(),
            wait_timeouts: self.wait_timeouts.load(Relaxed),
            fallbacks_to_leader: self.fallbacks_to_leader.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            forgets: self.forgets.load(Relaxed),
            store_errors: self.store_errors.load(Relaxed),
            read_checks: self.read_checks.load(Relaxed),
            absurd_tokens: self.absurd_tokens.load(Relaxed),
            writes_lost: self.writes_lost.load(Relaxed),
            stalls: self.stalls.load(Relaxed),
            retries: self.retries.load(Relaxed),
            tracker_polls: self.tracker_polls.load(Relaxed),
            feed_messages: self.feed_messages.load(Relaxed),
            feed_published: self.feed_published.load(Relaxed),
            feed_late: self.feed_late.load(Relaxed),
            feed_fallbacks: self.feed_fallbacks.load(Relaxed),
            feed_holder: self.feed_holder.load(Relaxed),
            age_buckets: self.age_buckets.iter().map(|b| b.load(Relaxed)).collect(),
            age_time: Duration::from_micros(self.age_micros.load(Relaxed)),
        }
    }
}

/// Reads served by one node under one strategy and freshness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadCount {
    /// `leader` or a follower's name.
    pub node: Arc<str>,
    /// Fresh or stale-ok.
    pub freshness: Freshness,
    /// The strategy in force for the read (stale-ok reads are routed the
    /// same under all of them).
    pub strategy: Strategy,
    /// Reads since the router started.
    pub count: u64,
}

/// Fresh reads of one scope, and the coalesced fetches of its position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopeReads {
    /// The scope in force for the reads.
    pub scope: Scope,
    /// Fresh reads routed under it.
    pub reads: u64,
    /// Fetches sent of its position (`global`: `GET`s of the mark;
    /// `cluster`: statements on the leader); 0 for `connection` and
    /// `session`. Well below `fetched_reads` when reads are coalesced.
    pub fetches: u64,
    /// Reads that took a fetched position (their own fetch or a shared one).
    pub fetched_reads: u64,
}

/// Waits of one strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StrategyWaits {
    /// The strategy in force for the reads.
    pub strategy: Strategy,
    /// Fresh reads that waited for a follower to catch up.
    pub waits: u64,
    /// Of those, reads served by the leader anyway (the wait bought
    /// nothing): budget spent, the last follower left rotation, or the
    /// follower failed after it caught up.
    pub wasted: u64,
}

/// All counters at one moment, totals since the router started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Reads by node, freshness and strategy; combinations never used are
    /// left out.
    pub reads: Vec<ReadCount>,
    /// Fresh reads per scope, and the coalesced fetches of their positions;
    /// scopes never used are left out.
    pub scopes: Vec<ScopeReads>,
    /// Writes begun ([`Router::begin`](crate::Router::begin), [`Router::write_query`](crate::Router::write_query)).
    pub writes: u64,
    /// Fresh reads that waited for a follower to catch up.
    pub waits: u64,
    /// Total time those reads waited.
    pub wait_time: Duration,
    /// Those waits by duration, not cumulative: `wait_buckets[i]` counts
    /// waits longer than `WAIT_BOUNDS[i - 1]` and at most `WAIT_BOUNDS[i]`;
    /// the last entry (one more than there are bounds) counts waits longer
    /// than every bound. Empty in a `Default` snapshot.
    pub wait_buckets: Vec<u64>,
    /// Waits that ran out of budget and went to the leader.
    pub wait_timeouts: u64,
    /// Waits that ended on the leader anyway, all strategies (see
    /// [`StrategyWaits::wasted`]).
    pub wasted_waits: u64,
    /// Waits and wasted waits per strategy; strategies that never waited
    /// are left out.
    pub waits_by_strategy: Vec<StrategyWaits>,
    /// Reads that wanted a follower and were served by the leader (no
    /// follower, store degraded, budget spent, check failed, …).
    pub fallbacks_to_leader: u64,
    /// Times a follower left rotation (down, forgotten or lagging).
    pub evictions: u64,
    /// Times the router forgot a follower's position because one of its own
    /// connections failed (rule 3).
    pub forgets: u64,
    /// Session store calls that failed or timed out (rule 5).
    pub store_errors: u64,
    /// Extra replay-position queries made by `per-read-check`.
    pub read_checks: u64,
    /// Tokens absurdly far beyond the leader, sent to the leader and clamped
    /// (rule 4).
    pub absurd_tokens: u64,
    /// Requests of sessions whose acknowledged write a failover lost (told
    /// to the session: `X-Ryw-Write-Lost`, a `NOTICE` in the proxy).
    pub writes_lost: u64,
    /// Reads that did not answer in time and retired their shared
    /// connection ([`Router::report_stall`](crate::Router::report_stall)).
    pub stalls: u64,
    /// Reads run a second time on another node because the first broke,
    /// stalled or was cancelled by recovery (rule 8).
    pub retries: u64,
    /// Poll statements this instance's tracker sent (one per node per poll
    /// interval while it polls; none while a feed carries the positions).
    pub tracker_polls: u64,
    /// Position feed messages from another instance applied here.
    pub feed_messages: u64,
    /// Position feed messages this instance published (while it held the
    /// lease).
    pub feed_published: u64,
    /// Feed messages that arrived later than the quiet limit: applied
    /// with their age, but not counted as the feed speaking.
    pub feed_late: u64,
    /// Times the feed went quiet and this instance started polling on its
    /// own (holder gone, Redis down).
    pub feed_fallbacks: u64,
    /// Whether this instance holds the feed's lease now (it polls for all).
    pub feed_holder: bool,
    /// Sampled ages of the follower positions routing relies on (how long
    /// ago the poll that read each was sent), by [`Self::AGE_BOUNDS`], not
    /// cumulative, the last entry beyond every bound. Empty in a `Default`
    /// snapshot.
    pub age_buckets: Vec<u64>,
    /// Sum of those sampled ages.
    pub age_time: Duration,
}

impl MetricsSnapshot {
    /// Upper bounds of the wait buckets. Waits are bounded by their budget
    /// (hybrid 20 ms, causal 200 ms by default; at most 60 s per request), so
    /// the bounds are dense where those budgets lie.
    pub const WAIT_BOUNDS: &'static [Duration] = &[
        Duration::from_millis(1),
        Duration::from_millis(2),
        Duration::from_millis(5),
        Duration::from_millis(10),
        Duration::from_millis(20),
        Duration::from_millis(50),
        Duration::from_millis(100),
        Duration::from_millis(200),
        Duration::from_millis(500),
        Duration::from_secs(1),
        Duration::from_secs(2),
        Duration::from_secs(5),
    ];

    /// Upper bounds of the position-age buckets: dense around the poll
    /// interval (10 ms by default) and a few of them.
    pub const AGE_BOUNDS: &'static [Duration] = &[
        Duration::from_millis(1),
        Duration::from_millis(2),
        Duration::from_millis(5),
        Duration::from_millis(10),
        Duration::from_millis(15),
        Duration::from_millis(20),
        Duration::from_millis(25),
        Duration::from_millis(30),
        Duration::from_millis(40),
        Duration::from_millis(50),
        Duration::from_millis(100),
        Duration::from_millis(250),
        Duration::from_millis(500),
        Duration::from_secs(1),
    ];

    /// The position-age histogram as `(upper bound, samples)`, not
    /// cumulative; `None` is the bucket beyond the last bound.
    pub fn age_histogram(&self) -> impl Iterator<Item = (Option<Duration>, u64)> + '_ {
        Self::AGE_BOUNDS
            .iter()
            .map(|&le| Some(le))
            .chain(std::iter::once(None))
            .zip(self.age_buckets.iter().copied())
    }

    /// The wait histogram as `(upper bound, waits in this bucket)`, not
    /// cumulative; `None` is the bucket beyond the last bound.
    pub fn wait_histogram(&self) -> impl Iterator<Item = (Option<Duration>, u64)> + '_ {
        Self::WAIT_BOUNDS
            .iter()
            .map(|&le| Some(le))
            .chain(std::iter::once(None))
            .zip(self.wait_buckets.iter().copied())
    }

    /// Reads served by `node`, all kinds together.
    pub fn reads_on(&self, node: &str) -> u64 {
        self.reads
            .iter()
            .filter(|r| &*r.node == node)
            .map(|r| r.count)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_lists_used_counters_by_node() {
        let m = Metrics::new(vec![Arc::from("leader"), Arc::from("f1")]);
        let f1 = MetricSlot::Node(NodeId::new(0));
        m.add_read(MetricSlot::Leader, Freshness::Fresh, Strategy::Causal);
        m.add_read(f1, Freshness::Fresh, Strategy::Causal);
        m.add_read(f1, Freshness::Fresh, Strategy::Causal);
        m.add_read(f1, Freshness::StaleOk, Strategy::Hybrid);
        m.add_wait(Duration::from_millis(3), true, Strategy::Hybrid);
        m.add_wasted_wait(Strategy::Hybrid);
        m.add_wait(Duration::from_millis(1), false, Strategy::Causal);
        m.add_evictions(0);
        let s = m.snapshot();
        assert_eq!(s.reads.len(), 3);
        assert_eq!(s.reads_on("f1"), 3);
        assert_eq!(s.reads_on("leader"), 1);
        assert_eq!((s.waits, s.wait_timeouts, s.wasted_waits), (2, 1, 1));
        assert_eq!(s.wait_time, Duration::from_millis(4));
        assert_eq!(
            s.waits_by_strategy,
            [
                StrategyWaits {
                    strategy: Strategy::Causal,
                    waits: 1,
                    wasted: 0
                },
                StrategyWaits {
                    strategy: Strategy::Hybrid,
                    waits: 1,
                    wasted: 1
                },
            ]
        );
        assert_eq!(s.evictions, 0);
    }

    #[test]
    fn waits_land_in_the_bucket_of_their_duration() {
        let m = Metrics::new(vec![Arc::from("leader")]);
        m.add_wait(Duration::from_micros(300), false, Strategy::Causal); // ≤ 1 ms
        m.add_wait(Duration::from_millis(1), false, Strategy::Causal); // ≤ 1 ms: bounds are inclusive
        m.add_wait(Duration::from_millis(15), false, Strategy::Causal); // ≤ 20 ms
        m.add_wait(Duration::from_millis(200), true, Strategy::Causal); // ≤ 200 ms
        m.add_wait(Duration::from_secs(9), true, Strategy::Causal); // beyond 5 s
        let s = m.snapshot();
        let by_bound: Vec<(Option<Duration>, u64)> =
            s.wait_histogram().filter(|&(_, n)| n > 0).collect();
        assert_eq!(
            by_bound,
            [
                (Some(Duration::from_millis(1)), 2),
                (Some(Duration::from_millis(20)), 1),
                (Some(Duration::from_millis(200)), 1),
                (None, 1),
            ]
        );
        assert_eq!(
            s.wait_histogram().count(),
            MetricsSnapshot::WAIT_BOUNDS.len() + 1
        );
        assert_eq!(s.wait_buckets.iter().sum::<u64>(), s.waits);
    }
}
