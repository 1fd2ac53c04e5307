//! `ryw cluster rejoin`: bring a stopped node back as a follower (the
//! steps are in the module docs of [`super`]).

use super::node::{create_slot, wait_following};
use super::{ser_ms, sql_error, timed};
use crate::ClusterError;
use crate::conf::{self, set_auto_conf, slot_name};
use crate::info::{ClusterInfo, NodeInfo, NodeRole, ReplicationInfo};
use crate::ops::remove_stale_locks;
use crate::proc::{admin_url, connect, is_alive, log_tail, postmaster_pid, run, start};
use crate::runas::OsUser;
use crate::timeline::{self, ser_opt_lsn};
use crate::up::set_sync_standbys;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_postgres::types::PgLsn;

/// How to rejoin.
#[derive(Debug, Clone)]
pub struct RejoinOptions {
    /// Replay delay of the rejoined follower. `None`: the delay recorded
    /// for the node (a follower that was promoted and failed gets its old
    /// delay back), or 0 for the first leader, which never had one.
    pub delay: Option<Duration>,
    /// How long to wait for it to stream from the leader; not streaming by
    /// then is an error with the tail of its log.
    pub wait_streaming: Duration,
}

impl Default for RejoinOptions {
    fn default() -> Self {
        RejoinOptions {
            delay: None,
            wait_streaming: Duration::from_secs(30),
        }
    }
}

/// Where a rejoined node's replay delay came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DelayFrom {
    /// `RejoinOptions::delay` (`--delay`).
    Given,
    /// The delay `cluster.json` records for the node.
    Recorded,
    /// None recorded (the first leader): 0.
    FormerLeader,
}

/// How long each step of a rejoin took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RejoinTimings {
    /// `CHECKPOINT` on the leader.
    #[serde(rename = "checkpoint_ms", serialize_with = "ser_ms")]
    pub checkpoint: Duration,
    /// `pg_rewind` (with its single-user crash recovery of a killed node).
    #[serde(rename = "rewind_ms", serialize_with = "ser_ms")]
    pub rewind: Duration,
    /// `pg_ctl start -w` of the standby.
    #[serde(rename = "start_ms", serialize_with = "ser_ms")]
    pub start: Duration,
    /// From the start until it streamed from the leader.
    #[serde(rename = "streaming_ms", serialize_with = "ser_ms")]
    pub streaming: Duration,
    /// The whole rejoin.
    #[serde(rename = "total_ms", serialize_with = "ser_ms")]
    pub total: Duration,
}

/// What a rejoin did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejoinReport {
    /// The node, now a follower.
    pub name: String,
    /// The leader it follows.
    pub leader: String,
    /// Its application database URL.
    pub url: String,
    /// Its new postmaster pid.
    pub pid: i32,
    /// The timeline it streams on.
    pub timeline: u32,
    /// False when `pg_rewind` found nothing to undo (a node stopped
    /// cleanly, whose followers had received everything).
    pub rewound: bool,
    /// Where its history left the leader's ("servers diverged at WAL
    /// location …"): what it held past this point was thrown away.
    #[serde(serialize_with = "ser_opt_lsn")]
    pub diverged_at: Option<PgLsn>,
    /// Its replay delay now.
    pub delay_ms: u64,
    /// Where that delay came from.
    pub delay_from: DelayFrom,
    /// The leader's `synchronous_standby_names` after the rejoin
    /// (synchronous mode only).
    pub synchronous_standby_names: Option<String>,
    /// How long each step took.
    pub timings: RejoinTimings,
}

