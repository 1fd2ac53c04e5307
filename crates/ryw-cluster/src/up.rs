//! `ryw cluster up`: a real primary and N streaming hot standbys.
//!
//! The recipe is the plain one (`initdb`; `pg_basebackup -R -X stream -C -S
//! followerN` per follower; `pg_ctl -w start`), with each follower's
//! `recovery_min_apply_delay` set from `--lag` so the replication lag is
//! real and controllable. `cluster.json` is saved after every node that
//! starts, so `down` can clean up after a bring-up that failed half way.
//! With `--sync`, the leader's `synchronous_standby_names` is set once every
//! follower streams (before that, a commit would wait for nobody forever).

use crate::conf::{self, append_as, set_auto_conf, slot_name, write_as};
use crate::info::{ClusterInfo, NodeInfo, NodeRole, RedisInfo, ReplicationInfo};
use crate::proc::{admin_url, connect, log_tail, run, start, url};
use crate::redis_cluster::RedisClusterSpec;
use crate::runas::OsUser;
use crate::{ClusterError, DATABASE, DEFAULT_PORT, ops, pgbin};
use futures_util::future::join_all;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Free space a cluster needs before we start (three data folders, WAL, logs).
const NEED_MIB: u64 = 512;
/// How long a follower may take to reach `streaming`.
const STREAMING_TIMEOUT: Duration = Duration::from_secs(30);

/// What to start.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Cluster folder (created if missing).
    pub dir: PathBuf,
    /// Number of followers.
    pub replicas: usize,
    /// Replay delay per follower; the last one repeats when shorter than
    /// `replicas`, none means no delay.
    pub lags: Vec<Duration>,
    /// Leader port; followers take the next ones.
    pub port: u16,
    /// Also start a private Redis.
    pub redis: bool,
    /// Also start a private Redis Cluster of this shape (not with `redis`).
    pub redis_cluster: Option<RedisClusterSpec>,
    /// Explicit PostgreSQL binary folder.
    pub pg_bin: Option<PathBuf>,
    /// OS user for the servers when running as root (default `postgres`).
    pub os_user: Option<String>,
    /// `shared_buffers` for every node.
    pub shared_buffers: String,
    /// Synchronous replication: a commit returns once one follower has
    /// flushed it (`synchronous_standby_names = 'ANY 1 (…followers…)'`).
    pub sync: bool,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions {
            dir: PathBuf::from(crate::DEFAULT_DIR),
            replicas: 2,
            lags: vec![Duration::from_millis(100), Duration::from_millis(400)],
            port: DEFAULT_PORT,
            redis: false,
            redis_cluster: None,
            pg_bin: None,
            os_user: None,
            shared_buffers: "256MB".into(),
            sync: false,
        }
    }
}

impl UpOptions {
    /// The delay of follower `i` (0-based).
    pub fn lag_of(&self, i: usize) -> Duration {
        self.lags
            .get(i)
            .or(self.lags.last())
            .copied()
            .unwrap_or(Duration::ZERO)
    }
}

