//! Pgpool-II (Debian `pgpool2`, 4.3) on a `ryw cluster`: streaming
//! replication mode with load balancing, the configuration the comparison
//! needs, in the foreground (`pgpool -n -D`), as the cluster's OS user.
//!
//! What each setting does (Pgpool-II 4.3 documentation, §5.7 and §5.8;
//! tried on this machine):
//!
//! - `backend_clustering_mode = 'streaming_replication'`: node 0 the
//!   primary (weight 0: no balanced reads), the followers standbys
//!   (weight 1 each).
//! - `load_balance_mode = on`, `statement_level_load_balance = on`: each
//!   read-only statement picks its standby, instead of one per session.
//! - `disable_load_balance_on_write = 'always'`: its strongest setting;
//!   after any write on a connection, every later read of that connection
//!   goes to the primary until it disconnects. Nothing crosses
//!   connections.
//! - `delay_threshold` (bytes, [`PgpoolOptions::delay_threshold`]): a
//!   standby whose replay is further behind the primary's WAL than this at
//!   the last check gets no reads; checked every `sr_check_period` seconds
//!   (1, the smallest). `delay_threshold_by_time` only exists from 4.4.
//! - `prefer_lower_delay_standby = on`: a lagging standby's reads go to
//!   the least lagging standby rather than straight to the primary.
//! - Health checks, failover, the watchdog and the query cache off; no
//!   client authentication of its own (trust, as the cluster on loopback).

use super::daemon::{Daemon, find_binary, free_port, own_dir, write_owned};
use crate::BenchError;
use nix::sys::signal::Signal;
use ryw_cluster::ClusterInfo;
use ryw_cluster::runas::OsUser;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How Pgpool-II is set up for the comparison.
#[derive(Debug, Clone)]
pub struct PgpoolOptions {
    /// Where it listens (on 127.0.0.1); `None` picks a free port.
    pub port: Option<u16>,
    /// `delay_threshold`: replay lag in WAL bytes beyond which a standby
    /// gets no reads until the next check. Default 1: any lag at all, the
    /// strictest it can be.
    pub delay_threshold: u64,
    /// `sr_check_period` in seconds (how often it reads every node's WAL
    /// position); 1 is the smallest.
    pub sr_check_period: u32,
    /// `num_init_children`: clients it serves at once (one process each);
    /// more wait for a free one.
    pub num_init_children: u32,
    /// `disable_load_balance_on_write`: `always` (default: after a write,
    /// every later read of the connection on the primary) or `transaction`
    /// (only within the writing transaction); both per connection.
    pub on_write: String,
}

impl Default for PgpoolOptions {
    fn default() -> Self {
        PgpoolOptions {
            port: None,
            delay_threshold: 1,
            sr_check_period: 1,
            num_init_children: 64,
            on_write: "always".to_owned(),
        }
    }
}

/// A running Pgpool-II; stopped (fast shutdown, waited for) by
/// [`Pgpool::stop`] or on drop.
#[derive(Debug)]
pub struct Pgpool {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its folder (`<cluster>/pgpool`): `pgpool.conf`, the log, sockets.
    pub dir: PathBuf,
    /// How it was set up.
    pub options: PgpoolOptions,
    daemon: Daemon,
}

impl Pgpool {
    /// Writes its configuration into `<cluster>/pgpool/`, starts it and
    /// waits until it sees the primary and every follower up.
    pub async fn start(info: &ClusterInfo, opts: &PgpoolOptions) -> Result<Pgpool, BenchError> {
        Pgpool::start_in(info, opts, "pgpool").await
    }

    /// [`Pgpool::start`] with its files in `<cluster>/<folder>/`, for
    /// several side by side.
    pub async fn start_in(
        info: &ClusterInfo,
        opts: &PgpoolOptions,
        folder: &str,
    ) -> Result<Pgpool, BenchError> {
        let bin = find_binary("pgpool", "pgpool", "pgpool2")?;
        let user = OsUser::resolve(Some(&info.os_user))?;
        let dir = info.dir.join(folder);
        own_dir(&user, &dir)?;
        let port = opts.port.unwrap_or_else(free_port);
        let conf = dir.join("pgpool.conf");
        write_owned(&user, &conf, &config_text(info, opts, port, &dir))?;
        // An empty password file: without one, the lag check warns every
        // second that it has none (trust needs no password).
        write_owned(&user, &dir.join("pool_passwd"), "")?;
        let mut daemon = Daemon::spawn(
            "pgpool",
            &user,
            &bin,
            &[
                "-n".as_ref(),
                "-D".as_ref(),
                "-f".as_ref(),
                conf.as_os_str(),
            ],
            &dir.join("pgpool.log"),
            // SIGTERM is its smart shutdown, which waits for every client.
            Signal::SIGINT,
        )?;
        let url = format!(
            "postgres://postgres@127.0.0.1:{port}/{}",
            ryw_cluster::DATABASE
        );
        let nodes = info.nodes.len();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if daemon.exited() {
                return Err(daemon.failed("it exited at start"));
            }
            if let Ok(up) = nodes_up(&url).await
                && up == nodes
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(daemon.failed(&format!(
                    "not serving all {nodes} nodes 20 s after start (SHOW pool_nodes)"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Pgpool {
            port,
            dir,
            options: opts.clone(),
            daemon,
        })
    }

    /// libpq URL of the cluster's database through it.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.port,
            ryw_cluster::DATABASE
        )
    }

