//! The tracker's bookkeeping, with no I/O: what each poll result or failure
//! does to the known positions, lag and rotation. Kept apart from the polling
//! tasks so every rule here is unit-tested with made-up polls and instants.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::timeline::TimelineHistory;
use crate::view::{ClusterView, FollowerHealth, NodeId, ObservedNode, Reached, Role, RoleHealth};
use crate::{LEADER_NAME, Lsn, RouterConfig};

/// Leader positions closer in time than this are merged into one history
/// entry (the later position, the earlier time): bounds memory under heavy
/// write rates at the cost of over-stating lag by under a millisecond.
const HISTORY_RESOLUTION: Duration = Duration::from_millis(1);

/// A follower's pace is judged from this many of its latest catch-ups.
const CATCH_UPS: usize = 8;

/// At most this many leader positions are published in a view (see
/// [`ClusterView::leader_reached`]).
const PUBLISHED_POSITIONS: usize = 64;

/// What one follower poll returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FollowerPoll {
    /// `pg_last_wal_replay_lsn()`; `None` on a primary.
    pub replay: Option<Lsn>,
    /// `pg_postmaster_start_time()` in µs since the epoch: changes when the
    /// server restarts.
    pub started_at_us: i64,
    /// `pg_stat_wal_receiver.status`; `None` when there is no WAL receiver.
    pub receiver: Option<String>,
    /// `pg_stat_wal_receiver.received_tli`: the timeline it last received
    /// (`None` when there is no WAL receiver; the last one known is kept).
    pub timeline: Option<u32>,
}

/// The limits that decide rotation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_lag_bytes: u64,
    pub max_lag_time: Duration,
    /// How far back the leader history reaches; beyond it lag time is a lower
    /// bound, already past `max_lag_time`.
    pub history_span: Duration,
}

impl Limits {
    pub fn from_config(cfg: &RouterConfig) -> Limits {
        Limits {
            max_lag_bytes: cfg.max_lag_bytes,
            max_lag_time: cfg.max_lag_time,
            history_span: (cfg.max_lag_time * 2).max(Duration::from_secs(1)),
        }
    }
}

/// When the leader first reached each position: lag time without
/// `pg_last_xact_replay_timestamp()` (FACTS: that grows forever on an idle
/// cluster).
#[derive(Debug, Default)]
pub(crate) struct LeaderHistory {
    /// `(position, first seen)`, both increasing.
    entries: VecDeque<(Lsn, Instant)>,
}

impl LeaderHistory {
    /// Notes that the leader was at `lsn` at `now`. Positions never go back.
    pub fn record(&mut self, lsn: Lsn, now: Instant, span: Duration) {
        match self.entries.back_mut() {
            Some((last, _)) if lsn <= *last => return,
            Some((last, seen)) if now.saturating_duration_since(*seen) < HISTORY_RESOLUTION => {
                *last = lsn;
            }
            _ => self.entries.push_back((lsn, now)),
        }
        // Drop the oldest entry only while the next one is also out of the
        // span, so the first entry always dates from at least `span` ago:
        // lag of a follower behind it reads as at least `span`.
        while self.entries.len() >= 2 && now.saturating_duration_since(self.entries[1].1) > span {
            self.entries.pop_front();
        }
    }

    /// The latest position the leader is known to have reached.
    pub fn latest(&self) -> Option<Lsn> {
        self.entries.back().map(|(lsn, _)| *lsn)
    }

    /// Lag time of a follower at `replay`: `now` minus the time the leader
    /// first went past `replay`; zero when `replay` has reached the leader's
    /// latest known position.
    pub fn lag(&self, replay: Lsn, now: Instant) -> Option<Duration> {
        self.entries.back()?;
        Some(
            self.first_beyond(replay)
                .map_or(Duration::ZERO, |seen| now.saturating_duration_since(seen)),
        )
    }

    /// When the leader was first seen beyond `replay`: since then a follower
    /// at `replay` has been behind. `None` when `replay` has reached the
    /// leader's latest known position (or nothing is known).
    pub fn first_beyond(&self, replay: Lsn) -> Option<Instant> {
        let i = self.entries.partition_point(|(lsn, _)| *lsn <= replay);
        self.entries.get(i).map(|(_, seen)| *seen)
    }

    /// When the oldest position in `(from, to]` was first seen: a follower
    /// that moved from `from` to `to` has just replayed it, so the time
    /// since then is how long it took this follower to show it (its
    /// catch-up). `None` if the leader was seen at no position in between.
    pub fn oldest_between(&self, from: Lsn, to: Lsn) -> Option<Instant> {
        let i = self.entries.partition_point(|(lsn, _)| *lsn <= from);
        match self.entries.get(i) {
            Some((lsn, seen)) if *lsn <= to => Some(*seen),
            _ => None,
        }
    }

    /// The positions beyond `lsn`, oldest first, at most `max` of them:
    /// when there are more, each run of neighbours is represented by its
    /// last (the later position at its later time), so a lookup of when the
    /// leader reached a position can only answer later than it did.
    pub fn beyond(&self, lsn: Lsn, max: usize) -> Vec<Reached> {
        let start = self.entries.partition_point(|(l, _)| *l <= lsn);
        let n = self.entries.len() - start;
        if n == 0 || max == 0 {
            return Vec::new();
        }
        let step = n.div_ceil(max);
        // The last of each run of `step`, counted back from the newest, so
        // the newest position is always kept.
        let first = (n - 1) % step;
        (first..n)
            .step_by(step)
            .map(|k| {
                let (lsn, at) = self.entries[start + k];
                Reached { lsn, at }
            })
            .collect()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A follower's latest catch-ups: how long after the leader reached a
/// position the tracker first saw the follower at it. Their maximum is its
/// published pace ([`FollowerHealth::catch_up`]).
#[derive(Debug, Default)]
struct CatchUps {
    recent: [Duration; CATCH_UPS],
    len: usize,
    next: usize,
}

impl CatchUps {
    fn push(&mut self, took: Duration) {
        self.recent[self.next] = took;
        self.next = (self.next + 1) % CATCH_UPS;
        self.len = (self.len + 1).min(CATCH_UPS);
    }

    /// The longest of the latest catch-ups: an estimate that errs late, so
    /// a prediction made from it errs towards not waiting.
    fn pace(&self) -> Option<Duration> {
        self.recent[..self.len].iter().copied().max()
    }

    fn clear(&mut self) {
        *self = CatchUps::default();
    }
}

#[derive(Debug)]
struct Node {
    /// As listed in [`ClusterView::nodes`].
    status: ObservedNode,
    /// The postmaster start time the positions we hold came from. Kept when
    /// the position is forgotten, to tell a reconnect from a restart.
    started_at_us: Option<i64>,
    catch_ups: CatchUps,
    /// Its last poll answered and said it is not in recovery.
    primary: bool,
    /// When the latest poll applied to it was sent (local or from the
    /// feed): an outcome of an earlier poll is older news and is dropped.
    last_sent: Option<Instant>,
    /// Its replay position as last polled (the published one can be ahead,
    /// taught by a read); a poll behind *this* is a position going
    /// backwards.
    polled_lsn: Option<Lsn>,
    /// Since when (a poll's answer) its WAL receiver has been seen stopped,
    /// and how it said so. Believed once the leader answers a poll sent
    /// after it: a leader that dies stops every receiver, and its last
    /// answers can arrive after the followers' polls saw them stop.
    receiver_stopped: Option<(Instant, String)>,
}

impl Node {
    /// Rule 3 for this node as a follower: its position, and the pace
    /// learnt from it, are no longer trusted (a restarted standby catches
    /// up at a pace of its own).
    fn forget(&mut self, why: &str) {
        forget(&mut self.status, why);
        self.polled_lsn = None;
        self.catch_ups.clear();
    }
}

/// A primary's poll: its position, timeline and the history of that
/// timeline (read once per timeline by its polling task).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PrimaryPoll {
    /// `pg_current_wal_lsn()`.
    pub lsn: Lsn,
    /// Its timeline (from `pg_walfile_name(pg_current_wal_lsn())`).
    pub timeline: u32,
    /// `pg_postmaster_start_time()` in µs since the epoch.
    pub started_at_us: i64,
    /// Where each earlier timeline ended, from its `NNNNNNNN.history` file;
    /// with no switches when it could not be read.
    pub history: Arc<TimelineHistory>,
}

/// What one poll of a node said, from this instance's poll task or from
/// the feed's holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PollOutcome {
    /// It is in recovery.
    Follower(FollowerPoll),
    /// It is not in recovery.
    Primary(PrimaryPoll),
    /// The poll or the connection failed.
    Error(String),
}

