//! The routing decision with no I/O: what every read pays before it touches
//! a database. Goal: well under 1 µs.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;
use ryw_router::{
    ClusterView, FollowerHealth, Freshness, Lsn, Now, ObservedNode, Reached, Role, RoleHealth,
    RouterConfig, SessionState, Strategy, decide,
};
use tokio::time::Instant;

fn node(name: &str, role: Role, lsn: u64) -> ObservedNode {
    ObservedNode {
        name: Arc::from(name),
        health: match role {
            Role::Leader => RoleHealth::Leader,
            Role::Follower => RoleHealth::Follower(FollowerHealth {
                lag_bytes: Some(0),
                lag_ms: Some(0),
                behind_since: None,
                catch_up: Some(Duration::from_millis(100)),
            }),
        },
        timeline: Some(1),
        lsn: Some(Lsn::from_u64(lsn)),
        healthy: true,
        in_rotation: true,
        note: None,
        polled: true,
        epoch: 0,
        polled_at: None,
    }
}

/// A leader and `n` followers at slightly different replay positions.
fn view(n: usize) -> ClusterView {
    ClusterView {
        leader: node("leader", Role::Leader, 10_000_000),
        leader_id: None,
        history: std::sync::Arc::new(ryw_router::TimelineHistory::first()),
        nodes: (0..n)
            .map(|i| {
                node(
                    &format!("f{i}"),
                    Role::Follower,
                    10_000_000 - 100 * i as u64,
                )
            })
            .collect(),
        leader_reached: vec![Reached {
            lsn: Lsn::from_u64(10_000_001),
            at: Instant::now(),
        }],
    }
}

fn bench(c: &mut Criterion) {
    let cfg = RouterConfig::default();
    let mut rng = StdRng::seed_from_u64(1);
    let now_ms = 1_700_000_000_000u64;
    let cases = [
        (
            "causal/2 followers/caught up",
            2,
            Strategy::Causal,
            Some(9_999_950),
            None,
        ),
        (
            "causal/2 followers/must wait",
            2,
            Strategy::Causal,
            Some(10_000_001),
            None,
        ),
        (
            "causal/8 followers/caught up",
            8,
            Strategy::Causal,
            Some(9_999_500),
            None,
        ),
        (
            "hybrid/2 followers/caught up",
            2,
            Strategy::Hybrid,
            Some(9_999_950),
            Some(now_ms - 1_000),
        ),
        (
            "hybrid/2 followers/predict",
            2,
            Strategy::Hybrid,
            Some(10_000_001),
            Some(now_ms - 1_000),
        ),
        (
            "sticky/2 followers",
            2,
            Strategy::Sticky,
            None,
            Some(now_ms - 60_000),
        ),
        ("legacy/2 followers", 2, Strategy::Legacy, None, None),
        (
            "per-read-check/2 followers",
            2,
            Strategy::PerReadCheck,
            Some(9_999_950),
            None,
        ),
    ];
    let mut group = c.benchmark_group("decide");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for (name, followers, strategy, token, last_write_ms) in cases {
        let v = view(followers);
        let session = SessionState::Known {
            token: token.map(Lsn::from_u64),
            last_write_ms,
            untracked_write_ms: None,
        };
        // A few reads in flight, unevenly: the spread compares two of them.
        let load: Vec<u32> = (0..followers as u32).map(|i| i % 3).collect();
        group.bench_function(name, |b| {
            b.iter(|| {
                decide(
                    black_box(&v),
                    black_box(&load[..]),
                    black_box(&session),
                    Freshness::Fresh,
                    black_box(strategy),
                    black_box(Now {
                        wall_ms: now_ms,
                        at: Instant::now(),
                    }),
                    &cfg,
                    &mut rng,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
