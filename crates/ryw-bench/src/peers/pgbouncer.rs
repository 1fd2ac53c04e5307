//! PgBouncer (Debian `pgbouncer`, 1.18) in front of one node of a `ryw
//! cluster`: session pooling, no routing, in the foreground, as the
//! cluster's OS user (it refuses to run as root). The overhead benchmark's
//! middle contender: what a plain pooler costs.
//!
//! Settings (PgBouncer 1.18 documentation; tried on this machine):
//! `pool_mode = session` (a client keeps its server connection until it
//! disconnects, so `pgbench -M prepared` works: 1.18 does not track
//! protocol-level prepared statements), `auth_type = trust` (it still
//! needs the user in `auth_file`), `server_reset_query = DISCARD ALL`,
//! `ignore_startup_parameters = extra_float_digits,options`, connection
//! logging off. No inline comments: 1.18 refuses `key = value ; comment`.

use super::daemon::{Daemon, find_binary, free_port, own_dir, write_owned};
use crate::BenchError;
use nix::sys::signal::Signal;
use ryw_cluster::ClusterInfo;
use ryw_cluster::runas::OsUser;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A running PgBouncer; stopped (immediate shutdown, waited for) by
/// [`PgBouncer::stop`] or on drop.
#[derive(Debug)]
pub struct PgBouncer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its folder (`<cluster>/pgbouncer`): `pgbouncer.ini`, the log.
    pub dir: PathBuf,
    daemon: Daemon,
}

impl PgBouncer {
    /// Session pooling in front of the node `node` (`follower1`), with
    /// server pools of up to `pool_size` connections.
    pub async fn start(
        info: &ClusterInfo,
        node: &str,
        pool_size: u32,
    ) -> Result<PgBouncer, BenchError> {
        Self::start_in(info, node, pool_size, "session").await
    }

    /// [`PgBouncer::start`] in pool mode `pool_mode` (`session` or
    /// `transaction`; a folder of its own for each).
    pub async fn start_in(
        info: &ClusterInfo,
        node: &str,
        pool_size: u32,
        pool_mode: &str,
    ) -> Result<PgBouncer, BenchError> {
        if !["session", "transaction"].contains(&pool_mode) {
            return Err(BenchError::peer(
                "pgbouncer",
                format!("pool mode {pool_mode:?}: session or transaction"),
            ));
        }
        let target = info
            .nodes
            .iter()
            .find(|n| n.name == node)
            .ok_or_else(|| BenchError::peer("pgbouncer", format!("no node named {node:?}")))?;
        let bin = find_binary("pgbouncer", "pgbouncer", "pgbouncer")?;
        let user = OsUser::resolve(Some(&info.os_user))?;
        let dir = match pool_mode {
            "session" => info.dir.join("pgbouncer"),
            other => info.dir.join(format!("pgbouncer-{other}")),
        };
        own_dir(&user, &dir)?;
        let port = free_port();
        let ini = dir.join("pgbouncer.ini");
        let d = dir.display();
        let text = format!(
            ";; Written by ryw bench (ryw_bench::peers::PgBouncer): {pool_mode} pooling in front of {node}.\n\
             [databases]\n\
             * = host=127.0.0.1 port={target_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir = {d}\n\
             pidfile = {d}/pgbouncer.pid\n\
             logfile =\n\
             auth_type = trust\n\
             auth_file = {d}/userlist.txt\n\
             pool_mode = {pool_mode}\n\
             max_client_conn = 500\n\
             default_pool_size = {pool}\n\
             server_reset_query = DISCARD ALL\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             log_connections = 0\n\
             log_disconnections = 0\n\
             admin_users = postgres\n",
            target_port = target.port,
            pool = pool_size.max(1),
        );
        write_owned(&user, &ini, &text)?;
        write_owned(&user, &dir.join("userlist.txt"), "\"postgres\" \"\"\n")?;
        let mut daemon = Daemon::spawn(
            "pgbouncer",
            &user,
            &bin,
            &[ini.as_os_str()],
            &dir.join("pgbouncer.log"),
            // SIGINT is its "safe" shutdown, which waits for clients.
            Signal::SIGTERM,
        )?;
        let url = format!(
            "postgres://postgres@127.0.0.1:{port}/{}",
            ryw_cluster::DATABASE
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if daemon.exited() {
                return Err(daemon.failed("it exited at start"));
            }
            if answers(&url).await {
                break;
            }
            if Instant::now() > deadline {
                return Err(daemon.failed("no answer 10 s after start"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(PgBouncer { port, dir, daemon })
    }

    /// PgBouncer's process id (for its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// Immediate shutdown, waited for.
    pub async fn stop(self) {
        self.daemon.stop().await;
    }
}

/// Whether a query through `url` gets an answer.
async fn answers(url: &str) -> bool {
    let Ok(mut cfg) = url.parse::<tokio_postgres::Config>() else {
        return false;
    };
    cfg.connect_timeout(Duration::from_secs(2));
    let Ok((client, conn)) = cfg.connect(tokio_postgres::NoTls).await else {
        return false;
    };
    let conn = tokio::spawn(conn);
    let ok = client.simple_query("SELECT 1").await.is_ok();
    drop(client);
    let _ = conn.await;
    ok
}
