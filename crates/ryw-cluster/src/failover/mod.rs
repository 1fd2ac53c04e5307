//! `ryw cluster failover` and `ryw cluster rejoin`: what an operator (or
//! Patroni) does when the leader dies, with real servers.
//!
//! **Failover**: check the followers before touching anything; stop the
//! leader (`pg_ctl stop -m fast`, or SIGKILL as a crash); promote the
//! follower that received the most WAL (`pg_last_wal_receive_lsn()`, as
//! Patroni chooses) or the one named; re-point the other followers at it
//! (`primary_conninfo` + `primary_slot_name` by `ALTER SYSTEM` and a reload;
//! they follow the new timeline because `recovery_target_timeline` is
//! `latest`), each with a slot on the new leader; record the new roles and
//! timeline. In synchronous mode the new leader's
//! `synchronous_standby_names` is set *before* it is promoted, so no commit
//! on the new timeline is acknowledged before a follower flushed it.
//!
//! **Rejoin**: `CHECKPOINT` on the leader (a just-promoted server's control
//! file still names the old timeline until its first checkpoint, and
//! `pg_rewind` reads it there), `pg_rewind` the stopped node from the
//! leader, write its standby settings (`pg_rewind` copied the leader's
//! `postgresql.auto.conf`), drop its stale slots, start it as a standby and
//! wait until it streams.
//!
//! Each step is a function of its own, named as the diagram in
//! `docs/architecture.md` ("Failover and rejoin") names it: `Failover`'s
//! `probe_followers`, `stop_leader`, `choose`, `promote`, `record`,
//! `repoint_followers`, then `wait_streaming` (here); `Rejoin`'s
//! `connect_leader`, `checkpoint`, `rewind`, `write_standby_settings`,
//! `record`, `wait_streaming`, `add_sync_standby` (`rejoin.rs`). What
//! both ask of a single node (probe it, wait for its promotion or its
//! streaming, give it a slot, point it at a leader) is in `node.rs`.
//!
//! Everything is async and never blocks the runtime for long (processes
//! through `tokio::process`, stops in `spawn_blocking`), so tests can fail
//! over under load.

mod node;
mod rejoin;

pub use rejoin::{DelayFrom, RejoinOptions, RejoinReport, RejoinTimings, rejoin};

use crate::ClusterError;
use crate::conf::slot_name;
use crate::info::{ClusterInfo, FailoverRecord, NodeInfo, NodeRole, ReplicationInfo};
use crate::ops::{StopMode, stop_node_async};
use crate::proc::{admin_url, connect};
use crate::runas::OsUser;
use crate::timeline::{self, ser_lsn, ser_opt_lsn};
use crate::up::set_sync_standbys;
use futures_util::future::join_all;
use node::{Probe, create_slot, probe, repoint, running, wait_following, wait_promoted};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_postgres::types::PgLsn;

/// How to fail over.
#[derive(Debug, Clone)]
pub struct FailoverOptions {
    /// The follower to promote (a node name). `None`: the alive follower
    /// that received the most WAL; ties go to the smaller replay delay, then
    /// to the earlier node.
    pub to: Option<String>,
    /// SIGKILL the leader and its children (a crash) instead of a fast
    /// shutdown. A fast shutdown sends the followers everything, its
    /// shutdown checkpoint included; a kill loses what they had not
    /// received.
    pub kill: bool,
    /// How long to wait for the re-pointed followers to stream from the new
    /// leader on its timeline before returning (`ZERO`: do not wait). Not
    /// streaming by then is reported, not an error.
    pub wait_followers: Duration,
}

impl Default for FailoverOptions {
    fn default() -> Self {
        FailoverOptions {
            to: None,
            kill: false,
            wait_followers: Duration::from_secs(10),
        }
    }
}

impl FailoverOptions {
    /// A crash: SIGKILL the leader, promote the follower with the most WAL.
    pub fn kill() -> Self {
        FailoverOptions {
            kill: true,
            ..Self::default()
        }
    }