/// Starts the cluster and returns (and saves) its description.
pub async fn up(opts: &UpOptions) -> Result<ClusterInfo, ClusterError> {
    let started = Instant::now();
    if opts.replicas == 0 || opts.replicas > 8 {
        return Err(ClusterError::BadArgument(format!(
            "--replicas must be 1..=8, not {}",
            opts.replicas
        )));
    }
    if u32::from(opts.port) + opts.replicas as u32 >= 65536 || opts.port < 1024 {
        return Err(ClusterError::BadArgument(format!(
            "--port {} leaves no room for the followers",
            opts.port
        )));
    }
    let bin = pgbin::find(opts.pg_bin.as_deref())?;
    let user = OsUser::resolve(opts.os_user.as_deref())?;
    if opts.redis && opts.redis_cluster.is_some() {
        return Err(ClusterError::BadArgument(
            "--redis and --redis-cluster: one Redis or one Redis Cluster, not both".into(),
        ));
    }
    if let Some(spec) = &opts.redis_cluster {
        spec.validate()?;
    }
    let redis_bin = if opts.redis || opts.redis_cluster.is_some() {
        Some(crate::redis::find()?)
    } else {
        None
    };

    std::fs::create_dir_all(&opts.dir).map_err(ClusterError::io("creating", &opts.dir))?;
    let dir = std::fs::canonicalize(&opts.dir).map_err(ClusterError::io("resolving", &opts.dir))?;
    check_not_in_use(&dir)?;
    check_disk(&dir)?;
    user.check_reachable(&dir.join("pg"))?;
    let ports: Vec<u16> = (0..=opts.replicas as u16).map(|i| opts.port + i).collect();
    for &port in &ports {
        check_port(port)?;
    }

    let pgdir = dir.join("pg");
    let sockets = conf::socket_dir(&dir);
    std::fs::create_dir_all(&sockets).map_err(ClusterError::io("creating", &sockets))?;
    user.own(&pgdir)?;
    user.own(&sockets)?;

    let mut info = ClusterInfo {
        version: 1,
        dir: dir.clone(),
        pg_bin: bin.clone(),
        os_user: user.name.clone(),
        nodes: Vec::new(),
        redis: None,
        redis_cluster: None,
        up_secs: 0.0,
    };
    match build(&mut info, opts, &user, &ports, redis_bin.as_deref()).await {
        Ok(()) => {
            info.up_secs = started.elapsed().as_secs_f64();
            info.save()?;
            ReplicationInfo {
                sync: opts.sync,
                ..ReplicationInfo::default()
            }
            .save(&dir)?;
            Ok(info)
        }
        Err(e) => {
            // Leave nothing running; the data stays for inspection and the
            // next `up` says how to remove it.
            let _ = ops::stop_all(&info, &user);
            Err(e)
        }
    }
}

