//! Issue 22: sessions in a Redis Cluster (3 masters, a replica each, from
//! `ryw cluster up --redis-cluster 3 --redis-replicas 1`'s code). Two
//! routers ("instances") share it: each session writes through one and
//! reads at once through the other. Then the master of one shard is
//! SIGKILLed under that load:
//!
//! - no read is ever stale (judged by the value the session wrote);
//! - the sessions on the dead shard read from the leader (rule 5) from the
//!   kill until their shard's replica is promoted, and for the recovery
//!   grace after (a write acknowledged by the old master just before the
//!   kill may never have reached the replica);
//! - the other shards' sessions keep reading from followers throughout;
//! - once the grace has passed, the dead shard's sessions read from
//!   followers again.
//!
//! The keys of one session share a slot (the Lua scripts would fail with
//! `CROSSSLOT` otherwise), checked against the cluster's own `CLUSTER
//! KEYSLOT`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ryw_cluster::RedisClusterSpec;
use ryw_cluster::harness::TestCluster;
use ryw_cluster::redis_cluster::RedisMaster;
use ryw_router::{
    Freshness, RedisStore, RedisStoreConfig, RouterConfig, SessionKey, SessionStore, StorePart,
    Strategy,
};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::support::{Nodes, ms, read, router_for, secs, session, wait_view, with, write};

/// One fresh read of the load, as the test saw it.
#[derive(Debug)]
struct Seen {
    /// Since the load started.
    at: Duration,
    /// The session's shard.
    part: StorePart,
    node: String,
    stale: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_master_sends_only_its_sessions_to_the_leader_until_its_replica_serves_never_stale()
 {
    let cluster =
        TestCluster::start_with_redis_cluster(&[ms(20), ms(50)], RedisClusterSpec::new(3, 1)).await;
    let url = cluster.redis_url().expect("a Redis Cluster");
    assert!(url.starts_with("redis+cluster://"), "{url}");
    let grace = secs(2);
    let cfg = RouterConfig {
        store_recovery_grace: grace,
        max_lag_time: grace,
        ..RouterConfig::default()
    };
    let store = |prefix: &str| {
        let url = url.clone();
        let prefix = prefix.to_owned();
        async move {
            let cfg = RedisStoreConfig {
                key_prefix: prefix,
                ..RedisStoreConfig::new(url)
            };
            Arc::new(RedisStore::connect(cfg).await.expect("redis store")) as Arc<dyn SessionStore>
        }
    };
    let followers = ["follower1", "follower2"];
    let one = router_for(&cluster, &followers, cfg.clone(), store("ryw:").await).await;
    let two = router_for(&cluster, &followers, cfg, store("ryw:").await).await;
    let nodes = Nodes::of(&cluster);
    let setup = session("setup");
    let tx = one.begin(&setup).await.expect("begin");
    tx.batch_execute("CREATE TABLE kv (k text PRIMARY KEY, v bigint NOT NULL)")
        .await
        .expect("create table");
    let lsn = tx.commit().await.expect("commit").token.lsn;
    for r in [&one, &two] {
        wait_view(
            r,
            "the table replayed, followers in rotation",
            secs(20),
            |v| {
                v.followers()
                    .all(|f| f.in_rotation && f.lsn.is_some_and(|l| l >= lsn))
            },
        )
        .await;
    }

    // One session's keys share a slot, as the cluster itself computes it.
    let probe = RedisStore::connect(RedisStoreConfig::new(url.clone()))
        .await
        .unwrap();
    let sessions: Vec<SessionKey> = (0..48).map(|n| session(format!("rc-{n}"))).collect();
    let parts = wait_for_shards(&probe, &sessions).await;

    // The load: write through one router, read at once through the other.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (n, s) in sessions.iter().enumerate() {
        let (writer, reader) = if n % 2 == 0 {
            (one.clone(), two.clone())
        } else {
            (two.clone(), one.clone())
        };
        let (s, part, nodes, stop) = (s.clone(), parts[n], nodes.clone(), stop.clone());
        tasks.spawn(async move {
            let mut seen = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                write(&writer, &s, i).await;
                match read(
                    &reader,
                    &nodes,
                    &s,
                    Freshness::Fresh,
                    with(Strategy::Causal),
                    None,
                )
                .await
                {
                    Ok(r) => seen.push(Seen {
                        at: started.elapsed(),
                        part,
                        node: r.node,
                        stale: r.v < i,
                    }),
                    Err(e) => panic!("read of {s} failed: {e}"),
                }
                tokio::time::sleep(ms(20)).await;
            }
            seen
        });
    }

    // The master of the first session's shard dies under that load.
    tokio::time::sleep(secs(2)).await;
    let dead_part = parts[0];
    let StorePart::Shard(dead_slot) = dead_part else {
        panic!("shards not known")
    };
    let masters = cluster.redis_masters();
    let slot = keys_share_their_sessions_slot(&masters, &sessions[0]).await;
    assert_eq!(
        master_of(&masters, slot),
        master_of(&masters, dead_slot),
        "the store placed the session on the shard that holds its keys"
    );
    let dead_port = master_of(&masters, dead_slot);
    let killed_at = started.elapsed();
    cluster.kill_redis_node(dead_port);
    eprintln!(
        "killed the Redis master on {dead_port} (shard at slot {dead_slot}) at {killed_at:?}"
    );
    let promoted_at = loop {
        tokio::time::sleep(ms(50)).await;
        let now = cluster.redis_masters();
        if now
            .iter()
            .any(|m| m.port != dead_port && m.serves(dead_slot))
        {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < killed_at + secs(30),
            "no replica took over: {now:?}"
        );
    };
    eprintln!("its replica serves the slots from {promoted_at:?}");
    // Past the grace after the last failure, and a little more.
    tokio::time::sleep(grace + secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    while let Some(t) = tasks.join_next().await {
        seen.extend(t.expect("a session task panicked"));
    }
    let ended = started.elapsed();

    let stale = seen.iter().filter(|s| s.stale).count();
    let tally = |what: &str, f: &dyn Fn(&Seen) -> bool| {
        let mut by_node = BTreeMap::<&str, usize>::new();
        for s in seen.iter().filter(|s| f(s)) {
            *by_node.entry(&s.node).or_default() += 1;
        }
        eprintln!("{what}: {by_node:?}");
        by_node
    };
    let dead = |s: &Seen| s.part == dead_part;
    let before = tally("before the kill, every shard", &|s| s.at < killed_at);
    let outage = killed_at + ms(300)..promoted_at;
    let dead_down = tally("dead shard's sessions, kill to promotion", &|s| {
        dead(s) && outage.contains(&s.at)
    });
    let others_down = tally("other sessions, kill to promotion", &|s| {
        !dead(s) && outage.contains(&s.at)
    });
    let recovering = promoted_at..promoted_at + grace - ms(200);
    let dead_recovering = tally("dead shard's sessions, the grace after promotion", &|s| {
        dead(s) && recovering.contains(&s.at)
    });
    let settled = promoted_at + grace + secs(1);
    let dead_after = tally("dead shard's sessions, after the grace", &|s| {
        dead(s) && s.at > settled
    });
    eprintln!(
        "{} reads, {stale} stale; kill {killed_at:?}, promotion {promoted_at:?}, end {ended:?}",
        seen.len()
    );

    assert_eq!(stale, 0, "stale reads");
    let off_leader = |m: &BTreeMap<&str, usize>| {
        m.iter()
            .filter(|(n, _)| **n != "leader")
            .map(|(_, c)| c)
            .sum::<usize>()
    };
    let total = |m: &BTreeMap<&str, usize>| m.values().sum::<usize>();
    assert!(
        off_leader(&before) * 2 > total(&before),
        "followers served most reads before: {before:?}"
    );
    assert!(
        total(&dead_down) > 0,
        "the dead shard's sessions kept reading"
    );
    assert_eq!(
        off_leader(&dead_down),
        0,
        "a session whose shard is down read from a follower: {dead_down:?}"
    );
    assert_eq!(
        off_leader(&dead_recovering),
        0,
        "within the grace after the failover (tokens the old master may have lost): {dead_recovering:?}"
    );
    assert!(
        off_leader(&others_down) * 2 > total(&others_down),
        "the other shards' sessions kept their followers: {others_down:?}"
    );
    assert!(total(&dead_after) > 0);
    assert!(
        off_leader(&dead_after) * 2 > total(&dead_after),
        "followers again after the grace: {dead_after:?}"
    );
}