/// Brings a stopped node (a failed former leader, or a follower that cannot
/// follow the new timeline) back as a follower of the leader:
/// `pg_rewind`, standby settings, start, wait until it streams. Each step
/// is a method of `Rejoin`, in this order.
///
/// Errors: an unknown node, the leader itself, a node that is running
/// ([`ClusterError::NotStopped`]), a leader that does not answer
/// ([`ClusterError::LeaderDown`]), `pg_rewind` failing
/// ([`ClusterError::RewindFailed`], with the tail of its output), or the
/// node not streaming in time ([`ClusterError::NotStreaming`]).
pub async fn rejoin(
    dir: &Path,
    name: &str,
    opts: &RejoinOptions,
) -> Result<RejoinReport, ClusterError> {
    let t0 = Instant::now();
    let mut run = Rejoin::load(dir, name)?;
    let client = run.connect_leader().await?;
    remove_stale_locks(&run.info, &run.node);
    let (checkpointed, checkpoint_t) = timed(run.checkpoint(&client)).await;
    checkpointed?;
    create_slot(&client, &run.leader.name, &slot_name(&run.node.name)).await?;
    let (rewound, rewind_t) = timed(run.rewind()).await;
    let (rewound, diverged_at) = rewound?;
    let (delay, delay_from) = run.write_standby_settings(opts.delay)?;
    let (pid, start_t) = timed(start(
        &run.user,
        &run.info.pg_bin,
        &run.node.data_dir,
        &run.node.log,
        &run.node.name,
    ))
    .await;
    let pid = pid?;
    let delay_ms = delay.as_millis() as u64;
    run.record(pid, delay_ms)?;
    let (tli, streaming_t) = timed(run.wait_streaming(&client, opts.wait_streaming)).await;
    let tli = tli?;
    let sync_names = run.add_sync_standby(&client).await?;

    Ok(RejoinReport {
        name: run.node.name.clone(),
        leader: run.leader.name.clone(),
        url: run.node.url.clone(),
        pid,
        timeline: tli,
        rewound,
        diverged_at,
        delay_ms,
        delay_from,
        synchronous_standby_names: sync_names,
        timings: RejoinTimings {
            checkpoint: checkpoint_t,
            rewind: rewind_t,
            start: start_t,
            streaming: streaming_t,
            total: t0.elapsed(),
        },
    })
}

/// A rejoin under way: the cluster as loaded, the node coming back and the
/// leader it will follow. Its methods are the steps of [`rejoin()`].
struct Rejoin {
    info: ClusterInfo,
    repl: ReplicationInfo,
    user: OsUser,
    /// The stopped node coming back.
    node: NodeInfo,
    /// The leader it will follow.
    leader: NodeInfo,
}

impl Rejoin {
    /// The cluster in `dir` and its node `name`, which must be stopped and
    /// not the leader.
    fn load(dir: &Path, name: &str) -> Result<Self, ClusterError> {
        let info = ClusterInfo::load(dir)?;
        let repl = ReplicationInfo::load(dir)?;
        let user = OsUser::resolve(Some(&info.os_user))?;
        let node = info.node(name)?.clone();
        if node.role == NodeRole::Leader {
            return Err(ClusterError::BadArgument(format!(
                "{name} is the leader; rejoin brings a stopped node back as its follower \
                 (fail over first to replace it)"
            )));
        }
        if let Some(pid) = postmaster_pid(&node.data_dir).filter(|&p| is_alive(p)) {
            return Err(ClusterError::NotStopped {
                node: node.name.clone(),
                pid,
                data_dir: node.data_dir.clone(),
            });
        }
        let leader = info.leader().clone();
        Ok(Rejoin {
            info,
            repl,
            user,
            node,
            leader,
        })
    }

    /// A connection to the leader, which must answer and be out of
    /// recovery.
    async fn connect_leader(&self) -> Result<tokio_postgres::Client, ClusterError> {
        let down = |detail: String| ClusterError::LeaderDown {
            node: self.leader.name.clone(),
            detail,
        };
        let client = connect(&admin_url(self.leader.port), &self.leader.name)
            .await
            .map_err(|e| down(e.to_string()))?;
        let in_recovery: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(|e| down(e.to_string()))?
            .get(0);
        if in_recovery {
            return Err(down("it is in recovery".into()));
        }
        Ok(client)
    }

    /// Checkpoint: `CHECKPOINT` on the leader. `pg_rewind` reads the
    /// source's timeline from its control file, which a just-promoted
    /// server updates only at its first checkpoint: without this it may
    /// say "no rewind required" for a node that diverged.
    async fn checkpoint(&self, client: &tokio_postgres::Client) -> Result<(), ClusterError> {
        client
            .batch_execute("CHECKPOINT")
            .await
            .map_err(sql_error(&self.leader.name))
    }

