//! A private Redis Cluster for the cluster: N masters, each with R replicas
//! when asked, from the same `redis-server` as [`crate::redis`] in cluster
//! mode — loopback only, no persistence, each node in `DIR/redis-cluster/PORT/`
//! with its pid file, log and `nodes.conf`.
//!
//! Formed by hand rather than with `redis-cli --cluster create` (which
//! asks questions and prints progress dots): every master gets an even
//! share of the 16384 slots (`CLUSTER ADDSLOTSRANGE`), the first node meets
//! the others (`CLUSTER MEET`), each replica follows its master (`CLUSTER
//! REPLICATE`), and `up` returns once every node says `cluster_state:ok`
//! and every replica's link to its master is up.
//!
//! Two settings differ from Redis' defaults, on purpose:
//! - `cluster-node-timeout` (default here 2 s, Redis' 15 s): how long a
//!   master may be unreachable before its replica takes over. Short, so a
//!   failover shows within seconds in the demo and the tests; long enough
//!   that a node starved of CPU for a moment on a busy 2-core machine is
//!   not failed over.
//! - `cluster-require-full-coverage no`: while a shard has no master, the
//!   other shards keep answering (Redis' default stops the whole cluster),
//!   so only the sessions on the failed shard lose their store (rule 5 for
//!   them, not for everyone).
//!
//! Every node listens on two ports below 32768: its client port and its
//! cluster bus port (`cluster-port`; Redis' default, the client port +
//! 10000, could fall among the ports Linux hands out to client sockets).

use crate::ClusterError;
use crate::info::{RedisClusterInfo, RedisNodeInfo};
use std::path::Path;
use std::time::{Duration, Instant};

/// How many slots a Redis Cluster has.
pub const SLOTS: u16 = 16384;

/// How long forming the cluster may take.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// What to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisClusterSpec {
    /// Masters (shards), at least 3: Redis Cluster needs a majority of
    /// masters to agree that one has failed.
    pub masters: usize,
    /// Replicas per master (0: a master that dies takes its slots with it).
    pub replicas: usize,
    /// `cluster-node-timeout`.
    pub node_timeout: Duration,
}

impl RedisClusterSpec {
    /// `masters` masters with `replicas` replicas each, a 2 s node timeout.
    pub fn new(masters: usize, replicas: usize) -> RedisClusterSpec {
        RedisClusterSpec {
            masters,
            replicas,
            node_timeout: Duration::from_secs(2),
        }
    }

    /// Refuses shapes Redis Cluster cannot fail over with.
    pub fn validate(&self) -> Result<(), ClusterError> {
        if !(3..=16).contains(&self.masters) {
            return Err(ClusterError::BadArgument(format!(
                "--redis-cluster must be 3..=16 masters (a majority must see a master fail), not {}",
                self.masters
            )));
        }
        if self.replicas > 2 {
            return Err(ClusterError::BadArgument(format!(
                "--redis-replicas must be 0..=2, not {}",
                self.replicas
            )));
        }
        Ok(())
    }

    /// Nodes in all.
    pub fn nodes(&self) -> usize {
        self.masters * (1 + self.replicas)
    }
}

/// The slot range master `i` of `n` serves.
pub fn slot_range(i: usize, n: usize) -> (u16, u16) {
    let per = usize::from(SLOTS) / n;
    let extra = usize::from(SLOTS) % n;
    let start = i * per + i.min(extra);
    let len = per + usize::from(i < extra);
    (start as u16, (start + len - 1) as u16)
}