async fn build(
    info: &mut ClusterInfo,
    opts: &UpOptions,
    user: &OsUser,
    ports: &[u16],
    redis_bin: Option<&Path>,
) -> Result<(), ClusterError> {
    let t0 = Instant::now();
    let bin = info.pg_bin.clone();
    let pgdir = info.dir.join("pg");

    // Leader.
    let leader_dir = pgdir.join("leader");
    let leader_log = pgdir.join("leader.log");
    run(
        user.command(bin.join("initdb"))
            .arg("-D")
            .arg(&leader_dir)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ]),
        "initdb",
    )
    .await?;
    let sockets = conf::socket_dir(&info.dir);
    let ryw_conf = conf::ryw_conf(ports[0], &sockets, &opts.shared_buffers);
    write_as(user, &leader_dir.join("ryw.conf"), &ryw_conf)?;
    append_as(
        user,
        &leader_dir.join("postgresql.conf"),
        "\ninclude 'ryw.conf'\n",
    )?;
    write_as(user, &leader_dir.join("pg_hba.conf"), conf::HBA)?;
    let pid = start(user, &bin, &leader_dir, &leader_log, "leader").await?;
    info.nodes.push(NodeInfo {
        name: "leader".into(),
        role: NodeRole::Leader,
        port: ports[0],
        pid,
        url: url(ports[0]),
        data_dir: leader_dir.clone(),
        log: leader_log.clone(),
        delay_ms: None,
    });
    info.save()?;
    let admin = connect(&admin_url(ports[0]), "leader").await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
        .await
        .map_err(|source| ClusterError::Sql {
            node: "leader".into(),
            source,
        })?;

    tracing::debug!(elapsed_ms = t0.elapsed().as_millis() as u64, "leader up");

    // Followers: base backups in parallel (they share the leader's fast
    // checkpoint), then starts in parallel.
    let followers: Vec<(String, u16, PathBuf, PathBuf, Duration, String)> = (0..opts.replicas)
        .map(|i| {
            let name = format!("follower{}", i + 1);
            let data = pgdir.join(&name);
            let log = pgdir.join(format!("{name}.log"));
            let slot = slot_name(&name);
            (name, ports[i + 1], data, log, opts.lag_of(i), slot)
        })
        .collect();
    let leader_port = ports[0].to_string();
    let backups = followers.iter().map(|(_, _, data, _, _, slot)| {
        let mut cmd = user.command(bin.join("pg_basebackup"));
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &leader_port,
            "-U",
            "postgres",
            "-D",
        ])
        .arg(data)
        .args([
            "-R",
            "-X",
            "stream",
            "-C",
            "-S",
            slot,
            "--checkpoint=fast",
            "--no-sync",
        ]);
        async move { run(&mut cmd, "pg_basebackup").await }
    });
    for r in join_all(backups).await {
        r?;
    }
    tracing::debug!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "base backups taken"
    );
    for (name, port, data, _, delay, _) in &followers {
        // `-R` wrote a primary_conninfo without application_name: replace it.
        set_auto_conf(
            user,
            data,
            &conf::standby_settings(name, *port, &sockets, ports[0], *delay),
            false,
        )?;
    }
    let starts = followers
        .iter()
        .map(|(name, _, data, log, _, _)| start(user, &bin, data, log, name));
    let pids = join_all(starts).await;
    for ((name, port, data, log, delay, _), pid) in followers.into_iter().zip(pids) {
        let pid = pid?;
        info.nodes.push(NodeInfo {
            name,
            role: NodeRole::Follower,
            port,
            pid,
            url: url(port),
            data_dir: data,
            log,
            delay_ms: Some(delay.as_millis() as u64),
        });
    }
    info.save()?;
    for r in join_all(info.followers().map(wait_streaming)).await {
        r?;
    }
    tracing::debug!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        "followers streaming"
    );
    if opts.sync {
        let names: Vec<&str> = info.followers().map(|n| n.name.as_str()).collect();
        set_sync_standbys(&admin, "leader", &names).await?;
    }

    match (redis_bin, opts.redis_cluster) {
        (Some(redis_bin), Some(spec)) => {
            let mut pairs = Vec::with_capacity(spec.nodes());
            let mut next = ports[ports.len() - 1] + 1;
            for _ in 0..spec.nodes() {
                let port = free_port_below_32768(next)?;
                let bus = free_port_below_32768(port + 1)?;
                pairs.push((port, bus));
                next = bus + 1;
            }
            // Saved as it starts, so `down` finds the nodes if forming fails.
            let started = crate::redis_cluster::start(redis_bin, &info.dir, spec, &pairs).await;
            match started {
                Ok(rc) => info.redis_cluster = Some(rc),
                Err(e) => {
                    stop_redis_cluster_dir(&info.dir);
                    return Err(e);
                }
            }
        }
        (Some(redis_bin), None) => {
            let port = free_port_after(ports[ports.len() - 1] + 1)?;
            let r = crate::redis::start(redis_bin, &info.dir, port).await?;
            info.redis = Some(RedisInfo {
                port,
                pid: r.0,
                url: format!("redis://127.0.0.1:{port}/"),
                log: r.1,
            });
        }
        (None, _) => {}
    }
    Ok(())
}

/// Stops whatever Redis Cluster nodes a failed `up` left in `DIR`, from
/// their pid files.
fn stop_redis_cluster_dir(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir.join("redis-cluster")) else {
        return;
    };
    for e in entries.flatten() {
        if let Some(pid) = std::fs::read_to_string(e.path().join("redis.pid"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            crate::redis::stop(pid);
        }
    }
}

/// A free port from `from` on, below 32768 (see [`crate::DEFAULT_PORT`]).
fn free_port_below_32768(from: u16) -> Result<u16, ClusterError> {
    let port = free_port_after(from)?;
    if port >= 32768 {
        return Err(ClusterError::BadArgument(format!(
            "no free port below 32768 for the Redis Cluster after {from}; choose a lower --port"
        )));
    }
    Ok(port)
}

