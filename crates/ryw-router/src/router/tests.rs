//! Router tests that need no database: waits under paused tokio time, token
//! advance and clamping, the store guard, incarnation checks, and start-up
//! with every node down. Routing against real followers is tested by the
//! cluster harness.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep};

use super::judge::{Judged, advance_token};
use super::load::InFlight;
use super::route::wait_for_caught_up;
use super::*;
use crate::decide::{Reason, SessionState};
use crate::reader::check_incarnation;
use crate::view::{ObservedNode, Role};
use crate::{
    Freshness, Lsn, ManualClock, MemoryStore, Position, ReadOptions, ReadRequest, SessionKey,
    StorePart, Strategy,
};

fn node(name: &str, role: Role, lsn: Option<u64>, in_rotation: bool) -> ObservedNode {
    ObservedNode::for_test(name, role, lsn, in_rotation)
}

/// Leader at `leader`; followers as (replay, in rotation).
fn view(leader: u64, followers: &[(Option<u64>, bool)]) -> Arc<ClusterView> {
    Arc::new(ClusterView {
        leader: node("leader", Role::Leader, Some(leader), true),
        leader_id: None,
        history: std::sync::Arc::new(crate::TimelineHistory::first()),
        nodes: followers
            .iter()
            .enumerate()
            .map(|(i, (lsn, rot))| node(&format!("f{}", i + 1), Role::Follower, *lsn, *rot))
            .collect(),
        leader_reached: Vec::new(),
    })
}

/// No read in flight, followers chosen by load (the default).
fn idle() -> (&'static InFlight, crate::FollowerChoice) {
    static IDLE: std::sync::OnceLock<Arc<InFlight>> = std::sync::OnceLock::new();
    (
        IDLE.get_or_init(|| InFlight::new(8)),
        crate::FollowerChoice::Load,
    )
}

/// Publishes `behind` every 10 ms, like a tracker whose follower is stuck.
fn keep_publishing(tx: watch::Sender<Arc<ClusterView>>, behind: Arc<ClusterView>) {
    tokio::spawn(async move {
        loop {
            sleep(Duration::from_millis(10)).await;
            if tx.send(behind.clone()).is_err() {
                return;
            }
        }
    });
}

