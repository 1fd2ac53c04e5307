//! [`ClusterView`]: what the tracker knows of every node, as published to
//! routing and to the dashboard (`GET /api/cluster`).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::Lsn;
use crate::timeline::TimelineHistory;

/// The note of a node the tracker has not polled yet (for display: see
/// [`ObservedNode::polled`]).
pub(crate) const NOT_POLLED_YET: &str = "not polled yet";

/// A node's place in [`ClusterView::nodes`]: configuration order, the
/// followers of [`NodeUrls::followers`](crate::NodeUrls) first, then the
/// node configured as the leader. Stable for the router's life, across
/// failovers (which node *leads* is [`ClusterView::leader_id`]). Only the
/// router makes them, from its view; a front keeps per-node state in a
/// vector indexed by [`NodeId::index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(u32);

impl NodeId {
    /// The node at `index` in the view's order.
    pub(crate) fn new(index: usize) -> NodeId {
        NodeId(u32::try_from(index).expect("fewer than 2^32 nodes"))
    }

    /// Its place in [`ClusterView::nodes`], for indexing a vector kept in
    /// the same order.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

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
pub struct ObservedNode {
    /// What `X-Served-By` says of a read it serves: `leader` for
    /// [`ClusterView::leader`]; in [`ClusterView::nodes`], the node's
    /// configured name, except that the node configured as the leader is
    /// called `former-leader` there (it shows only once another node leads).
    pub name: Arc<str>,
    /// Leader or follower, as its last poll said (`pg_is_in_recovery()`),
    /// with what only that role has: a follower's lag and pace.
    pub health: RoleHealth,
    /// The node's timeline: a leader's current one, a follower's last
    /// received one (`pg_stat_wal_receiver.received_tli`). `None` while
    /// unknown.
    pub timeline: Option<u32>,
    /// Leader: its current WAL position (`pg_current_wal_lsn()`, last known,
    /// kept while it is unreachable). Follower: its replay position
    /// (`pg_last_wal_replay_lsn()`), or `None` while unknown or forgotten
    /// (rule 3: never trusted across a broken connection or a restart).
    pub lsn: Option<Lsn>,
    /// The last poll succeeded and, for a follower, its WAL receiver is
    /// streaming.
    pub healthy: bool,
    /// Follower: healthy, position known and lag within both limits, so it
    /// may serve reads (rule 8). Leader: reachable.
    pub in_rotation: bool,
    /// Why the node is unhealthy or out of rotation, for the dashboard
    /// (for display only: [`ObservedNode::polled`] is the fact to test).
    pub note: Option<String>,
    /// Whether the tracker has heard of the node: a poll of it answered or
    /// failed, or a connection of the router's to it broke. In
    /// [`ClusterView::leader`]: whether a poll told who leads or that none
    /// can (a node answered as a primary, or a node's poll failed while
    /// none leads). `false` during the tracker's first polls: a node not
    /// heard of yet is waited for, not taken for down.
    pub polled: bool,
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

impl ObservedNode {
    pub(crate) fn new(name: Arc<str>, role: Role) -> ObservedNode {
        ObservedNode {
            name,
            health: RoleHealth::new(role),
            timeline: None,
            lsn: None,
            healthy: false,
            in_rotation: false,
            note: Some(NOT_POLLED_YET.to_owned()),
            polled: false,
            epoch: 0,
            polled_at: None,
        }
    }

    /// Leader or follower.
    pub const fn role(&self) -> Role {
        self.health.role()
    }

    /// A follower's lag and pace; `None` for a leader.
    pub const fn follower(&self) -> Option<&FollowerHealth> {
        match &self.health {
            RoleHealth::Leader => None,
            RoleHealth::Follower(f) => Some(f),
        }
    }

    /// Its poll said it is `role` now: a follower's lag is kept while it
    /// stays one, and starts unknown when it becomes one.
    pub(crate) fn set_role(&mut self, role: Role) {
        if self.role() != role {
            self.health = RoleHealth::new(role);
        }
    }
}

/// What a node's role makes of it: a leader has no lag; a follower's is
/// measured against the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleHealth {
    /// The primary (or a node that answered as one).
    Leader,
    /// A standby, with its lag and pace.
    Follower(FollowerHealth),
}

impl RoleHealth {
    /// A node in `role`, a follower's lag unknown yet.
    pub const fn new(role: Role) -> RoleHealth {
        match role {
            Role::Leader => RoleHealth::Leader,
            Role::Follower => RoleHealth::Follower(FollowerHealth::UNKNOWN),
        }
    }

    /// Leader or follower.
    pub const fn role(&self) -> Role {
        match self {
            RoleHealth::Leader => Role::Leader,
            RoleHealth::Follower(_) => Role::Follower,
        }
    }
}

/// A follower's distance behind the leader, recomputed at every refresh of
/// the view. Every field is `None` while unknown (its position or the
/// leader's is not known, or it is out of the leader's history).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerHealth {
    /// WAL bytes between the leader's position and its replay position.
    pub lag_bytes: Option<u64>,
    /// How long ago the leader first went past its replay position,
    /// measured in-process (never from `pg_last_xact_replay_timestamp()`,
    /// which grows on an idle cluster). 0 when caught up.
    pub lag_ms: Option<u64>,
    /// When the tracker first saw the leader beyond its replay position,
    /// so it has been behind for `now - behind_since` (the lag above,
    /// measured at any instant). `None` when it has caught up with the
    /// leader.
    pub behind_since: Option<Instant>,
    /// How long after the leader reaches a position the tracker sees this
    /// follower at it — the longest of its last 8 catch-ups (its replay
    /// delay plus up to a poll interval). `None` until it has been seen
    /// catching up, and again after its position is forgotten. The
    /// `hybrid` prediction reads it ([`crate::predict`]).
    pub catch_up: Option<Duration>,
}