async fn wait_streaming(node: &NodeInfo) -> Result<(), ClusterError> {
    let deadline = Instant::now() + STREAMING_TIMEOUT;
    loop {
        if let Ok(client) = connect(&admin_url(node.port), &node.name).await
            && let Ok(Some(row)) = client
                .query_opt("SELECT status FROM pg_stat_wal_receiver", &[])
                .await
            && row.get::<_, Option<String>>(0).as_deref() == Some("streaming")
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::NotStreaming {
                node: node.name.clone(),
                secs: STREAMING_TIMEOUT.as_secs(),
                log: node.log.clone(),
                tail: log_tail(&node.log, 15),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn check_not_in_use(dir: &Path) -> Result<(), ClusterError> {
    match ClusterInfo::load(dir) {
        Ok(info) => {
            if let Some(pid) = crate::proc::any_alive(&info) {
                Err(ClusterError::AlreadyRunning {
                    dir: dir.to_path_buf(),
                    pid,
                })
            } else {
                Err(ClusterError::StaleData {
                    dir: dir.to_path_buf(),
                })
            }
        }
        Err(ClusterError::NotFound { .. }) if dir.join("pg").exists() => {
            Err(ClusterError::StaleData {
                dir: dir.to_path_buf(),
            })
        }
        Err(ClusterError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

fn check_disk(dir: &Path) -> Result<(), ClusterError> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|e| ClusterError::Io {
        what: "statvfs",
        path: dir.to_path_buf(),
        source: e.into(),
    })?;
    let free_mib = st.blocks_available() as u64 * st.fragment_size() as u64 / (1024 * 1024);
    if free_mib < NEED_MIB {
        return Err(ClusterError::NotEnoughDisk {
            dir: dir.to_path_buf(),
            free_mib,
            need_mib: NEED_MIB,
        });
    }
    Ok(())
}

/// Fails with [`ClusterError::PortInUse`] when something listens on `port`.
pub fn check_port(port: u16) -> Result<(), ClusterError> {
    TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .map_err(|_| ClusterError::PortInUse { port })
}

fn free_port_after(from: u16) -> Result<u16, ClusterError> {
    (from..from.saturating_add(200))
        .find(|&p| check_port(p).is_ok())
        .ok_or(ClusterError::PortInUse { port: from })
}

/// Sets `synchronous_standby_names` on a node to `ANY 1 (standbys)` (or
/// empty: asynchronous) by `ALTER SYSTEM` + reload, and waits until it is
/// in effect: this session shows it (so sessions forked from now on have
/// it) and every listed standby already connected has a synchronous
/// priority in `pg_stat_replication` (its WAL sender reloaded too).
/// Returns the value set.
pub(crate) async fn set_sync_standbys<S: AsRef<str>>(
    client: &tokio_postgres::Client,
    node: &str,
    standbys: &[S],
) -> Result<String, ClusterError> {
    let names = conf::sync_standby_names(standbys);
    let listed: Vec<String> = standbys.iter().map(|s| s.as_ref().to_string()).collect();
    let sql = |source| ClusterError::Sql {
        node: node.into(),
        source,
    };
    client
        .batch_execute(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{}'",
            names.replace('\'', "''")
        ))
        .await
        .map_err(sql)?;
    client
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .map_err(sql)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let live: String = client
            .query_one("SHOW synchronous_standby_names", &[])
            .await
            .map_err(sql)?
            .get(0);
        let unranked: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_replication \
                 WHERE application_name = ANY($1) AND sync_priority = 0",
                &[&listed],
            )
            .await
            .map_err(sql)?
            .get(0);
        if live == names && (names.is_empty() || unranked == 0) {
            return Ok(names);
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                node,
                names,
                live,
                unranked,
                "synchronous_standby_names not in effect after 5 s"
            );
            return Ok(names);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