    /// Promote this follower.
    pub fn to(name: &str) -> Self {
        FailoverOptions {
            to: Some(name.to_string()),
            ..Self::default()
        }
    }
}

/// How the old leader was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopKind {
    /// `pg_ctl stop -m fast`.
    Fast,
    /// SIGKILL (`--kill`).
    Killed,
    /// It was not running (it had crashed, or was killed before).
    AlreadyDown,
}

/// Why the promoted follower was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChosenBecause {
    /// `--to` named it.
    Named,
    /// It had received the most WAL of the alive followers.
    MostWal,
    /// It was already out of recovery and `--to` named it: the failover
    /// finished one that had been started before.
    AlreadyPromoted,
}

/// A follower as the failover saw it when choosing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// Node name.
    pub name: String,
    /// Running and answering.
    pub alive: bool,
    /// Still a standby.
    pub in_recovery: bool,
    /// The most WAL it has: `GREATEST(pg_last_wal_receive_lsn(),
    /// pg_last_wal_replay_lsn())`, or its current LSN when already
    /// promoted.
    #[serde(serialize_with = "ser_opt_lsn")]
    pub received: Option<PgLsn>,
    /// Its replay delay in milliseconds.
    pub delay_ms: Option<u64>,
}

/// A follower the failover pointed at the new leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepointedFollower {
    /// Node name.
    pub name: String,
    /// Running: re-pointed live (`ALTER SYSTEM` + reload). Not running: its
    /// `postgresql.auto.conf` was rewritten, so it follows the new leader
    /// when started (if it holds WAL past the switch point it cannot, and
    /// needs `rejoin`).
    pub alive: bool,
    /// Streaming from the new leader on its timeline when the failover
    /// returned.
    pub streaming: bool,
    /// How long after the re-pointing it streamed.
    #[serde(rename = "streaming_ms", serialize_with = "ser_opt_ms")]
    pub streaming_after: Option<Duration>,
}

/// How long each step took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FailoverTimings {
    /// Stopping (or killing) the old leader.
    #[serde(rename = "stop_ms", serialize_with = "ser_ms")]
    pub stop: Duration,
    /// Asking every follower how much WAL it has, after the stop.
    #[serde(rename = "choose_ms", serialize_with = "ser_ms")]
    pub choose: Duration,
    /// From `pg_promote()` until `pg_is_in_recovery()` is false: the new
    /// leader accepts writes (in synchronous mode a commit still waits for
    /// a re-pointed follower).
    #[serde(rename = "promote_ms", serialize_with = "ser_ms")]
    pub promote: Duration,
    /// Slots on the new leader and every follower re-pointed.
    #[serde(rename = "repoint_ms", serialize_with = "ser_ms")]
    pub repoint: Duration,
    /// From the re-pointing until every alive follower streamed (or the
    /// wait ended).
    #[serde(rename = "followers_ms", serialize_with = "ser_ms")]
    pub followers: Duration,
    /// The whole failover.
    #[serde(rename = "total_ms", serialize_with = "ser_ms")]
    pub total: Duration,
}

/// What a failover did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailoverReport {
    /// The leader that was stopped; now [`NodeRole::Failed`] in `cluster.json`.
    pub old_leader: String,
    /// How it was stopped.
    pub stop: StopKind,
    /// The promoted follower, now the leader.
    pub new_leader: String,
    /// Its application database URL.
    pub new_leader_url: String,
    /// Why it was chosen.
    pub chosen_because: ChosenBecause,
    /// Every follower as it was when the choice was made.
    pub candidates: Vec<Candidate>,
    /// The new leader's timeline.
    pub timeline: u32,
    /// Where it begins: the previous timeline's end in the new leader's
    /// history file. WAL of the previous timeline at or past this point
    /// (written by the old leader, received by no promoted follower) is
    /// not in the new history.
    #[serde(serialize_with = "ser_lsn")]
    pub switch_lsn: PgLsn,
    /// `synchronous_standby_names` of the new leader in synchronous mode
    /// (empty when no follower is left: it commits asynchronously until a
    /// node rejoins); `None` in asynchronous mode.
    pub synchronous_standby_names: Option<String>,
    /// The other followers, re-pointed at the new leader.
    pub followers: Vec<RepointedFollower>,
    /// Things the operator should know (a follower left down, no
    /// synchronous standby left, …).
    pub notes: Vec<String>,
    /// How long each step took.
    pub timings: FailoverTimings,
}