    /// Rewind: `pg_rewind` the node from the leader. Returns whether it
    /// undid anything, and where the two histories diverged.
    async fn rewind(&self) -> Result<(bool, Option<PgLsn>), ClusterError> {
        let rewind_bin = self.info.pg_bin.join("pg_rewind");
        let source = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres application_name=ryw-rewind",
            self.leader.port
        );
        let out = run(
            self.user
                .command(&rewind_bin)
                .arg("--target-pgdata")
                .arg(&self.node.data_dir)
                .arg("--source-server")
                .arg(&source),
            "pg_rewind",
        )
        .await
        .map_err(|e| match e {
            ClusterError::Command { status, output, .. } => ClusterError::RewindFailed {
                node: self.node.name.clone(),
                status,
                tail: tail(&output, 15),
            },
            other => other,
        })?;
        Ok((!out.contains("no rewind required"), parse_diverged(&out)))
    }

    /// Standby settings: `pg_rewind` copied the leader's
    /// `postgresql.auto.conf` (its port, its name), so the node's own are
    /// written again, with its replay delay; its stale slots removed;
    /// `standby.signal`. Returns the delay and where it came from.
    fn write_standby_settings(
        &self,
        given: Option<Duration>,
    ) -> Result<(Duration, DelayFrom), ClusterError> {
        let node = &self.node;
        let (delay, delay_from) = match (given, node.delay_ms) {
            (Some(d), _) => (d, DelayFrom::Given),
            (None, Some(ms)) => (Duration::from_millis(ms), DelayFrom::Recorded),
            (None, None) => (Duration::ZERO, DelayFrom::FormerLeader),
        };
        set_auto_conf(
            &self.user,
            &node.data_dir,
            &conf::standby_settings(
                &node.name,
                node.port,
                &conf::socket_dir(&self.info.dir),
                self.leader.port,
                delay,
            ),
            true,
        )?;
        clear_slots(&node.data_dir)?;
        let signal = node.data_dir.join("standby.signal");
        conf::write_as(&self.user, &signal, "")?;
        let _ = std::fs::remove_file(node.data_dir.join("recovery.signal"));
        Ok((delay, delay_from))
    }

    /// Record: the node is a follower again in `cluster.json`, with its new
    /// pid and delay.
    fn record(&mut self, pid: i32, delay_ms: u64) -> Result<(), ClusterError> {
        if let Some(n) = self
            .info
            .nodes
            .iter_mut()
            .find(|n| n.name == self.node.name)
        {
            n.role = NodeRole::Follower;
            n.pid = pid;
            n.delay_ms = Some(delay_ms);
        }
        self.info.save()
    }

    /// Streaming: waits until the node streams from the leader on its
    /// current timeline; not by `max` is an error with its log's tail.
    /// Returns the timeline.
    async fn wait_streaming(
        &self,
        client: &tokio_postgres::Client,
        max: Duration,
    ) -> Result<u32, ClusterError> {
        let tli = timeline::current(client)
            .await
            .map_err(sql_error(&self.leader.name))?;
        if wait_following(&self.node, self.leader.port, tli, max)
            .await
            .is_none()
        {
            return Err(ClusterError::NotStreaming {
                node: self.node.name.clone(),
                secs: max.as_secs(),
                log: self.node.log.clone(),
                tail: log_tail(&self.node.log, 15),
            });
        }
        Ok(tli)
    }

    /// In synchronous mode, every follower (this one included) in the
    /// leader's `synchronous_standby_names`, which it returns.
    async fn add_sync_standby(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<Option<String>, ClusterError> {
        if !self.repl.sync {
            return Ok(None);
        }
        let standbys: Vec<&str> = self.info.followers().map(|n| n.name.as_str()).collect();
        Ok(Some(
            set_sync_standbys(client, &self.leader.name, &standbys).await?,
        ))
    }
}

/// Removes the node's own replication slots: it is a standby now, and a
/// slot nobody uses would hold WAL back (`pg_rewind` leaves them when it
/// has nothing to rewind).
fn clear_slots(data: &Path) -> Result<(), ClusterError> {
    let dir = data.join("pg_replslot");
    for entry in std::fs::read_dir(&dir)
        .map_err(ClusterError::io("reading", &dir))?
        .flatten()
    {
        let p = entry.path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p).map_err(ClusterError::io("removing", &p))?;
        }
    }
    Ok(())
}

/// `servers diverged at WAL location 0/4027AF0 on timeline 1`.
fn parse_diverged(out: &str) -> Option<PgLsn> {
    let rest = &out[out.find("diverged at WAL location ")? + 25..];
    rest.split_whitespace().next()?.parse().ok()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_divergence_point_is_read_from_pg_rewind_output() {
        let out = "pg_rewind: servers diverged at WAL location 0/4027AF0 on timeline 1\n\
                   pg_rewind: rewinding from last common checkpoint at 0/3000060 on timeline 1\n";
        assert_eq!(parse_diverged(out), Some(PgLsn::from(0x4027AF0)));
        assert_eq!(parse_diverged("pg_rewind: no rewind required"), None);
    }
}