/// Everything the tracker knows; one instance behind a mutex, turned into a
/// [`ClusterView`] after every change.
///
/// Nodes are indexed as configured: the followers, then the node configured
/// as the leader. Which node leads is discovered from the polls (the one
/// not in recovery; with several, the one on the latest timeline), and
/// moves when another node is promoted.
#[derive(Debug)]
pub(crate) struct TrackerState {
    limits: Limits,
    /// The leader as published (`leader`): a copy of its node's status.
    leader: ObservedNode,
    leader_index: Option<usize>,
    /// The leader's positions over time (lag, the hybrid prediction). Its
    /// positions only; cleared when another node leads.
    history: LeaderHistory,
    /// The leader's timeline history.
    timelines: Arc<TimelineHistory>,
    nodes: Vec<Node>,
    /// When the latest poll the leader answered was sent.
    leader_heard_sent: Option<Instant>,
}

impl TrackerState {
    /// `names`: the nodes' names in index order (the followers, then
    /// [`FORMER_LEADER_NAME`](crate::FORMER_LEADER_NAME) for the node
    /// configured as the leader).
    pub fn new(names: &[Arc<str>], limits: Limits) -> TrackerState {
        TrackerState {
            limits,
            leader: ObservedNode::new(Arc::from(LEADER_NAME), Role::Leader),
            leader_index: None,
            history: LeaderHistory::default(),
            timelines: Arc::new(TimelineHistory::default()),
            nodes: names
                .iter()
                .map(|name| Node {
                    status: ObservedNode::new(name.clone(), Role::Follower),
                    started_at_us: None,
                    catch_ups: CatchUps::default(),
                    primary: false,
                    last_sent: None,
                    polled_lsn: None,
                    receiver_stopped: None,
                })
                .collect(),
            leader_heard_sent: None,
        }
    }

    /// Whether a node leads and answered its last poll.
    fn leader_up(&self) -> bool {
        self.leader_index.is_some() && self.leader.healthy
    }

    /// The leader answered a poll sent at `sent`: it was up after every
    /// follower poll answered before `sent`, so a WAL receiver such a poll
    /// saw stopped is not the leader's death: that follower's data is
    /// frozen, and it is treated as down until it streams again.
    fn leader_heard(&mut self, sent: Instant) {
        if !self.leader_up() {
            return;
        }
        self.leader_heard_sent = self.leader_heard_sent.max(Some(sent));
        for (i, f) in self.nodes.iter_mut().enumerate() {
            if self.leader_index == Some(i) {
                continue;
            }
            if let Some((since, why)) = &f.receiver_stopped
                && *since < sent
            {
                let why = why.clone();
                f.forget(&why);
            }
        }
    }

    /// A successful poll of node `i`, which is not in recovery.
    ///
    /// It leads if no node does yet, or if its timeline is later than the
    /// leader's (a promotion). Another primary on the same or an earlier
    /// timeline is not used: an old leader started again without being
    /// rewound, whose writes the cluster's history does not have.
    pub fn on_primary_poll(&mut self, i: usize, poll: PrimaryPoll, now: Instant) {
        let node = &mut self.nodes[i];
        node.status.polled = true;
        if node.started_at_us.is_some_and(|k| k != poll.started_at_us) {
            node.forget("postmaster restarted");
        }
        node.started_at_us = Some(poll.started_at_us);
        node.primary = true;
        node.status.timeline = Some(poll.timeline);
        let takes_over = match self.leader_index {
            Some(l) if l == i => false,
            Some(l) => {
                let theirs = self.nodes[l].status.timeline.unwrap_or(0);
                poll.timeline > theirs
            }
            None => true,
        };
        if takes_over {
            self.promote(i, &poll);
        } else if self.leader_index != Some(i) {
            let leader_timeline = self.timelines.current;
            let node = &mut self.nodes[i];
            node.forget(&format!(
                "a second primary, on timeline {} (the leader's is {leader_timeline}): not used",
                poll.timeline
            ));
            node.status.set_role(Role::Leader);
            return;
        }
        if !self.leader.healthy {
            tracing::info!(node = %self.nodes[i].status.name, lsn = %poll.lsn, "leader reachable");
        }
        self.leader.healthy = true;
        self.leader.in_rotation = true;
        self.leader.note = None;
        self.leader.polled = true;
        self.leader.timeline = Some(poll.timeline);
        self.note_leader_lsn(poll.lsn, now);
    }

    /// Node `i` leads from now on: the old leader's positions and history
    /// mean nothing on the new timeline.
    fn promote(&mut self, i: usize, poll: &PrimaryPoll) {
        let name = self.nodes[i].status.name.clone();
        match self.leader_index {
            Some(old) => tracing::warn!(
                node = %name,
                timeline = poll.timeline,
                old = %self.nodes[old].status.name,
                "a new leader: writes go to it from now on"
            ),
            None => tracing::info!(node = %name, timeline = poll.timeline, "leader found"),
        }
        if let Some(old) = self.leader_index {
            let n = &mut self.nodes[old];
            n.primary = false;
            n.forget("no longer the leader");
            n.status.set_role(Role::Follower);
        }
        self.leader_index = Some(i);
        self.history = LeaderHistory::default();
        self.timelines = poll.history.clone();
        self.leader = no_leader("polled");
        let node = &mut self.nodes[i];
        // Its follower position means nothing now; decisions taken under it
        // are void (rule 2).
        node.forget("the leader");
        node.status.set_role(Role::Leader);
    }

