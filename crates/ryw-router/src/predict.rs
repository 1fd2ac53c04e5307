//! The `hybrid` prediction, a pure function: when will the tracker first see
//! a follower in rotation at a token's position? `hybrid` waits for a
//! follower only when the answer is within its budget, and reads the leader
//! at once otherwise.
//!
//! # What it is fed
//!
//! Only what the tracker already measures and publishes in every
//! [`ClusterView`]:
//!
//! - when the leader reached the token's position
//!   ([`ClusterView::leader_reached_at`]: the leader's position history, in
//!   which a write through this router is noted right after its `COMMIT`
//!   returned);
//! - each follower's pace ([`FollowerHealth::catch_up`](crate::FollowerHealth::catch_up)): how long after the
//!   leader reached a position the tracker saw the follower at it, the
//!   longest of its last 8 catch-ups;
//! - each follower's replay position and how long it has been behind
//!   ([`FollowerHealth::behind_since`](crate::FollowerHealth::behind_since)).
//!
//! A follower at its usual pace shows the token `catch_up` after the leader
//! reached it. A follower slower than that now (it has been behind for
//! longer than its pace) is judged by its current lag instead: it is that
//! far behind the oldest position it lacks, and will be at least that far
//! behind the token. A follower already later than its pace by more than
//! the budget is not predicted at all: it is not keeping its pace (its
//! replay stopped, or its delay grew), and a wait for it would most likely
//! be wasted. It is predicted again once it has caught up with what it
//! lacked, or its catch-ups have taught the new pace.
//!
//! # When lag changes abruptly
//!
//! The prediction only decides *whether to wait*; *where* the read goes is
//! still decided by a replay position the tracker observed before the read
//! (rule 2): a follower serves the read only once it is seen at the token,
//! and the wait ends at the budget (rule 4). So a wrong prediction costs at
//! most the budget, on the leader, and never a stale read.
//!
//! - A follower whose replay **stops** (or whose delay grows): until it is
//!   later than its old pace by more than the budget (at most pace + budget
//!   after the first position it failed to show), reads that its old pace
//!   says it will serve within the budget wait the whole budget and go to
//!   the leader: wasted waits, each of at most the budget, for about one
//!   pace + budget of time. From then on it is not predicted, and reads
//!   that no other follower can serve go to the leader at once. If it
//!   resumes at a longer delay, its catch-ups teach the new pace.
//! - A follower whose delay **shrinks**: its pace (the longest of its last 8
//!   catch-ups) stays long for 8 more catch-ups, about 8 polls under
//!   steady writes: meanwhile it is predicted late, so reads that could have
//!   waited go to the leader. Late means fewer waits, never a wasted one.
//! - A follower that restarts or loses its connection is forgotten (rule 3),
//!   its pace with it: no wait is predicted on it until it has been seen
//!   catching up again.

use std::time::Duration;

use tokio::time::Instant;

use crate::Lsn;
use crate::view::{ClusterView, NodeId, ObservedNode};

/// When a follower is expected to be seen at a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forecast {
    /// The follower expected first.
    pub follower: NodeId,
    /// How long from now until the tracker is expected to see it at the
    /// token (zero when it is overdue).
    pub eta: Duration,
}

/// The follower in rotation expected to be seen first at `target`, and
/// when; `None` when no follower in rotation keeps a known pace (or every
/// one has already replayed `target`, which needs no prediction).
///
/// `budget` is how long the read may wait: a follower already later than
/// its pace by more than that is not predicted. `now` is the tracker's
/// clock (`tokio::time::Instant`), the clock of every instant in `view`.
pub fn forecast(
    view: &ClusterView,
    target: Lsn,
    now: Instant,
    budget: Duration,
) -> Option<Forecast> {
    // Not seen yet: the leader reached it no later than now.
    let reached = view.leader_reached_at(target).unwrap_or(now).min(now);
    let mut best: Option<Forecast> = None;
    for (follower, f) in view.with_ids() {
        let Some(arrival) = arrival(f, target, reached, now, budget) else {
            continue;
        };
        let eta = arrival.saturating_duration_since(now);
        if best.is_none_or(|b| eta < b.eta) {
            best = Some(Forecast { follower, eta });
        }
    }
    best
}

