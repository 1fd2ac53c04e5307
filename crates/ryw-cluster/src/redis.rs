//! A private `redis-server` for the cluster: loopback only, no persistence,
//! its own port, pid file and log in `DIR/redis/`.

use crate::ClusterError;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Finds `redis-server` on `PATH` (then `/usr/bin`, `/usr/local/bin`).
pub fn find() -> Result<PathBuf, ClusterError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .ok_or(ClusterError::RedisMissing)
}

/// Starts `redis-server` and waits until it answers `PING`.
/// Returns its pid and log file.
pub async fn start(bin: &Path, dir: &Path, port: u16) -> Result<(i32, PathBuf), ClusterError> {
    let rdir = dir.join("redis");
    std::fs::create_dir_all(&rdir).map_err(ClusterError::io("creating", &rdir))?;
    let pidfile = rdir.join("redis.pid");
    let log = rdir.join("redis.log");
    let mut cmd = std::process::Command::new(bin);
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ])
    .args(["--daemonize", "yes", "--dir"])
    .arg(&rdir)
    .arg("--pidfile")
    .arg(&pidfile)
    .arg("--logfile")
    .arg(&log);
    crate::proc::run(&mut cmd, "redis-server").await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if ping(port)
            && let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|t| t.trim().parse().ok())
        {
            return Ok((pid, log));
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::NotAnswering {
                node: "redis".into(),
                secs: 5,
                tail: crate::proc::log_tail(&log, 10),
                log,
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a Redis answers `PING` on this loopback port.
pub fn ping(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// Stops a Redis by pid (SIGTERM, then SIGKILL). Returns whether it ran.
pub fn stop(pid: i32) -> bool {
    if !crate::proc::is_alive(pid) {
        return false;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && crate::proc::is_alive(pid) {
        std::thread::sleep(Duration::from_millis(10));
    }
    if crate::proc::is_alive(pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    true
}