/// Fails the cluster in `dir` over to a follower: stops the leader,
/// promotes a follower, re-points the others, records it. See the module
/// docs for the steps; each is a method of `Failover`, in this order.
///
/// Errors before anything is stopped: an unknown `--to`
/// ([`ClusterError::NoSuchNode`]), one that is not a follower
/// ([`ClusterError::NotAFollower`]) or cannot be promoted
/// ([`ClusterError::NotPromotable`]: down, or not streaming while the
/// leader is up), no follower alive ([`ClusterError::NoFollowerAlive`]),
/// and a follower already out of recovery ([`ClusterError::AlreadyPromoted`]
/// — "already failed over" — unless `to` names it, which finishes that
/// failover).
pub async fn failover(dir: &Path, opts: &FailoverOptions) -> Result<FailoverReport, ClusterError> {
    let t0 = Instant::now();
    let mut run = Failover::load(dir)?;
    let looked = run.probe_followers(opts.to.as_deref()).await?;
    let (stop, stop_t) = timed(run.stop_leader(looked.leader_running, opts.kill)).await;
    let stop = stop?;
    let (chosen, choose_t) = timed(run.choose(looked.named)).await;
    let chosen = chosen?;
    let (promoted, promote_t) = timed(run.promote(&chosen)).await;
    let (client, sync_names) = promoted?;
    let (tli, switch_lsn) = run.record(&chosen.node, &client).await?;
    let (repointed, repoint_t) =
        timed(run.repoint_followers(&client, &chosen, tli, switch_lsn)).await;
    let repointed = repointed?;
    let (streamed, followers_t) = timed(wait_streaming(
        &chosen.others,
        &repointed,
        chosen.node.port,
        tli,
        opts.wait_followers,
    ))
    .await;
    let followers = run.followers_report(&chosen, &repointed, streamed, opts.wait_followers);
    run.notes.push(format!(
        "{} is stopped and marked failed; bring it back as a follower with \
         `ryw cluster rejoin {}`",
        run.old.name, run.old.name
    ));

    Ok(FailoverReport {
        old_leader: run.old.name.clone(),
        stop,
        new_leader: chosen.node.name.clone(),
        new_leader_url: chosen.node.url.clone(),
        chosen_because: chosen.why,
        candidates: chosen.candidates,
        timeline: tli,
        switch_lsn,
        synchronous_standby_names: sync_names,
        followers,
        notes: run.notes,
        timings: FailoverTimings {
            stop: stop_t,
            choose: choose_t,
            promote: promote_t,
            repoint: repoint_t,
            followers: followers_t,
            total: t0.elapsed(),
        },
    })
}

/// Runs `step` and says how long it took.
async fn timed<T>(step: impl std::future::Future<Output = T>) -> (T, Duration) {
    let t = Instant::now();
    let out = step.await;
    (out, t.elapsed())
}

/// A failover under way: the cluster as it was loaded, and what the
/// operator will be told. Its methods are the steps of [`failover()`].
struct Failover<'a> {
    dir: &'a Path,
    info: ClusterInfo,
    repl: ReplicationInfo,
    user: OsUser,
    /// The leader being replaced.
    old: NodeInfo,
    /// Every follower, in `cluster.json`'s order.
    followers: Vec<NodeInfo>,
    /// Things the operator should know, in the order they were found.
    notes: Vec<String>,
}

/// What the probe before the stop found.
struct Looked {
    /// The old leader's postmaster was running.
    leader_running: bool,
    /// The follower `--to` named, checked.
    named: Option<NodeInfo>,
}

