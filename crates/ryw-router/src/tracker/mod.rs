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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_postgres::Client;
use tokio_postgres::types::PgLsn;

use crate::feed::message::{FeedMessage, local_times};
use crate::feed::{Change, Gate, LocalReport};
use crate::metrics::Metrics;
use crate::pg::{describe_pg, first_value};
use crate::timeline::TimelineHistory;
use crate::view::{ClusterView, NodeId};
use crate::{Lsn, RouterConfig};

pub(crate) use state::{FollowerPoll, Limits, PollOutcome, PrimaryPoll, TrackerState};

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
    /// `true` while this instance polls the nodes itself: always without
    /// a feed; with one, while it holds the lease or the feed is quiet.
    poll: watch::Sender<bool>,
    /// With a feed: decides `poll`.
    gate: Mutex<Option<Gate>>,
    /// With a feed: where local poll outcomes go to be published.
    reports: OnceLock<mpsc::UnboundedSender<LocalReport>>,
    /// This instance holds the feed's lease.
    holding: AtomicBool,
    /// The instant poll tasks align their ticks to, so a round's polls of
    /// every node go out together (one feed message per round).
    grid: Instant,
}

impl Shared {
    pub fn new(state: TrackerState, metrics: Arc<Metrics>) -> Shared {
        let (tx, _) = watch::channel(Arc::new(state.view()));
        Shared {
            state: Mutex::new(state),
            tx,
            metrics,
            poll: watch::Sender::new(true),
            gate: Mutex::new(None),
            reports: OnceLock::new(),
            holding: AtomicBool::new(false),
            grid: Instant::now(),
        }
    }

    /// Puts local polling under a feed's [`Gate`]; local outcomes go to
    /// `reports` while this instance holds the lease.
    pub fn attach_feed(&self, reports: mpsc::UnboundedSender<LocalReport>, quiet_after: Duration) {
        let _ = self.reports.set(reports);
        *self.gate.lock().unwrap_or_else(|e| e.into_inner()) = Some(Gate::new(quiet_after));
    }

