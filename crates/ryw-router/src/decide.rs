//! The routing decision as a pure function: a published [`ClusterView`], the
//! reads in flight per node ([`Load`]), what is known of the session, the
//! strategy, the time and a random source in; a [`Choice`] out. No I/O, no
//! locks, no allocation, so every rule is unit-tested here and the decision
//! is benchmarked (`benches/decide.rs`).
//!
//! Which follower, when several may serve a read ([`FollowerChoice`]): by
//! default the fewer reads in flight of two drawn at random among them
//! ("the power of two choices": nearly as even as asking every follower,
//! and a follower that answers slowly, so holds its reads longer, is
//! avoided), so followers that all have a session's writes share its reads
//! whatever their lag.

use std::fmt;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::predict::{Forecast, forecast};
use crate::view::{NodeId, ObservedNode};
use crate::{ClusterView, FollowerChoice, Freshness, Lsn, RouterConfig, Strategy};

/// Reads in flight on each node, indexed as [`ClusterView::nodes`]: the
/// input that spreads reads by load ([`FollowerChoice::Load`]). The router
/// reads its live counters (each read counts from its decision until the
/// [`Decision`](crate::Decision) is dropped); tests and the bench give a
/// slice of fixed numbers.
pub trait Load {
    /// Reads in flight on node `node` (0 for a node it does not know).
    fn in_flight(&self, node: NodeId) -> u32;
}

impl Load for [u32] {
    fn in_flight(&self, node: NodeId) -> u32 {
        self.get(node.index()).copied().unwrap_or(0)
    }
}

/// The time of a decision, on both clocks it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Wall-clock ms since the epoch ([`Clock`](crate::Clock)): compared with
    /// stored write times (the sticky window), which other instances and
    /// services wrote.
    pub wall_ms: u64,
    /// The tracker's monotonic clock: compared with the instants of the
    /// [`ClusterView`] (the `hybrid` prediction).
    pub at: Instant,
}

impl Now {
    /// Now, on the system's monotonic clock and `wall_ms`.
    pub fn new(wall_ms: u64) -> Now {
        Now {
            wall_ms,
            at: Instant::now(),
        }
    }
}

/// What routing knows of a session when its read arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// The session store answered (or the strategy does not need it).
    Known {
        /// The highest position the session must see: max of the stored
        /// token and the client's verified token (rule 4), `None` if neither.
        token: Option<Lsn>,
        /// Wall-clock ms of the session's last write, for the sticky window.
        last_write_ms: Option<u64>,
        /// Wall-clock ms of a write of the session whose position no token
        /// may cover: one recorded only by the .NET + Redis demo
        /// (`user:{id}:last_write_utc`). `hybrid` lets the sticky window
        /// decide for it.
        untracked_write_ms: Option<u64>,
    },
    /// The session store failed or is recovering: nothing is known, so fresh
    /// reads that depend on it go to the leader (rule 5).
    Unknown,
}

/// Why a read went where it went: logged, counted and shown in `Decision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The strategy is `leader`.
    LeaderStrategy,
    /// A stale-ok read on a follower in rotation.
    StaleOk,
    /// A follower picked at random (`legacy`, `sticky` after the window, or
    /// no token to honour).
    RandomFollower,
    /// The session wrote within the sticky window.
    WroteWithinWindow,
    /// A follower's known replay position had reached the token.
    CaughtUp,
    /// A follower reached the token while the read waited.
    CaughtUpAfterWait,
    /// The follower asked right before the read had reached the token
    /// (`per-read-check`).
    CheckPassed,
    /// No follower is in rotation.
    NoFollowerInRotation,
    /// The session store is unreachable or recovering (rule 5).
    StoreDegraded,
    /// The token is absurdly far beyond the leader's position (rule 4).
    TokenAbsurd,
    /// No follower had caught up and the wait budget is zero.
    NoWaitBudget,
    /// No follower caught up within the wait budget.
    WaitBudgetSpent,
    /// `hybrid`: no follower had caught up, and none is predicted to within
    /// the hybrid budget, so the read did not wait.
    NoCatchUpForeseen,
    /// The follower asked right before the read was behind the token.
    CheckFailed,
    /// The chosen follower could not give a connection, failed its check
    /// query, or was forgotten between decision and connection (rules 2, 3).
    FollowerUnavailable,
    /// What the session's last read saw is not bounded yet, and the
    /// follower it ran on cannot serve this one (rule 7).
    Unsettled,
    /// The session's last write is one that a failover lost: on an
    /// earlier timeline, past where it ended. Only the leader serves the
    /// read, and it says so ([`Decision::lost`](crate::Decision::lost)).
    WriteLost,
    /// The session's token is past the end of its timeline, but no write
    /// of the session is (it read data that a failover lost, or only a
    /// client token is known): the leader serves the read, and the token
    /// starts again on the new timeline.
    TokenPastSwitch,
    /// The session's token is on a timeline the router does not know (a
    /// newer leader it has not seen yet): no follower can be proven to have
    /// it.
    TimelineUnknown,
    /// The read's scope is `cluster` and the leader's position could not
    /// be read: only the leader can serve it.
    ScopeUnknown,
}

