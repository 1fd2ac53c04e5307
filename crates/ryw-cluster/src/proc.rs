//! Processes and connections every other module needs: running a helper
//! program, starting a server with `pg_ctl`, whether a pid is alive (zombies
//! are not), killing a process tree, a log's tail, the nodes' URLs and a
//! connection with a short timeout. Kept apart so that `up`, `ops` and
//! `redis` depend on it and not on each other.

use crate::info::ClusterInfo;
use crate::runas::OsUser;
use crate::{ClusterError, DATABASE};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::process::Command;

/// libpq URL of the application database on a port.
pub fn url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/{DATABASE}")
}

/// libpq URL of the `postgres` maintenance database on a port.
pub fn admin_url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

/// Runs a helper program to completion, turning failure into a clear error.
pub(crate) async fn run(
    cmd: &mut std::process::Command,
    program: &str,
) -> Result<String, ClusterError> {
    let out = Command::from(std::mem::replace(cmd, std::process::Command::new("true")))
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| ClusterError::Command {
            program: program.into(),
            status: "could not start".into(),
            output: e.to_string(),
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(ClusterError::Command {
            program: program.into(),
            status: out.status.to_string(),
            output: text.trim().into(),
        })
    }
}

/// `pg_ctl start -w`, then the postmaster pid.
pub(crate) async fn start(
    user: &OsUser,
    bin: &Path,
    data: &Path,
    log: &Path,
    node: &str,
) -> Result<i32, ClusterError> {
    let res = run(
        user.command(bin.join("pg_ctl"))
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(log)
            .args(["-w", "-t", "30", "start"]),
        "pg_ctl start",
    )
    .await;
    if let Err(e) = res {
        return Err(match e {
            ClusterError::Command { .. } => ClusterError::NotAnswering {
                node: node.into(),
                secs: 30,
                log: log.to_path_buf(),
                tail: log_tail(log, 15),
            },
            other => other,
        });
    }
    postmaster_pid(data).ok_or_else(|| ClusterError::NotAnswering {
        node: node.into(),
        secs: 30,
        log: log.to_path_buf(),
        tail: log_tail(log, 15),
    })
}

/// Connects to a node with a short timeout (a dead node must not hang us).
pub async fn connect(url: &str, node: &str) -> Result<tokio_postgres::Client, ClusterError> {
    let mut cfg: tokio_postgres::Config = url.parse().map_err(|source| ClusterError::Sql {
        node: node.into(),
        source,
    })?;
    cfg.connect_timeout(Duration::from_secs(2));
    let (client, conn) =
        cfg.connect(tokio_postgres::NoTls)
            .await
            .map_err(|source| ClusterError::Sql {
                node: node.into(),
                source,
            })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The postmaster pid from `DATA/postmaster.pid`, if the file exists.
pub fn postmaster_pid(data: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn is_alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    // A zombie (exited, not yet reaped by its parent) is not alive.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The first pid still alive among the cluster's processes.
pub fn any_alive(info: &ClusterInfo) -> Option<i32> {
    info.nodes
        .iter()
        .filter_map(|n| postmaster_pid(&n.data_dir))
        .chain(info.redis.as_ref().map(|r| r.pid))
        .chain(
            info.redis_cluster
                .iter()
                .flat_map(|rc| rc.nodes.iter().map(|n| n.pid)),
        )
        .find(|&p| is_alive(p))
}

pub(crate) fn wait_gone(pid: i32, max: Duration) -> bool {
    let deadline = Instant::now() + max;
    while Instant::now() < deadline {
        if !is_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    !is_alive(pid)
}

/// SIGKILLs a process and its direct children (a postmaster's backends,
/// WAL receiver, …), as a crash would.
pub(crate) fn kill_tree(pid: i32) {
    for child in children_of(pid) {
        let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

/// User + system CPU seconds of a process so far, and of the children it
/// has waited for (`/proc/PID/stat` fields 14–17, at 100 ticks a second).
pub fn cpu_seconds(pid: i32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name in parentheses: fields 3.. (utime is 14).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    (f.len() == 4).then(|| ((f[0] + f[1]) / 100.0, (f[2] + f[3]) / 100.0))
}

/// User + system CPU seconds so far of a node: its postmaster and every
/// process it runs now (backends, WAL sender or receiver, startup process).
pub fn node_cpu_seconds(data: &Path) -> Option<f64> {
    let pid = postmaster_pid(data)?;
    let own = cpu_seconds(pid)?.0;
    Some(
        own + children_of(pid)
            .into_iter()
            .filter_map(|c| cpu_seconds(c).map(|(s, _)| s))
            .sum::<f64>(),
    )
}

/// The machine's busy and total CPU time so far (all cores, from the
/// `cpu` line of `/proc/stat`, in ticks): busy / total over an interval is
/// how much of the machine was in use.
pub fn machine_cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal …
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    let total: u64 = v.iter().take(8).sum();
    Some((total - idle, total))
}

pub(crate) fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat"))
            && let Some(rest) = stat.rsplit(')').next()
            && rest
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<i32>().ok())
                == Some(pid)
        {
            out.push(p);
        }
    }
    out
}

/// The last `n` lines of a log file (or a note that it cannot be read).
pub fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