    /// A leader position learnt elsewhere (a write's commit LSN): makes lag
    /// and the rule 4 bound current without waiting for the next poll.
    pub fn note_leader_lsn(&mut self, lsn: Lsn, now: Instant) {
        if self.leader_index.is_none() {
            return;
        }
        self.history.record(lsn, now, self.limits.history_span);
        self.leader.lsn = self.leader.lsn.max(Some(lsn));
    }

    /// Node `i` could not be polled or connected to, or one of the router's
    /// own connections to it broke: a follower's position is forgotten
    /// (rule 3); the leader is marked down, its last position kept
    /// (positions only grow, so it is still a lower bound) and its index
    /// too (it leads again when it answers, unless another node was
    /// promoted meanwhile).
    pub fn on_node_error(&mut self, i: usize, why: &str) {
        self.nodes[i].status.polled = true;
        if self.leader_index == Some(i) {
            if self.leader.healthy {
                tracing::warn!(node = %self.nodes[i].status.name, error = why, "leader unreachable");
            }
            self.leader.healthy = false;
            self.leader.in_rotation = false;
            self.leader.note = Some(why.to_owned());
        } else {
            self.nodes[i].primary = false;
            self.nodes[i].forget(why);
            if self.leader_index.is_none() {
                self.leader.polled = true;
                self.leader.note = Some(format!(
                    "no node is the leader; {}: {why}",
                    self.nodes[i].status.name
                ));
            }
        }
    }

    /// A successful poll of node `i`, which is in recovery (a follower),
    /// answered at `now`; `timeline` is the one it last received.
    pub fn on_follower_poll(&mut self, i: usize, poll: FollowerPoll, now: Instant) {
        if self.leader_index == Some(i) {
            // The leader is a standby now: demoted (restarted to follow
            // another). No node leads until one is seen out of recovery.
            tracing::warn!(node = %self.nodes[i].status.name, "the leader is in recovery now");
            self.leader_index = None;
            self.leader = no_leader("the leader went into recovery");
            let n = &mut self.nodes[i];
            n.forget("was the leader");
            n.status.set_role(Role::Follower);
        }
        let leader_up = self.leader_up();
        let f = &mut self.nodes[i];
        f.status.polled = true;
        if f.primary {
            f.primary = false;
            f.status.set_role(Role::Follower);
            f.forget("in recovery again");
        }
        // Rule 3: a restarted standby can come back behind what it had
        // replayed; nothing learnt from the previous incarnation survives.
        if f.started_at_us
            .is_some_and(|known| known != poll.started_at_us)
        {
            f.forget("postmaster restarted");
        }
        f.started_at_us = Some(poll.started_at_us);
        if poll.timeline.is_some() {
            f.status.timeline = poll.timeline;
        }
        let streaming = poll.receiver.as_deref() == Some("streaming");
        if streaming {
            f.receiver_stopped = None;
        } else if f.receiver_stopped.is_none() {
            let why = match poll.receiver.as_deref() {
                None => "wal receiver not running".to_owned(),
                Some(other) => format!("wal receiver {other}"),
            };
            f.receiver_stopped = Some((now, why));
        }
        // A standby whose WAL receiver stopped answers queries with frozen
        // data: treated as down until it streams again, once the leader
        // has answered a poll sent after the stop was seen. Not before
        // (the leader's death stops every receiver, and its last answer
        // can arrive after the followers' polls), and not while the leader
        // is down: each replay position is still exact (same incarnation),
        // so stale-ok reads and fresh reads whose token it has replayed go
        // on; lag against the leader's last known position still evicts
        // one that was behind.
        let heard = self.leader_heard_sent;
        let frozen = f
            .receiver_stopped
            .as_ref()
            .filter(|(since, _)| leader_up && heard.is_some_and(|heard| *since < heard))
            .map(|(_, why)| why.clone());
        match (poll.replay, frozen) {
            (None, _) => f.forget("no replay position (not a standby?)"),
            (Some(_), Some(why)) => f.forget(&why),
            (Some(replay), None) => {
                if f.polled_lsn.is_some_and(|known| replay < known) {
                    // Same incarnation yet behind its last poll: something
                    // we do not understand (a different server behind the
                    // address?). Behind a position a read taught is not
                    // that: the poll was sent before the read's statement.
                    f.forget("replay position went backwards");
                }
                // The follower's pace: it moved past positions the leader
                // was seen at; the oldest of them took this long to show.
                if let Some(before) = f.status.lsn
                    && let Some(seen) = self.history.oldest_between(before, replay)
                {
                    f.catch_ups.push(now.saturating_duration_since(seen));
                }
                if !f.status.healthy {
                    tracing::info!(node = %f.status.name, %replay, "follower healthy");
                }
                f.polled_lsn = Some(replay);
                // Positions only move forward (a read may have taught a
                // later one; forgetting above cleared it).
                f.status.lsn = f.status.lsn.max(Some(replay));
                f.status.healthy = true;
                f.status.note = None;
            }
        }
    }

    /// One poll of node `i`, sent at `sent` and answered (or failed) at
    /// `received`, whether polled here or received from the feed: the same
    /// methods either way, so rule 3 and timelines are handled alike.
    /// Returns `false`, changing nothing, when a poll sent later was
    /// applied already (a feed message and a local poll crossing, or two
    /// holders for a moment): older news must not undo newer.
    pub fn apply(
        &mut self,
        i: usize,
        outcome: PollOutcome,
        sent: Instant,
        received: Instant,
    ) -> bool {
        let node = &mut self.nodes[i];
        if node.last_sent.is_some_and(|t| sent < t) {
            return false;
        }
        node.last_sent = Some(sent);
        match outcome {
            PollOutcome::Follower(poll) => {
                self.on_follower_poll(i, poll, received);
                self.note_poll_sent(i, sent);
            }
            PollOutcome::Primary(poll) => {
                self.on_primary_poll(i, poll, received);
                self.note_poll_sent(i, sent);
                if self.leader_index == Some(i) {
                    self.leader_heard(sent);
                }
            }
            PollOutcome::Error(why) => self.on_node_error(i, &why),
        }
        true
    }

    /// A fresh read on follower `i`, planned under `epoch`, saw it at
    /// `lsn` (rule 7's position): if no restart or broken connection was
    /// seen since (same epoch, so the same incarnation) and `lsn` is ahead
    /// of what is known, it is known now. Never lowers a position; never
    /// makes a position known that was not (a forgotten follower waits
    /// for its poll).
    pub fn learn_position(&mut self, i: usize, epoch: u64, lsn: Lsn) {
        if self.leader_index == Some(i) {
            return;
        }
        let s = &mut self.nodes[i].status;
        if s.epoch == epoch && s.healthy && s.lsn.is_some_and(|known| known < lsn) {
            s.lsn = Some(lsn);
        }
    }