impl Reason {
    /// A short phrase for logs and the dashboard.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::LeaderStrategy => "strategy is leader",
            Reason::StaleOk => "stale-ok read",
            Reason::RandomFollower => "random follower",
            Reason::WroteWithinWindow => "wrote within sticky window",
            Reason::CaughtUp => "follower caught up",
            Reason::CaughtUpAfterWait => "follower caught up after wait",
            Reason::CheckPassed => "follower passed replay check",
            Reason::NoFollowerInRotation => "no follower in rotation",
            Reason::StoreDegraded => "session store degraded",
            Reason::TokenAbsurd => "token far beyond leader",
            Reason::NoWaitBudget => "no follower caught up, no wait budget",
            Reason::WaitBudgetSpent => "no follower caught up within budget",
            Reason::NoCatchUpForeseen => "no follower expected within budget",
            Reason::CheckFailed => "follower behind at replay check",
            Reason::FollowerUnavailable => "follower unavailable",
            Reason::Unsettled => "last read not settled, its follower unavailable",
            Reason::WriteLost => "the session's write was lost in a failover",
            Reason::TokenPastSwitch => "token past its timeline's end",
            Reason::TimelineUnknown => "token on a timeline not seen yet",
            Reason::ScopeUnknown => "the scope's position could not be read",
        }
    }

    /// Whether the read wanted a follower but ends on the leader (counted as
    /// a fallback in the metrics).
    pub const fn is_fallback(self) -> bool {
        matches!(
            self,
            Reason::NoFollowerInRotation
                | Reason::StoreDegraded
                | Reason::TokenAbsurd
                | Reason::NoWaitBudget
                | Reason::WaitBudgetSpent
                | Reason::NoCatchUpForeseen
                | Reason::CheckFailed
                | Reason::FollowerUnavailable
                | Reason::Unsettled
                | Reason::WriteLost
                | Reason::TokenPastSwitch
                | Reason::TimelineUnknown
                | Reason::ScopeUnknown
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where to send a read, before any I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Serve it on the leader.
    Leader(Reason),
    /// Serve it on follower `node`.
    Follower {
        /// The follower.
        node: NodeId,
        /// Why.
        reason: Reason,
    },
    /// No follower has reached `target` yet; wait up to `budget` for one
    /// that does, then the leader. `causal` waits blindly; `hybrid` only
    /// when a follower is predicted to arrive within the budget.
    Wait {
        /// The position a follower must reach.
        target: Lsn,
        /// The longest wait (rule 4: nothing a client sends makes it longer).
        budget: Duration,
        /// `hybrid`: the follower expected, and when.
        forecast: Option<Forecast>,
    },
    /// `per-read-check`: ask follower `node` for its replay position first;
    /// serve there if it has reached `target`, else on the leader.
    Check {
        /// The follower.
        node: NodeId,
        /// The position it must have reached.
        target: Lsn,
    },
}

/// Decides where a read goes. Pure: the same inputs and random draws give the
/// same answer.
///
/// `load` is read only to choose among followers that may all serve the
/// read ([`RouterConfig::follower_choice`]); `now.wall_ms` is compared with
/// the stored write times (the sticky window), `now.at` with the view's
/// instants (the `hybrid` prediction).
#[allow(clippy::too_many_arguments)] // each a different input; a struct would only rename them
pub fn decide<R: Rng + ?Sized, L: Load + ?Sized>(
    view: &ClusterView,
    load: &L,
    session: &SessionState,
    freshness: Freshness,
    strategy: Strategy,
    now: Now,
    cfg: &RouterConfig,
    rng: &mut R,
) -> Choice {
    // Stale-ok reads go to followers in rotation under every strategy.
    if freshness == Freshness::StaleOk {
        return match cfg.follower_choice {
            FollowerChoice::Load => match two_choices(view, load, rng, |f| f.in_rotation) {
                Some(node) => Choice::Follower {
                    node,
                    reason: Reason::StaleOk,
                },
                None => Choice::Leader(Reason::NoFollowerInRotation),
            },
            FollowerChoice::LeastLagged => random_follower(view, rng, Reason::StaleOk),
        };
    }
    match strategy {
        Strategy::Leader => return Choice::Leader(Reason::LeaderStrategy),
        // No guarantee on purpose: this is the stale-read problem.
        Strategy::Legacy => return random_follower(view, rng, Reason::RandomFollower),
        _ => {}
    }
    // Rule 5: without the session's state, no follower can be proven fresh.
    let SessionState::Known {
        token,
        last_write_ms,
        untracked_write_ms,
    } = *session
    else {
        return Choice::Leader(Reason::StoreDegraded);
    };
    let within_window = |write_ms: Option<u64>| {
        // A write time in the future (clock skew between instances) counts
        // as "just now": the safe side.
        write_ms.is_some_and(|w| {
            u128::from(now.wall_ms.saturating_sub(w)) < cfg.sticky_window.as_millis()
        })
    };
    match strategy {
        Strategy::Sticky if within_window(last_write_ms) => {
            Choice::Leader(Reason::WroteWithinWindow)
        }
        Strategy::Sticky => random_follower(view, rng, Reason::RandomFollower),
        Strategy::Causal => causal(view, load, token, cfg, rng),
        // A write whose position is unknown: only the window can protect
        // it (the .NET + Redis demo's guarantee: fresh while lag stays under the window;
        // strict when `max_lag_time` is under the window).
        Strategy::Hybrid if within_window(untracked_write_ms) => {
            Choice::Leader(Reason::WroteWithinWindow)
        }
        Strategy::Hybrid => hybrid(view, load, token, now.at, cfg, rng),
        Strategy::PerReadCheck => {
            let Some(target) = token else {
                return random_follower(view, rng, Reason::RandomFollower);
            };
            if is_absurd(view, target, cfg) {
                return Choice::Leader(Reason::TokenAbsurd);
            }
            match random_follower(view, rng, Reason::RandomFollower) {
                Choice::Follower { node, .. } => Choice::Check { node, target },
                leader => leader,
            }
        }
        Strategy::Leader | Strategy::Legacy => unreachable!("handled above"),
    }
}

/// What `causal` and `hybrid` decide before any wait: the leader for an
/// absurd token (rule 4), a follower that has the token (chosen as
/// [`RouterConfig::follower_choice`] says), the leader when no follower is
/// in rotation or there is no `budget`; else `Ok(target)`, the position a
/// wait would be for.
fn before_waiting<R: Rng + ?Sized, L: Load + ?Sized>(
    view: &ClusterView,
    load: &L,
    token: Option<Lsn>,
    budget: Duration,
    cfg: &RouterConfig,
    rng: &mut R,
) -> Result<Lsn, Choice> {
    let target = token.unwrap_or(Lsn::ZERO);
    // Rule 4: a bogus token cannot make anyone wait.
    if is_absurd(view, target, cfg) {
        return Err(Choice::Leader(Reason::TokenAbsurd));
    }
    // Rule 2: the positions in the view were observed by the tracker before
    // this read's statement will start.
    if let Some(node) = caught_up(view, load, target, cfg.follower_choice, rng) {
        return Err(Choice::Follower {
            node,
            reason: Reason::CaughtUp,
        });
    }
    if view.followers_in_rotation() == 0 {
        return Err(Choice::Leader(Reason::NoFollowerInRotation));
    }
    if budget.is_zero() {
        return Err(Choice::Leader(Reason::NoWaitBudget));
    }
    Ok(target)
}

/// `causal`: a follower in rotation known to have replayed up to the token;
/// else wait (within budget) or the leader.
fn causal<R: Rng + ?Sized, L: Load + ?Sized>(
    view: &ClusterView,
    load: &L,
    token: Option<Lsn>,
    cfg: &RouterConfig,
    rng: &mut R,
) -> Choice {
    match before_waiting(view, load, token, cfg.causal_wait, cfg, rng) {
        Ok(target) => Choice::Wait {
            target,
            budget: cfg.causal_wait,
            forecast: None,
        },
        Err(choice) => choice,
    }
}

/// `hybrid`: as `causal`, but it waits only when the tracker predicts that
/// a follower reaches the token within `hybrid_wait`; otherwise the leader
/// at once. The prediction decides only whether to wait: a follower serves
/// the read only once it is seen at the token (rule 2), and the wait ends
/// at the budget (rule 4), so a wrong prediction costs at most the budget.
fn hybrid<R: Rng + ?Sized, L: Load + ?Sized>(
    view: &ClusterView,
    load: &L,
    token: Option<Lsn>,
    now: Instant,
    cfg: &RouterConfig,
    rng: &mut R,
) -> Choice {
    let target = match before_waiting(view, load, token, cfg.hybrid_wait, cfg, rng) {
        Ok(target) => target,
        Err(choice) => return choice,
    };
    match forecast(view, target, now, cfg.hybrid_wait) {
        Some(f) if f.eta <= cfg.hybrid_wait => Choice::Wait {
            target,
            budget: cfg.hybrid_wait,
            forecast: Some(f),
        },
        _ => Choice::Leader(Reason::NoCatchUpForeseen),
    }
}

/// Rule 4: a token more than `absurd_token_ahead` bytes beyond the leader's
/// last known position cannot be real; such reads go to the leader at once.
pub fn is_absurd(view: &ClusterView, token: Lsn, cfg: &RouterConfig) -> bool {
    view.leader_lsn()
        .is_some_and(|leader| token > leader.saturating_add(cfg.absurd_token_ahead))
}

/// A follower in rotation known to have replayed `target`, chosen as
/// `choice` says: [`spread_caught_up`] or [`least_lagged_caught_up`]. Also
/// what ends a wait: the first view that shows one.
pub fn caught_up<R: Rng + ?Sized, L: Load + ?Sized>(
    view: &ClusterView,
    load: &L,
    target: Lsn,
    choice: FollowerChoice,
    rng: &mut R,
) -> Option<NodeId> {
    match choice {
        FollowerChoice::Load => spread_caught_up(view, load, target, rng),
        FollowerChoice::LeastLagged => least_lagged_caught_up(view, target, rng),
    }
}

/// Of the followers in rotation known to have replayed `target`, the fewer
/// reads in flight of two drawn at random (rule 2 holds for either: both
/// have the target). Lag does not matter once a follower has the data.
pub fn spread_caught_up<R: Rng + ?Sized, L: Load + ?Sized>(
    view: &ClusterView,
    load: &L,
    target: Lsn,
    rng: &mut R,
) -> Option<NodeId> {
    two_choices(view, load, rng, |f| {
        f.in_rotation && f.lsn.is_some_and(|replay| replay >= target)
    })
}

/// The power of two choices: two distinct nodes drawn uniformly among those
/// `eligible` accepts, and the one with fewer reads in flight (the first
/// drawn on a tie, itself random). The only eligible one if there is one;
/// `None` if none. One pass over the nodes (two beyond
/// [`TWO_CHOICES_KEPT`] eligible ones), one random draw, no division.
fn two_choices<R: Rng + ?Sized, L: Load + ?Sized>(
    view: &ClusterView,
    load: &L,
    rng: &mut R,
    eligible: impl Fn(&ObservedNode) -> bool,
) -> Option<NodeId> {
    // The first eligible indexes, kept on the stack while counting.
    let mut kept = [0u16; TWO_CHOICES_KEPT];
    let mut n = 0usize;
    for (i, f) in view.nodes.iter().enumerate() {
        if eligible(f) {
            if let Some(slot) = kept.get_mut(n) {
                *slot = i as u16;
            }
            n += 1;
        }
    }
    // Past `u16::MAX` nodes the kept indexes would wrap: walk them again.
    let walk = n > TWO_CHOICES_KEPT || view.nodes.len() > usize::from(u16::MAX);
    match n {
        0 => return None,
        1 if !walk => return Some(NodeId::new(usize::from(kept[0]))),
        _ => {}
    }
    // Both draws from one 64-bit number, each half scaled to its range by
    // a multiply and a shift (no division: this is most of what the choice
    // costs; the bias, n / 2^32, is nil for a handful of followers).
    let x: u64 = rng.random();
    let scale = |bits: u64, range: usize| ((bits * range as u64) >> 32) as usize;
    let a = scale(x & 0xffff_ffff, n);
    let mut b = scale(x >> 32, n - 1);
    if b >= a {
        b += 1;
    }
    let nth = |k: usize| match kept.get(k) {
        Some(&i) if !walk => usize::from(i),
        _ => view
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, f)| eligible(f))
            .nth(k)
            .map_or(0, |(i, _)| i),
    };
    let (first, second) = (NodeId::new(nth(a)), NodeId::new(nth(b)));
    if load.in_flight(second) < load.in_flight(first) {
        Some(second)
    } else {
        Some(first)
    }
}

