//! Acting on a running cluster: `status`, `lag`, `down`, and the faults the
//! reliability tests inject (kill, restart, cut and repair replication).
//! Failover and rejoin are in [`crate::failover`](mod@crate::failover).
//!
//! Stopping is synchronous (plain processes and signals) so that a test
//! harness can tear a cluster down from `Drop`, even while panicking.

use crate::info::{ClusterInfo, NodeInfo, NodeRole};
use crate::proc::{admin_url, children_of, kill_tree, run, start, wait_gone};
pub use crate::proc::{any_alive, connect, is_alive, log_tail, postmaster_pid};
use crate::runas::OsUser;
use crate::{ClusterError, redis};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_postgres::types::PgLsn;

/// What `status` reports for one node: its state as the node itself says
/// it (the router's view of a node is `ryw_router::ObservedNode`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeState {
    /// Node name (`leader`, `follower1`, …).
    pub name: String,
    /// Leader, follower, or failed (a former leader waiting for `rejoin`).
    pub role: NodeRole,
    /// TCP port.
    pub port: u16,
    /// Live postmaster pid, if its pid file names a running process.
    pub pid: Option<i32>,
    /// True when the postmaster runs and answers queries.
    pub alive: bool,
    /// Leader: `pg_current_wal_lsn()`; follower: `pg_last_wal_replay_lsn()`.
    pub lsn: Option<String>,
    /// Bytes of WAL the follower has not replayed yet, against the leader's
    /// current LSN (followers only).
    pub lag_bytes: Option<u64>,
    /// Whether the follower's WAL receiver is `streaming` (followers only).
    pub streaming: Option<bool>,
    /// Configured replay delay (followers only).
    pub delay_ms: Option<u64>,
    /// The timeline the node writes (leader) or receives (follower).
    pub timeline: Option<u32>,
    /// The node a follower's WAL receiver is connected to.
    pub upstream: Option<String>,
    /// The leader's `pg_stat_replication.sync_state` for this follower
    /// (`async`, or `quorum` under `ANY 1 (…)`).
    pub sync_state: Option<String>,
}

/// Per-node status of the cluster in `dir`.
pub async fn status(dir: &Path) -> Result<(ClusterInfo, Vec<NodeState>), ClusterError> {
    let info = ClusterInfo::load(dir)?;
    let mut out: Vec<NodeState> = info
        .nodes
        .iter()
        .map(|node| NodeState {
            name: node.name.clone(),
            role: node.role,
            port: node.port,
            pid: postmaster_pid(&node.data_dir).filter(|&p| is_alive(p)),
            alive: false,
            lsn: None,
            lag_bytes: None,
            streaming: None,
            delay_ms: if node.role == NodeRole::Follower {
                node.delay_ms
            } else {
                None
            },
            timeline: None,
            upstream: None,
            sync_state: None,
        })
        .collect();
    // The leader first, wherever it is in the list: followers' lag is
    // measured against its position.
    let leader = info.leader();
    let mut leader_lsn: Option<u64> = None;
    let mut sync_states: Vec<(String, String)> = Vec::new();
    if let Some(st) = out.iter_mut().find(|s| s.name == leader.name)
        && st.pid.is_some()
        && let Ok(client) = connect(&admin_url(leader.port), &leader.name).await
        && let Ok(row) = client.query_one("SELECT pg_current_wal_lsn()", &[]).await
    {
        let lsn: PgLsn = row.get(0);
        leader_lsn = Some(lsn.into());
        st.lsn = Some(lsn.to_string());
        st.alive = true;
        st.timeline = crate::timeline::current(&client).await.ok();
        if let Ok(rows) = client
            .query(
                "SELECT application_name, sync_state FROM pg_stat_replication",
                &[],
            )
            .await
        {
            sync_states = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        }
    }
    for (node, st) in info.nodes.iter().zip(out.iter_mut()) {
        if node.name == leader.name || st.pid.is_none() {
            continue;
        }
        let Ok(client) = connect(&admin_url(node.port), &node.name).await else {
            continue;
        };
        if let Ok(row) = client
            .query_one(
                "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                        ELSE pg_current_wal_lsn() END, \
                        r.status, r.sender_port \
                 FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true",
                &[],
            )
            .await
        {
            let lsn: Option<PgLsn> = row.get(0);
            let status: Option<String> = row.get(1);
            let sender: Option<i32> = row.get(2);
            st.alive = true;
            st.lsn = lsn.map(|l| l.to_string());
            st.timeline = crate::timeline::current(&client).await.ok();
            if node.role == NodeRole::Follower {
                st.streaming = Some(status.as_deref() == Some("streaming"));
                st.upstream = sender.and_then(|p| {
                    info.nodes
                        .iter()
                        .find(|n| i32::from(n.port) == p)
                        .map(|n| n.name.clone())
                });
                st.sync_state = sync_states
                    .iter()
                    .find(|(app, _)| *app == node.name)
                    .map(|(_, s)| s.clone());
                if let (Some(l), Some(lead)) = (lsn, leader_lsn) {
                    st.lag_bytes = Some(lead.saturating_sub(u64::from(l)));
                }
            }
        }
    }
    Ok((info, out))
}

