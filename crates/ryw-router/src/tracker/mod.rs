//! The follower tracker: one background task per node polls it every
//! `poll_interval` and publishes a fresh [`ClusterView`] on a
//! `tokio::sync::watch` channel, so routing never queries a database to
//! decide, and a read waiting for a follower wakes on the poll that shows it
//! caught up.
//!
//! One statement per poll per node:
//! - leader: `SELECT pg_current_wal_lsn()`;
//! - follower: replay position, postmaster start time (restart detection,
//!   rule 3) and WAL receiver status, in one row.

mod state;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, NoTls};

use crate::metrics::Metrics;
use crate::pg::describe_pg;
use crate::view::ClusterView;
use crate::{Lsn, RouterConfig};

pub(crate) use state::{FollowerPoll, Limits, TrackerState};

const LEADER_POLL: &str = "SELECT pg_current_wal_lsn()";
const FOLLOWER_POLL: &str = "SELECT pg_last_wal_replay_lsn(), \
     (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::int8, \
     (SELECT status FROM pg_stat_wal_receiver LIMIT 1)";
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
    /// Starts one task for the leader and one per follower.
    pub fn start(
        shared: Arc<Shared>,
        leader: tokio_postgres::Config,
        followers: Vec<tokio_postgres::Config>,
        cfg: &RouterConfig,
    ) -> Tracker {
        let mut tasks = Vec::with_capacity(followers.len() + 1);
        tasks.push(tokio::spawn(poll_loop(
            shared.clone(),
            leader,
            cfg.clone(),
            Node::Leader,
        )));
        for (i, pg) in followers.into_iter().enumerate() {
            tasks.push(tokio::spawn(poll_loop(
                shared.clone(),
                pg,
                cfg.clone(),
                Node::Follower(i),
            )));
        }
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

#[derive(Clone, Copy, Debug)]
enum Node {
    Leader,
    Follower(usize),
}

impl Node {
    fn failed(self, shared: &Shared, why: &str) {
        match self {
            Node::Leader => shared.update(|st| st.on_leader_error(why)),
            Node::Follower(i) => shared.update(|st| st.forget_follower(i, why)),
        }
    }
}

/// Connect, poll until something fails, mark the node down, back off,
/// reconnect: forever (until aborted).
async fn poll_loop(shared: Arc<Shared>, pg: tokio_postgres::Config, cfg: RouterConfig, node: Node) {
    let mut backoff = cfg.reconnect_min;
    loop {
        match connect(&pg, cfg.connect_timeout).await {
            Ok((client, connection)) => {
                let why = poll_connected(&shared, &client, &cfg, node, &mut backoff).await;
                connection.abort();
                node.failed(&shared, &why);
            }
            Err(why) => node.failed(&shared, &why),
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
    node: Node,
    backoff: &mut Duration,
) -> String {
    let sql = match node {
        Node::Leader => LEADER_POLL,
        Node::Follower(_) => FOLLOWER_POLL,
    };
    let stmt = match tokio::time::timeout(cfg.poll_timeout, client.prepare(sql)).await {
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
        match node {
            Node::Leader => match row.try_get::<_, Option<PgLsn>>(0) {
                Ok(Some(lsn)) => shared.update(|st| {
                    st.on_leader_poll(lsn.into(), Instant::now());
                    st.note_poll_sent(None, sent);
                }),
                Ok(None) => return "leader returned no wal position".to_owned(),
                Err(e) => return format!("poll: {}", describe_pg(&e)),
            },
            Node::Follower(i) => match parse_follower_row(&row) {
                Ok(poll) => shared.update(|st| {
                    st.on_follower_poll(i, poll, Instant::now());
                    st.note_poll_sent(Some(i), sent);
                }),
                Err(e) => return format!("poll: {}", describe_pg(&e)),
            },
        }
    }
}

fn parse_follower_row(row: &tokio_postgres::Row) -> Result<FollowerPoll, tokio_postgres::Error> {
    Ok(FollowerPoll {
        replay: row.try_get::<_, Option<PgLsn>>(0)?.map(Lsn::from),
        started_at_us: row.try_get(1)?,
        receiver: row.try_get(2)?,
    })
}