/// The follower chosen, why, and the others.
struct Chosen {
    /// The node to promote.
    node: NodeInfo,
    why: ChosenBecause,
    /// Every follower as it was after the stop, in `followers`' order.
    candidates: Vec<Candidate>,
    /// The followers that are not chosen, each with whether it answered
    /// after the stop.
    others: Vec<(NodeInfo, bool)>,
}

impl<'a> Failover<'a> {
    /// The cluster in `dir`, which must name a leader.
    fn load(dir: &'a Path) -> Result<Self, ClusterError> {
        let info = ClusterInfo::load(dir)?;
        let repl = ReplicationInfo::load(dir)?;
        let user = OsUser::resolve(Some(&info.os_user))?;
        let old = info.leader().clone();
        if old.role != NodeRole::Leader {
            return Err(ClusterError::BadArgument(format!(
                "{} names no leader; nothing to fail over",
                dir.join(crate::info::FILE).display()
            )));
        }
        let followers = info.followers().cloned().collect();
        Ok(Failover {
            dir,
            info,
            repl,
            user,
            old,
            followers,
            notes: Vec::new(),
        })
    }

    /// Probe: asks every follower what it is before anything is stopped,
    /// and refuses a failover that cannot go well.
    async fn probe_followers(&self, to: Option<&str>) -> Result<Looked, ClusterError> {
        let before = join_all(self.followers.iter().map(probe)).await;
        let leader_running = running(&self.old);
        if let Some((node, _)) = self
            .followers
            .iter()
            .zip(&before)
            .find(|(_, p)| p.alive && !p.in_recovery)
            && to != Some(node.name.as_str())
        {
            return Err(ClusterError::AlreadyPromoted {
                node: node.name.clone(),
                leader: self.old.name.clone(),
            });
        }
        let named = match to {
            Some(to) => Some(self.check_named(to, &before, leader_running)?),
            None => None,
        };
        if named.is_none() && !before.iter().any(|p| p.alive && p.in_recovery) {
            return Err(ClusterError::NoFollowerAlive {
                detail: format!(
                    "{}; nothing was stopped",
                    describe(&self.followers, &before)
                ),
            });
        }
        Ok(Looked {
            leader_running,
            named,
        })
    }

    /// The follower `--to` names, if it can be promoted: a follower that
    /// answers and, while the leader is up, streams from it.
    fn check_named(
        &self,
        to: &str,
        before: &[Probe],
        leader_running: bool,
    ) -> Result<NodeInfo, ClusterError> {
        let node = self.info.node(to)?.clone();
        if node.role != NodeRole::Follower {
            return Err(ClusterError::NotAFollower {
                node: node.name.clone(),
                role: format!("the {}", node.role),
                hint: "--to names a follower to promote".into(),
            });
        }
        let p = &before[self
            .followers
            .iter()
            .position(|f| f.name == node.name)
            .unwrap_or(0)];
        if !p.alive {
            return Err(ClusterError::NotPromotable {
                node: node.name.clone(),
                reason: if running(&node) {
                    "it does not answer".into()
                } else {
                    "it is not running".into()
                },
            });
        }
        if p.in_recovery && leader_running && !p.streaming_from(self.old.port) {
            return Err(ClusterError::NotPromotable {
                node: node.name.clone(),
                reason: format!(
                    "the leader is up and {} is not streaming from it (WAL receiver: {}); \
                     promoting it would lose what it has not received",
                    node.name,
                    p.status.as_deref().unwrap_or("none")
                ),
            });
        }
        Ok(node)
    }

    /// Stop: the old leader, by a fast shutdown or SIGKILL, unless it was
    /// not running.
    async fn stop_leader(
        &self,
        leader_running: bool,
        kill: bool,
    ) -> Result<StopKind, ClusterError> {
        if !leader_running {
            return Ok(StopKind::AlreadyDown);
        }
        let (mode, kind) = if kill {
            (StopMode::Kill, StopKind::Killed)
        } else {
            (StopMode::Fast, StopKind::Fast)
        };
        stop_node_async(&self.info, &self.old, mode).await?;
        Ok(kind)
    }