/// Changes one follower's `recovery_min_apply_delay` live (it is reloadable)
/// and records it in `cluster.json`. `which` is `1..=N` or a follower name.
pub async fn set_lag(dir: &Path, which: &str, delay: Duration) -> Result<NodeInfo, ClusterError> {
    let mut info = ClusterInfo::load(dir)?;
    let node = info.follower(which)?.clone();
    let client = connect(&admin_url(node.port), &node.name).await?;
    let sql = |source| ClusterError::Sql {
        node: node.name.clone(),
        source,
    };
    // ALTER SYSTEM refuses to run inside a transaction block, and a
    // multi-statement simple query is one: two round trips.
    client
        .batch_execute(&format!(
            "ALTER SYSTEM SET recovery_min_apply_delay = '{}ms'",
            delay.as_millis()
        ))
        .await
        .map_err(sql)?;
    client
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .map_err(sql)?;
    let ms = delay.as_millis() as u64;
    if let Some(n) = info.nodes.iter_mut().find(|n| n.name == node.name) {
        n.delay_ms = Some(ms);
    }
    info.save()?;
    Ok(NodeInfo {
        delay_ms: Some(ms),
        ..node
    })
}

/// What `down` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownReport {
    /// Names of the processes that were running and are now stopped.
    pub stopped: Vec<String>,
    /// True when the data was removed (`--purge`).
    pub purged: bool,
}

/// Stops everything `up` started in `dir` (fast shutdown, then immediate,
/// then SIGKILL); with `purge` also removes the data. Idempotent: stopping a
/// stopped cluster is fine, and a folder without a cluster is only an error
/// when there is nothing to purge either.
pub fn down(dir: &Path, purge: bool) -> Result<DownReport, ClusterError> {
    let info = match ClusterInfo::load(dir) {
        Ok(info) => info,
        Err(ClusterError::NotFound { .. }) if purge && dir.join("pg").exists() => {
            remove_data(dir)?;
            return Ok(DownReport {
                stopped: vec![],
                purged: true,
            });
        }
        Err(e) => return Err(e),
    };
    let user = OsUser::resolve(Some(&info.os_user))?;
    let stopped = stop_all(&info, &user)?;
    if purge {
        remove_data(&info.dir)?;
    }
    Ok(DownReport {
        stopped,
        purged: purge,
    })
}

/// Stops every node (followers first, so they do not spin reconnecting to a
/// stopped leader; the leader last) and the private Redis. Returns what was
/// running.
pub(crate) fn stop_all(info: &ClusterInfo, user: &OsUser) -> Result<Vec<String>, ClusterError> {
    let mut stopped = Vec::new();
    let mut order: Vec<&NodeInfo> = info.nodes.iter().rev().collect();
    order.sort_by_key(|n| match n.role {
        NodeRole::Follower => 0,
        NodeRole::Failed => 1,
        NodeRole::Leader => 2,
    });
    for node in order {
        if stop_node_sync(info, user, node, "fast")? {
            stopped.push(node.name.clone());
        }
    }
    if let Some(r) = &info.redis
        && redis::stop(r.pid)
    {
        stopped.push("redis".into());
    }
    if let Some(rc) = &info.redis_cluster {
        for port in crate::redis_cluster::stop_all(rc) {
            stopped.push(format!("redis {port}"));
        }
    }
    Ok(stopped)
}