    /// The poll whose answer was just applied to node `i` was sent at
    /// `sent`: what the node shows now, it had reached after `sent`.
    pub fn note_poll_sent(&mut self, i: usize, sent: Instant) {
        let status = if self.leader_index == Some(i) {
            &mut self.leader
        } else {
            &mut self.nodes[i].status
        };
        if status.lsn.is_some() {
            status.polled_at = Some(sent);
        }
    }

    /// Node `i`'s position is not to be trusted any more (rule 3): one of
    /// the router's connections to it broke, or a read on it stalled.
    pub fn forget_follower(&mut self, i: usize, why: &str) {
        self.on_node_error(i, why);
    }

    /// The postmaster start time node `i`'s known position belongs to, if
    /// its position is known (the leader's, while it leads). New read
    /// connections must match it.
    pub fn known_incarnation(&self, i: usize) -> Option<i64> {
        let n = &self.nodes[i];
        if self.leader_index == Some(i) {
            return self.leader.lsn.and(n.started_at_us);
        }
        n.status.lsn.and(n.started_at_us)
    }

    /// Recomputes lag and rotation at `now`; returns how many followers left
    /// rotation in this step.
    pub fn refresh(&mut self, now: Instant) -> u64 {
        let limits = self.limits;
        let leader = if self.leader_index.is_some() {
            self.history.latest()
        } else {
            None
        };
        let timelines = self.timelines.clone();
        let mut evicted = 0;
        for (i, f) in self.nodes.iter_mut().enumerate() {
            let pace = f.catch_ups.pace();
            let s = &mut f.status;
            let was_in = s.in_rotation;
            if Some(i) == self.leader_index {
                s.in_rotation = false;
                s.note = Some("the leader".to_owned());
                continue;
            }
            let mut lag = FollowerHealth::UNKNOWN;
            if let Some(why) = s
                .lsn
                .and_then(|lsn| off_history(&timelines, s.timeline, lsn))
            {
                s.in_rotation = false;
                s.note = Some(why);
            } else {
                match (s.healthy, s.lsn, leader) {
                    (true, Some(replay), Some(leader_lsn)) => {
                        let bytes = leader_lsn.bytes_since(replay);
                        let time = self.history.lag(replay, now).unwrap_or_default();
                        lag = FollowerHealth {
                            lag_bytes: Some(bytes),
                            lag_ms: Some(time.as_millis() as u64),
                            behind_since: self.history.first_beyond(replay),
                            catch_up: pace,
                        };
                        // Rule 8: lagging past either limit leaves rotation.
                        s.in_rotation =
                            bytes <= limits.max_lag_bytes && time <= limits.max_lag_time;
                        s.note = (!s.in_rotation)
                            .then(|| format!("lagging {bytes} bytes, {} ms", time.as_millis()));
                    }
                    (true, Some(_), None) => {
                        // The leader was never reached: lag cannot be judged.
                        // Position-based (causal) decisions stay correct.
                        lag.catch_up = pace;
                        s.in_rotation = true;
                    }
                    _ => s.in_rotation = false,
                }
            }
            // A second primary (not used) keeps the leader's role, and no lag.
            if let RoleHealth::Follower(h) = &mut s.health {
                *h = lag;
            }
            if was_in && !s.in_rotation {
                evicted += 1;
                tracing::warn!(node = %s.name, note = ?s.note, "follower left rotation");
            } else if !was_in && s.in_rotation {
                tracing::info!(node = %s.name, "follower in rotation");
            }
        }
        evicted
    }

    /// The snapshot routing reads.
    pub fn view(&self) -> ClusterView {
        let nodes: Vec<ObservedNode> = self.nodes.iter().map(|f| f.status.clone()).collect();
        // Only positions no follower in rotation has replayed can make a
        // read wait, so only those are published.
        let replayed = nodes
            .iter()
            .filter(|f| f.in_rotation)
            .filter_map(|f| f.lsn)
            .max();
        let leader_reached = match replayed {
            Some(lsn) => self.history.beyond(lsn, PUBLISHED_POSITIONS),
            None => Vec::new(),
        };
        ClusterView {
            leader: self.leader.clone(),
            leader_id: self.leader_index.map(NodeId::new),
            nodes,
            history: self.timelines.clone(),
            leader_reached,
        }
    }
}

/// The configured leader's poll at `lsn`, on timeline 1.
#[cfg(test)]
fn leader_answer(lsn: Lsn) -> PrimaryPoll {
    PrimaryPoll {
        lsn,
        timeline: 1,
        started_at_us: 0,
        history: Arc::new(TimelineHistory::first()),
    }
}

#[cfg(test)]
impl TrackerState {
    /// The node configured as the leader (the last) polled as a primary on
    /// timeline 1.
    pub fn on_leader_poll(&mut self, lsn: Lsn, now: Instant) {
        let i = self.nodes.len() - 1;
        self.on_primary_poll(i, leader_answer(lsn), now);
        self.leader_heard(now);
    }

    /// The node configured as the leader could not be polled.
    pub fn on_leader_error(&mut self, why: &str) {
        let i = self.nodes.len() - 1;
        self.on_node_error(i, why);
    }
}

/// Why a follower at `lsn`, on `timeline` (the one it last received), may
/// hold data that is not the leader's history, if it may: it is on an
/// earlier timeline and past where that one ended (the old leader's WAL
/// that the new one never had), or on a timeline the leader has not
/// reached (it follows a newer leader the tracker has not seen yet).
fn off_history(timelines: &TimelineHistory, timeline: Option<u32>, lsn: Lsn) -> Option<String> {
    let (current, t) = (timelines.current, timeline?);
    if current == 0 || t == current {
        return None;
    }
    if t > current {
        return Some(format!(
            "on timeline {t}, beyond the leader's {current}: not used until the leader is"
        ));
    }
    match timelines.switch_point(t) {
        Some(end) if lsn > end => Some(format!(
            "diverged: replayed {lsn} on timeline {t}, which ended at {end}"
        )),
        _ => None,
    }
}

/// The published leader while none is known, after a poll told why
/// (`why` in its note).
fn no_leader(why: &str) -> ObservedNode {
    let mut s = ObservedNode::new(Arc::from(LEADER_NAME), Role::Leader);
    s.note = Some(why.to_owned());
    s.polled = true;
    s
}

