//! A session's positions judged against the cluster's timeline history
//! ([`Judged`]), and the token a read leaves it with ([`advance_token`]):
//! what every planning path starts from and ends with.

#[allow(unused_imports)] // the docs' links
use super::Router;
use crate::decide::{Reason, SessionState, is_absurd};
use crate::timeline::Verdict;
use crate::view::ClusterView;
use crate::{Lsn, Position, RouterConfig};

/// The session's token after a read that saw `seen`, and whether the
/// incoming token had to be clamped.
///
/// Rule 4: a token absurdly beyond the leader is clamped to the leader's
/// position before it is stored or handed back. Rule 7: the session has now
/// seen at least `seen`, so the token never goes below it. The read may see
/// more than `seen` (a lower bound known before it); [`Router::raise_token`]
/// raises the token to an upper bound once it has run. A token that names a
/// lost write is replaced: any position of the current timeline is after it.
pub(super) fn advance_token(
    view: &ClusterView,
    cfg: &RouterConfig,
    state: &SessionState,
    judged: &Judged,
    seen: Option<Position>,
) -> (Option<Position>, bool) {
    let token = match *state {
        SessionState::Known { .. } => judged.keep,
        SessionState::Unknown => judged.client_keep,
    };
    match judged.holds {
        Some(t) if is_absurd(view, t, cfg) => {
            let leader = view
                .leader_lsn()
                .map(|lsn| Position::new(view.history.current, lsn));
            (leader.max(seen), true)
        }
        _ => (token.max(seen), false),
    }
}

/// A session's positions judged against the cluster's timeline history
/// ([`TimelineHistory::judge`](crate::TimelineHistory::judge)).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Judged {
    /// The highest LSN a follower must have replayed: of the positions that
    /// hold as they are.
    pub holds: Option<Lsn>,
    /// The positions to carry on (the highest of those that hold or are on
    /// a timeline not known yet); a lost one is dropped.
    pub keep: Option<Position>,
    /// The client's alone (when the store is not to be trusted).
    pub client_keep: Option<Position>,
    /// The session's write floor, if a failover lost that write.
    pub lost: Option<Position>,
    /// A token past the end of its timeline (a lost write, or a read of
    /// data that went with one).
    pub past_switch: bool,
    /// A position on a timeline the router does not know.
    pub unknown: bool,
}

impl Judged {
    /// Judges `[stored or local, client]` tokens and the session's write
    /// position.
    pub fn of(
        view: &ClusterView,
        [session, client]: [Option<Position>; 2],
        write: Option<Position>,
    ) -> Judged {
        let mut j = Judged {
            lost: write.and_then(|w| view.history.write_lost(w)),
            ..Judged::default()
        };
        for (i, pos) in [session, client].into_iter().enumerate() {
            let Some(pos) = pos else { continue };
            let keep = match view.history.judge(pos) {
                Verdict::Holds(lsn) => {
                    j.holds = j.holds.max(Some(lsn));
                    true
                }
                Verdict::Lost(_) => {
                    j.past_switch = true;
                    false
                }
                Verdict::Unknown(_) => {
                    j.unknown = true;
                    true
                }
            };
            if keep {
                j.keep = j.keep.max(Some(pos));
                if i == 1 {
                    j.client_keep = Some(pos);
                }
            }
        }
        j
    }

    /// The read's scope must see `pos` too ([`Scope`]): the target rises
    /// to it, and so does the token the session carries on (the read sees
    /// at least that). A position past the end of its timeline (a mark
    /// from before a failover that lost writes) or on a timeline not known
    /// yet sends the read to the leader, as a token would.
    pub fn raise_to_scope(&mut self, view: &ClusterView, pos: Option<Position>) {
        let Some(pos) = pos else { return };
        match view.history.judge(pos) {
            Verdict::Holds(lsn) => {
                self.holds = self.holds.max(Some(lsn));
                self.keep = self.keep.max(Some(pos));
                self.client_keep = self.client_keep.max(Some(pos));
            }
            Verdict::Lost(_) => self.past_switch = true,
            Verdict::Unknown(_) => self.unknown = true,
        }
    }

    /// Why only the leader may serve the session's fresh read, if so.
    pub fn leader_only(&self) -> Option<Reason> {
        if self.lost.is_some() {
            Some(Reason::WriteLost)
        } else if self.past_switch {
            Some(Reason::TokenPastSwitch)
        } else if self.unknown {
            Some(Reason::TimelineUnknown)
        } else {
            None
        }
    }
}