/// How many eligible followers [`two_choices`] keeps while counting them;
/// past that it walks the nodes again to find its two.
const TWO_CHOICES_KEPT: usize = 16;

/// The follower in rotation with the highest known replay position, if it is
/// at least `target` (ties broken at random, so equally fresh followers share
/// the load): [`FollowerChoice::LeastLagged`].
pub fn least_lagged_caught_up<R: Rng + ?Sized>(
    view: &ClusterView,
    target: Lsn,
    rng: &mut R,
) -> Option<NodeId> {
    let mut best: Option<(NodeId, Lsn)> = None;
    let mut ties = 0u32;
    for (i, f) in view.with_ids() {
        let Some(replay) = f.lsn else { continue };
        if !f.in_rotation || replay < target {
            continue;
        }
        match best {
            Some((_, b)) if replay < b => {}
            Some((_, b)) if replay == b => {
                // Reservoir sampling over equally fresh followers.
                ties += 1;
                if rng.random_range(0..=ties) == 0 {
                    best = Some((i, replay));
                }
            }
            _ => {
                best = Some((i, replay));
                ties = 0;
            }
        }
    }
    best.map(|(i, _)| i)
}

/// A uniformly random follower in rotation, or the leader if there is none.
fn random_follower<R: Rng + ?Sized>(view: &ClusterView, rng: &mut R, reason: Reason) -> Choice {
    let n = view.followers_in_rotation();
    if n == 0 {
        return Choice::Leader(Reason::NoFollowerInRotation);
    }
    let pick = rng.random_range(0..n);
    let node = view
        .with_ids()
        .filter(|(_, f)| f.in_rotation)
        .nth(pick)
        .map(|(id, _)| id)
        .expect("pick < number in rotation");
    Choice::Follower { node, reason }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::view::{FollowerHealth, ObservedNode, Role, RoleHealth};

    fn node(name: &str, role: Role, lsn: Option<u64>, in_rotation: bool) -> ObservedNode {
        ObservedNode::for_test(name, role, lsn, in_rotation)
    }

    /// Leader at 1000; followers given as (replay, in rotation).
    fn view(followers: &[(Option<u64>, bool)]) -> ClusterView {
        ClusterView {
            leader: node("leader", Role::Leader, Some(1000), true),
            leader_id: None,
            history: std::sync::Arc::new(crate::TimelineHistory::first()),
            nodes: followers
                .iter()
                .enumerate()
                .map(|(i, (lsn, rot))| node(&format!("f{}", i + 1), Role::Follower, *lsn, *rot))
                .collect(),
            leader_reached: Vec::new(),
        }
    }

    fn known(token: Option<u64>, last_write_ms: Option<u64>) -> SessionState {
        SessionState::Known {
            token: token.map(Lsn::from_u64),
            last_write_ms,
            untracked_write_ms: None,
        }
    }

    /// No read in flight anywhere.
    const IDLE: &[u32] = &[];

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    fn fresh(v: &ClusterView, s: SessionState, st: Strategy, now_ms: u64) -> Choice {
        decide(
            v,
            IDLE,
            &s,
            Freshness::Fresh,
            st,
            Now {
                wall_ms: now_ms,
                at: Instant::now(),
            },
            &RouterConfig::default(),
            &mut rng(),
        )
    }

    fn follower(index: usize, reason: Reason) -> Choice {
        Choice::Follower {
            node: NodeId::new(index),
            reason,
        }
    }

    #[test]
    fn leader_strategy_always_reads_the_leader() {
        let v = view(&[(Some(1000), true)]);
        assert_eq!(
            fresh(&v, known(None, None), Strategy::Leader, 0),
            Choice::Leader(Reason::LeaderStrategy)
        );
    }

    #[test]
    fn legacy_ignores_the_token_and_the_store() {
        let v = view(&[(Some(10), true)]);
        for s in [known(Some(999), Some(0)), SessionState::Unknown] {
            assert_eq!(
                fresh(&v, s, Strategy::Legacy, 0),
                follower(0, Reason::RandomFollower)
            );
        }
        assert_eq!(
            fresh(
                &view(&[(Some(10), false)]),
                known(None, None),
                Strategy::Legacy,
                0
            ),
            Choice::Leader(Reason::NoFollowerInRotation)
        );
    }

    #[test]
    fn sticky_reads_the_leader_inside_the_window_and_a_follower_after() {
        let v = view(&[(Some(10), true)]);
        let wrote_at = 1_000_000;
        let s = known(Some(1000), Some(wrote_at));
        assert_eq!(
            fresh(&v, s, Strategy::Sticky, wrote_at),
            Choice::Leader(Reason::WroteWithinWindow)
        );
        assert_eq!(
            fresh(&v, s, Strategy::Sticky, wrote_at + 4_999),
            Choice::Leader(Reason::WroteWithinWindow)
        );
        // Window expired: sticky does not look at the token (its weakness).
        assert_eq!(
            fresh(&v, s, Strategy::Sticky, wrote_at + 5_000),
            follower(0, Reason::RandomFollower)
        );
        assert_eq!(
            fresh(&v, known(None, None), Strategy::Sticky, wrote_at),
            follower(0, Reason::RandomFollower)
        );
    }

    #[test]
    fn a_write_time_in_the_future_counts_as_inside_the_window() {
        let v = view(&[(Some(1000), true)]);
        let s = known(None, Some(2_000_000));
        assert_eq!(
            fresh(&v, s, Strategy::Sticky, 1_000_000),
            Choice::Leader(Reason::WroteWithinWindow)
        );
    }

    #[test]
    fn causal_uses_a_follower_only_once_it_reached_the_token() {
        let v = view(&[(Some(499), true), (Some(500), true)]);
        assert_eq!(
            fresh(&v, known(Some(500), None), Strategy::Causal, 0),
            follower(1, Reason::CaughtUp),
            "equal to the token is enough"
        );
        assert_eq!(
            fresh(&v, known(Some(501), None), Strategy::Causal, 0),
            Choice::Wait {
                target: Lsn::from_u64(501),
                budget: Duration::from_millis(200),
                forecast: None,
            }
        );
    }

    /// Decides a fresh `causal` read for token 500 `n` times with `load`
    /// and `cfg`; counts the followers chosen (a panic on anything else).
    fn causal_spread(v: &ClusterView, load: &[u32], cfg: &RouterConfig, n: u64) -> Vec<u32> {
        let mut seen = vec![0; v.nodes.len()];
        for seed in 0..n {
            match decide(
                v,
                load,
                &known(Some(500), None),
                Freshness::Fresh,
                Strategy::Causal,
                Now::new(0),
                cfg,
                &mut StdRng::seed_from_u64(seed),
            ) {
                Choice::Follower {
                    node,
                    reason: Reason::CaughtUp,
                } => seen[node.index()] += 1,
                other => panic!("{other:?}"),
            }
        }
        seen
    }

    /// Followers at 600, 900, 950 (out of rotation) and 700; tokens at 500.
    fn uneven() -> ClusterView {
        view(&[
            (Some(600), true),
            (Some(900), true),
            (Some(950), false),
            (Some(700), true),
        ])
    }

    #[test]
    fn fresh_reads_spread_over_every_follower_that_has_the_token_whatever_its_lag() {
        let seen = causal_spread(&uneven(), IDLE, &RouterConfig::default(), 3000);
        assert_eq!(seen[2], 0, "950 is out of rotation: {seen:?}");
        for i in [0, 1, 3] {
            assert!((900..=1100).contains(&seen[i]), "{seen:?}");
        }
    }

    #[test]
    fn the_least_lagged_choice_sends_every_such_read_to_the_freshest_follower() {
        let cfg = RouterConfig {
            follower_choice: FollowerChoice::LeastLagged,
            ..RouterConfig::default()
        };
        let seen = causal_spread(&uneven(), IDLE, &cfg, 50);
        assert_eq!(seen, [0, 50, 0, 0], "950 is out of rotation");
    }

    #[test]
    fn of_two_candidates_the_one_with_fewer_reads_in_flight_serves() {
        let cfg = RouterConfig::default();
        // Follower 1 (at 900) holds 9 reads, the others none: it loses
        // every draw it is in, and the other two share the reads.
        let seen = causal_spread(&uneven(), &[0, 9, 0, 0], &cfg, 3000);
        assert_eq!(seen[1], 0, "{seen:?}");
        assert!((1300..=1700).contains(&seen[0]), "{seen:?}");
        // Two followers only: always the less loaded one.
        let two = view(&[(Some(600), true), (Some(900), true)]);
        assert_eq!(causal_spread(&two, &[3, 2], &cfg, 200), [0, 200]);
        // Loads equal: the first drawn, so an even split.
        let even = causal_spread(&two, &[4, 4], &cfg, 2000);
        assert!((850..=1150).contains(&even[0]), "{even:?}");
    }

    #[test]
    fn past_the_kept_few_every_eligible_follower_is_still_drawn() {
        let many: Vec<(Option<u64>, bool)> = (0..TWO_CHOICES_KEPT + 5)
            .map(|i| (Some(600), i % 7 != 3))
            .collect();
        let v = view(&many);
        let seen = causal_spread(&v, IDLE, &RouterConfig::default(), 4000);
        for (i, count) in seen.iter().enumerate() {
            if i % 7 == 3 {
                assert_eq!(*count, 0, "{i} is out of rotation");
            } else {
                assert!(*count > 100, "{i}: {seen:?}");
            }
        }
    }

    #[test]
    fn a_follower_behind_the_token_is_never_chosen_however_idle() {
        // Rule 2 before load: only follower 1 has replayed 500.
        let v = view(&[(Some(499), true), (Some(500), true), (Some(10), true)]);
        let seen = causal_spread(&v, &[0, 50, 0], &RouterConfig::default(), 200);
        assert_eq!(seen, [0, 200, 0]);
    }

    #[test]
    fn stale_ok_reads_avoid_a_loaded_follower_unless_asked_for_the_old_random_choice() {
        let v = view(&[(Some(1), true), (Some(1), true), (Some(1), false)]);
        let stale = |load: &[u32], cfg: &RouterConfig, seed: u64| {
            decide(
                &v,
                load,
                &SessionState::Unknown,
                Freshness::StaleOk,
                Strategy::Leader,
                Now::new(0),
                cfg,
                &mut StdRng::seed_from_u64(seed),
            )
        };
        let spread = RouterConfig::default();
        for seed in 0..100 {
            assert_eq!(
                stale(&[7, 0, 0], &spread, seed),
                follower(1, Reason::StaleOk),
                "follower 3 is out of rotation, follower 1 loaded"
            );
        }
        let random = RouterConfig {
            follower_choice: FollowerChoice::LeastLagged,
            ..RouterConfig::default()
        };
        let on_loaded = (0..200)
            .filter(|&seed| stale(&[7, 0, 0], &random, seed) == follower(0, Reason::StaleOk))
            .count();
        assert!((60..=140).contains(&on_loaded), "{on_loaded}");
    }

    #[test]
    fn equally_fresh_followers_share_the_load() {
        let v = view(&[(Some(900), true), (Some(900), true), (Some(900), true)]);
        let mut seen = [0; 3];
        let mut r = rng();
        for _ in 0..300 {
            seen[least_lagged_caught_up(&v, Lsn::from_u64(900), &mut r)
                .unwrap()
                .index()] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }

    #[test]
    fn causal_without_a_token_takes_any_follower_with_a_known_position() {
        let v = view(&[(None, false), (Some(0), true)]);
        assert_eq!(
            fresh(&v, known(None, None), Strategy::Causal, 0),
            follower(1, Reason::CaughtUp)
        );
    }

    #[test]
    fn causal_with_no_budget_goes_to_the_leader_instead_of_waiting() {
        let v = view(&[(Some(10), true)]);
        let cfg = RouterConfig {
            causal_wait: Duration::ZERO,
            ..RouterConfig::default()
        };
        let c = decide(
            &v,
            IDLE,
            &known(Some(500), None),
            Freshness::Fresh,
            Strategy::Causal,
            Now::new(0),
            &cfg,
            &mut rng(),
        );
        assert_eq!(c, Choice::Leader(Reason::NoWaitBudget));
    }

    #[test]
    fn causal_does_not_wait_when_no_follower_is_in_rotation() {
        let v = view(&[(Some(10), false)]);
        assert_eq!(
            fresh(&v, known(Some(500), None), Strategy::Causal, 0),
            Choice::Leader(Reason::NoFollowerInRotation)
        );
    }

    #[test]
    fn a_token_absurdly_beyond_the_leader_goes_straight_to_the_leader() {
        let v = view(&[(Some(1000), true)]);
        let gib = 1u64 << 30;
        // Slightly ahead of what the tracker knows: plausible (another
        // instance's fresher write), so it may wait.
        assert_eq!(
            fresh(&v, known(Some(1000 + gib), None), Strategy::Causal, 0),
            Choice::Wait {
                target: Lsn::from_u64(1000 + gib),
                budget: Duration::from_millis(200),
                forecast: None,
            }
        );
        for st in [Strategy::Causal, Strategy::Hybrid, Strategy::PerReadCheck] {
            assert_eq!(
                fresh(&v, known(Some(1001 + gib), None), st, 0),
                Choice::Leader(Reason::TokenAbsurd),
                "{st}"
            );
        }
        assert_eq!(
            fresh(&v, known(Some(u64::MAX), None), Strategy::Causal, 0),
            Choice::Leader(Reason::TokenAbsurd)
        );
    }

    /// A cluster with the lags of the `hybrid` tests: the token (500) was written at
    /// `t0`; follower 1 (index 0) takes 100 ms to show a write, follower 2
    /// 400 ms; both have been behind since `t0`.
    fn seeds_cluster(t0: Instant) -> ClusterView {
        let f = |name: &str, replay: u64, pace: u64| ObservedNode {
            health: RoleHealth::Follower(FollowerHealth {
                catch_up: Some(Duration::from_millis(pace)),
                behind_since: Some(t0),
                ..FollowerHealth::UNKNOWN
            }),
            ..node(name, Role::Follower, Some(replay), true)
        };
        ClusterView {
            leader: node("leader", Role::Leader, Some(1000), true),
            leader_id: None,
            history: std::sync::Arc::new(crate::TimelineHistory::first()),
            nodes: vec![f("f1", 400, 100), f("f2", 300, 400)],
            leader_reached: vec![crate::view::Reached {
                lsn: Lsn::from_u64(500),
                at: t0,
            }],
        }
    }

    fn hybrid_at(v: &ClusterView, s: SessionState, now: Now, cfg: &RouterConfig) -> Choice {
        decide(
            v,
            IDLE,
            &s,
            Freshness::Fresh,
            Strategy::Hybrid,
            now,
            cfg,
            &mut rng(),
        )
    }

    fn at(t: Instant) -> Now {
        Now {
            wall_ms: 1_000_000,
            at: t,
        }
    }

    #[test]
    fn hybrid_waits_for_a_follower_predicted_in_5_ms_but_not_for_one_predicted_in_50() {
        let t0 = Instant::now();
        let v = seeds_cluster(t0);
        let cfg = RouterConfig::default();
        // The session wrote just now: its position decides, not the window.
        let s = known(Some(500), Some(1_000_000));
        // 95 ms after the write, follower 1 is 5 ms away: wait for it.
        assert_eq!(
            hybrid_at(&v, s, at(t0 + Duration::from_millis(95)), &cfg),
            Choice::Wait {
                target: Lsn::from_u64(500),
                budget: Duration::from_millis(20),
                forecast: Some(Forecast {
                    follower: NodeId::new(0),
                    eta: Duration::from_millis(5)
                }),
            }
        );
        // 50 ms after the write, it is 50 ms away: the leader at once.
        assert_eq!(
            hybrid_at(&v, s, at(t0 + Duration::from_millis(50)), &cfg),
            Choice::Leader(Reason::NoCatchUpForeseen)
        );
        // Exactly the budget away still waits; a budget of 0 never does.
        assert!(matches!(
            hybrid_at(&v, s, at(t0 + Duration::from_millis(80)), &cfg),
            Choice::Wait { .. }
        ));
        let no_wait = RouterConfig {
            hybrid_wait: Duration::ZERO,
            ..RouterConfig::default()
        };
        assert_eq!(
            hybrid_at(&v, s, at(t0 + Duration::from_millis(95)), &no_wait),
            Choice::Leader(Reason::NoWaitBudget)
        );
    }

    #[test]
    fn hybrid_reads_a_follower_that_has_the_token_without_asking_the_prediction() {
        let t0 = Instant::now();
        let v = seeds_cluster(t0);
        let s = known(Some(350), Some(1_000_000));
        assert_eq!(
            hybrid_at(&v, s, at(t0), &RouterConfig::default()),
            follower(0, Reason::CaughtUp)
        );
    }

    #[test]
    fn hybrid_does_not_wait_for_a_follower_whose_lag_jumped_past_its_pace() {
        let t0 = Instant::now();
        let mut v = seeds_cluster(t0);
        // Follower 1's replay stopped 300 ms before the write: its pace
        // still says 100 ms, it has been behind for 395 ms.
        if let RoleHealth::Follower(h) = &mut v.nodes[0].health {
            h.behind_since = Some(t0 - Duration::from_millis(300));
        }
        let s = known(Some(500), None);
        assert_eq!(
            hybrid_at(
                &v,
                s,
                at(t0 + Duration::from_millis(95)),
                &RouterConfig::default()
            ),
            Choice::Leader(Reason::NoCatchUpForeseen)
        );
    }

    #[test]
    fn a_session_with_only_a_last_write_time_follows_the_window() {
        let v = view(&[(Some(400), true), (Some(600), true)]);
        let wrote_at = 1_000_000;
        let seed_only = SessionState::Known {
            token: None,
            last_write_ms: Some(wrote_at),
            untracked_write_ms: Some(wrote_at),
        };
        // Inside the window: the leader.
        for now_ms in [wrote_at, wrote_at + 4_999] {
            assert_eq!(
                fresh(&v, seed_only, Strategy::Hybrid, now_ms),
                Choice::Leader(Reason::WroteWithinWindow)
            );
        }
        // After it: any follower (nothing is known to wait for).
        assert!(matches!(
            fresh(&v, seed_only, Strategy::Hybrid, wrote_at + 5_000),
            Choice::Follower {
                reason: Reason::CaughtUp,
                ..
            }
        ));
        // A write time in the future (another machine's clock) is "now".
        assert_eq!(
            fresh(&v, seed_only, Strategy::Hybrid, wrote_at - 60_000),
            Choice::Leader(Reason::WroteWithinWindow)
        );
        // With a position too, the untracked write still gets its window,
        // then the position decides.
        let both = SessionState::Known {
            token: Some(Lsn::from_u64(500)),
            last_write_ms: Some(wrote_at),
            untracked_write_ms: Some(wrote_at),
        };
        assert_eq!(
            fresh(&v, both, Strategy::Hybrid, wrote_at + 1_000),
            Choice::Leader(Reason::WroteWithinWindow)
        );
        assert_eq!(
            fresh(&v, both, Strategy::Hybrid, wrote_at + 5_000),
            follower(1, Reason::CaughtUp)
        );
    }

    #[test]
    fn hybrid_ignores_the_window_for_writes_it_has_the_position_of() {
        // A session's own write, with its position: no window, unlike the
        // old hybrid (sticky inside the window), which sent it to the leader.
        let v = view(&[(Some(400), true), (Some(600), true)]);
        let s = known(Some(500), Some(1_000_000));
        assert_eq!(
            fresh(&v, s, Strategy::Hybrid, 1_000_000),
            follower(1, Reason::CaughtUp)
        );
    }

    #[test]
    fn a_degraded_store_sends_fresh_reads_to_the_leader() {
        let v = view(&[(Some(1000), true)]);
        for st in [
            Strategy::Sticky,
            Strategy::Causal,
            Strategy::Hybrid,
            Strategy::PerReadCheck,
        ] {
            assert_eq!(
                fresh(&v, SessionState::Unknown, st, 0),
                Choice::Leader(Reason::StoreDegraded),
                "{st}"
            );
        }
    }

    #[test]
    fn per_read_check_asks_a_follower_when_there_is_a_token() {
        let v = view(&[(Some(1), true)]);
        assert_eq!(
            fresh(&v, known(Some(500), None), Strategy::PerReadCheck, 0),
            Choice::Check {
                node: NodeId::new(0),
                target: Lsn::from_u64(500)
            },
            "the tracker's view is not consulted for the position"
        );
        assert_eq!(
            fresh(&v, known(None, None), Strategy::PerReadCheck, 0),
            follower(0, Reason::RandomFollower)
        );
    }

    #[test]
    fn stale_ok_reads_use_followers_under_every_strategy() {
        let v = view(&[(Some(1), true)]);
        for st in Strategy::ALL {
            let c = decide(
                &v,
                IDLE,
                &SessionState::Unknown,
                Freshness::StaleOk,
                st,
                Now::new(0),
                &RouterConfig::default(),
                &mut rng(),
            );
            assert_eq!(c, follower(0, Reason::StaleOk), "{st}");
        }
        let none = view(&[(Some(1), false)]);
        let c = decide(
            &none,
            IDLE,
            &SessionState::Unknown,
            Freshness::StaleOk,
            Strategy::Leader,
            Now::new(0),
            &RouterConfig::default(),
            &mut rng(),
        );
        assert_eq!(c, Choice::Leader(Reason::NoFollowerInRotation));
    }

    #[test]
    fn random_picks_only_followers_in_rotation_and_all_of_them() {
        let v = view(&[(Some(1), true), (Some(1), false), (Some(1), true)]);
        let mut seen = [0; 3];
        let mut r = rng();
        for _ in 0..200 {
            match random_follower(&v, &mut r, Reason::StaleOk) {
                Choice::Follower { node, .. } => seen[node.index()] += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen[1], 0);
        assert!(seen[0] > 50 && seen[2] > 50, "{seen:?}");
    }

    #[test]
    fn fallback_reasons_are_the_ones_that_wanted_a_follower() {
        assert!(Reason::WaitBudgetSpent.is_fallback());
        assert!(Reason::NoCatchUpForeseen.is_fallback());
        assert!(Reason::StoreDegraded.is_fallback());
        assert!(!Reason::LeaderStrategy.is_fallback());
        assert!(!Reason::WroteWithinWindow.is_fallback());
    }
}
