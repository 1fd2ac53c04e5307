//! What a read's [`Scope`] adds to its target, and the fleet-wide mark
//! every write raises for scope `global` (`DESIGN.md`, "Scopes").
//!
//! - `global`: every write raises the store's mark to its position before
//!   it is acknowledged ([`Router::raise_mark`], called by the write
//!   protocol beside the session's own update). A `global` read starts
//!   from the mark, fetched by one `GET` for all the reads that began
//!   before it was sent ([`Coalescer`]). A mark that cannot be read, or a
//!   store part that failed within the recovery grace, sends the read to
//!   the leader (rule 5).
//! - `cluster`: a read starts from the leader's position, fetched on the
//!   router's own connection by one statement for all the reads that
//!   began before it was sent. If the leader cannot answer, the read goes
//!   to the leader, which fails it as any leader read when the leader is
//!   down.

use super::Router;
use super::coalesce::Coalescer;
use crate::decide::Reason;
use crate::{Position, Scope, Strategy};

/// What a read's scope adds to the tokens it honours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ScopePosition {
    /// Nothing: `connection` and `session`, a stale-ok read, or a strategy
    /// that does not route by a token.
    Nothing,
    /// The read must see this position (`None`: no write was marked yet).
    At(Option<Position>),
    /// The position could not be known: only the leader may serve the
    /// read, for this reason.
    LeaderOnly(Reason),
}

/// The coalesced fetches behind `global` and `cluster` reads.
#[derive(Debug, Default)]
pub(super) struct ScopeFetches {
    /// The store's mark.
    mark: Coalescer<Option<Position>>,
    /// The leader's position.
    leader: Coalescer<Position>,
}

