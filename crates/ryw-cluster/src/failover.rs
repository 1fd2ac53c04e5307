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
/// docs for the steps.
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
    let mut info = ClusterInfo::load(dir)?;
    let mut repl = ReplicationInfo::load(dir)?;
    let user = OsUser::resolve(Some(&info.os_user))?;
    let old = info.leader().clone();
    if old.role != Role::Leader {
        return Err(ClusterError::BadArgument(format!(
            "{} names no leader; nothing to fail over",
            dir.join(crate::info::FILE).display()
        )));
    }
    let followers: Vec<NodeInfo> = info.followers().cloned().collect();

    // 1. Look before stopping anything.
    let before = join_all(followers.iter().map(probe)).await;
    let leader_running = running(&old);
    if let Some((node, _)) = followers
        .iter()
        .zip(&before)
        .find(|(_, p)| p.alive && !p.in_recovery)
        && opts.to.as_deref() != Some(node.name.as_str())
    {
        return Err(ClusterError::AlreadyPromoted {
            node: node.name.clone(),
            leader: old.name.clone(),
        });
    }
    let named = match &opts.to {
        Some(to) => {
            let node = info.node(to)?.clone();
            if node.role != Role::Follower {
                return Err(ClusterError::NotAFollower {
                    node: node.name.clone(),
                    role: format!("the {}", node.role),
                    hint: "--to names a follower to promote".into(),
                });
            }
            let p = &before[followers
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
            if p.in_recovery && leader_running && !p.streaming_from(old.port) {
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
            Some(node)
        }
        None => None,
    };
    if named.is_none() && !before.iter().any(|p| p.alive && p.in_recovery) {
        return Err(ClusterError::NoFollowerAlive {
            detail: format!("{}; nothing was stopped", describe(&followers, &before)),
        });
    }

    // 2. Stop the leader.
    let t = Instant::now();
    let stop = if !leader_running {
        StopKind::AlreadyDown
    } else if opts.kill {
        stop_node_async(&info, &old, StopMode::Kill).await?;
        StopKind::Killed
    } else {
        stop_node_async(&info, &old, StopMode::Fast).await?;
        StopKind::Fast
    };
    let stop_t = t.elapsed();

    // 3. Choose: after the stop, every follower has what it will ever get.
    let t = Instant::now();
    let after = join_all(followers.iter().map(probe)).await;
    let candidates: Vec<Candidate> = followers
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
    let (chosen, why) = match named {
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
                            old.name
                        ),
                    });
                }
            }
        }
        None => {
            let name = choose(&candidates).ok_or_else(|| ClusterError::NoFollowerAlive {
                detail: format!(
                    "{}; {} is stopped now",
                    describe(&followers, &after),
                    old.name
                ),
            })?;
            (info.node(&name)?.clone(), Choice::MostWal)
        }
    };
    let choose_t = t.elapsed();
    let mut notes = Vec::new();
    let chosen_lsn = candidates
        .iter()
        .find(|c| c.name == chosen.name)
        .and_then(|c| c.received);
    if let Some(ahead) = candidates
        .iter()
        .filter(|c| c.alive && c.in_recovery && c.received > chosen_lsn)
        .max_by_key(|c| c.received)
    {
        notes.push(format!(
            "{} had received more WAL than {} ({} > {}): what lies between is not in the new \
             history (acknowledged writes included, even in synchronous mode)",
            ahead.name,
            chosen.name,
            ahead.received.map(|l| l.to_string()).unwrap_or_default(),
            chosen_lsn.map(|l| l.to_string()).unwrap_or_default()
        ));
    }

    // 4. Promote. In synchronous mode its standby list is set first.
    let t = Instant::now();
    let others: Vec<NodeInfo> = followers
        .iter()
        .filter(|f| f.name != chosen.name)
        .cloned()
        .collect();
    let client = connect(&admin_url(chosen.port), &chosen.name).await?;
    let sql = |source| ClusterError::Sql {
        node: chosen.name.clone(),
        source,
    };
    let sync_names = if repl.sync {
        let standbys: Vec<&str> = others.iter().map(|o| o.name.as_str()).collect();
        if standbys.is_empty() {
            notes.push(format!(
                "no follower is left for synchronous replication: {} commits asynchronously \
                 until a node rejoins",
                chosen.name
            ));
        } else if !candidates
            .iter()
            .any(|c| c.alive && standbys.contains(&c.name.as_str()))
        {
            notes.push(format!(
                "every synchronous standby of {} is down: its commits wait until one of them \
                 streams again",
                chosen.name
            ));
        }
        Some(set_sync_standbys(&client, &chosen.name, &standbys).await?)
    } else {
        None
    };
    if why != Choice::AlreadyPromoted {
        client
            .batch_execute("SELECT pg_promote(wait => false)")
            .await
            .map_err(sql)?;
        wait_promoted(&client, &chosen).await?;
    }
    let promote_t = t.elapsed();
    info.set_role(&old.name, Role::Failed);
    info.set_role(&chosen.name, Role::Leader);
    info.save()?;
    let tli = timeline::current(&client).await.map_err(sql)?;
    let history = timeline::history(&client, tli).await.map_err(sql)?;
    let switch_lsn = timeline::switch_point(&history, tli).unwrap_or(PgLsn::from(0));
    repl.timeline = tli;
    repl.failovers.push(FailoverRecord {
        timeline: tli,
        switch_lsn: switch_lsn.to_string(),
        from: old.name.clone(),
        to: chosen.name.clone(),
        at_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    });
    repl.save(dir)?;

    // 5. Slots on the new leader, then re-point the others at it.
    let t = Instant::now();
    for o in &others {
        create_slot(&client, &chosen.name, &slot_name(&o.name)).await?;
    }
    let alive: Vec<bool> = after.iter().map(|p| p.alive).collect();
    let repoints = others.iter().map(|o| {
        let was_alive = followers
            .iter()
            .position(|f| f.name == o.name)
            .map(|i| alive[i])
            .unwrap_or(false);
        repoint(&user, o, chosen.port, was_alive)
    });
    let repointed: Vec<bool> = join_all(repoints)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    for (o, live) in others.iter().zip(&repointed) {
        if !live {
            notes.push(format!(
                "{} is down: its configuration now follows {}; once started it streams on \
                 timeline {tli}, unless it holds WAL past {switch_lsn} (then `ryw cluster rejoin {}`)",
                o.name, chosen.name, o.name
            ));
        }
    }
    // The new leader's own standby settings are void now; clear them so its
    // configuration does not mislead a reader.
    let _ = client
        .batch_execute("ALTER SYSTEM RESET primary_conninfo")
        .await;
    let _ = client
        .batch_execute("ALTER SYSTEM RESET primary_slot_name")
        .await;
    let _ = client.batch_execute("SELECT pg_reload_conf()").await;
    let repoint_t = t.elapsed();

    // 6. Wait for the re-pointed followers to stream on the new timeline.
    let t = Instant::now();
    let waits = others.iter().zip(&repointed).map(|(o, &live)| {
        let deadline = opts.wait_followers;
        let leader_port = chosen.port;
        async move {
            if !live || deadline.is_zero() {
                return None;
            }
            wait_following(o, leader_port, tli, deadline).await
        }
    });
    let streamed = join_all(waits).await;
    let followers_t = t.elapsed();
    let followers_report: Vec<RepointedFollower> = others
        .iter()
        .zip(&repointed)
        .zip(streamed)
        .map(|((o, &live), s)| RepointedFollower {
            name: o.name.clone(),
            alive: live,
            streaming: s.is_some(),
            streaming_after: s,
        })
        .collect();
    for f in &followers_report {
        if f.alive && !f.streaming && !opts.wait_followers.is_zero() {
            let node = info.node(&f.name)?;
            notes.push(format!(
                "{} did not stream from {} within {} s; see {}",
                f.name,
                chosen.name,
                opts.wait_followers.as_secs(),
                node.log.display()
            ));
        }
    }
    notes.push(format!(
        "{} is stopped and marked failed; bring it back as a follower with \
         `ryw cluster rejoin {}`",
        old.name, old.name
    ));

    Ok(FailoverReport {
        old_leader: old.name.clone(),
        stop,
        new_leader: chosen.name.clone(),
        new_leader_url: chosen.url.clone(),
        chosen_because: why,
        candidates,
        timeline: tli,
        switch_lsn,
        synchronous_standby_names: sync_names,
        followers: followers_report,
        notes,
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
/// `pg_rewind`, standby settings, start, wait until it streams.
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
    let mut info = ClusterInfo::load(dir)?;
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
    let down = |detail: String| ClusterError::LeaderDown {
        node: leader.name.clone(),
        detail,
    };
    let client = connect(&admin_url(leader.port), &leader.name)
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
    let sql = |source| ClusterError::Sql {
        node: leader.name.clone(),
        source,
    };
    remove_stale_locks(&info, &node);

    // pg_rewind reads the source's timeline from its control file, which a
    // just-promoted server updates only at its first checkpoint: without
    // this it may say "no rewind required" for a node that diverged.
    let t = Instant::now();
    client.batch_execute("CHECKPOINT").await.map_err(sql)?;
    let checkpoint_t = t.elapsed();
    create_slot(&client, &leader.name, &slot_name(&node.name)).await?;

    let t = Instant::now();
    let rewind_bin = info.pg_bin.join("pg_rewind");
    let source = format!(
        "host=127.0.0.1 port={} user=postgres dbname=postgres application_name=ryw-rewind",
        leader.port
    );
    let out = run(
        user.command(&rewind_bin)
            .arg("--target-pgdata")
            .arg(&node.data_dir)
            .arg("--source-server")
            .arg(&source),
        "pg_rewind",
    )
    .await
    .map_err(|e| match e {
        ClusterError::Command { status, output, .. } => ClusterError::RewindFailed {
            node: node.name.clone(),
            status,
            tail: tail(&output, 15),
        },
        other => other,
    })?;
    let rewind_t = t.elapsed();
    let rewound = !out.contains("no rewind required");
    let diverged_at = parse_diverged(&out);

    // pg_rewind copied the leader's postgresql.auto.conf (its port, its
    // name): write this node's own standby settings.
    let (delay, delay_from) = match (opts.delay, node.delay_ms) {
        (Some(d), _) => (d, DelayFrom::Given),
        (None, Some(ms)) => (Duration::from_millis(ms), DelayFrom::Recorded),
        (None, None) => (Duration::ZERO, DelayFrom::FormerLeader),
    };
    set_auto_conf(
        &user,
        &node.data_dir,
        &conf::standby_settings(
            &node.name,
            node.port,
            &conf::socket_dir(&info.dir),
            leader.port,
            delay,
        ),
        true,
    )?;
    clear_slots(&node.data_dir)?;
    let signal = node.data_dir.join("standby.signal");
    conf::write_as(&user, &signal, "")?;
    let _ = std::fs::remove_file(node.data_dir.join("recovery.signal"));

    let t = Instant::now();
    let pid = start(&user, &info.pg_bin, &node.data_dir, &node.log, &node.name).await?;
    let start_t = t.elapsed();
    let delay_ms = delay.as_millis() as u64;
    if let Some(n) = info.nodes.iter_mut().find(|n| n.name == node.name) {
        n.role = Role::Follower;
        n.pid = pid;
        n.delay_ms = Some(delay_ms);
    }
    info.save()?;

    let t = Instant::now();
    let tli = timeline::current(&client).await.map_err(sql)?;
    if wait_following(&node, leader.port, tli, opts.wait_streaming)
        .await
        .is_none()
    {
        return Err(ClusterError::NotStreaming {
            node: node.name.clone(),
            secs: opts.wait_streaming.as_secs(),
            log: node.log.clone(),
            tail: log_tail(&node.log, 15),
        });
    }
    let streaming_t = t.elapsed();

    let sync_names = if repl.sync {
        let standbys: Vec<&str> = info.followers().map(|n| n.name.as_str()).collect();
        Some(set_sync_standbys(&client, &leader.name, &standbys).await?)
    } else {
        None
    };

    Ok(RejoinReport {
        name: node.name.clone(),
        leader: leader.name.clone(),
        url: node.url.clone(),
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