/// When follower `f` is expected to be seen at `target`, which the leader
/// reached at `reached`; `None` if it cannot be predicted.
fn arrival(
    f: &ObservedNode,
    target: Lsn,
    reached: Instant,
    now: Instant,
    budget: Duration,
) -> Option<Instant> {
    let lag = f.follower()?;
    let (true, Some(replay), Some(pace)) = (f.in_rotation, f.lsn, lag.catch_up) else {
        return None;
    };
    if replay >= target {
        return None;
    }
    // At its usual pace.
    let usual = reached + pace;
    let Some(since) = lag.behind_since else {
        return Some(usual);
    };
    // It has been behind since `since`, so it is at least that far behind
    // the token too.
    let behind = now.saturating_duration_since(since);
    if behind > pace + budget {
        // Later than its own pace by more than the budget: not keeping it.
        return None;
    }
    Some(usual.max(reached + behind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{FollowerHealth, Reached, Role, RoleHealth};

    const BUDGET: Duration = Duration::from_millis(20);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A follower in rotation at `replay`, with a pace, behind since `since`.
    fn follower(replay: u64, pace: Option<u64>, since: Option<Instant>) -> ObservedNode {
        ObservedNode {
            health: RoleHealth::Follower(FollowerHealth {
                catch_up: pace.map(ms),
                behind_since: since,
                ..FollowerHealth::UNKNOWN
            }),
            ..ObservedNode::for_test("f", Role::Follower, Some(replay), true)
        }
    }

    fn view(followers: Vec<ObservedNode>, reached: &[(u64, Instant)]) -> ClusterView {
        ClusterView {
            leader: ObservedNode::for_test("leader", Role::Leader, Some(1_000), true),
            leader_id: None,
            history: std::sync::Arc::new(crate::TimelineHistory::first()),
            nodes: followers,
            leader_reached: reached
                .iter()
                .map(|&(lsn, at)| Reached {
                    lsn: Lsn::from_u64(lsn),
                    at,
                })
                .collect(),
        }
    }

    #[test]
    fn a_follower_arrives_its_pace_after_the_leader_reached_the_token() {
        let t0 = Instant::now();
        // The token (500) was written at t0; follower 0 takes 100 ms,
        // follower 1 takes 400 ms; 95 ms have passed.
        let v = view(
            vec![
                follower(400, Some(100), Some(t0)),
                follower(300, Some(400), Some(t0 - ms(50))),
            ],
            &[(500, t0), (600, t0 + ms(60))],
        );
        let now = t0 + ms(95);
        assert_eq!(
            forecast(&v, Lsn::from_u64(500), now, BUDGET),
            Some(Forecast {
                follower: NodeId::new(0),
                eta: ms(5)
            })
        );
        // A position between two published ones: the later time is used.
        assert_eq!(
            forecast(&v, Lsn::from_u64(550), now, BUDGET).unwrap().eta,
            ms(65)
        );
    }

    #[test]
    fn a_token_the_tracker_has_not_seen_counts_as_written_now() {
        let t0 = Instant::now();
        let v = view(vec![follower(400, Some(30), None)], &[(450, t0)]);
        assert_eq!(
            forecast(&v, Lsn::from_u64(900), t0 + ms(10), BUDGET)
                .unwrap()
                .eta,
            ms(30)
        );
    }

    #[test]
    fn a_follower_a_little_late_is_judged_by_its_current_lag() {
        let t0 = Instant::now();
        // Its pace says 100 ms; it has been behind since 110 ms before
        // the token was written (10 ms later than its pace), so the token,
        // written at t0, will be at least 110 + 5 ms late too.
        let v = view(
            vec![follower(400, Some(100), Some(t0 - ms(110)))],
            &[(450, t0 - ms(110)), (500, t0)],
        );
        assert_eq!(
            forecast(&v, Lsn::from_u64(500), t0 + ms(5), BUDGET)
                .unwrap()
                .eta,
            ms(110)
        );
    }

    #[test]
    fn a_follower_later_than_its_pace_by_more_than_the_budget_is_not_predicted() {
        let t0 = Instant::now();
        // Its replay stopped right before the token: the token is the
        // first position it lacks. Within pace + budget it is still
        // expected (at once: it is overdue); after that, no longer.
        let v = view(vec![follower(400, Some(100), Some(t0))], &[(500, t0)]);
        assert_eq!(
            forecast(&v, Lsn::from_u64(500), t0 + ms(95), BUDGET)
                .unwrap()
                .eta,
            ms(5)
        );
        assert_eq!(
            forecast(&v, Lsn::from_u64(500), t0 + ms(115), BUDGET)
                .unwrap()
                .eta,
            Duration::ZERO
        );
        assert_eq!(forecast(&v, Lsn::from_u64(500), t0 + ms(121), BUDGET), None);
    }

    #[test]
    fn only_followers_in_rotation_with_a_known_pace_are_predicted() {
        let t0 = Instant::now();
        let out = ObservedNode {
            in_rotation: false,
            ..follower(400, Some(10), None)
        };
        let v = view(
            vec![
                out,
                follower(400, None, Some(t0)),
                follower(600, Some(5), None),
            ],
            &[(500, t0)],
        );
        assert_eq!(
            forecast(&v, Lsn::from_u64(500), t0, BUDGET),
            None,
            "follower 2 has the token already; the others cannot be predicted"
        );
    }
}