/// Stops one node: `pg_ctl stop -m MODE`, then `-m immediate`, then SIGKILL
/// of the postmaster and its children. Returns whether it was running.
/// Blocks: async callers use [`stop_node_async`].
fn stop_node_sync(
    info: &ClusterInfo,
    user: &OsUser,
    node: &NodeInfo,
    mode: &str,
) -> Result<bool, ClusterError> {
    let Some(pid) = postmaster_pid(&node.data_dir).filter(|&p| is_alive(p)) else {
        return Ok(false);
    };
    for m in [mode, "immediate"] {
        let _ = user
            .command(info.pg_bin.join("pg_ctl"))
            .arg("-D")
            .arg(&node.data_dir)
            .args(["-m", m, "-w", "-t", "10", "stop"])
            .output();
        if wait_gone(pid, Duration::from_secs(1)) {
            return Ok(true);
        }
    }
    kill_tree(pid);
    wait_gone(pid, Duration::from_secs(5));
    Ok(true)
}

/// How [`stop_node_async`] stops a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopMode {
    /// `pg_ctl stop -m fast`: a shutdown checkpoint, sent to the followers.
    Fast,
    /// SIGKILL of the postmaster and its children, as a crash.
    Kill,
}

/// Stops one node without blocking the runtime. Returns whether it was
/// running.
pub(crate) async fn stop_node_async(
    info: &ClusterInfo,
    node: &NodeInfo,
    mode: StopMode,
) -> Result<bool, ClusterError> {
    let Some(pid) = postmaster_pid(&node.data_dir).filter(|&p| is_alive(p)) else {
        return Ok(false);
    };
    match mode {
        StopMode::Kill => {
            kill_tree(pid);
            wait_gone_async(pid, Duration::from_secs(5)).await;
            Ok(true)
        }
        StopMode::Fast => {
            let user = OsUser::resolve(Some(&info.os_user))?;
            let (info, node) = (info.clone(), node.clone());
            tokio::task::spawn_blocking(move || stop_node_sync(&info, &user, &node, "fast"))
                .await
                .unwrap_or(Ok(true))
        }
    }
}

