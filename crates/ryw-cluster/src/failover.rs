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
//! `repoint_followers`, then `wait_streaming`; `Rejoin`'s
//! `connect_leader`, `checkpoint`, `rewind`, `write_standby_settings`,
//! `record`, `wait_streaming`, `add_sync_standby`.
//!
//! Everything is async and never blocks the runtime for long (processes
//! through `tokio::process`, stops in `spawn_blocking`), so tests can fail
//! over under load.

use crate::ClusterError;
use crate::conf::{self, primary_conninfo, set_auto_conf, slot_name};
use crate::info::{ClusterInfo, FailoverRecord, NodeInfo, ReplicationInfo, Role};
use crate::ops::{StopMode, remove_stale_locks, stop_node_async};
use crate::proc::{admin_url, connect, is_alive, log_tail, postmaster_pid, run, start};
use crate::runas::OsUser;
use crate::timeline::{self, ser_lsn, ser_opt_lsn};
use crate::up::set_sync_standbys;
use futures_util::future::join_all;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_postgres::types::PgLsn;

/// How long a promotion may take before it is an error.
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(30);

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
pub enum Choice {
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
    /// The leader that was stopped; now [`Role::Failed`] in `cluster.json`.
    pub old_leader: String,
    /// How it was stopped.
    pub stop: StopKind,
    /// The promoted follower, now the leader.
    pub new_leader: String,
    /// Its application database URL.
    pub new_leader_url: String,
    /// Why it was chosen.
    pub chosen_because: Choice,
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
/// docs for the steps; each is a method of [`Failover`], in this order.
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
    why: Choice,
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
        if old.role != Role::Leader {
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
        if node.role != Role::Follower {
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
                    Some(c) if c.alive && !c.in_recovery => (node, Choice::AlreadyPromoted),
                    Some(c) if c.alive => (node, Choice::Named),
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
                (self.info.node(&name)?.clone(), Choice::MostWal)
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
        if chosen.why != Choice::AlreadyPromoted {
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
        self.info.set_role(&self.old.name, Role::Failed);
        self.info.set_role(&leader.name, Role::Leader);
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

fn running(node: &NodeInfo) -> bool {
    postmaster_pid(&node.data_dir).is_some_and(is_alive)
}

/// What a node says about itself, for choosing and for checks.
#[derive(Debug, Clone, Default)]
struct Probe {
    alive: bool,
    in_recovery: bool,
    received: Option<PgLsn>,
    status: Option<String>,
    sender_port: Option<u16>,
    received_tli: Option<u32>,
}

impl Probe {
    fn streaming_from(&self, port: u16) -> bool {
        self.status.as_deref() == Some("streaming") && self.sender_port == Some(port)
    }
}

async fn probe(node: &NodeInfo) -> Probe {
    if !running(node) {
        return Probe::default();
    }
    let Ok(client) = connect(&admin_url(node.port), &node.name).await else {
        return Probe::default();
    };
    probe_with(&client).await.unwrap_or_default()
}

async fn probe_with(client: &tokio_postgres::Client) -> Result<Probe, tokio_postgres::Error> {
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
async fn wait_promoted(
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
async fn create_slot(
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
async fn repoint(
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
async fn wait_following(
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
/// is a method of [`Rejoin`], in this order.
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
        if node.role == Role::Leader {
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
            n.role = Role::Follower;
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
    fn the_divergence_point_is_read_from_pg_rewind_output() {
        let out = "pg_rewind: servers diverged at WAL location 0/4027AF0 on timeline 1\n\
                   pg_rewind: rewinding from last common checkpoint at 0/3000060 on timeline 1\n";
        assert_eq!(parse_diverged(out), Some(PgLsn::from(0x4027AF0)));
        assert_eq!(parse_diverged("pg_rewind: no rewind required"), None);
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