    /// Whether this instance holds the feed's lease (it polls for all).
    pub fn set_feed_holding(&self, holding: bool) {
        self.holding.store(holding, Ordering::Relaxed);
        self.metrics.set_feed_holder(holding);
        if let Some(g) = self.gate.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            g.set_holding(holding);
        }
        self.step_gate(Instant::now());
    }

    /// Re-decides local polling at `now` (see [`Gate`]).
    pub fn step_gate(&self, now: Instant) {
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        let Some(g) = gate.as_mut() else { return };
        match g.step(now) {
            Change::Same => {}
            Change::Start { fallback } => {
                if fallback {
                    self.metrics.add_feed_fallback();
                    tracing::info!("position feed quiet: polling the nodes locally");
                }
                self.poll.send_replace(true);
            }
            Change::Stop => {
                tracing::debug!("position feed speaks: local polling stops");
                self.poll.send_replace(false);
            }
        }
    }

    /// Waits until this instance should poll the nodes itself.
    async fn until_polling(rx: &mut watch::Receiver<bool>) {
        // The sender lives as long as `Shared`, which outlives its tasks.
        let _ = rx.wait_for(|poll| *poll).await;
    }

    /// A local poll of `node` sent at `sent`: applied, and handed to the
    /// feed's publisher while this instance holds the lease.
    fn local_poll(&self, node: usize, sent: Instant, outcome: PollOutcome) {
        let received = Instant::now();
        if self.holding.load(Ordering::Relaxed)
            && let Some(tx) = self.reports.get()
        {
            let _ = tx.send(LocalReport {
                node,
                sent,
                received,
                outcome: outcome.clone(),
            });
        }
        self.update(|st| {
            st.apply(node, outcome, sent, received);
        });
    }

    /// A feed message from another instance, which arrived at `arrival`
    /// after `transit`: each node's outcome applied as a local poll would
    /// be (rule 3 included), at the instants it maps to on this clock.
    /// Reports for a node this instance names differently are skipped.
    /// `alive`: it arrived in time to count as the feed speaking.
    pub fn apply_feed(
        &self,
        msg: FeedMessage,
        arrival: Instant,
        transit: Duration,
        names: &[Arc<str>],
        alive: bool,
    ) {
        self.update(|st| {
            for report in msg.nodes {
                if names.get(report.node).map(|n| &**n) != Some(report.name.as_str()) {
                    continue;
                }
                let (sent, received) = local_times(arrival, transit, &report);
                st.apply(report.node, report.outcome.into_outcome(), sent, received);
            }
        });
        if alive && let Some(g) = self.gate.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            g.on_message(arrival);
        }
    }

    /// Reads teach the tracker: a fresh read on follower `id`, planned under
    /// `epoch`, saw it at `lsn`. Raises the known position if that epoch
    /// still stands (no restart or broken connection since: same
    /// incarnation) and `lsn` is ahead; positions only move forward.
    pub fn learn_from_read(&self, id: NodeId, epoch: u64, lsn: Lsn) {
        let view = self.view();
        match view.node(id) {
            Some(n) if n.epoch == epoch && n.lsn.is_some_and(|known| known < lsn) => {}
            _ => return,
        }
        self.update(|st| st.learn_position(id.index(), epoch, lsn));
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
    /// `id` broke, so its position is forgotten now, not at the next poll.
    pub fn forget_follower(&self, id: NodeId, why: &str) {
        self.metrics.add_forget();
        self.update(|st| st.forget_follower(id.index(), why));
    }

    pub fn known_incarnation(&self, id: NodeId) -> Option<i64> {
        self.lock().known_incarnation(id.index())
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
    /// Starts one task per node (in index order), and the sampler of
    /// position ages.
    pub fn start(
        shared: Arc<Shared>,
        nodes: Vec<(tokio_postgres::Config, crate::tls::NodeTls)>,
        cfg: &RouterConfig,
    ) -> Tracker {
        let mut tasks: Vec<JoinHandle<()>> = nodes
            .into_iter()
            .enumerate()
            .map(|(i, (pg, tls))| tokio::spawn(poll_loop(shared.clone(), pg, tls, cfg.clone(), i)))
            .collect();
        tasks.push(tokio::spawn(sample_ages(shared.clone(), cfg.poll_interval)));
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

/// Samples, at random moments (on average once per poll interval), how old
/// the position of each follower in rotation is: how long ago the poll that
/// read it was sent. What routing relies on, feed or not.
async fn sample_ages(shared: Arc<Shared>, poll_interval: Duration) {
    use rand::Rng;
    let max_us = (poll_interval.as_micros() as u64).max(2) * 2;
    loop {
        let pause = rand::rng().random_range(1..max_us);
        tokio::time::sleep(Duration::from_micros(pause)).await;
        let view = shared.view();
        let now = Instant::now();
        for f in view.followers().filter(|f| f.in_rotation) {
            if let Some(at) = f.polled_at {
                shared
                    .metrics
                    .add_position_age(now.saturating_duration_since(at));
            }
        }
    }
}

/// Connect, poll until something fails, mark the node down, back off,
/// reconnect: forever (until aborted). While a feed carries the positions
/// (see [`crate::feed`]), it waits, connection kept, without polling.
async fn poll_loop(
    shared: Arc<Shared>,
    pg: tokio_postgres::Config,
    tls: crate::tls::NodeTls,
    cfg: RouterConfig,
    node: usize,
) {
    let mut backoff = cfg.reconnect_min;
    // The history of the timeline this node last led on, read once.
    let mut history: Option<Arc<TimelineHistory>> = None;
    let mut gate = shared.poll.subscribe();
    loop {
        Shared::until_polling(&mut gate).await;
        let tried = Instant::now();
        match connect(&pg, &tls, cfg.connect_timeout).await {
            Ok((client, connection)) => {
                let (why, sent) = poll_connected(
                    &shared,
                    &client,
                    &cfg,
                    node,
                    &mut backoff,
                    &mut history,
                    &mut gate,
                )
                .await;
                connection.abort();
                shared.local_poll(node, sent, PollOutcome::Error(why));
            }
            Err(why) => shared.local_poll(node, tried, PollOutcome::Error(why)),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(cfg.reconnect_max);
    }
}

async fn connect(
    pg: &tokio_postgres::Config,
    tls: &crate::tls::NodeTls,
    timeout: Duration,
) -> Result<(Client, JoinHandle<()>), String> {
    let (client, connection) = tokio::time::timeout(timeout, pg.connect(tls.make_connect()))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {}", describe_pg(&e)))?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, task))
}

/// Polls on one connection, at the ticks of the shared grid, while the
/// gate says so; returns why it stopped and when the failed poll was sent.
async fn poll_connected(
    shared: &Shared,
    client: &Client,
    cfg: &RouterConfig,
    node: usize,
    backoff: &mut Duration,
    history: &mut Option<Arc<TimelineHistory>>,
    gate: &mut watch::Receiver<bool>,
) -> (String, Instant) {
    let stmt = match tokio::time::timeout(cfg.poll_timeout, client.prepare(NODE_POLL)).await {
        Ok(Ok(stmt)) => stmt,
        Ok(Err(e)) => return (format!("prepare: {}", describe_pg(&e)), Instant::now()),
        Err(_) => return ("prepare timed out".to_owned(), Instant::now()),
    };
    let mut ticker = tokio::time::interval_at(shared.grid, cfg.poll_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        Shared::until_polling(gate).await;
        ticker.tick().await;
        let sent = Instant::now();
        shared.metrics.add_tracker_poll();
        let row = match tokio::time::timeout(cfg.poll_timeout, client.query_one(&stmt, &[])).await {
            Ok(Ok(row)) => row,
            Ok(Err(e)) => return (format!("poll: {}", describe_pg(&e)), sent),
            // A hung node must leave rotation (rule 8) rather than freeze
            // its last position.
            Err(_) => return ("poll timed out".to_owned(), sent),
        };
        *backoff = cfg.reconnect_min;
        let poll = match parse_row(&row) {
            Ok(poll) => poll,
            Err(why) => return (why, sent),
        };
        match poll {
            Polled::Standby(poll) => shared.local_poll(node, sent, PollOutcome::Follower(poll)),
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
                shared.local_poll(node, sent, PollOutcome::Primary(poll));
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
async fn read_history(client: &Client, timeline: u32, limit: Duration) -> TimelineHistory {
    if timeline <= 1 {
        return TimelineHistory::first();
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
    match text
        .as_deref()
        .and_then(|t| TimelineHistory::parse(timeline, t))
    {
        Some(h) => {
            tracing::info!(timeline, switches = ?h.switches, "timeline history read");
            h
        }
        None => TimelineHistory {
            current: timeline,
            switches: Vec::new(),
        },
    }
}