/// Waits until a pid is gone, polling every 2 ms. Returns whether it went.
pub(crate) async fn wait_gone_async(pid: i32, max: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + max;
    while tokio::time::Instant::now() < deadline {
        if !is_alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    !is_alive(pid)
}

/// Removes the lock files a crashed (SIGKILLed) server left, so that it,
/// or `pg_rewind`'s single-user recovery, can start. After a SIGKILL the
/// old postmaster can linger as a zombie until its parent (here PID 1)
/// reaps it, and postgres refuses to start while the pid in its lock file
/// "exists".
pub(crate) fn remove_stale_locks(info: &ClusterInfo, node: &NodeInfo) {
    if let Some(pid) = postmaster_pid(&node.data_dir)
        && !is_alive(pid)
    {
        let _ = std::fs::remove_file(node.data_dir.join("postmaster.pid"));
        let lock = format!(".s.PGSQL.{}.lock", node.port);
        let _ = std::fs::remove_file(crate::conf::socket_dir(&info.dir).join(&lock));
        // Clusters from before the sockets folder kept it in the data folder.
        let _ = std::fs::remove_file(node.data_dir.join(&lock));
    }
}

fn remove_data(dir: &Path) -> Result<(), ClusterError> {
    for sub in ["pg", "redis", "redis-cluster"] {
        let p = dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(ClusterError::io("removing", &p))?;
        }
    }
    for f in [
        crate::info::FILE,
        "cluster.json.tmp",
        crate::info::REPLICATION_FILE,
        "replication.json.tmp",
    ] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    // Remove the folder itself when nothing else lives in it.
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

// ---- faults, for the reliability tests and for demonstrations ----------

/// SIGKILLs a node's postmaster and its children, as a crash would.
pub fn kill_node(info: &ClusterInfo, name: &str) -> Result<(), ClusterError> {
    let node = node(info, name)?;
    if let Some(pid) = postmaster_pid(&node.data_dir).filter(|&p| is_alive(p)) {
        kill_tree(pid);
        wait_gone(pid, Duration::from_secs(5));
    }
    Ok(())
}

/// Freezes a node (SIGSTOP to its postmaster, then to every child): it
/// keeps its sockets open but answers nothing, as a node that hangs
/// (swapping, a stalled disk, a paused VM) does. [`resume_node`] undoes it.
pub fn pause_node(info: &ClusterInfo, name: &str) -> Result<(), ClusterError> {
    signal_node(info, name, Signal::SIGSTOP)
}

/// Lets a node paused by [`pause_node`] run again (SIGCONT).
pub fn resume_node(info: &ClusterInfo, name: &str) -> Result<(), ClusterError> {
    signal_node(info, name, Signal::SIGCONT)
}

/// Sends `signal` to a node's postmaster and its children: the postmaster
/// first when stopping (it forks no new backend meanwhile), last when
/// continuing.
fn signal_node(info: &ClusterInfo, name: &str, signal: Signal) -> Result<(), ClusterError> {
    let node = node(info, name)?;
    if let Some(pid) = postmaster_pid(&node.data_dir).filter(|&p| is_alive(p)) {
        let send = |p: i32| {
            let _ = kill(Pid::from_raw(p), signal);
        };
        if signal == Signal::SIGSTOP {
            send(pid);
        }
        children_of(pid).into_iter().for_each(send);
        if signal != Signal::SIGSTOP {
            send(pid);
        }
    }
    Ok(())
}

/// Stops a node cleanly (`pg_ctl stop -m fast`).
pub fn stop_node(info: &ClusterInfo, name: &str) -> Result<(), ClusterError> {
    let user = OsUser::resolve(Some(&info.os_user))?;
    stop_node_sync(info, &user, node(info, name)?, "fast").map(drop)
}

/// Starts a stopped node again (`pg_ctl start -w`) and returns its new pid.
/// A stale pid file left by SIGKILL is handled by `pg_ctl` itself.
pub async fn start_node(info: &ClusterInfo, name: &str) -> Result<i32, ClusterError> {
    let user = OsUser::resolve(Some(&info.os_user))?;
    let node = node(info, name)?;
    remove_stale_locks(info, node);
    start(&user, &info.pg_bin, &node.data_dir, &node.log, &node.name).await
}

/// Cuts a follower's replication: points `primary_conninfo` at a dead port
/// and reloads. The follower keeps answering queries with frozen data.
pub async fn cut_replication(info: &ClusterInfo, name: &str) -> Result<(), ClusterError> {
    set_conninfo(info, name, 1).await
}

/// Undoes [`cut_replication`].
pub async fn repair_replication(info: &ClusterInfo, name: &str) -> Result<(), ClusterError> {
    set_conninfo(info, name, info.leader().port).await
}

async fn set_conninfo(info: &ClusterInfo, name: &str, port: u16) -> Result<(), ClusterError> {
    let node = node(info, name)?;
    let client = connect(&admin_url(node.port), &node.name).await?;
    let sql = |source| ClusterError::Sql {
        node: node.name.clone(),
        source,
    };
    client
        .batch_execute(&format!(
            "ALTER SYSTEM SET primary_conninfo = '{}'",
            crate::conf::primary_conninfo(port, &node.name)
        ))
        .await
        .map_err(sql)?;
    client
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .map_err(sql)?;
    Ok(())
}

fn node<'a>(info: &'a ClusterInfo, name: &str) -> Result<&'a NodeInfo, ClusterError> {
    info.node(name)
}

/// Runs `pgbench` from the cluster's binaries (used by the bench for its
/// calibration line). Returns its output.
pub async fn pgbench(info: &ClusterInfo, args: &[&str]) -> Result<String, ClusterError> {
    let user = OsUser::resolve(Some(&info.os_user))?;
    run(
        user.command(info.pg_bin.join("pgbench")).args(args),
        "pgbench",
    )
    .await
}

/// Runs the cluster's `pgbench` with `args` against port `port` on
/// 127.0.0.1 (a node, or a pooler or proxy in front of one), as `postgres`,
/// on the ryw database. Returns its output.
pub async fn pgbench_at(
    info: &ClusterInfo,
    port: u16,
    args: &[&str],
) -> Result<String, ClusterError> {
    let port = port.to_string();
    let target = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "postgres",
        crate::DATABASE,
    ];
    let all: Vec<&str> = args.iter().copied().chain(target).collect();
    pgbench(info, &all).await
}

/// `pgbench -i -s 1` on the cluster's leader: (re)creates pgbench's tables
/// in the ryw database.
pub async fn pgbench_init(info: &ClusterInfo) -> Result<String, ClusterError> {
    pgbench_at(info, info.leader().port, &["-i", "-q", "-s", "1"]).await
}

/// Path of a binary in the cluster's PostgreSQL folder.
pub fn pg_binary(info: &ClusterInfo, name: &str) -> PathBuf {
    info.pg_bin.join(name)
}