    /// `SHOW pool_nodes`, as text rows (`port role status select_cnt
    /// replication_delay`), for the report's notes.
    pub async fn pool_nodes(&self) -> Result<Vec<String>, BenchError> {
        let rows = show_pool_nodes(&self.url()).await?;
        Ok(rows
            .iter()
            .map(|r| {
                let get = |k: &str| r.get(k).map_or("?", String::as_str);
                format!(
                    "port {} {} {} select_cnt {} replication_delay {}",
                    get("port"),
                    get("role"),
                    get("status"),
                    get("select_cnt"),
                    get("replication_delay"),
                )
            })
            .collect())
    }

    /// Fast shutdown, waited for.
    pub async fn stop(self) {
        self.daemon.stop().await;
    }
}

/// The whole `pgpool.conf`.
fn config_text(
    info: &ClusterInfo,
    opts: &PgpoolOptions,
    port: u16,
    dir: &std::path::Path,
) -> String {
    let d = dir.display();
    let mut s = format!(
        "# Written by ryw bench (ryw_bench::peers::Pgpool) for cluster {cluster}.\n\
         backend_clustering_mode = 'streaming_replication'\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         socket_dir = '{d}'\n\
         pcp_listen_addresses = ''\n\
         pcp_port = {pcp}\n\
         pcp_socket_dir = '{d}'\n\
         wd_ipc_socket_dir = '{d}'\n\
         pid_file_name = '{d}/pgpool.pid'\n\
         logdir = '{d}'\n\
         log_destination = 'stderr'\n\
         logging_collector = off\n\
         load_balance_mode = on\n\
         statement_level_load_balance = on\n\
         disable_load_balance_on_write = '{on_write}'\n\
         sr_check_period = {period}\n\
         sr_check_user = 'postgres'\n\
         sr_check_password = ''\n\
         sr_check_database = 'postgres'\n\
         delay_threshold = {threshold}\n\
         prefer_lower_delay_standby = on\n\
         health_check_period = 0\n\
         failover_on_backend_error = off\n\
         failover_command = ''\n\
         auto_failback = off\n\
         use_watchdog = off\n\
         memory_cache_enabled = off\n\
         num_init_children = {children}\n\
         max_pool = 1\n\
         reserved_connections = 0\n\
         connection_cache = on\n\
         enable_pool_hba = off\n\
         pool_passwd = '{d}/pool_passwd'\n\
         allow_clear_text_frontend_auth = off\n",
        cluster = info.dir.display(),
        pcp = free_port(),
        period = opts.sr_check_period.max(1),
        threshold = opts.delay_threshold,
        children = opts.num_init_children.max(1),
        on_write = opts.on_write,
    );
    for (i, n) in info.nodes.iter().enumerate() {
        let weight = match n.role {
            ryw_cluster::NodeRole::Leader => 0,
            _ => 1,
        };
        let _ = write!(
            s,
            "backend_hostname{i} = '127.0.0.1'\n\
             backend_port{i} = {port}\n\
             backend_weight{i} = {weight}\n\
             backend_flag{i} = 'DISALLOW_TO_FAILOVER'\n\
             backend_application_name{i} = '{name}'\n",
            port = n.port,
            name = n.name,
        );
    }
    s
}

/// `SHOW pool_nodes` as (column → value) rows.
async fn show_pool_nodes(
    url: &str,
) -> Result<Vec<std::collections::HashMap<String, String>>, BenchError> {
    let pg = |what: &'static str| move |source| BenchError::Postgres { what, source };
    let mut cfg: tokio_postgres::Config = url.parse().map_err(pg("pgpool url"))?;
    cfg.connect_timeout(Duration::from_secs(2));
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(pg("connecting to pgpool"))?;
    let conn = tokio::spawn(conn);
    let rows = client.simple_query("SHOW pool_nodes").await;
    drop(client);
    let _ = conn.await;
    let mut out = Vec::new();
    for m in rows.map_err(pg("SHOW pool_nodes"))? {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            out.push(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_string(), r.get(i).unwrap_or("").to_string()))
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// How many nodes Pgpool-II has up, with a primary among them (0 without).
async fn nodes_up(url: &str) -> Result<usize, BenchError> {
    let rows = show_pool_nodes(url).await?;
    let has_primary = rows
        .iter()
        .any(|r| r.get("role").map(String::as_str) == Some("primary"));
    Ok(match has_primary {
        true => rows
            .iter()
            .filter(|r| r.get("status").map(String::as_str) == Some("up"))
            .count(),
        false => 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_balances_per_statement_pins_after_writes_and_lists_every_node() {
        let info: ClusterInfo = serde_json::from_value(serde_json::json!({
            "version": 1, "dir": "/tmp/c", "pg_bin": "/usr/bin", "os_user": "postgres",
            "nodes": [
                {"name": "leader", "role": "leader", "port": 25432, "pid": 1,
                 "url": "postgres://postgres@127.0.0.1:25432/ryw", "data_dir": "/tmp/c/l", "log": "/tmp/c/l.log"},
                {"name": "follower1", "role": "follower", "port": 25433, "pid": 2,
                 "url": "postgres://postgres@127.0.0.1:25433/ryw", "data_dir": "/tmp/c/f1", "log": "/tmp/c/f1.log",
                 "delay_ms": 100}
            ],
            "up_secs": 1.0
        }))
        .unwrap();
        let text = config_text(
            &info,
            &PgpoolOptions::default(),
            16432,
            std::path::Path::new("/tmp/c/pgpool"),
        );
        for line in [
            "backend_clustering_mode = 'streaming_replication'",
            "port = 16432",
            "statement_level_load_balance = on",
            "disable_load_balance_on_write = 'always'",
            "delay_threshold = 1",
            "sr_check_period = 1",
            "backend_port0 = 25432",
            "backend_weight0 = 0",
            "backend_port1 = 25433",
            "backend_weight1 = 1",
            "backend_application_name1 = 'follower1'",
            "pool_passwd = '/tmp/c/pgpool/pool_passwd'",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
    }
}
