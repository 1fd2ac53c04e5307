//! [`ClusterView`]: what the tracker knows of every node, as published to
//! routing and to the dashboard (`GET /api/cluster`).

use std::sync::Arc;

use crate::Lsn;

/// The note of a node the tracker has not polled yet.
pub(crate) const NOT_POLLED_YET: &str = "not polled yet";

/// A node's part in replication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The primary: takes every write.
    Leader,
    /// A hot standby streaming from the leader.
    Follower,
}

impl Role {
    /// `"leader"` or `"follower"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
        }
    }
}

/// One node as last observed by the tracker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// `leader`, or the follower's configured name (what `X-Served-By` says).
    pub name: Arc<str>,
    /// Leader or follower.
    pub role: Role,
    /// Leader: its current WAL position (`pg_current_wal_lsn()`, last known,
    /// kept while it is unreachable). Follower: its replay position
    /// (`pg_last_wal_replay_lsn()`), or `None` while unknown or forgotten
    /// (rule 3: never trusted across a broken connection or a restart).
    pub lsn: Option<Lsn>,
    /// Follower: WAL bytes between the leader's position and its replay
    /// position. `None` for the leader, or while either is unknown.
    pub lag_bytes: Option<u64>,
    /// Follower: how long ago the leader first went past the follower's replay
    /// position, measured in-process (never from
    /// `pg_last_xact_replay_timestamp()`, which grows on an idle cluster).
    /// 0 when caught up.
    pub lag_ms: Option<u64>,
    /// The last poll succeeded and, for a follower, its WAL receiver is
    /// streaming.
    pub healthy: bool,
    /// Follower: healthy, position known and lag within both limits, so it
    /// may serve reads (rule 8). Leader: reachable.
    pub in_rotation: bool,
    /// Why the node is unhealthy or out of rotation, for the dashboard.
    pub note: Option<String>,
    /// Bumped each time the router forgets this node's position (restart,
    /// broken connection). A read chosen under one epoch is not served under
    /// another (rule 2).
    pub epoch: u64,
    /// When the tracker sent the poll whose answer `lsn` is (tokio's
    /// clock): the node had reached `lsn` at some moment after this. A
    /// front that saw a read end on a follower at time `t` learns a bound
    /// of what that read saw from the first poll sent after `t` (see
    /// `Router::settle`). `None` while nothing is known.
    pub polled_at: Option<tokio::time::Instant>,
}

impl NodeStatus {
    pub(crate) fn new(name: Arc<str>, role: Role) -> NodeStatus {
        NodeStatus {
            name,
            role,
            lsn: None,
            lag_bytes: None,
            lag_ms: None,
            healthy: false,
            in_rotation: false,
            note: Some(NOT_POLLED_YET.to_owned()),
            epoch: 0,
            polled_at: None,
        }
    }
}

#[cfg(test)]
impl NodeStatus {
    /// A node for unit tests: healthy exactly when in rotation.
    pub(crate) fn for_test(
        name: &str,
        role: Role,
        lsn: Option<u64>,
        in_rotation: bool,
    ) -> NodeStatus {
        NodeStatus {
            name: Arc::from(name),
            role,
            lsn: lsn.map(Lsn::from_u64),
            lag_bytes: None,
            lag_ms: None,
            healthy: in_rotation,
            in_rotation,
            note: None,
            epoch: 0,
            polled_at: None,
        }
    }
}

/// A consistent snapshot of the whole cluster, published on every poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    /// The primary.
    pub leader: NodeStatus,
    /// The followers, in configuration order (indexes are stable).
    pub followers: Vec<NodeStatus>,
}

impl ClusterView {
    /// Every node, leader first: what the dashboard lists.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeStatus> {
        std::iter::once(&self.leader).chain(self.followers.iter())
    }

    /// The leader's last known WAL position.
    pub fn leader_lsn(&self) -> Option<Lsn> {
        self.leader.lsn
    }

    /// How many followers may serve reads now.
    pub fn followers_in_rotation(&self) -> usize {
        self.followers.iter().filter(|f| f.in_rotation).count()
    }
}