    /// Choose: probes again (after the stop, every follower has what it
    /// will ever get) and takes the named follower, or the one with the
    /// most WAL. Notes a follower that had more than the chosen one.
    async fn choose(&mut self, named: Option<NodeInfo>) -> Result<Chosen, ClusterError> {
        let after = join_all(self.followers.iter().map(probe)).await;
        let candidates: Vec<Candidate> = self
            .followers
            .iter()
            .zip(&after)
            .map(|(n, p)| Candidate {
                name: n.name.clone(),
                alive: p.alive,
                in_recovery: p.in_recovery,
                received: p.received,
                delay_ms: n.delay_ms,
            })
            .collect();
        let (node, why) = match named {
            Some(node) => {
                let c = candidates.iter().find(|c| c.name == node.name);
                match c {
                    Some(c) if c.alive && !c.in_recovery => (node, ChosenBecause::AlreadyPromoted),
                    Some(c) if c.alive => (node, ChosenBecause::Named),
                    _ => {
                        return Err(ClusterError::NotPromotable {
                            node: node.name.clone(),
                            reason: format!(
                                "it went down while {} was being stopped; the leader is stopped now",
                                self.old.name
                            ),
                        });
                    }
                }
            }
            None => {
                let name = choose(&candidates).ok_or_else(|| ClusterError::NoFollowerAlive {
                    detail: format!(
                        "{}; {} is stopped now",
                        describe(&self.followers, &after),
                        self.old.name
                    ),
                })?;
                (self.info.node(&name)?.clone(), ChosenBecause::MostWal)
            }
        };
        if let Some(note) = ahead_of(&candidates, &node.name) {
            self.notes.push(note);
        }
        let others = self
            .followers
            .iter()
            .zip(&candidates)
            .filter(|(f, _)| f.name != node.name)
            .map(|(f, c)| (f.clone(), c.alive))
            .collect();
        Ok(Chosen {
            node,
            why,
            candidates,
            others,
        })
    }

    /// Promote: in synchronous mode the chosen standby's
    /// `synchronous_standby_names` is set first (so no commit on the new
    /// timeline is acknowledged before a follower flushed it); then
    /// `pg_promote()`, and wait until it accepts writes. Returns its
    /// connection and, in synchronous mode, its standby list.
    async fn promote(
        &mut self,
        chosen: &Chosen,
    ) -> Result<(tokio_postgres::Client, Option<String>), ClusterError> {
        let node = &chosen.node;
        let client = connect(&admin_url(node.port), &node.name).await?;
        let sync_names = if self.repl.sync {
            let standbys: Vec<&str> = chosen.others.iter().map(|(o, _)| o.name.as_str()).collect();
            if standbys.is_empty() {
                self.notes.push(format!(
                    "no follower is left for synchronous replication: {} commits asynchronously \
                     until a node rejoins",
                    node.name
                ));
            } else if !chosen
                .candidates
                .iter()
                .any(|c| c.alive && standbys.contains(&c.name.as_str()))
            {
                self.notes.push(format!(
                    "every synchronous standby of {} is down: its commits wait until one of them \
                     streams again",
                    node.name
                ));
            }
            Some(set_sync_standbys(&client, &node.name, &standbys).await?)
        } else {
            None
        };
        if chosen.why != ChosenBecause::AlreadyPromoted {
            client
                .batch_execute("SELECT pg_promote(wait => false)")
                .await
                .map_err(sql_error(&node.name))?;
            wait_promoted(&client, node).await?;
        }
        Ok((client, sync_names))
    }