/// Starts the nodes on the given `(port, bus port)` pairs (the masters'
/// first) and forms the cluster.
pub async fn start(
    bin: &Path,
    dir: &Path,
    spec: RedisClusterSpec,
    ports: &[(u16, u16)],
) -> Result<RedisClusterInfo, ClusterError> {
    spec.validate()?;
    assert_eq!(ports.len(), spec.nodes(), "one port pair per node");
    let base = dir.join("redis-cluster");
    let mut nodes = Vec::new();
    for &(port, bus_port) in ports {
        let ndir = base.join(port.to_string());
        std::fs::create_dir_all(&ndir).map_err(ClusterError::io("creating", &ndir))?;
        let pidfile = ndir.join("redis.pid");
        let log = ndir.join("redis.log");
        let mut cmd = std::process::Command::new(bin);
        cmd.args(["--port", &port.to_string()])
            .args(["--cluster-port", &bus_port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args([
                "--cluster-node-timeout",
                &spec.node_timeout.as_millis().to_string(),
            ])
            .args(["--cluster-require-full-coverage", "no"])
            .args(["--daemonize", "yes", "--dir"])
            .arg(&ndir)
            .arg("--pidfile")
            .arg(&pidfile)
            .arg("--logfile")
            .arg(&log);
        crate::proc::run(&mut cmd, "redis-server").await?;
        nodes.push(RedisNodeInfo {
            port,
            bus_port,
            pid: 0,
            log,
            dir: ndir,
        });
    }
    for node in &mut nodes {
        node.pid = wait_started(node).await?;
    }
    let info = RedisClusterInfo {
        url: cluster_url(&nodes[..spec.masters]),
        masters: spec.masters,
        replicas: spec.replicas,
        node_timeout_ms: spec.node_timeout.as_millis() as u64,
        nodes,
    };
    let forming = info.clone();
    tokio::task::spawn_blocking(move || form(&forming))
        .await
        .map_err(|e| ClusterError::RedisCluster(format!("forming task: {e}")))??;
    Ok(info)
}

/// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…`: the masters as seeds.
fn cluster_url(seeds: &[RedisNodeInfo]) -> String {
    let hosts: Vec<String> = seeds
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    format!("redis+cluster://{}", hosts.join(","))
}

/// Waits until a node answers `PING` and has written its pid file.
async fn wait_started(node: &RedisNodeInfo) -> Result<i32, ClusterError> {
    let pidfile = node.dir.join("redis.pid");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if crate::redis::ping(node.port)
            && let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|t| t.trim().parse().ok())
        {
            return Ok(pid);
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::NotAnswering {
                node: format!("redis {}", node.port),
                secs: 5,
                tail: crate::proc::log_tail(&node.log, 10),
                log: node.log.clone(),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A connection to one node (blocking).
fn connect(port: u16) -> Result<redis::Connection, ClusterError> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .map_err(|e| ClusterError::RedisCluster(format!("connecting to {port}: {e}")))
}

/// One command to one node (blocking).
fn ask<T: redis::FromRedisValue>(
    con: &mut redis::Connection,
    port: u16,
    cmd: &redis::Cmd,
) -> Result<T, ClusterError> {
    cmd.query(con)
        .map_err(|e| ClusterError::RedisCluster(format!("{port}: {e}")))
}

fn cluster(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd("CLUSTER");
    for a in args {
        c.arg(*a);
    }
    c
}

/// Slots, meetings, replicas; then waits until the cluster is whole.
fn form(info: &RedisClusterInfo) -> Result<(), ClusterError> {
    let mut cons = Vec::new();
    let mut ids = Vec::new();
    for n in &info.nodes {
        let mut con = connect(n.port)?;
        ids.push(ask::<String>(&mut con, n.port, &cluster(&["MYID"]))?);
        cons.push(con);
    }
    for (m, (con, node)) in cons
        .iter_mut()
        .zip(&info.nodes)
        .take(info.masters)
        .enumerate()
    {
        let (start, end) = slot_range(m, info.masters);
        ask::<()>(
            con,
            node.port,
            &cluster(&["ADDSLOTSRANGE", &start.to_string(), &end.to_string()]),
        )?;
    }
    let first = info.nodes[0].port;
    for n in &info.nodes[1..] {
        ask::<()>(
            &mut cons[0],
            first,
            &cluster(&[
                "MEET",
                "127.0.0.1",
                &n.port.to_string(),
                &n.bus_port.to_string(),
            ]),
        )?;
    }
    let deadline = Instant::now() + FORM_TIMEOUT;
    // Every node must know a master before it can follow it.
    wait_for(
        info,
        deadline,
        "every node to know every other",
        |con, port| {
            let nodes: String = ask(con, port, &cluster(&["NODES"]))?;
            Ok(nodes
                .lines()
                .filter(|l| !l.contains("handshake") && !l.contains("noaddr"))
                .count()
                == info.nodes.len())
        },
    )?;
    for r in 0..info.masters * info.replicas {
        let replica = info.masters + r;
        let master = r / info.replicas;
        let port = info.nodes[replica].port;
        ask::<()>(
            &mut cons[replica],
            port,
            &cluster(&["REPLICATE", &ids[master]]),
        )?;
    }
    wait_for(
        info,
        deadline,
        "cluster_state:ok on every node",
        |con, port| {
            let text: String = ask(con, port, &cluster(&["INFO"]))?;
            Ok(text.lines().any(|l| l.trim() == "cluster_state:ok"))
        },
    )?;
    for r in 0..info.masters * info.replicas {
        let n = &info.nodes[info.masters + r];
        wait_for_node(n.port, deadline, "its replication link", |con, port| {
            let text: String = ask(con, port, &redis::cmd("INFO").arg("replication").clone())?;
            Ok(text.lines().any(|l| l.trim() == "master_link_status:up"))
        })?;
    }
    Ok(())
}

/// Polls every node until `done` holds on all of them.
fn wait_for(
    info: &RedisClusterInfo,
    deadline: Instant,
    what: &str,
    done: impl Fn(&mut redis::Connection, u16) -> Result<bool, ClusterError>,
) -> Result<(), ClusterError> {
    for n in &info.nodes {
        wait_for_node(n.port, deadline, what, &done)?;
    }
    Ok(())
}

fn wait_for_node(
    port: u16,
    deadline: Instant,
    what: &str,
    done: impl Fn(&mut redis::Connection, u16) -> Result<bool, ClusterError>,
) -> Result<(), ClusterError> {
    let mut con = connect(port)?;
    loop {
        if done(&mut con, port)? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::RedisCluster(format!(
                "waited {} s for {what} (node {port}); see its log in redis-cluster/{port}/redis.log",
                FORM_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A master of the Redis Cluster now, and the slots it serves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RedisMaster {
    /// Its client port.
    pub port: u16,
    /// The slot ranges it serves, inclusive.
    pub slots: Vec<(u16, u16)>,
}

impl RedisMaster {
    /// Whether it serves `slot`.
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

/// The masters now, from any node that answers (`CLUSTER SLOTS`). For tests
/// that kill the master of a given session.
pub fn masters(info: &RedisClusterInfo) -> Result<Vec<RedisMaster>, ClusterError> {
    let mut last = None;
    for n in &info.nodes {
        let Ok(mut con) = connect(n.port) else {
            continue;
        };
        match ask::<Vec<redis::Value>>(&mut con, n.port, &cluster(&["SLOTS"])) {
            Ok(ranges) => return parse_masters(&ranges),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| ClusterError::RedisCluster("no Redis node answers".into())))
}

fn parse_masters(ranges: &[redis::Value]) -> Result<Vec<RedisMaster>, ClusterError> {
    let bad = || ClusterError::RedisCluster("unexpected CLUSTER SLOTS reply".into());
    let mut out: Vec<RedisMaster> = Vec::new();
    for r in ranges {
        let redis::Value::Array(f) = r else {
            return Err(bad());
        };
        let num = |v: Option<&redis::Value>| -> Result<u16, ClusterError> {
            redis::from_redis_value_ref(v.ok_or_else(bad)?).map_err(|_| bad())
        };
        let (start, end) = (num(f.first())?, num(f.get(1))?);
        let Some(redis::Value::Array(master)) = f.get(2) else {
            return Err(bad());
        };
        let port = num(master.get(1))?;
        match out.iter_mut().find(|m| m.port == port) {
            Some(m) => m.slots.push((start, end)),
            None => out.push(RedisMaster {
                port,
                slots: vec![(start, end)],
            }),
        }
    }
    out.sort();
    Ok(out)
}

/// The role a node says it has now (`ROLE`: `master` or `slave`), or
/// `None` when it does not answer.
pub fn role(port: u16) -> Option<String> {
    let mut con = connect(port).ok()?;
    ask::<Vec<redis::Value>>(&mut con, port, &redis::cmd("ROLE"))
        .ok()?
        .first()
        .and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
}

/// Stops every node (SIGTERM, then SIGKILL); returns the ports that ran.
pub fn stop_all(info: &RedisClusterInfo) -> Vec<u16> {
    info.nodes
        .iter()
        .filter(|n| crate::redis::stop(n.pid))
        .map(|n| n.port)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_split_evenly_and_all_covered() {
        for n in 3..=16 {
            let mut next = 0u32;
            for i in 0..n {
                let (start, end) = slot_range(i, n);
                assert_eq!(u32::from(start), next, "{n} masters, master {i}");
                assert!(end >= start);
                next = u32::from(end) + 1;
            }
            assert_eq!(next, u32::from(SLOTS));
        }
        assert_eq!(slot_range(0, 3), (0, 5461));
        assert_eq!(slot_range(2, 3), (10923, 16383));
    }

    #[test]
    fn fewer_than_three_masters_or_many_replicas_are_refused() {
        assert!(RedisClusterSpec::new(2, 1).validate().is_err());
        assert!(RedisClusterSpec::new(3, 3).validate().is_err());
        RedisClusterSpec::new(3, 1).validate().unwrap();
        assert_eq!(RedisClusterSpec::new(3, 1).nodes(), 6);
    }
}
