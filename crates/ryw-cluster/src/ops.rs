//! Acting on a running cluster: `status`, `lag`, `down`, and the faults the
//! reliability tests inject (kill, restart, cut and repair replication).
//!
//! Stopping is synchronous (plain processes and signals) so that a test
//! harness can tear a cluster down from `Drop`, even while panicking.

use crate::info::{ClusterInfo, NodeInfo, Role};
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

/// What `status` reports for one node.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeStatus {
    /// Node name (`leader`, `follower1`, …).
    pub name: String,
    /// Leader or follower.
    pub role: Role,
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
}

/// Per-node status of the cluster in `dir`.
pub async fn status(dir: &Path) -> Result<(ClusterInfo, Vec<NodeStatus>), ClusterError> {
    let info = ClusterInfo::load(dir)?;
    let mut out = Vec::new();
    let mut leader_lsn: Option<u64> = None;
    for node in &info.nodes {
        let pid = postmaster_pid(&node.data_dir).filter(|&p| is_alive(p));
        let mut st = NodeStatus {
            name: node.name.clone(),
            role: node.role,
            port: node.port,
            pid,
            alive: false,
            lsn: None,
            lag_bytes: None,
            streaming: None,
            delay_ms: node.delay_ms,
        };
        if pid.is_some()
            && let Ok(client) = connect(&admin_url(node.port), &node.name).await
        {
            match node.role {
                Role::Leader => {
                    if let Ok(row) = client.query_one("SELECT pg_current_wal_lsn()", &[]).await {
                        let lsn: PgLsn = row.get(0);
                        leader_lsn = Some(lsn.into());
                        st.lsn = Some(lsn.to_string());
                        st.alive = true;
                    }
                }
                Role::Follower => {
                    if let Ok(row) = client
                        .query_one(
                            "SELECT pg_last_wal_replay_lsn(), (SELECT status FROM pg_stat_wal_receiver LIMIT 1)",
                            &[],
                        )
                        .await
                    {
                        let lsn: Option<PgLsn> = row.get(0);
                        let status: Option<String> = row.get(1);
                        st.alive = true;
                        st.lsn = lsn.map(|l| l.to_string());
                        st.streaming = Some(status.as_deref() == Some("streaming"));
                        if let (Some(l), Some(lead)) = (lsn, leader_lsn) {
                            st.lag_bytes = Some(lead.saturating_sub(u64::from(l)));
                        }
                    }
                }
            }
        }
        out.push(st);
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
/// stopped leader) and the private Redis. Returns what was running.
pub(crate) fn stop_all(info: &ClusterInfo, user: &OsUser) -> Result<Vec<String>, ClusterError> {
    let mut stopped = Vec::new();
    for node in info.nodes.iter().rev() {
        if stop_node_sync(info, user, node, "fast")? {
            stopped.push(node.name.clone());
        }
    }
    if let Some(r) = &info.redis
        && redis::stop(r.pid)
    {
        stopped.push("redis".into());
    }
    Ok(stopped)
}

/// Stops one node: `pg_ctl stop -m MODE`, then `-m immediate`, then SIGKILL
/// of the postmaster and its children. Returns whether it was running.
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

fn remove_data(dir: &Path) -> Result<(), ClusterError> {
    for sub in ["pg", "redis"] {
        let p = dir.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(ClusterError::io("removing", &p))?;
        }
    }
    for f in [crate::info::FILE, "cluster.json.tmp"] {
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
    // After a SIGKILL the old postmaster can linger as a zombie until its
    // parent (here PID 1) reaps it, and postgres refuses to start while the
    // pid in its lock file "exists". A crashed server's lock file is stale.
    if let Some(pid) = postmaster_pid(&node.data_dir)
        && !is_alive(pid)
    {
        let _ = std::fs::remove_file(node.data_dir.join("postmaster.pid"));
        // The Unix socket's lock file lives in the data folder too.
        let _ = std::fs::remove_file(node.data_dir.join(format!(".s.PGSQL.{}.lock", node.port)));
    }
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
            "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port={port} user=postgres application_name={}'",
            node.name
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
    info.nodes
        .iter()
        .find(|n| n.name == name)
        .ok_or_else(|| ClusterError::NoSuchReplica(name.to_string()))
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

/// Path of a binary in the cluster's PostgreSQL folder.
pub fn pg_binary(info: &ClusterInfo, name: &str) -> PathBuf {
    info.pg_bin.join(name)
}