    /// Record: the new roles in `cluster.json`; the new timeline and where
    /// it begins (from the new leader's history file) in
    /// `replication.json`. Returns the timeline and its switch point.
    async fn record(
        &mut self,
        leader: &NodeInfo,
        client: &tokio_postgres::Client,
    ) -> Result<(u32, PgLsn), ClusterError> {
        self.info.set_role(&self.old.name, NodeRole::Failed);
        self.info.set_role(&leader.name, NodeRole::Leader);
        self.info.save()?;
        let sql = sql_error(&leader.name);
        let tli = timeline::current(client).await.map_err(&sql)?;
        let history = timeline::history(client, tli).await.map_err(&sql)?;
        let switch_lsn = timeline::switch_point(&history, tli).unwrap_or(PgLsn::from(0));
        self.repl.timeline = tli;
        self.repl.failovers.push(FailoverRecord {
            timeline: tli,
            switch_lsn: switch_lsn.to_string(),
            from: self.old.name.clone(),
            to: leader.name.clone(),
            at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        });
        self.repl.save(self.dir)?;
        Ok((tli, switch_lsn))
    }

    /// Repoint: a slot for each other follower on the new leader, then
    /// each pointed at it (live when it answered, else in its
    /// configuration); the new leader's own standby settings cleared.
    /// Returns, per other follower, whether it was re-pointed live.
    async fn repoint_followers(
        &mut self,
        client: &tokio_postgres::Client,
        chosen: &Chosen,
        tli: u32,
        switch_lsn: PgLsn,
    ) -> Result<Vec<bool>, ClusterError> {
        let leader = &chosen.node;
        for (o, _) in &chosen.others {
            create_slot(client, &leader.name, &slot_name(&o.name)).await?;
        }
        let repoints = chosen
            .others
            .iter()
            .map(|(o, alive)| repoint(&self.user, o, leader.port, *alive));
        let repointed: Vec<bool> = join_all(repoints)
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        for ((o, _), live) in chosen.others.iter().zip(&repointed) {
            if !live {
                self.notes.push(format!(
                    "{} is down: its configuration now follows {}; once started it streams on \
                     timeline {tli}, unless it holds WAL past {switch_lsn} (then `ryw cluster rejoin {}`)",
                    o.name, leader.name, o.name
                ));
            }
        }
        // The new leader's own standby settings are void now; clear them so
        // its configuration does not mislead a reader.
        let _ = client
            .batch_execute("ALTER SYSTEM RESET primary_conninfo")
            .await;
        let _ = client
            .batch_execute("ALTER SYSTEM RESET primary_slot_name")
            .await;
        let _ = client.batch_execute("SELECT pg_reload_conf()").await;
        Ok(repointed)
    }

    /// The re-pointed followers as the report gives them, noting each
    /// alive one that did not stream in time.
    fn followers_report(
        &mut self,
        chosen: &Chosen,
        repointed: &[bool],
        streamed: Vec<Option<Duration>>,
        waited: Duration,
    ) -> Vec<RepointedFollower> {
        let report: Vec<RepointedFollower> = chosen
            .others
            .iter()
            .zip(repointed)
            .zip(streamed)
            .map(|(((o, _), &live), s)| RepointedFollower {
                name: o.name.clone(),
                alive: live,
                streaming: s.is_some(),
                streaming_after: s,
            })
            .collect();
        for (f, (o, _)) in report.iter().zip(&chosen.others) {
            if f.alive && !f.streaming && !waited.is_zero() {
                self.notes.push(format!(
                    "{} did not stream from {} within {} s; see {}",
                    f.name,
                    chosen.node.name,
                    waited.as_secs(),
                    o.log.display()
                ));
            }
        }
        report
    }
}

/// Waits for the followers re-pointed live to stream from the leader on
/// `leader_port` on timeline `tli`, all at once, each at most `max`
/// (`ZERO`: not at all). Per follower, how long it took.
async fn wait_streaming(
    others: &[(NodeInfo, bool)],
    repointed: &[bool],
    leader_port: u16,
    tli: u32,
    max: Duration,
) -> Vec<Option<Duration>> {
    let waits = others
        .iter()
        .zip(repointed)
        .map(|((o, _), &live)| async move {
            if !live || max.is_zero() {
                return None;
            }
            wait_following(o, leader_port, tli, max).await
        });
    join_all(waits).await
}

