//! Reads in flight per node: what [`FollowerChoice::Load`] spreads reads
//! by. A read counts from its decision until the [`Decision`] that says
//! where it went (and every clone of it) is dropped, so a front that runs
//! reads on its own connections (a protocol proxy: [`Router::front_read`],
//! then its own statement, then it drops the decision) is counted without
//! calling anything more. [`Router::query`] and [`Router::read_on`] let go
//! of the count as soon as the read has answered.
//!
//! [`FollowerChoice::Load`]: crate::FollowerChoice::Load
//! [`Decision`]: super::Decision
//! [`Router::front_read`]: super::Router::front_read
//! [`Router::query`]: super::Router::query
//! [`Router::read_on`]: super::Router::read_on

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::decide::Load;
use crate::view::NodeId;

/// One counter per node, indexed as [`ClusterView::nodes`](crate::ClusterView).
#[derive(Debug)]
pub(crate) struct InFlight {
    counts: Box<[AtomicU32]>,
}

impl InFlight {
    /// Counters for `nodes` nodes, all at 0.
    pub fn new(nodes: usize) -> Arc<InFlight> {
        Arc::new(InFlight {
            counts: (0..nodes).map(|_| AtomicU32::new(0)).collect(),
        })
    }

    /// Counts one read on `node` until the returned [`Held`] (and every
    /// clone) is dropped. `None`: a read on no known node, not counted.
    pub fn hold(self: &Arc<InFlight>, node: Option<NodeId>) -> Held {
        let Some(node) = node.map(NodeId::index).filter(|&n| n < self.counts.len()) else {
            return Held(None);
        };
        self.counts[node].fetch_add(1, Ordering::Relaxed);
        Held(Some(Arc::new(Counted {
            counts: self.clone(),
            node,
        })))
    }

    /// The counts now, per node.
    pub fn snapshot(&self) -> Vec<u32> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

impl Load for InFlight {
    fn in_flight(&self, node: NodeId) -> u32 {
        self.counts
            .get(node.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// A read's place in its node's count. Clones share it: the read stops
/// counting when the last one is dropped (or [`Held::release`]d), however
/// often its decision was cloned. Not part of what a decision *is*: two
/// decisions compare equal whatever they hold.
#[derive(Clone, Default)]
pub(crate) struct Held(Option<Arc<Counted>>);

impl Held {
    /// Stops counting this read (for this holder; a clone elsewhere keeps
    /// it counted until it goes too).
    pub fn release(&mut self) {
        self.0 = None;
    }
}

impl PartialEq for Held {
    fn eq(&self, _: &Held) -> bool {
        true
    }
}

impl Eq for Held {}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(c) => write!(f, "in flight on node {}", c.node),
            None => f.write_str("not counted"),
        }
    }
}

struct Counted {
    counts: Arc<InFlight>,
    node: usize,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.counts.counts[self.node].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_counts_until_its_last_clone_is_dropped_or_released() {
        let in_flight = InFlight::new(3);
        let node = NodeId::new;
        let a = in_flight.hold(Some(node(1)));
        let b = a.clone();
        let mut c = in_flight.hold(Some(node(1)));
        let _d = in_flight.hold(Some(node(2)));
        assert_eq!(in_flight.snapshot(), [0, 2, 1]);
        drop(a);
        assert_eq!(in_flight.in_flight(node(1)), 2, "a clone still holds it");
        drop(b);
        assert_eq!(in_flight.in_flight(node(1)), 1);
        c.release();
        assert_eq!(in_flight.snapshot(), [0, 0, 1]);
        assert_eq!(in_flight.in_flight(node(9)), 0, "an unknown node has none");
    }

    #[test]
    fn a_read_on_no_known_node_is_not_counted() {
        let in_flight = InFlight::new(2);
        let held = in_flight.hold(None);
        let beyond = in_flight.hold(Some(NodeId::new(5)));
        assert_eq!(in_flight.snapshot(), [0, 0]);
        assert_eq!(held, beyond, "holding never makes decisions differ");
    }
}
