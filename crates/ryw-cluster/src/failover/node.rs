//! What failover and rejoin ask of one node: probe it, wait for its
//! promotion or its streaming, give it a slot, point it at a leader.

use crate::ClusterError;
use crate::conf::{primary_conninfo, set_auto_conf, slot_name};
use crate::info::NodeInfo;
use crate::proc::{admin_url, connect, is_alive, log_tail, postmaster_pid};
use crate::runas::OsUser;
use std::time::{Duration, Instant};
use tokio_postgres::types::PgLsn;

/// How long a promotion may take before it is an error.
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Its postmaster runs (its pid file names a live process).
pub(super) fn running(node: &NodeInfo) -> bool {
    postmaster_pid(&node.data_dir).is_some_and(is_alive)
}

/// What a node says about itself, for choosing and for checks.
#[derive(Debug, Clone, Default)]
pub(super) struct Probe {
    pub(super) alive: bool,
    pub(super) in_recovery: bool,
    pub(super) received: Option<PgLsn>,
    pub(super) status: Option<String>,
    pub(super) sender_port: Option<u16>,
    pub(super) received_tli: Option<u32>,
}

impl Probe {
    pub(super) fn streaming_from(&self, port: u16) -> bool {
        self.status.as_deref() == Some("streaming") && self.sender_port == Some(port)
    }
}

/// What `node` says, or a dead probe when it does not run or answer.
pub(super) async fn probe(node: &NodeInfo) -> Probe {
    if !running(node) {
        return Probe::default();
    }
    let Ok(client) = connect(&admin_url(node.port), &node.name).await else {
        return Probe::default();
    };
    probe_with(&client).await.unwrap_or_default()
}

/// What the node behind `client` says.
pub(super) async fn probe_with(
    client: &tokio_postgres::Client,
) -> Result<Probe, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(), \
                    CASE WHEN pg_is_in_recovery() \
                         THEN GREATEST(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) \
                         ELSE pg_current_wal_lsn() END, \
                    r.status, r.sender_port, r.received_tli \
             FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true",
            &[],
        )
        .await?;
    Ok(Probe {
        alive: true,
        in_recovery: row.get(0),
        received: row.get(1),
        status: row.get(2),
        sender_port: row.get::<_, Option<i32>>(3).map(|p| p as u16),
        received_tli: row.get::<_, Option<i32>>(4).map(|t| t as u32),
    })
}

/// Polls `pg_is_in_recovery()` every 5 ms until the promotion finished.
pub(super) async fn wait_promoted(
    client: &tokio_postgres::Client,
    node: &NodeInfo,
) -> Result<(), ClusterError> {
    let deadline = Instant::now() + PROMOTE_TIMEOUT;
    loop {
        let in_recovery: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(|source| ClusterError::Sql {
                node: node.name.clone(),
                source,
            })?
            .get(0);
        if !in_recovery {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ClusterError::NotPromoted {
                node: node.name.clone(),
                secs: PROMOTE_TIMEOUT.as_secs(),
                log: node.log.clone(),
                tail: log_tail(&node.log, 15),
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Creates a physical slot on the leader unless it exists. It reserves WAL
/// at once, so nothing the standby will ask for is recycled meanwhile.
pub(super) async fn create_slot(
    leader: &tokio_postgres::Client,
    leader_name: &str,
    slot: &str,
) -> Result<(), ClusterError> {
    leader
        .query(
            "SELECT pg_create_physical_replication_slot($1, true) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
            &[&slot],
        )
        .await
        .map(drop)
        .map_err(|source| ClusterError::Sql {
            node: leader_name.into(),
            source,
        })
}

/// Points a standby at the leader on `leader_port`: live when it runs,
/// else in its `postgresql.auto.conf`. Returns whether it was live.
pub(super) async fn repoint(
    user: &OsUser,
    node: &NodeInfo,
    leader_port: u16,
    alive: bool,
) -> Result<bool, ClusterError> {
    let settings = [
        (
            "primary_conninfo",
            primary_conninfo(leader_port, &node.name),
        ),
        ("primary_slot_name", slot_name(&node.name)),
    ];
    if alive && let Ok(client) = connect(&admin_url(node.port), &node.name).await {
        let sql = |source| ClusterError::Sql {
            node: node.name.clone(),
            source,
        };
        // ALTER SYSTEM refuses to run in a transaction block, and a
        // multi-statement simple query is one: one round trip each.
        for (k, v) in &settings {
            client
                .batch_execute(&format!(
                    "ALTER SYSTEM SET {k} = '{}'",
                    v.replace('\'', "''")
                ))
                .await
                .map_err(sql)?;
        }
        client
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .map_err(sql)?;
        return Ok(true);
    }
    set_auto_conf(user, &node.data_dir, &settings, false)?;
    Ok(false)
}

/// Waits until `node` streams from the node on `leader_port` on timeline
/// `tli` (or later). Returns how long it took, `None` after `max`.
pub(super) async fn wait_following(
    node: &NodeInfo,
    leader_port: u16,
    tli: u32,
    max: Duration,
) -> Option<Duration> {
    let t = Instant::now();
    let mut client = None;
    while t.elapsed() < max {
        if client.is_none() {
            client = connect(&admin_url(node.port), &node.name).await.ok();
        }
        if let Some(c) = &client {
            match probe_with(c).await {
                Ok(p)
                    if p.streaming_from(leader_port)
                        && p.received_tli.is_some_and(|r| r >= tli) =>
                {
                    return Some(t.elapsed());
                }
                Ok(_) => {}
                Err(_) => client = None,
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}