/// Rule 3: the position is no longer trusted, and decisions taken under the
/// old epoch are void (the epoch moves only when something was known, so a
/// node that stays down does not churn it).
fn forget(s: &mut ObservedNode, why: &str) {
    if s.healthy || s.lsn.is_some() {
        tracing::warn!(node = %s.name, reason = why, "forgetting follower position");
        s.epoch += 1;
    }
    s.lsn = None;
    s.healthy = false;
    // `in_rotation` is left to `refresh`, which counts the eviction.
    if let RoleHealth::Follower(h) = &mut s.health {
        h.lag_bytes = None;
        h.lag_ms = None;
    }
    s.polled_at = None;
    s.note = Some(why.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A follower's lag and pace.
    fn lag(n: &ObservedNode) -> FollowerHealth {
        *n.follower().expect("a follower")
    }

    const MIB: u64 = 1024 * 1024;

    fn limits() -> Limits {
        Limits::from_config(&RouterConfig::default())
    }

    /// `n` followers, then the node configured as the leader.
    fn state(n: usize) -> TrackerState {
        let names: Vec<Arc<str>> = (1..=n)
            .map(|i| Arc::from(format!("f{i}")))
            .chain(std::iter::once(Arc::from(crate::FORMER_LEADER_NAME)))
            .collect();
        TrackerState::new(&names, limits())
    }

    fn streaming(replay: u64, started: i64) -> FollowerPoll {
        FollowerPoll {
            replay: Some(Lsn::from_u64(replay)),
            started_at_us: started,
            receiver: Some("streaming".into()),
            timeline: None,
        }
    }

    /// A follower's poll with no WAL receiver running.
    fn stopped(replay: u64, started: i64) -> FollowerPoll {
        FollowerPoll {
            receiver: None,
            ..streaming(replay, started)
        }
    }

    #[test]
    fn a_caught_up_follower_is_in_rotation_with_zero_lag() {
        let t0 = Instant::now();
        let mut st = state(1);
        st.on_leader_poll(Lsn::from_u64(1000), t0);
        st.on_follower_poll(0, streaming(1000, 1), t0);
        st.refresh(t0 + Duration::from_secs(60));
        let f = &st.view().nodes[0];
        assert!(f.healthy && f.in_rotation);
        assert_eq!(f.lsn, Some(Lsn::from_u64(1000)));
        // Idle cluster, a minute later: still zero lag (not replay-timestamp lag).
        assert_eq!((lag(f).lag_bytes, lag(f).lag_ms), (Some(0), Some(0)));
    }

    #[test]
    fn a_failed_first_poll_marks_a_node_polled_though_nothing_is_known_of_it() {
        let t0 = Instant::now();
        let mut st = state(1);
        let v = st.view();
        assert!(!v.leader.polled && !v.nodes[0].polled);
        st.apply(0, PollOutcome::Error("refused".into()), t0, t0);
        let v = st.view();
        // `polled_at` stays unset: a failed poll shows no position.
        assert!(v.nodes[0].polled && v.nodes[0].polled_at.is_none());
        // No node leads, and a poll said so.
        assert!(v.leader.polled && v.leader_id.is_none());
    }

    #[test]
    fn lag_time_counts_from_when_the_leader_first_passed_the_follower() {
        let t0 = Instant::now();
        let mut st = state(1);
        st.on_leader_poll(Lsn::from_u64(100), t0);
        st.on_leader_poll(Lsn::from_u64(200), t0 + Duration::from_millis(50));
        st.on_leader_poll(Lsn::from_u64(300), t0 + Duration::from_millis(120));
        st.on_follower_poll(0, streaming(150, 1), t0);
        st.refresh(t0 + Duration::from_millis(400));
        let f = &st.view().nodes[0];
        // The leader first went beyond 150 when it reached 200, at t0+50ms.
        assert_eq!(lag(f).lag_ms, Some(350));
        assert_eq!(lag(f).lag_bytes, Some(150));
    }

    #[test]
    fn a_follower_lagging_past_the_byte_limit_leaves_rotation_and_returns() {
        let t0 = Instant::now();
        let mut st = state(1);
        st.on_leader_poll(Lsn::from_u64(100 * MIB), t0);
        st.on_follower_poll(0, streaming(100 * MIB - 17 * MIB, 1), t0);
        assert_eq!(st.refresh(t0), 0, "was never in rotation");
        assert!(!st.view().nodes[0].in_rotation);
        st.on_follower_poll(0, streaming(100 * MIB - MIB, 1), t0);
        st.refresh(t0);
        assert!(st.view().nodes[0].in_rotation);
        st.on_leader_poll(Lsn::from_u64(200 * MIB), t0 + Duration::from_millis(10));
        assert_eq!(
            st.refresh(t0 + Duration::from_millis(10)),
            1,
            "one eviction"
        );
        let f = &st.view().nodes[0];
        assert!(f.healthy && !f.in_rotation);
        assert!(f.note.as_deref().unwrap().contains("lagging"));
    }

    #[test]
    fn a_follower_lagging_past_the_time_limit_leaves_rotation() {
        let t0 = Instant::now();
        let mut st = state(1);
        st.on_leader_poll(Lsn::from_u64(1000), t0);
        st.on_follower_poll(0, streaming(1000, 1), t0);
        st.on_leader_poll(Lsn::from_u64(1010), t0 + Duration::from_secs(1));
        st.refresh(t0 + Duration::from_secs(10));
        assert!(st.view().nodes[0].in_rotation, "9 s behind: in");
        assert_eq!(st.refresh(t0 + Duration::from_millis(11_001)), 1);
        assert!(!st.view().nodes[0].in_rotation, "10.001 s behind: out");
    }

    #[test]
    fn a_stopped_wal_receiver_is_forgotten_once_the_leader_answers_after_it() {
        let t0 = Instant::now();
        let mut st = state(1);
        st.on_leader_poll(Lsn::from_u64(1000), t0);
        st.on_follower_poll(0, streaming(1000, 1), t0);
        st.refresh(t0);
        let epoch = st.view().nodes[0].epoch;
        let stopped = stopped(1000, 1);
        st.on_follower_poll(0, stopped.clone(), t0 + ms(1));
        st.refresh(t0 + ms(1));
        assert!(
            st.view().nodes[0].in_rotation,
            "not yet: the leader has not answered since"
        );
        st.on_leader_poll(Lsn::from_u64(1000), t0 + ms(10));
        st.refresh(t0 + ms(10));
        let f = &st.view().nodes[0];
        assert_eq!((f.lsn, f.healthy, f.in_rotation), (None, false, false));
        assert!(f.epoch > epoch);
        // Still stopped: still out.
        st.on_follower_poll(0, stopped, t0 + ms(11));
        st.refresh(t0 + ms(11));
        assert!(!st.view().nodes[0].in_rotation);
        st.on_follower_poll(0, streaming(1000, 1), t0 + ms(20));
        st.refresh(t0 + ms(20));
        assert!(st.view().nodes[0].in_rotation);
    }

    #[test]
    fn receivers_stopped_by_the_leaders_death_keep_their_followers() {
        // The leader killed mid-load: both followers' polls see their
        // receivers stop just before the leader's last answer (a poll sent
        // before they stopped) is applied, and then its next poll fails.
        let t0 = Instant::now();
        let mut st = state(2);
        st.on_leader_poll(Lsn::from_u64(1000), t0);
        st.on_follower_poll(0, streaming(1000, 1), t0);
        st.on_follower_poll(1, streaming(1000, 1), t0);
        st.refresh(t0);
        let stopped = stopped(1000, 1);
        let leader = st.nodes.len() - 1;
        let answer = PollOutcome::Primary(leader_answer(Lsn::from_u64(1000)));
        assert!(st.apply(
            0,
            PollOutcome::Follower(stopped.clone()),
            t0 + ms(10),
            t0 + ms(11)
        ));
        assert!(st.apply(1, PollOutcome::Follower(stopped), t0 + ms(10), t0 + ms(11)));
        assert!(st.apply(leader, answer, t0 + ms(10), t0 + ms(12)));
        st.refresh(t0 + ms(12));
        assert!(
            st.view().nodes[..2]
                .iter()
                .all(|f| f.in_rotation && f.healthy),
            "an answer sent before the stops were seen says nothing of them"
        );
        assert!(st.apply(
            leader,
            PollOutcome::Error("connection refused".into()),
            t0 + ms(20),
            t0 + ms(21)
        ));
        st.refresh(t0 + ms(21));
        let view = st.view();
        assert!(view.nodes[..2].iter().all(|f| f.in_rotation));
        assert_eq!(view.nodes[0].lsn, Some(Lsn::from_u64(1000)));
    }

    #[test]
    fn a_stopped_wal_receiver_is_kept_in_rotation_while_the_leader_is_down() {
        let t0 = Instant::now();
        let mut st = state(1);
        st.on_leader_poll(Lsn::from_u64(1000), t0);
        st.on_follower_poll(0, streaming(1000, 1), t0);
        st.refresh(t0);
        let stopped = stopped(1000, 1);
        st.on_leader_error("connection refused");
        st.on_follower_poll(0, stopped.clone(), t0);
        st.refresh(t0 + Duration::from_millis(100));
        let f = &st.view().nodes[0];
        assert_eq!(f.lsn, Some(Lsn::from_u64(1000)));
        assert!(f.healthy && f.in_rotation);
        // Leader back, receiver still stopped: frozen, forgotten.
        st.on_leader_poll(Lsn::from_u64(2000), t0 + Duration::from_millis(200));
        st.on_follower_poll(0, stopped, t0);
        st.refresh(t0 + Duration::from_millis(200));
        assert!(!st.view().nodes[0].in_rotation);
    }

    #[test]
    fn an_older_poll_never_undoes_a_newer_one_whether_local_or_from_the_feed() {
        let t0 = Instant::now();
        let mut st = state(1);
        st.on_leader_poll(Lsn::from_u64(1000), t0);
        let f = |lsn, started| PollOutcome::Follower(streaming(lsn, started));
        assert!(st.apply(0, f(900, 1), t0 + ms(20), t0 + ms(21)));
        // A poll sent earlier (a feed message crossing a local poll): older
        // news, dropped, not a position going backwards.
        assert!(!st.apply(0, f(800, 1), t0 + ms(10), t0 + ms(22)));
        assert!(!st.apply(
            0,
            PollOutcome::Error("old".into()),
            t0 + ms(15),
            t0 + ms(22)
        ));
        st.refresh(t0 + ms(22));
        let v = st.view();
        assert_eq!(v.nodes[0].lsn, Some(Lsn::from_u64(900)));
        assert!(v.nodes[0].in_rotation);
        assert_eq!(v.nodes[0].polled_at, Some(t0 + ms(20)));
        // Rule 3 through the same path: a later poll from another
        // incarnation forgets what the earlier one said.
        let epoch = v.nodes[0].epoch;
        assert!(st.apply(0, f(700, 2), t0 + ms(30), t0 + ms(31)));
        st.refresh(t0 + ms(31));
        let n = &st.view().nodes[0];
        assert_eq!(n.lsn, Some(Lsn::from_u64(700)));
        assert!(n.epoch > epoch);
        assert_eq!(st.known_incarnation(0), Some(2));
        // A later failure forgets it.
        assert!(st.apply(
            0,
            PollOutcome::Error("via the feed: x".into()),
            t0 + ms(40),
            t0 + ms(40)
        ));
        assert_eq!(st.view().nodes[0].lsn, None);
    }

    #[test]
    fn a_read_teaches_a_later_position_only_within_its_epoch_and_never_lowers_one() {
        let t0 = Instant::now();
        let mut st = state(1);
        st.on_leader_poll(Lsn::from_u64(2000), t0);
        st.on_follower_poll(0, streaming(1000, 1), t0);
        st.refresh(t0);
        let epoch = st.view().nodes[0].epoch;
        st.learn_position(0, epoch, Lsn::from_u64(1500));
        assert_eq!(st.view().nodes[0].lsn, Some(Lsn::from_u64(1500)));
        st.learn_position(0, epoch, Lsn::from_u64(1200));
        assert_eq!(
            st.view().nodes[0].lsn,
            Some(Lsn::from_u64(1500)),
            "never lowered"
        );
        // A poll sent before the read answers behind it: not a position
        // going backwards, and the taught one stands.
        st.on_follower_poll(0, streaming(1100, 1), t0 + ms(1));
        st.refresh(t0 + ms(1));
        let n = &st.view().nodes[0];
        assert_eq!((n.lsn, n.epoch), (Some(Lsn::from_u64(1500)), epoch));
        // Another epoch (the follower was forgotten meanwhile): nothing.
        st.forget_follower(0, "connection closed");
        st.learn_position(0, epoch, Lsn::from_u64(1800));
        assert_eq!(st.view().nodes[0].lsn, None);
        st.on_follower_poll(0, streaming(1100, 1), t0 + ms(2));
        let now = st.view().nodes[0].epoch;
        st.learn_position(0, epoch, Lsn::from_u64(1800));
        assert_eq!(
            st.view().nodes[0].lsn,
            Some(Lsn::from_u64(1100)),
            "old epoch {epoch} vs {now}"
        );
    }

    #[test]
    fn a_restart_forgets_the_position_and_bumps_the_epoch() {
        let t0 = Instant::now();
        let mut st = state(2);
        st.on_leader_poll(Lsn::from_u64(5000), t0);
        st.on_follower_poll(0, streaming(5000, 111), t0);
        st.on_follower_poll(1, streaming(5000, 222), t0);
        st.refresh(t0);
        let before = st.view();
        assert_eq!(st.known_incarnation(0), Some(111));

        // Follower 0 restarted and came back behind.
        st.on_follower_poll(0, streaming(4000, 333), t0);
        st.refresh(t0);
        let after = st.view();
        assert!(after.nodes[0].epoch > before.nodes[0].epoch);
        assert_eq!(after.nodes[0].lsn, Some(Lsn::from_u64(4000)));
        assert_eq!(st.known_incarnation(0), Some(333));
        assert_eq!(after.nodes[1], before.nodes[1], "others untouched");
    }

    #[test]
    fn a_broken_connection_forgets_and_a_reconnect_relearns() {
        let t0 = Instant::now();
        let mut st = state(1);
        st.on_leader_poll(Lsn::from_u64(10), t0);
        st.on_follower_poll(0, streaming(10, 7), t0);
        st.refresh(t0);
        assert_eq!(st.refresh(t0), 0);
        st.forget_follower(0, "connection closed");
        assert_eq!(st.refresh(t0), 1, "leaving rotation counts as an eviction");
        let f = &st.view().nodes[0];
        assert_eq!((f.lsn, f.in_rotation), (None, false));
        assert_eq!(
            st.known_incarnation(0),
            None,
            "new connections are refused meanwhile"
        );
        st.on_follower_poll(0, streaming(10, 7), t0);
        st.refresh(t0);
        assert!(st.view().nodes[0].in_rotation);
    }

    #[test]
    fn a_primary_polled_as_follower_is_never_in_rotation() {
        let t0 = Instant::now();
        let mut st = state(1);
        st.on_leader_poll(Lsn::from_u64(10), t0);
        st.on_follower_poll(
            0,
            FollowerPoll {
                replay: None,
                started_at_us: 1,
                receiver: None,
                timeline: None,
            },
            t0,
        );
        st.refresh(t0);
        assert!(!st.view().nodes[0].in_rotation);
    }

    #[test]
    fn the_leader_keeps_its_last_position_when_unreachable() {
        let t0 = Instant::now();
        let mut st = state(0);
        st.on_leader_poll(Lsn::from_u64(10), t0);
        st.on_leader_error("connection refused");
        let v = st.view();
        assert_eq!(v.leader.lsn, Some(Lsn::from_u64(10)));
        assert!(!v.leader.healthy);
        st.note_leader_lsn(Lsn::from_u64(5), t0);
        assert_eq!(
            st.view().leader.lsn,
            Some(Lsn::from_u64(10)),
            "never lowered"
        );
    }

    #[test]
    fn history_stays_bounded_and_old_lag_stays_large() {
        let t0 = Instant::now();
        let span = Duration::from_secs(20);
        let mut h = LeaderHistory::default();
        for ms in 0..60_000u64 {
            h.record(Lsn::from_u64(ms + 1), t0 + Duration::from_millis(ms), span);
        }
        assert!(h.len() <= 20_002, "{}", h.len());
        let now = t0 + Duration::from_millis(60_000);
        assert!(h.lag(Lsn::from_u64(1), now).unwrap() >= span);
        assert_eq!(h.lag(Lsn::from_u64(60_000), now), Some(Duration::ZERO));
        // Positions within a millisecond merge into one entry.
        let mut h = LeaderHistory::default();
        for i in 1..=100 {
            h.record(Lsn::from_u64(i), t0, span);
        }
        assert_eq!(h.len(), 1);
        assert_eq!(h.latest(), Some(Lsn::from_u64(100)));
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_followers_catch_up_is_how_long_it_took_to_show_what_the_leader_reached() {
        let t0 = Instant::now();
        let mut st = state(1);
        st.on_leader_poll(Lsn::from_u64(100), t0);
        st.on_follower_poll(0, streaming(50, 1), t0);
        st.note_leader_lsn(Lsn::from_u64(200), t0 + ms(20));
        st.refresh(t0 + ms(20));
        let f = &st.view().nodes[0];
        assert_eq!(lag(f).catch_up, None, "not seen catching up yet");
        assert_eq!(
            lag(f).behind_since,
            Some(t0),
            "behind since the leader reached 100"
        );

        // It shows 100 at t0 + 100 ms: it took 100 ms.
        st.on_follower_poll(0, streaming(100, 1), t0 + ms(100));
        st.refresh(t0 + ms(100));
        let f = &st.view().nodes[0];
        assert_eq!(lag(f).catch_up, Some(ms(100)));
        assert_eq!(lag(f).behind_since, Some(t0 + ms(20)));

        // A move that crosses no position the leader was seen at teaches nothing.
        st.on_follower_poll(0, streaming(150, 1), t0 + ms(300));
        // It shows 200 (reached at t0 + 20 ms) at t0 + 330 ms: 310 ms, the
        // longest of its recent catch-ups.
        st.on_follower_poll(0, streaming(200, 1), t0 + ms(330));
        st.refresh(t0 + ms(330));
        let f = &st.view().nodes[0];
        assert_eq!(lag(f).catch_up, Some(ms(310)));
        assert_eq!(lag(f).behind_since, None, "caught up with the leader");
        // After eight quicker ones, the slow one is forgotten.
        for k in 1..=8u64 {
            st.note_leader_lsn(Lsn::from_u64(200 + k), t0 + ms(400 + 10 * k));
            st.on_follower_poll(0, streaming(200 + k, 1), t0 + ms(450 + 10 * k));
        }
        st.refresh(t0 + ms(600));
        assert_eq!(lag(&st.view().nodes[0]).catch_up, Some(ms(50)));

        // Rule 3: a forgotten follower's pace goes with its position.
        st.forget_follower(0, "connection closed");
        st.refresh(t0 + ms(600));
        let f = &st.view().nodes[0];
        assert_eq!((lag(f).catch_up, lag(f).behind_since), (None, None));
        st.on_follower_poll(0, streaming(208, 1), t0 + ms(700));
        st.refresh(t0 + ms(700));
        assert_eq!(
            lag(&st.view().nodes[0]).catch_up,
            None,
            "relearnt from scratch"
        );
    }

    #[test]
    fn a_view_publishes_the_leader_positions_no_follower_in_rotation_has() {
        let t0 = Instant::now();
        let mut st = state(2);
        st.on_leader_poll(Lsn::from_u64(1000), t0);
        for k in 0..=300u64 {
            st.note_leader_lsn(Lsn::from_u64(1000 + k), t0 + ms(k));
        }
        st.on_follower_poll(0, streaming(1100, 1), t0 + ms(300));
        st.on_follower_poll(1, streaming(1050, 2), t0 + ms(300));
        st.refresh(t0 + ms(300));
        let v = st.view();
        let published = &v.leader_reached;
        assert!(
            published.len() <= PUBLISHED_POSITIONS,
            "{}",
            published.len()
        );
        assert!(
            published.len() >= PUBLISHED_POSITIONS / 2,
            "{}",
            published.len()
        );
        assert!(
            published.iter().all(|r| r.lsn > Lsn::from_u64(1100)),
            "beyond the freshest follower in rotation"
        );
        assert_eq!(
            published.last().map(|r| r.lsn),
            Some(Lsn::from_u64(1300)),
            "the newest is kept"
        );
        // Thinned to the later of neighbours: a lookup never answers
        // earlier than the leader got there (position k at t0 + k ms).
        for k in 101..=300u64 {
            let at = v.leader_reached_at(Lsn::from_u64(1000 + k)).unwrap();
            let late = at - (t0 + ms(k));
            assert!(late < ms(4), "{k}: {late:?} late");
        }
        assert_eq!(v.leader_reached_at(Lsn::from_u64(1301)), None);

        // With no follower in rotation, nothing is published.
        st.forget_follower(0, "gone");
        st.forget_follower(1, "gone");
        st.refresh(t0 + ms(300));
        assert!(st.view().leader_reached.is_empty());
    }

    /// Node `i` polled as a primary at `lsn` on `timeline` (switch of
    /// timeline 1 at 800 when `timeline` is 2).
    fn primary(st: &mut TrackerState, i: usize, lsn: u64, timeline: u32, now: Instant) {
        let history = match timeline {
            1 => TimelineHistory::first(),
            t => TimelineHistory {
                current: t,
                switches: vec![crate::Switch {
                    timeline: t - 1,
                    switch_lsn: Lsn::from_u64(800),
                }],
            },
        };
        let poll = PrimaryPoll {
            lsn: Lsn::from_u64(lsn),
            timeline,
            started_at_us: 7,
            history: Arc::new(history),
        };
        st.on_primary_poll(i, poll, now);
    }

    fn on_timeline(replay: u64, started: i64, timeline: u32) -> FollowerPoll {
        FollowerPoll {
            timeline: Some(timeline),
            ..streaming(replay, started)
        }
    }

    #[test]
    fn a_promoted_follower_leads_from_its_next_poll_and_leaves_the_followers() {
        let t0 = Instant::now();
        let mut st = state(2); // f1, f2, then the configured leader (2)
        primary(&mut st, 2, 1000, 1, t0);
        st.on_follower_poll(0, on_timeline(1000, 1, 1), t0);
        st.on_follower_poll(1, on_timeline(1000, 1, 1), t0);
        st.refresh(t0);
        let v = st.view();
        assert_eq!(v.leader_id.map(NodeId::index), Some(2));
        assert_eq!(v.leader_node(), Some(LEADER_NAME));
        assert_eq!(v.followers().count(), 2);
        let f1_epoch = v.nodes[0].epoch;

        // The leader dies; f1 is promoted (timeline 2 from 800... here the
        // test history says timeline 1 ended at 800).
        st.on_node_error(2, "connect: refused");
        st.refresh(t0 + ms(5));
        assert!(!st.view().leader.healthy);
        assert_eq!(
            st.view().leader_id.map(NodeId::index),
            Some(2),
            "still the leader, down"
        );
        primary(&mut st, 0, 1010, 2, t0 + ms(10));
        st.refresh(t0 + ms(10));
        let v = st.view();
        assert_eq!(v.leader_id.map(NodeId::index), Some(0));
        assert_eq!(v.leader_node(), Some("f1"));
        assert!(v.leader.healthy);
        assert_eq!(v.leader.timeline, Some(2));
        assert_eq!(v.leader_lsn(), Some(Lsn::from_u64(1010)));
        assert_eq!(v.history.current, 2);
        assert_eq!(v.history.switch_point(1), Some(Lsn::from_u64(800)));
        assert!(!v.nodes[0].in_rotation, "the leader is no follower");
        assert_ne!(v.nodes[0].epoch, f1_epoch, "decisions for f1 are void");
        let names: Vec<&str> = v.followers().map(|n| &*n.name).collect();
        assert_eq!(names, ["f2", crate::FORMER_LEADER_NAME]);
    }

    #[test]
    fn a_second_primary_on_an_earlier_timeline_is_never_used() {
        let t0 = Instant::now();
        let mut st = state(1);
        primary(&mut st, 0, 1000, 2, t0); // f1 leads on timeline 2
        // The old leader started again without a rewind: a primary on 1.
        primary(&mut st, 1, 900, 1, t0 + ms(1));
        st.refresh(t0 + ms(1));
        let v = st.view();
        assert_eq!(v.leader_id.map(NodeId::index), Some(0));
        let old = &v.nodes[1];
        assert!(!old.in_rotation && !old.healthy, "{old:?}");
        assert!(old.note.as_deref().unwrap().contains("second primary"));
        // Nor one on the same timeline.
        let mut st = state(1);
        primary(&mut st, 1, 1000, 1, t0);
        primary(&mut st, 0, 1000, 1, t0);
        assert_eq!(st.view().leader_id.map(NodeId::index), Some(1));
    }

    #[test]
    fn a_leader_that_goes_into_recovery_leads_no_more() {
        let t0 = Instant::now();
        let mut st = state(1);
        primary(&mut st, 1, 1000, 1, t0);
        st.on_follower_poll(1, on_timeline(1000, 8, 2), t0 + ms(1));
        st.refresh(t0 + ms(1));
        let v = st.view();
        assert_eq!(v.leader_id, None);
        assert!(!v.leader.healthy);
        assert_eq!(v.nodes[1].role(), Role::Follower);
    }

    #[test]
    fn a_follower_with_the_old_leader_s_wal_past_the_switch_is_out_of_rotation() {
        let t0 = Instant::now();
        let mut st = state(2);
        primary(&mut st, 0, 1000, 2, t0); // f1 leads, timeline 1 ended at 800
        // f2 replayed 850 on timeline 1: WAL the new leader never had.
        st.on_follower_poll(1, on_timeline(850, 1, 1), t0);
        // The rewound old leader, on timeline 2 at 900: fine.
        st.on_follower_poll(2, on_timeline(900, 9, 2), t0);
        st.refresh(t0);
        let v = st.view();
        assert!(!v.nodes[1].in_rotation);
        assert!(v.nodes[1].note.as_deref().unwrap().contains("diverged"));
        assert!(v.nodes[2].in_rotation, "{:?}", v.nodes[2]);
        // At or before the switch point, timeline 1's WAL is the new
        // history's too.
        st.on_follower_poll(1, on_timeline(800, 1, 1), t0);
        st.refresh(t0);
        assert!(st.view().nodes[1].in_rotation);
        // On a timeline beyond the leader's: not until the leader is.
        st.on_follower_poll(1, on_timeline(800, 1, 3), t0);
        st.refresh(t0);
        assert!(!st.view().nodes[1].in_rotation);
    }

    #[test]
    fn the_old_leader_back_as_a_follower_is_trusted_from_its_new_incarnation() {
        let t0 = Instant::now();
        let mut st = state(1);
        primary(&mut st, 1, 1000, 1, t0);
        primary(&mut st, 0, 1010, 2, t0 + ms(1)); // f1 promoted
        st.on_node_error(1, "connect: refused");
        // Rewound and started as a standby: a new postmaster.
        st.on_follower_poll(1, on_timeline(1005, 99, 2), t0 + ms(2));
        st.refresh(t0 + ms(2));
        let v = st.view();
        let back = &v.nodes[1];
        assert_eq!(&*back.name, crate::FORMER_LEADER_NAME);
        assert!(back.in_rotation && back.healthy, "{back:?}");
        assert_eq!(back.lsn, Some(Lsn::from_u64(1005)));
        assert_eq!(st.known_incarnation(1), Some(99));
    }
}