/// Each session's shard, once the store has learnt the cluster's shards.
async fn wait_for_shards(store: &RedisStore, sessions: &[SessionKey]) -> Vec<StorePart> {
    let deadline = Instant::now() + secs(10);
    loop {
        let parts: Vec<StorePart> = sessions.iter().map(|s| store.part(s)).collect();
        if parts.iter().all(|p| matches!(p, StorePart::Shard(_))) {
            let distinct: std::collections::BTreeSet<_> = parts
                .iter()
                .map(|p| match p {
                    StorePart::Shard(s) => *s,
                    StorePart::Whole => unreachable!(),
                })
                .collect();
            assert_eq!(distinct.len(), 3, "48 sessions over 3 shards: {distinct:?}");
            return parts;
        }
        assert!(
            Instant::now() < deadline,
            "the store never learnt the shards"
        );
        tokio::time::sleep(ms(50)).await;
    }
}

/// The master port serving `slot`.
fn master_of(masters: &[RedisMaster], slot: u16) -> u16 {
    masters
        .iter()
        .find(|m| m.serves(slot))
        .map(|m| m.port)
        .unwrap_or_else(|| panic!("no master serves slot {slot}: {masters:?}"))
}

/// The keys the store wrote for session `s` (found with `KEYS` on every
/// master), and their slot as the cluster computes it (`CLUSTER KEYSLOT`):
/// all of them in one.
async fn keys_share_their_sessions_slot(masters: &[RedisMaster], s: &SessionKey) -> u16 {
    let mut slots = BTreeMap::new();
    for RedisMaster { port, .. } in masters {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("*{{{s}}}*"))
            .query_async(&mut con)
            .await
            .unwrap();
        for key in keys {
            let slot: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&key)
                .query_async(&mut con)
                .await
                .unwrap();
            slots.insert(key, slot);
        }
    }
    eprintln!("keys of {s}: {slots:?}");
    assert!(
        slots.len() >= 3,
        "token, write time and write floor: {slots:?}"
    );
    let first = *slots.values().next().unwrap();
    assert!(slots.values().all(|&x| x == first), "{slots:?}");
    first
}
