//! The session's connections to the nodes ([`Backends`]): opened when a
//! batch first goes to a node (a follower's checked against the
//! incarnation the router knows: rule 2), or, under transaction pooling,
//! lent by the node's pool for a transaction and given back after it.

use super::*;

/// A session's connection to each node (`None`: not open), in the
/// router's order, indexed by [`NodeId`].
pub(super) struct Backends(Vec<Option<Backend>>);

impl Backends {
    /// None open, for `nodes` nodes.
    pub(super) fn new(nodes: usize) -> Backends {
        Backends((0..nodes).map(|_| None).collect())
    }
}

impl std::ops::Index<NodeId> for Backends {
    type Output = Option<Backend>;

    fn index(&self, node: NodeId) -> &Option<Backend> {
        &self.0[node.index()]
    }
}

impl std::ops::IndexMut<NodeId> for Backends {
    fn index_mut(&mut self, node: NodeId) -> &mut Option<Backend> {
        &mut self.0[node.index()]
    }
}

impl std::ops::Deref for Backends {
    type Target = [Option<Backend>];

    fn deref(&self) -> &[Option<Backend>] {
        &self.0
    }
}

impl std::ops::DerefMut for Backends {
    fn deref_mut(&mut self) -> &mut [Option<Backend>] {
        &mut self.0
    }
}

impl Session {
    /// Opens the connection to `node` unless it is open. A follower's is
    /// checked against the incarnation the router knows (rule 2).
    pub(super) async fn open(
        &mut self,
        node: Node,
        incarnation: Option<i64>,
    ) -> Result<(), BackendError> {
        let slot = self.slot(node);
        if self.backends[slot].is_some() {
            return Ok(());
        }
        let shared = self.shared.clone();
        let addr = shared.addr(slot);
        let incarnation = match node {
            Node::Leader => None,
            Node::Follower(_) => match incarnation {
                Some(started) => Some(started),
                None => {
                    return Err(BackendError::Incarnation {
                        node: addr.name.clone(),
                    });
                }
            },
        };
        let pool = match self.shared.cfg.pool_mode {
            PoolMode::Session => None,
            PoolMode::Transaction => Some(self.pool(slot)),
        };
        let connect = || {
            Backend::connect(
                Connect {
                    name: &addr.name,
                    addr: addr.addr,
                    params: &self.id.params,
                    password: self.id.password.as_deref(),
                    timeout: self.shared.cfg.connect_timeout,
                    tls: &addr.tls,
                    host: &addr.host,
                },
                incarnation,
            )
        };
        let backend = match pool {
            None => connect().await?,
            Some(pool) => {
                loop {
                    let b = pool.get(connect).await.map_err(|e| match e {
                        crate::pool::PoolError::Backend(e) => e,
                        busy => BackendError::Busy {
                            node: addr.name.clone(),
                            why: busy.to_string(),
                        },
                    })?;
                    // Rule 2: a pooled connection to a follower that has
                    // restarted since it was opened is not used.
                    if b.incarnation == incarnation {
                        break b;
                    }
                    drop(b);
                    pool.closed();
                }
            }
        };
        self.backends[slot] = Some(backend);
        Ok(())
    }

    /// The pool of node `slot` for this client's role and database (kept
    /// by the session once looked up).
    pub(super) fn pool(&mut self, slot: NodeId) -> Arc<crate::pool::Pool> {
        if let Some(pool) = &self.pools[slot.index()] {
            return pool.clone();
        }
        let key = crate::pool::PoolKey {
            slot: slot.index(),
            user: self.id.user.clone(),
            database: self.id.database.clone(),
            thread: self.thread,
        };
        let pool = self.shared.pools.pool(&key, &self.shared.addr(slot).name);
        self.pools[slot.index()] = Some(pool.clone());
        pool
    }

    /// Transaction pooling: between transactions the client holds no
    /// server connection (unless session state pins it to the leader's).
    /// A connection goes back clean (nothing unread, idle); otherwise it is
    /// closed.
    pub(super) fn release(&mut self) {
        if self.shared.cfg.pool_mode != PoolMode::Transaction
            || self.status != b'I'
            || self.pins.holds
            || !matches!(self.phase, Phase::Idle)
        {
            return;
        }
        self.give_back();
    }

    /// Closes the connection of `slot` (broken, or not to be trusted):
    /// under transaction pooling its pool may open another.
    pub(super) fn drop_backend(&mut self, slot: NodeId) {
        if self.backends[slot].take().is_some()
            && self.shared.cfg.pool_mode == PoolMode::Transaction
        {
            self.pool(slot).closed();
        }
    }

    /// Gives every held connection back to its pool (or closes it).
    pub(super) fn give_back(&mut self) {
        if self.shared.cfg.pool_mode != PoolMode::Transaction {
            return;
        }
        let clean = self.status == b'I' && !self.pins.holds && matches!(self.phase, Phase::Idle);
        for i in 0..self.backends.len() {
            let slot = self.shared.ids[i];
            let Some(b) = self.backends[slot].take() else {
                continue;
            };
            let pool = self.pool(slot);
            if clean && b.inbuf.is_empty() && b.passthrough == 0 {
                pool.put(b);
            } else {
                drop(b);
                pool.closed();
            }
        }
    }
}
