//! The follower tracker: one background task per node polls it every
//! `poll_interval` and publishes a fresh [`ClusterView`] on a
//! `tokio::sync::watch` channel, so routing never queries a database to
//! decide, and a read waiting for a follower wakes on the poll that shows it
//! caught up.
//!
//! One statement per poll per node ([`NODE_POLL`]): whether it is in
//! recovery (roles are discovered: a promoted follower leads from its next
//! poll), its position (a leader's current one, a follower's replay
//! position), its postmaster start time (restart detection, rule 3), its
//! WAL receiver's status and timeline, and a leader's timeline. When a
//! leader is seen on a timeline its task has not read the history of, it
//! reads it (`NNNNNNNN.history`, through `pg_read_file`) before reporting
//! the poll, so no view names a new leader without its history.

mod state;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, NoTls};

use crate::metrics::Metrics;
use crate::pg::{describe_pg, first_value};
use crate::timeline::History;
use crate::view::ClusterView;
use crate::{Lsn, RouterConfig};

pub(crate) use state::{FollowerPoll, Limits, PrimaryPoll, TrackerState};

/// The poll of every node. `pg_is_in_recovery()` is read once (a CTE):
/// `pg_walfile_name` fails on a standby, and a node promoted mid-statement
/// must be read as one or the other.
pub(crate) const NODE_POLL: &str = "WITH s AS (SELECT pg_is_in_recovery() AS standby) \
     SELECT s.standby, \
     CASE WHEN s.standby THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END, \
     (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::int8, \
     r.status, r.received_tli, \
     CASE WHEN s.standby THEN NULL ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END \
     FROM s LEFT JOIN (SELECT status, received_tli FROM pg_stat_wal_receiver LIMIT 1) AS r ON true";
/// The same start time, for validating new read connections (rule 2).
pub(crate) const START_TIME_QUERY: &str =
    "SELECT (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::int8";

/// The state shared by the polling tasks, the router and the pool hooks.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<TrackerState>,
    tx: watch::Sender<Arc<ClusterView>>,
    metrics: Arc<Metrics>,
}

