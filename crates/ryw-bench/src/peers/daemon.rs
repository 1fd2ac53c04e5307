//! What the peers share: finding their binary, a free port, and a server
//! process in the foreground as the cluster's OS user, in a process group
//! of its own, that is stopped with its own shutdown signal and waited for
//! (then killed with its whole group), on `stop()` or on drop.

use crate::BenchError;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use rand::Rng;
use ryw_cluster::runas::OsUser;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long a peer may take to stop after its shutdown signal before its
/// process group is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The binary `name` from `PATH`, else `/usr/sbin` or `/usr/bin` (Debian
/// puts both peers in `/usr/sbin`, outside a normal user's `PATH`).
pub(super) fn find_binary(
    peer: &'static str,
    name: &str,
    package: &str,
) -> Result<PathBuf, BenchError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            BenchError::peer(
                peer,
                format!("`{name}` not found; install it: apt-get install {package}"),
            )
        })
}

/// A port below 32768 (see `ryw_cluster::DEFAULT_PORT`) that nothing
/// listens on right now.
pub(super) fn free_port() -> u16 {
    let mut rng = rand::rng();
    loop {
        let port = rng.random_range(20_000..32_000u16);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A folder the OS user owns, inside the cluster's folder.
pub(super) fn own_dir(user: &OsUser, dir: &Path) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(BenchError::io("creating", dir))?;
    user.own(dir)?;
    Ok(())
}

/// Writes a file the OS user may read (and owns).
pub(super) fn write_owned(user: &OsUser, path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text).map_err(BenchError::io("writing", path))?;
    user.own(path)?;
    Ok(())
}

/// A peer's server process.
#[derive(Debug)]
pub(super) struct Daemon {
    peer: &'static str,
    child: Option<Child>,
    stop_signal: Signal,
    log: PathBuf,
}

impl Daemon {
    /// Starts `program args` as `user`, stdout and stderr to `log`.
    pub(super) fn spawn(
        peer: &'static str,
        user: &OsUser,
        program: &Path,
        args: &[&std::ffi::OsStr],
        log: &Path,
        stop_signal: Signal,
    ) -> Result<Daemon, BenchError> {
        let out = std::fs::File::create(log).map_err(BenchError::io("creating", log))?;
        let err = out.try_clone().map_err(BenchError::io("opening", log))?;
        let child = user
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own group: a stop that has to kill takes its children too.
            .process_group(0)
            .spawn()
            .map_err(|e| BenchError::peer(peer, format!("starting {}: {e}", program.display())))?;
        Ok(Daemon {
            peer,
            child: Some(child),
            stop_signal,
            log: log.to_path_buf(),
        })
    }

    /// An error that says the peer failed, with the end of its log.
    pub(super) fn failed(&self, what: &str) -> BenchError {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        BenchError::peer(
            self.peer,
            format!("{what}; the end of {}:\n{tail}", self.log.display()),
        )
    }

    /// Its process id (for its CPU time), while it runs.
    pub(super) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has exited.
    pub(super) fn exited(&mut self) -> bool {
        match &mut self.child {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Sends the peer's shutdown signal and waits (in a blocking thread)
    /// until it has exited; kills its process group after the grace time.
    pub(super) async fn stop(mut self) {
        if let Some(child) = self.child.take() {
            let signal = self.stop_signal;
            let _ = tokio::task::spawn_blocking(move || stop_child(child, signal)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child, self.stop_signal);
        }
    }
}

fn stop_child(mut child: Child, signal: Signal) {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, signal);
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            // Children that outlived their parent (none expected) go too.
            let _ = killpg(pid, Signal::SIGKILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = killpg(pid, Signal::SIGKILL);
    let _ = child.wait();
}