/// A note when an alive standby had received more WAL than `chosen`: what
/// lies between is not in the new history.
fn ahead_of(candidates: &[Candidate], chosen: &str) -> Option<String> {
    let chosen_lsn = candidates
        .iter()
        .find(|c| c.name == chosen)
        .and_then(|c| c.received);
    let ahead = candidates
        .iter()
        .filter(|c| c.alive && c.in_recovery && c.received > chosen_lsn)
        .max_by_key(|c| c.received)?;
    Some(format!(
        "{} had received more WAL than {} ({} > {}): what lies between is not in the new \
         history (acknowledged writes included, even in synchronous mode)",
        ahead.name,
        chosen,
        ahead.received.map(|l| l.to_string()).unwrap_or_default(),
        chosen_lsn.map(|l| l.to_string()).unwrap_or_default()
    ))
}

/// Maps a SQL error on `node` to [`ClusterError::Sql`].
fn sql_error(node: &str) -> impl Fn(tokio_postgres::Error) -> ClusterError + '_ {
    move |source| ClusterError::Sql {
        node: node.into(),
        source,
    }
}

/// The alive standby with the most WAL; ties go to the smaller replay
/// delay (it has less to replay), then to the earlier node.
fn choose(candidates: &[Candidate]) -> Option<String> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.alive && c.in_recovery)
        .max_by_key(|(i, c)| {
            (
                c.received.map(u64::from),
                std::cmp::Reverse(c.delay_ms.unwrap_or(0)),
                std::cmp::Reverse(*i),
            )
        })
        .map(|(_, c)| c.name.clone())
}

fn describe(followers: &[NodeInfo], probes: &[Probe]) -> String {
    if followers.is_empty() {
        return "the cluster has no follower".into();
    }
    followers
        .iter()
        .zip(probes)
        .map(|(f, p)| {
            let state = if !p.alive {
                if running(f) { "not answering" } else { "down" }
            } else if p.in_recovery {
                "alive"
            } else {
                "not in recovery"
            };
            format!("{} {state}", f.name)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 10_000.0).round() / 10.0)
}

fn ser_opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_ms(d, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, alive: bool, rec: bool, lsn: Option<u64>, delay: u64) -> Candidate {
        Candidate {
            name: name.into(),
            alive,
            in_recovery: rec,
            received: lsn.map(PgLsn::from),
            delay_ms: Some(delay),
        }
    }

    #[test]
    fn the_follower_with_the_most_wal_is_chosen_among_the_alive_ones() {
        let cs = [
            c("follower1", true, true, Some(100), 0),
            c("follower2", true, true, Some(300), 400),
            c("follower3", false, false, None, 0),
            c("follower4", true, true, Some(200), 0),
        ];
        assert_eq!(choose(&cs).as_deref(), Some("follower2"));
        let dead_best = [
            c("follower1", true, true, Some(100), 0),
            c("follower2", false, true, Some(300), 0),
        ];
        assert_eq!(choose(&dead_best).as_deref(), Some("follower1"));
        assert_eq!(choose(&[c("f", false, false, None, 0)]), None);
    }

    #[test]
    fn a_tie_goes_to_the_smaller_delay_then_the_earlier_node() {
        let cs = [
            c("follower1", true, true, Some(100), 400),
            c("follower2", true, true, Some(100), 100),
            c("follower3", true, true, Some(100), 100),
        ];
        assert_eq!(choose(&cs).as_deref(), Some("follower2"));
    }

    #[test]
    fn durations_serialize_as_milliseconds() {
        let t = FailoverTimings {
            stop: Duration::from_micros(12_345),
            choose: Duration::ZERO,
            promote: Duration::from_millis(100),
            repoint: Duration::ZERO,
            followers: Duration::ZERO,
            total: Duration::from_secs(1),
        };
        let v = serde_json::to_value(t).unwrap();
        assert_eq!(v["stop_ms"], 12.3);
        assert_eq!(v["promote_ms"], 100.0);
        assert_eq!(v["total_ms"], 1000.0);
    }
}