#[tokio::test(start_paused = true)]
async fn a_wait_ends_exactly_at_its_budget_when_no_follower_catches_up() {
    let behind = view(1000, &[(Some(500), true), (Some(600), true)]);
    let (tx, rx) = watch::channel(behind.clone());
    keep_publishing(tx, behind);
    let started = Instant::now();
    let found = wait_for_caught_up(
        rx,
        Lsn::from_u64(800),
        1,
        Duration::from_millis(200),
        idle(),
    )
    .await;
    assert!(found.is_none());
    assert_eq!(started.elapsed(), Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn a_waiting_read_wakes_on_the_publish_that_shows_a_follower_caught_up() {
    let (tx, rx) = watch::channel(view(1000, &[(Some(500), true), (Some(600), true)]));
    tokio::spawn(async move {
        sleep(Duration::from_millis(150)).await;
        tx.send_replace(view(1000, &[(Some(500), true), (Some(800), true)]));
        sleep(Duration::from_secs(10)).await; // keep the channel open
    });
    let started = Instant::now();
    let (index, seen_in) = wait_for_caught_up(
        rx,
        Lsn::from_u64(800),
        1,
        Duration::from_millis(200),
        idle(),
    )
    .await
    .expect("caught up within budget");
    assert_eq!(index.index(), 1);
    assert_eq!(seen_in.nodes[1].lsn, Some(Lsn::from_u64(800)));
    assert_eq!(started.elapsed(), Duration::from_millis(150));
}

#[tokio::test(start_paused = true)]
async fn a_wait_ends_on_the_first_view_with_the_target_and_takes_the_less_loaded_of_those() {
    let in_flight = InFlight::new(3);
    let _busy = [
        in_flight.hold(Some(NodeId::new(0))),
        in_flight.hold(Some(NodeId::new(0))),
    ];
    for seed in 0..20 {
        let (tx, rx) = watch::channel(view(1000, &[(Some(500), true), (Some(600), true)]));
        tokio::spawn(async move {
            sleep(Duration::from_millis(40)).await;
            // Two followers reach the target in the same poll; the third,
            // idle, has not.
            tx.send_replace(view(
                1000,
                &[(Some(800), true), (Some(900), true), (Some(700), true)],
            ));
            sleep(Duration::from_secs(10)).await;
        });
        let started = Instant::now();
        let (index, _) = wait_for_caught_up(
            rx,
            Lsn::from_u64(800),
            1,
            Duration::from_millis(200),
            (&in_flight, crate::FollowerChoice::Load),
        )
        .await
        .expect("caught up");
        assert_eq!(started.elapsed(), Duration::from_millis(40), "seed {seed}");
        assert_eq!(
            index.index(),
            1,
            "follower 1 holds two reads, follower 2 none"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_token_beyond_the_leader_cannot_stretch_the_wait() {
    // 500 MiB beyond the leader: not absurd, so it may wait, but only the budget.
    let behind = view(1000, &[(Some(1000), true)]);
    let (tx, rx) = watch::channel(behind.clone());
    keep_publishing(tx, behind);
    let started = Instant::now();
    let target = Lsn::from_u64(1000 + (500 << 20));
    assert!(
        wait_for_caught_up(rx, target, 1, Duration::from_millis(200), idle())
            .await
            .is_none()
    );
    assert_eq!(started.elapsed(), Duration::from_millis(200));
}

#[tokio::test(start_paused = true)]
async fn a_wait_gives_up_when_the_last_follower_leaves_rotation() {
    let (tx, rx) = watch::channel(view(1000, &[(Some(500), true)]));
    tokio::spawn(async move {
        sleep(Duration::from_millis(30)).await;
        tx.send_replace(view(1000, &[(None, false)]));
        sleep(Duration::from_secs(10)).await;
    });
    let started = Instant::now();
    assert!(
        wait_for_caught_up(
            rx,
            Lsn::from_u64(800),
            1,
            Duration::from_millis(200),
            idle()
        )
        .await
        .is_none()
    );
    assert_eq!(started.elapsed(), Duration::from_millis(30));
}

#[tokio::test(start_paused = true)]
async fn a_wait_ends_when_the_tracker_is_gone() {
    let (tx, rx) = watch::channel(view(1000, &[(Some(500), true)]));
    drop(tx);
    let started = Instant::now();
    assert!(
        wait_for_caught_up(
            rx,
            Lsn::from_u64(800),
            1,
            Duration::from_millis(200),
            idle()
        )
        .await
        .is_none()
    );
    assert_eq!(started.elapsed(), Duration::ZERO);
}

/// The lags of the `hybrid` tests as the tracker publishes them: a token at
/// 500 written at `t0`; follower 1 shows writes 100 ms after the leader,
/// follower 2 400 ms after.
fn seeds_view(t0: Instant, f1_replay: u64) -> Arc<ClusterView> {
    let mut v = (*view(1000, &[(Some(f1_replay), true), (Some(300), true)])).clone();
    for (f, pace) in v.nodes.iter_mut().zip([100, 400]) {
        f.health = crate::RoleHealth::Follower(crate::FollowerHealth {
            catch_up: Some(Duration::from_millis(pace)),
            behind_since: Some(t0),
            ..crate::FollowerHealth::UNKNOWN
        });
    }
    v.leader_reached = vec![crate::view::Reached {
        lsn: Lsn::from_u64(500),
        at: t0,
    }];
    Arc::new(v)
}

fn hybrid_choice(v: &ClusterView, at: Instant) -> crate::Choice {
    crate::decide(
        v,
        &[][..] as &[u32],
        &SessionState::Known {
            token: Some(Lsn::from_u64(500)),
            last_write_ms: None,
            untracked_write_ms: None,
        },
        Freshness::Fresh,
        Strategy::Hybrid,
        crate::Now {
            wall_ms: 1_000_000,
            at,
        },
        &RouterConfig::default(),
        &mut rand::rng(),
    )
}

#[tokio::test(start_paused = true)]
async fn a_predicted_follower_that_arrives_is_waited_for_until_it_is_seen() {
    let t0 = Instant::now();
    let v = seeds_view(t0, 400);
    sleep(Duration::from_millis(95)).await;
    let crate::Choice::Wait { target, budget, .. } = hybrid_choice(&v, Instant::now()) else {
        panic!("5 ms away: hybrid waits");
    };
    assert_eq!(budget, Duration::from_millis(20));
    let (tx, rx) = watch::channel(v.clone());
    tokio::spawn(async move {
        // The tracker sees follower 1 at the token 7 ms later.
        sleep(Duration::from_millis(7)).await;
        tx.send_replace(seeds_view(t0, 500));
        sleep(Duration::from_secs(10)).await;
    });
    let started = Instant::now();
    let (index, _) = wait_for_caught_up(rx, target, 1, budget, idle())
        .await
        .expect("caught up within the budget");
    assert_eq!(index.index(), 0);
    assert_eq!(started.elapsed(), Duration::from_millis(7));
}

#[tokio::test(start_paused = true)]
async fn a_follower_whose_lag_jumps_past_the_prediction_costs_the_budget_then_no_more_waits() {
    let t0 = Instant::now();
    let v = seeds_view(t0, 400);
    sleep(Duration::from_millis(95)).await;
    let crate::Choice::Wait { target, budget, .. } = hybrid_choice(&v, Instant::now()) else {
        panic!("5 ms away: hybrid waits");
    };
    // Follower 1's replay stops: every view still shows it before the token.
    let (tx, rx) = watch::channel(v.clone());
    keep_publishing(tx, v.clone());
    let started = Instant::now();
    assert!(
        wait_for_caught_up(rx, target, 1, budget, idle())
            .await
            .is_none()
    );
    assert_eq!(
        started.elapsed(),
        budget,
        "the wait ends at the budget: the read goes to the leader, never to a follower behind it"
    );
    // 115 ms after the write it is 15 ms late: still within the budget of
    // its pace, still expected (at once).
    assert!(matches!(
        hybrid_choice(&v, Instant::now()),
        crate::Choice::Wait { .. }
    ));
    // Once it is later than its pace by more than the budget, no read
    // waits for it any more: the leader at once.
    sleep(Duration::from_millis(6)).await;
    assert_eq!(
        hybrid_choice(&v, Instant::now()),
        crate::Choice::Leader(crate::Reason::NoCatchUpForeseen)
    );
}

fn known() -> SessionState {
    SessionState::Known {
        token: None,
        last_write_ms: None,
        untracked_write_ms: None,
    }
}

/// A position on timeline 1 (the test views' history).
fn at(lsn: u64) -> Option<Position> {
    Some(Position::new(1, Lsn::from_u64(lsn)))
}

#[test]
fn a_follower_read_advances_the_token_to_what_the_follower_had_replayed() {
    let v = view(1000, &[(Some(700), true)]);
    let cfg = RouterConfig::default();
    let advance = |session: Option<Position>, seen| {
        let judged = Judged::of(&v, [session, None], None);
        advance_token(&v, &cfg, &known(), &judged, seen)
    };
    // Causal read on a follower at 700 with token 500: the session has now seen 700.
    assert_eq!(advance(at(500), at(700)), (at(700), false));
    // A legacy read on a lagging follower never lowers the token.
    assert_eq!(advance(at(900), at(700)), (at(900), false));
    // A leader read: the leader's known position.
    assert_eq!(advance(at(900), at(1000)), (at(1000), false));
    // A first read with nothing known.
    assert_eq!(advance(None, None), (None, false));
}

#[test]
fn an_absurd_token_is_clamped_to_the_leader_position() {
    let v = view(1000, &[]);
    let cfg = RouterConfig::default();
    let absurd = at(1000 + (1 << 30) + 1);
    let judged = Judged::of(&v, [absurd, None], None);
    assert_eq!(
        advance_token(&v, &cfg, &known(), &judged, at(1000)),
        (at(1000), true)
    );
    // With the store down, the client's own token is what gets clamped.
    let judged = Judged::of(&v, [None, absurd], None);
    assert_eq!(
        advance_token(&v, &cfg, &SessionState::Unknown, &judged, None),
        (at(1000), true)
    );
}

/// After a failover: the cluster on timeline 2, timeline 1 ended at 800.
fn after_failover() -> Arc<ClusterView> {
    let mut v = (*view(1000, &[(Some(900), true)])).clone();
    v.history = Arc::new(crate::TimelineHistory {
        current: 2,
        switches: vec![crate::Switch {
            timeline: 1,
            switch_lsn: Lsn::from_u64(800),
        }],
    });
    Arc::new(v)
}

#[test]
fn a_token_past_its_timeline_s_end_is_lost_and_replaced_by_the_leader_s_position() {
    let v = after_failover();
    let cfg = RouterConfig::default();
    let lost = at(850);
    // The session wrote at 850: that write is lost, and it is told.
    let judged = Judged::of(&v, [lost, None], lost);
    assert_eq!(judged.lost, lost);
    assert_eq!(judged.leader_only(), Some(Reason::WriteLost));
    assert_eq!(judged.holds, None, "no follower must wait for it");
    let leader = Some(Position::new(2, Lsn::from_u64(1000)));
    assert_eq!(
        advance_token(&v, &cfg, &known(), &judged, leader),
        (leader, false),
        "the session starts again on the new timeline"
    );
    // A lost write is told even when the client's token is a later one.
    let judged = Judged::of(&v, [lost, Some(Position::new(2, Lsn::from_u64(950)))], lost);
    assert_eq!(judged.lost, lost);
    // The session only read at 850 (its last write, at 700, survived):
    // the leader serves it and its token starts again, but nothing of
    // its own was lost, so nothing is told.
    let judged = Judged::of(&v, [lost, None], at(700));
    assert_eq!(judged.lost, None);
    assert_eq!(judged.leader_only(), Some(Reason::TokenPastSwitch));
    // Nor from a client token alone.
    let judged = Judged::of(&v, [None, lost], None);
    assert_eq!(
        (judged.lost, judged.leader_only()),
        (None, Some(Reason::TokenPastSwitch))
    );
    // A token at the switch point holds as it is; the write it ends,
    // whose floor was before the switch point, is not called lost.
    let judged = Judged::of(&v, [at(800), None], at(790));
    assert_eq!(
        (judged.lost, judged.holds),
        (None, Some(Lsn::from_u64(800)))
    );
    assert_eq!(judged.leader_only(), None);
    // A write whose floor is the switch point came after it: lost, even
    // though a token equal to it would hold.
    let judged = Judged::of(&v, [at(800), None], at(800));
    assert_eq!(judged.lost, at(800));
    // A timeline the cluster never had: only the leader can serve it.
    let never = Some(Position::new(7, Lsn::from_u64(10)));
    let judged = Judged::of(&v, [never, None], never);
    assert_eq!(judged.leader_only(), Some(Reason::TimelineUnknown));
    assert_eq!(judged.lost, None);
}

#[test]
fn the_store_stays_distrusted_for_the_grace_period_after_a_failure() {
    let clock = ManualClock::new(1_000_000);
    let grace = Duration::from_secs(10);
    let guard = StoreGuard::default();
    let w = StorePart::Whole;
    assert!(guard.trusted(w, clock.now_ms(), grace));
    guard.failed(w, clock.now_ms());
    clock.advance(Duration::from_millis(9_999));
    assert!(!guard.trusted(w, clock.now_ms(), grace));
    clock.advance(Duration::from_millis(1));
    assert!(guard.trusted(w, clock.now_ms(), grace));
    // An older failure reported late does not shorten the grace.
    guard.failed(w, clock.now_ms());
    guard.failed(w, clock.now_ms() - 5_000);
    clock.advance(Duration::from_millis(6_000));
    assert!(!guard.trusted(w, clock.now_ms(), grace));
}

#[test]
fn a_failed_shard_distrusts_only_its_own_sessions_and_the_whole_store_distrusts_all() {
    let clock = ManualClock::new(1_000_000);
    let grace = Duration::from_secs(10);
    let guard = StoreGuard::default();
    let (dead, alive) = (StorePart::Shard(5461), StorePart::Shard(0));
    guard.failed(dead, clock.now_ms());
    assert!(!guard.trusted(dead, clock.now_ms(), grace));
    assert!(guard.trusted(alive, clock.now_ms(), grace));
    assert!(
        !guard.trusted(StorePart::Whole, clock.now_ms(), grace),
        "a session whose shard is not known may be on the dead one"
    );
    assert!(!guard.all_trusted(clock.now_ms(), grace));
    clock.advance(grace);
    assert!(guard.trusted(dead, clock.now_ms(), grace));
    guard.failed(StorePart::Whole, clock.now_ms());
    assert!(!guard.trusted(alive, clock.now_ms(), grace));
}

#[test]
fn new_follower_connections_must_match_the_known_incarnation() {
    assert_eq!(check_incarnation(Some(42), 42), Ok(()));
    assert!(
        check_incarnation(Some(42), 43).is_err(),
        "restarted since the last poll"
    );
    assert!(check_incarnation(None, 42).is_err(), "position unknown");
}

fn unreachable_urls() -> NodeUrls {
    // Nothing listens on port 1 of loopback: refused at once.
    NodeUrls {
        leader: "host=127.0.0.1 port=1 user=ryw".into(),
        followers: vec![("f1".into(), "host=127.0.0.1 port=1 user=ryw".into())],
    }
}

fn quick_config() -> RouterConfig {
    RouterConfig {
        pool_timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(300),
        ..RouterConfig::default()
    }
}

#[tokio::test]
async fn a_router_starts_with_every_node_down_and_fails_cleanly() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let router = Router::connect_with_clock(
        quick_config(),
        unreachable_urls(),
        Arc::new(MemoryStore::default()),
        clock,
    )
    .await
    .unwrap();
    let user = SessionKey::new("u1").unwrap();
    assert!(matches!(
        router.begin(&user).await,
        Err(Error::LeaderUnavailable(_))
    ));
    for strategy in Strategy::ALL {
        let req = ReadRequest::fresh(&user).options(ReadOptions::strategy(strategy));
        let err = router.query(&req, "SELECT 1", &[]).await.unwrap_err();
        assert!(
            matches!(err, Error::LeaderUnavailable(_)),
            "{strategy}: {err}"
        );
    }
    // The tracker reports what it sees.
    let mut rx = router.watch_cluster();
    let view = tokio::time::timeout(
        Duration::from_secs(5),
        rx.wait_for(|v| {
            v.leader
                .note
                .as_deref()
                .is_some_and(|n| n.contains("connect"))
        }),
    )
    .await
    .expect("tracker reported the leader down")
    .unwrap()
    .clone();
    assert!(!view.leader.healthy);
    assert!(view.nodes.iter().all(|f| !f.in_rotation && f.lsn.is_none()));
    assert_eq!(router.store_health(), StoreHealth::Ok);
    let m = router.metrics();
    assert_eq!(m.writes, 1);
    router.shutdown();
    assert!(router.begin(&user).await.is_err());
    assert_eq!(
        ReadRequest::stale_ok(&user).freshness,
        Freshness::StaleOk,
        "stale-ok requests are built as such"
    );
}

#[tokio::test]
async fn bad_urls_and_configs_are_refused_at_connect() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::default());
    let bad_url = NodeUrls {
        leader: "postgres://[not a host".into(),
        followers: vec![],
    };
    let err = Router::connect(RouterConfig::default(), bad_url, store.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Url { .. }), "{err}");
    let bad_cfg = RouterConfig {
        poll_interval: Duration::ZERO,
        ..RouterConfig::default()
    };
    let err = Router::connect(bad_cfg, unreachable_urls(), store)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

/// A router whose tracker state the test sets by hand (its nodes are
/// unreachable, so its own polls only ever fail).
async fn hand_fed_router() -> Router {
    Router::connect(
        quick_config(),
        unreachable_urls(),
        Arc::new(MemoryStore::default()),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn an_unsettled_read_is_bounded_by_the_first_poll_sent_after_it_ended() {
    use crate::tracker::FollowerPoll;
    let router = hand_fed_router().await;
    router.inner.tracker.shutdown();
    let shared = &router.inner.tracker.shared;
    let t0 = Instant::now();
    let poll = |replay: u64| FollowerPoll {
        replay: Some(Lsn::from_u64(replay)),
        started_at_us: 1,
        receiver: Some("streaming".into()),
        timeline: None,
    };
    shared.update(|st| {
        st.on_leader_poll(Lsn::from_u64(900), t0);
        st.note_poll_sent(1, t0);
        st.on_follower_poll(0, poll(700), t0);
        st.note_poll_sent(0, t0);
    });
    let epoch = router.cluster_view().nodes[0].epoch;
    let read_ended = Unsettled {
        follower: NodeId::new(0),
        epoch,
        ended_at: t0 + Duration::from_millis(1),
    };
    assert_eq!(
        router.settle(&read_ended),
        None,
        "every poll was sent before the read ended"
    );

    // The follower's next poll, sent after: its position bounds the read.
    shared.update(|st| {
        st.on_follower_poll(0, poll(750), t0);
        st.note_poll_sent(0, t0 + Duration::from_millis(2));
    });
    assert_eq!(
        router.settle(&read_ended),
        Some(Position::new(1, Lsn::from_u64(750)))
    );

    // In another epoch the follower proves nothing; the leader's poll sent
    // after the read does (an over-estimate: it had written all of it).
    shared.update(|st| st.forget_follower(0, "test"));
    assert_eq!(router.settle(&read_ended), None);
    shared.update(|st| {
        st.on_leader_poll(Lsn::from_u64(950), t0);
        st.note_poll_sent(1, t0 + Duration::from_millis(3));
    });
    assert_eq!(
        router.settle(&read_ended),
        Some(Position::new(1, Lsn::from_u64(950)))
    );
}

#[tokio::test]
async fn until_it_settles_the_next_read_goes_to_the_same_follower_or_the_leader() {
    use crate::tracker::FollowerPoll;
    let router = hand_fed_router().await;
    router.inner.tracker.shutdown();
    let shared = &router.inner.tracker.shared;
    let t0 = Instant::now();
    shared.update(|st| {
        st.on_leader_poll(Lsn::from_u64(900), t0);
        for i in 0..1 {
            st.on_follower_poll(
                i,
                FollowerPoll {
                    replay: Some(Lsn::from_u64(800)),
                    started_at_us: 1,
                    receiver: Some("streaming".into()),
                    timeline: None,
                },
                t0,
            );
        }
    });
    let epoch = router.cluster_view().nodes[0].epoch;
    let unsettled = Unsettled {
        follower: NodeId::new(0),
        epoch,
        ended_at: t0,
    };
    let causal = ReadOptions::strategy(Strategy::Causal);
    let at = |token: u64| {
        ReadRequest::fresh_local(crate::LocalSession {
            token: Some(Position::new(1, Lsn::from_u64(token))),
            write: None,
            last_write_ms: None,
        })
        .options(causal)
    };
    let d = router.plan_after_unsettled(&at(800), &unsettled);
    assert_eq!(
        (d.follower().map(NodeId::index), d.reason),
        (Some(0), Reason::CaughtUp)
    );
    let d = router.plan_after_unsettled(&at(801), &unsettled);
    assert_eq!(
        (d.follower().map(NodeId::index), d.reason),
        (None, Reason::Unsettled),
        "the follower lacks the session's token: the leader"
    );
    shared.update(|st| st.forget_follower(0, "test"));
    let d = router.plan_after_unsettled(&at(100), &unsettled);
    assert_eq!(
        (d.follower().map(NodeId::index), d.reason),
        (None, Reason::Unsettled),
        "another epoch"
    );
}