impl FollowerHealth {
    /// Nothing known.
    pub const UNKNOWN: FollowerHealth = FollowerHealth {
        lag_bytes: None,
        lag_ms: None,
        behind_since: None,
        catch_up: None,
    };
}

#[cfg(test)]
impl ObservedNode {
    /// A node for unit tests: healthy exactly when in rotation.
    pub(crate) fn for_test(
        name: &str,
        role: Role,
        lsn: Option<u64>,
        in_rotation: bool,
    ) -> ObservedNode {
        ObservedNode {
            name: Arc::from(name),
            health: RoleHealth::new(role),
            timeline: Some(1),
            lsn: lsn.map(Lsn::from_u64),
            healthy: in_rotation,
            in_rotation,
            note: None,
            polled: true,
            epoch: 0,
            polled_at: None,
        }
    }
}

/// A leader position and when the tracker first saw the leader at it (or
/// beyond): a poll, or a write's commit position noted right after its
/// `COMMIT` returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reached {
    /// The position.
    pub lsn: Lsn,
    /// When it was first seen (no earlier than the leader reached it).
    pub at: Instant,
}

/// A consistent snapshot of the whole cluster, published on every poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    /// The leader (the node not in recovery), named `leader`; a placeholder
    /// that is not healthy while no node is known to be the leader.
    pub leader: ObservedNode,
    /// Which of [`ClusterView::nodes`] is the leader, if one is known.
    pub leader_id: Option<NodeId>,
    /// Every node, in configuration order ([`NodeId`]): the followers,
    /// then the node configured as the leader (called `former-leader`
    /// here). Roles are discovered: after a failover another node is the
    /// leader. The leader's entry is never in rotation (it serves reads as
    /// the leader, not as a follower).
    pub nodes: Vec<ObservedNode>,
    /// The cluster's timeline history, from the leader: its timeline and
    /// where each earlier one ended (what a token from before a failover
    /// means, [`TimelineHistory::judge`]).
    pub history: Arc<TimelineHistory>,
    /// The leader's positions that no follower in rotation has replayed
    /// yet, oldest first, each with when the tracker first saw it: what the
    /// `hybrid` prediction needs to know when a token's position was
    /// written. At most 64; beyond that, neighbours are thinned keeping
    /// the later of them, so a lookup never answers earlier than the truth
    /// (a prediction then errs towards not waiting).
    pub leader_reached: Vec<Reached>,
}

impl ClusterView {
    /// The nodes that are not the leader: followers, and nodes that are
    /// down or unusable (each with its note).
    pub fn followers(&self) -> impl Iterator<Item = &ObservedNode> {
        self.with_ids()
            .filter(|&(id, _)| Some(id) != self.leader_id)
            .map(|(_, n)| n)
    }

    /// Every node of [`ClusterView::nodes`] with its id.
    pub fn with_ids(&self) -> impl Iterator<Item = (NodeId, &ObservedNode)> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (NodeId::new(i), n))
    }

    /// Every node's id, in the order of [`ClusterView::nodes`].
    pub fn ids(&self) -> impl Iterator<Item = NodeId> + use<> {
        (0..self.nodes.len()).map(NodeId::new)
    }

    /// The node configured as the leader (`former-leader` in
    /// [`ClusterView::nodes`]), whether or not it leads now; `None` in a
    /// view of no nodes.
    pub fn configured_leader(&self) -> Option<NodeId> {
        self.nodes.len().checked_sub(1).map(NodeId::new)
    }

    /// Node `id` as last observed (`None` for an id of another router's
    /// view).
    pub fn node(&self, id: NodeId) -> Option<&ObservedNode> {
        self.nodes.get(id.index())
    }

    /// Every node, leader first: what the dashboard lists.
    pub fn listed(&self) -> impl Iterator<Item = &ObservedNode> {
        std::iter::once(&self.leader).chain(self.followers())
    }

    /// The node called `name` in [`ClusterView::nodes`] (a follower's
    /// name, or `former-leader`).
    pub fn named(&self, name: &str) -> Option<&ObservedNode> {
        self.nodes.iter().find(|n| &*n.name == name)
    }

    /// The configured name of the node that leads now (`leader` while it is
    /// the configured one), if one is known.
    pub fn leader_node(&self) -> Option<&str> {
        let name = &*self.node(self.leader_id?)?.name;
        Some(if name == crate::config::FORMER_LEADER_NAME {
            crate::LEADER_NAME
        } else {
            name
        })
    }

    /// The leader's last known WAL position.
    pub fn leader_lsn(&self) -> Option<Lsn> {
        self.leader.lsn
    }

    /// How many followers may serve reads now.
    pub fn followers_in_rotation(&self) -> usize {
        self.nodes.iter().filter(|f| f.in_rotation).count()
    }

    /// When the tracker first saw the leader at or beyond `lsn`, from
    /// [`ClusterView::leader_reached`]; `None` when `lsn` is beyond every
    /// position published (a write the tracker has not seen yet).
    pub fn leader_reached_at(&self, lsn: Lsn) -> Option<Instant> {
        let i = self.leader_reached.partition_point(|r| r.lsn < lsn);
        self.leader_reached.get(i).map(|r| r.at)
    }
}