impl Shared {
    pub fn new(state: TrackerState, metrics: Arc<Metrics>) -> Shared {
        let (tx, _) = watch::channel(Arc::new(state.view()));
        Shared {
            state: Mutex::new(state),
            tx,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, TrackerState> {
        // A panic while holding the lock leaves plain data; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a change, recomputes lag and rotation, and publishes, all
    /// under the lock so views are published in order.
    pub fn update(&self, change: impl FnOnce(&mut TrackerState)) {
        let mut st = self.lock();
        change(&mut st);
        let evicted = st.refresh(Instant::now());
        self.metrics.add_evictions(evicted);
        self.tx.send_replace(Arc::new(st.view()));
    }

    /// The latest published view (an `Arc` clone: no lock held while routing).
    pub fn view(&self) -> Arc<ClusterView> {
        self.tx.borrow().clone()
    }

    /// A receiver that wakes on every publish: what causal waits sleep on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.tx.subscribe()
    }

    /// Rule 3, from the router's side: one of its connections to follower
    /// `i` broke, so its position is forgotten now, not at the next poll.
    pub fn forget_follower(&self, i: usize, why: &str) {
        self.metrics.add_forget();
        self.update(|st| st.forget_follower(i, why));
    }

    pub fn known_incarnation(&self, i: usize) -> Option<i64> {
        self.lock().known_incarnation(i)
    }

    pub fn note_leader_lsn(&self, lsn: Lsn) {
        self.update(|st| st.note_leader_lsn(lsn, Instant::now()));
    }
}

/// Owns the polling tasks; aborting them is shutdown.
#[derive(Debug)]
pub(crate) struct Tracker {
    pub shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Tracker {
    /// Starts one task per node (in index order).
    pub fn start(
        shared: Arc<Shared>,
        nodes: Vec<tokio_postgres::Config>,
        cfg: &RouterConfig,
    ) -> Tracker {
        let tasks = nodes
            .into_iter()
            .enumerate()
            .map(|(i, pg)| tokio::spawn(poll_loop(shared.clone(), pg, cfg.clone(), i)))
            .collect();
        Tracker {
            shared,
            tasks: Mutex::new(tasks),
        }
    }

    /// Stops polling. The last view stays readable.
    pub fn shutdown(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.abort();
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Connect, poll until something fails, mark the node down, back off,
/// reconnect: forever (until aborted).
async fn poll_loop(
    shared: Arc<Shared>,
    pg: tokio_postgres::Config,
    cfg: RouterConfig,
    node: usize,
) {
    let mut backoff = cfg.reconnect_min;
    // The history of the timeline this node last led on, read once.
    let mut history: Option<Arc<History>> = None;
    loop {
        match connect(&pg, cfg.connect_timeout).await {
            Ok((client, connection)) => {
                let why =
                    poll_connected(&shared, &client, &cfg, node, &mut backoff, &mut history).await;
                connection.abort();
                shared.update(|st| st.on_node_error(node, &why));
            }
            Err(why) => shared.update(|st| st.on_node_error(node, &why)),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(cfg.reconnect_max);
    }
}

async fn connect(
    pg: &tokio_postgres::Config,
    timeout: Duration,
) -> Result<(Client, JoinHandle<()>), String> {
    let (client, connection) = tokio::time::timeout(timeout, pg.connect(NoTls))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {}", describe_pg(&e)))?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, task))
}

/// Polls on one connection; returns why it stopped.
async fn poll_connected(
    shared: &Shared,
    client: &Client,
    cfg: &RouterConfig,
    node: usize,
    backoff: &mut Duration,
    history: &mut Option<Arc<History>>,
) -> String {
    let stmt = match tokio::time::timeout(cfg.poll_timeout, client.prepare(NODE_POLL)).await {
        Ok(Ok(stmt)) => stmt,
        Ok(Err(e)) => return format!("prepare: {}", describe_pg(&e)),
        Err(_) => return "prepare timed out".to_owned(),
    };
    let mut ticker = tokio::time::interval(cfg.poll_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let sent = Instant::now();
        let row = match tokio::time::timeout(cfg.poll_timeout, client.query_one(&stmt, &[])).await {
            Ok(Ok(row)) => row,
            Ok(Err(e)) => return format!("poll: {}", describe_pg(&e)),
            // A hung node must leave rotation (rule 8) rather than freeze
            // its last position.
            Err(_) => return "poll timed out".to_owned(),
        };
        *backoff = cfg.reconnect_min;
        let poll = match parse_row(&row) {
            Ok(poll) => poll,
            Err(why) => return why,
        };
        match poll {
            Polled::Standby(poll) => shared.update(|st| {
                st.on_follower_poll(node, poll, Instant::now());
                st.note_poll_sent(node, sent);
            }),
            Polled::Primary {
                lsn,
                timeline,
                started_at_us,
            } => {
                let known = history.as_ref().filter(|h| h.current == timeline).cloned();
                let known = match known {
                    Some(h) => h,
                    None => {
                        let h = Arc::new(read_history(client, timeline, cfg.poll_timeout).await);
                        *history = Some(h.clone());
                        h
                    }
                };
                let poll = PrimaryPoll {
                    lsn,
                    timeline,
                    started_at_us,
                    history: known,
                };
                shared.update(|st| {
                    st.on_primary_poll(node, poll, Instant::now());
                    st.note_poll_sent(node, sent);
                });
            }
        }
    }
}

/// One poll's answer.
enum Polled {
    Standby(FollowerPoll),
    Primary {
        lsn: Lsn,
        timeline: u32,
        started_at_us: i64,
    },
}

fn parse_row(row: &tokio_postgres::Row) -> Result<Polled, String> {
    let bad = |e: tokio_postgres::Error| format!("poll: {}", describe_pg(&e));
    let standby: bool = row.try_get(0).map_err(bad)?;
    let lsn = row
        .try_get::<_, Option<PgLsn>>(1)
        .map_err(bad)?
        .map(Lsn::from);
    let started_at_us: i64 = row.try_get(2).map_err(bad)?;
    if standby {
        let timeline: Option<i32> = row.try_get(4).map_err(bad)?;
        return Ok(Polled::Standby(FollowerPoll {
            replay: lsn,
            started_at_us,
            receiver: row.try_get(3).map_err(bad)?,
            timeline: timeline.and_then(|t| u32::try_from(t).ok()),
        }));
    }
    let lsn = lsn.ok_or("the leader returned no wal position")?;
    let walfile: Option<String> = row.try_get(5).map_err(bad)?;
    let timeline = walfile
        .as_deref()
        .and_then(|t| u32::from_str_radix(t, 16).ok())
        .ok_or_else(|| format!("no timeline in the wal file name {walfile:?}"))?;
    Ok(Polled::Primary {
        lsn,
        timeline,
        started_at_us,
    })
}

/// The leader's timeline history: where each earlier timeline ended. On
/// timeline 1 there is none. It is read from `pg_wal/NNNNNNNN.history`
/// (`pg_read_file` needs a superuser or the `pg_read_server_files` role);
/// when that fails, the history has no switches, so tokens from earlier
/// timelines are served by the leader and a lost write is not reported.
async fn read_history(client: &Client, timeline: u32, limit: Duration) -> History {
    if timeline <= 1 {
        return History::first();
    }
    let sql = format!("SELECT pg_read_file('pg_wal/{timeline:08X}.history')");
    let text = match tokio::time::timeout(limit, client.simple_query(&sql)).await {
        Ok(Ok(rows)) => first_value(&rows).map(str::to_owned),
        Ok(Err(e)) => {
            tracing::warn!(
                timeline,
                error = %describe_pg(&e),
                "cannot read the timeline history (grant pg_read_server_files to the router's user): \
                 tokens from earlier timelines go to the leader and a lost write is not reported"
            );
            None
        }
        Err(_) => None,
    };
    match text.as_deref().and_then(|t| History::parse(timeline, t)) {
        Some(h) => {
            tracing::info!(timeline, switches = ?h.switches, "timeline history read");
            h
        }
        None => History {
            current: timeline,
            switches: Vec::new(),
        },
    }
}