impl Router {
    /// What `scope` adds to a read's target ([`ScopePosition`]): fetched,
    /// coalesced, after the read began.
    pub(super) async fn scope_position(
        &self,
        scope: Scope,
        strategy: Strategy,
        fresh: bool,
    ) -> ScopePosition {
        if !fresh || !scope.applies_to(strategy) {
            return ScopePosition::Nothing;
        }
        let inner = &self.inner;
        match scope {
            Scope::Connection | Scope::Session => ScopePosition::Nothing,
            Scope::Global => {
                let fetched = inner
                    .scope_fetches
                    .mark
                    .get(|| async { inner.store.load_mark().await.map_err(|e| e.to_string()) })
                    .await;
                inner.metrics.add_scope_fetch(scope, fetched.sent);
                let now_ms = inner.clock.now_ms();
                match fetched.result {
                    // Rule 5: a mark raise that failed lately may be
                    // missing from the mark.
                    Ok(_)
                        if !inner.store_guard.trusted(
                            inner.store.mark_part(),
                            now_ms,
                            inner.cfg.store_recovery_grace,
                        ) =>
                    {
                        ScopePosition::LeaderOnly(Reason::StoreDegraded)
                    }
                    Ok(mark) => ScopePosition::At(mark),
                    Err(e) => {
                        if fetched.sent {
                            self.mark_failed(now_ms, &e);
                        }
                        ScopePosition::LeaderOnly(Reason::StoreDegraded)
                    }
                }
            }
            Scope::Cluster => {
                let timeout = inner.cfg.read_timeout;
                let fetch = inner.scope_fetches.leader.get(|| async {
                    self.fetch_leader_position()
                        .await
                        .map_err(|e| e.to_string())
                });
                let fetched = match tokio::time::timeout(timeout, fetch).await {
                    Ok(f) => f,
                    Err(_) => {
                        return ScopePosition::LeaderOnly(Reason::ScopeUnknown);
                    }
                };
                inner.metrics.add_scope_fetch(scope, fetched.sent);
                match fetched.result {
                    Ok(pos) => {
                        if fetched.sent {
                            self.note_leader_position(pos.lsn);
                        }
                        ScopePosition::At(Some(pos))
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "the leader's position for a cluster-scope read");
                        ScopePosition::LeaderOnly(Reason::ScopeUnknown)
                    }
                }
            }
        }
    }

    /// Scope `global`: raises the fleet-wide mark to a write's position,
    /// before the write is acknowledged. If the store fails, the write
    /// stands (it committed) and this instance's `global` reads go to the
    /// leader until the recovery grace after the store answers again
    /// (rule 5); an instance that can still read the mark may miss this
    /// write meanwhile, as a session whose store update failed.
    pub(super) async fn raise_mark(&self, pos: Position) {
        if let Err(e) = self.inner.store.raise_mark(pos).await {
            self.mark_failed(self.inner.clock.now_ms(), &e.to_string());
        }
    }

    /// Rule 5 for the mark's part of the store.
    fn mark_failed(&self, now_ms: u64, error: &str) {
        let part = self.inner.store.mark_part();
        self.inner.metrics.add_store_error();
        self.inner.store_guard.failed(part, now_ms);
        tracing::debug!(error, %part, "the global mark's store call failed");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::judge::Judged;
    use crate::view::{ClusterView, ObservedNode, Role};
    use crate::{Lsn, Position, Switch, TimelineHistory};

    /// Timeline 2 since a switch at 500 on timeline 1.
    fn view() -> ClusterView {
        ClusterView {
            leader: ObservedNode::for_test("leader", Role::Leader, Some(1000), true),
            leader_id: None,
            history: Arc::new(TimelineHistory {
                current: 2,
                switches: vec![Switch {
                    timeline: 1,
                    switch_lsn: Lsn::from_u64(500),
                }],
            }),
            nodes: Vec::new(),
            leader_reached: Vec::new(),
        }
    }

    fn at(timeline: u32, lsn: u64) -> Position {
        Position::new(timeline, Lsn::from_u64(lsn))
    }

    #[test]
    fn the_target_is_the_highest_of_the_scope_position_and_the_tokens() {
        let v = view();
        // Session token 700, client token 650, scope 900: the target is 900.
        let mut j = Judged::of(&v, [Some(at(2, 700)), Some(at(2, 650))], None);
        j.raise_to_scope(&v, Some(at(2, 900)));
        assert_eq!(j.holds, Some(Lsn::from_u64(900)));
        assert_eq!(
            j.keep,
            Some(at(2, 900)),
            "the read sees at least the scope's"
        );
        assert!(j.leader_only().is_none());
        // A scope position below the tokens changes nothing.
        let mut j = Judged::of(&v, [Some(at(2, 700)), None], None);
        j.raise_to_scope(&v, Some(at(2, 600)));
        assert_eq!(j.holds, Some(Lsn::from_u64(700)));
        // No mark yet: the tokens alone.
        let mut j = Judged::of(&v, [None, Some(at(2, 650))], None);
        j.raise_to_scope(&v, None);
        assert_eq!(j.holds, Some(Lsn::from_u64(650)));
        // A session with no token of its own gets the scope's position.
        let mut j = Judged::of(&v, [None, None], None);
        j.raise_to_scope(&v, Some(at(1, 400)));
        assert_eq!(
            j.holds,
            Some(Lsn::from_u64(400)),
            "before the switch: holds"
        );
    }

    #[test]
    fn a_scope_position_lost_in_a_failover_or_on_an_unknown_timeline_means_the_leader() {
        let v = view();
        let mut j = Judged::of(&v, [Some(at(2, 700)), None], None);
        j.raise_to_scope(&v, Some(at(1, 800)));
        assert_eq!(
            j.leader_only(),
            Some(crate::Reason::TokenPastSwitch),
            "a mark past the switch"
        );
        assert!(j.lost.is_none(), "no write of the session is said lost");
        let mut j = Judged::of(&v, [None, None], None);
        j.raise_to_scope(&v, Some(at(3, 10)));
        assert_eq!(j.leader_only(), Some(crate::Reason::TimelineUnknown));
    }
}
