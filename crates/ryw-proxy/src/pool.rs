//! Server connections pooled per node and per (role, database), for
//! `--pool-mode transaction`: a client borrows one for a transaction, or
//! for one batch outside a transaction, on whichever node the router picks,
//! and gives it back when its `ReadyForQuery` says idle. At most
//! `--pool-size` connections per pool; a client that finds them all busy
//! waits in line, at most `--pool-timeout`, then gets SQLSTATE 53300 naming
//! the limit. Connections idle longer than `--server-idle-timeout`, or open
//! longer than `--server-lifetime`, are closed.
//!
//! A connection is bound to the runtime that opened it (its socket is
//! registered there): with several relay threads, each thread has pools of
//! its own, `--pool-size` shared out between them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::{Backend, BackendError};

/// How the proxy holds server connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PoolMode {
    /// Each client has its own connections to the nodes it reaches, for as
    /// long as it stays (PgBouncer's `session`).
    #[default]
    Session,
    /// Clients share pooled connections, one for a transaction or a batch
    /// outside one (PgBouncer's `transaction`).
    Transaction,
}

impl std::str::FromStr for PoolMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "session" => Ok(PoolMode::Session),
            "transaction" => Ok(PoolMode::Transaction),
            other => Err(format!(
                "unknown pool mode {other:?}: use session or transaction"
            )),
        }
    }
}

impl std::fmt::Display for PoolMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        })
    }
}

/// The limits of every pool.
#[derive(Clone, Copy, Debug)]
pub struct PoolLimits {
    /// Connections per pool (per relay thread: `--pool-size` shared out).
    pub size: usize,
    /// `--pool-size` itself, and the relay threads that share it.
    pub total: usize,
    pub threads: usize,
    /// Longest a client waits for a connection.
    pub timeout: Duration,
    /// A connection idle this long is closed.
    pub idle_timeout: Duration,
    /// A connection open this long is closed when it comes back.
    pub lifetime: Duration,
}

/// Which pool: a node (the router's index), a role and a database, and the
/// relay thread whose runtime owns the sockets.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub slot: usize,
    pub user: Arc<str>,
    pub database: Arc<str>,
    pub thread: usize,
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    /// All were busy for the whole wait.
    #[error(
        "no server connection to {node} was free within {waited:?} (--pool-timeout): all \
         {size} of the pool for this role and database are busy (--pool-size, shared by \
         {threads} relay threads)"
    )]
    Busy {
        node: Arc<str>,
        waited: Duration,
        size: usize,
        threads: usize,
    },
    /// Opening one failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// What a waiting client is handed: a connection, or the right to open one
/// (a connection was closed meanwhile).
enum Handoff {
    Conn(Box<Backend>),
    Open,
}

#[derive(Default)]
struct State {
    idle: Vec<(Backend, Instant)>,
    /// Connections open: idle and lent out.
    open: usize,
    waiters: VecDeque<tokio::sync::oneshot::Sender<Handoff>>,
}

/// One pool. A session keeps the pools it uses (one per node it reaches),
/// so lending and taking back touch this pool's lock only.
pub(crate) struct Pool {
    /// The node's name.
    node: Arc<str>,
    limits: PoolLimits,
    state: Mutex<State>,
    /// Waits for a connection that had to queue, in µs (for the metrics).
    waits: Mutex<WaitStats>,
}

/// Queued waits: how many, and how long in all, by bucket.
#[derive(Clone, Debug, Default)]
pub(crate) struct WaitStats {
    pub count: u64,
    pub sum_us: u64,
    /// Counts up to each of [`WAIT_BUCKETS_MS`] (not cumulative), then
    /// the rest.
    pub buckets: [u64; WAIT_BUCKETS_MS.len() + 1],
}

/// Upper bounds (ms) of the wait histogram's buckets.
pub(crate) const WAIT_BUCKETS_MS: [u64; 8] = [1, 5, 10, 50, 100, 500, 1000, 5000];

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("Pool")
            .field("open", &st.open)
            .field("idle", &st.idle.len())
            .field("waiting", &st.waiters.len())
            .finish()
    }
}

/// A pool's figures now, for `/metrics`.
#[derive(Clone, Debug)]
pub(crate) struct PoolSnapshot {
    pub key: PoolKey,
    pub node: Arc<str>,
    pub open: usize,
    pub idle: usize,
    pub waiting: usize,
    pub waits: WaitStats,
}

/// Every pool of the proxy.
#[derive(Debug)]
pub(crate) struct Pools {
    limits: PoolLimits,
    map: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    /// Statements (by the proxy's name, per role and database) a server
    /// has parsed: a client's `Parse` of one outside a transaction is
    /// answered without a server connection (see `Session::answer_parse`).
    known: Mutex<std::collections::HashSet<KnownStatement>>,
}

/// A statement a server has parsed: (role, database, the proxy's name).
type KnownStatement = (Arc<str>, Arc<str>, Arc<str>);

/// Statements remembered as parsed before the set starts over.
const KNOWN_STATEMENTS: usize = 65_536;

impl Pools {
    pub fn new(limits: PoolLimits) -> Pools {
        Pools {
            limits,
            map: Mutex::new(HashMap::new()),
            known: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// A server parsed statement `name` (the proxy's) for `user` in
    /// `database`.
    pub fn parsed(&self, user: &Arc<str>, database: &Arc<str>, name: &Arc<str>) {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        if known.len() >= KNOWN_STATEMENTS {
            known.clear();
        }
        known.insert((user.clone(), database.clone(), name.clone()));
    }

    /// Whether a server parsed statement `name` for `user` in `database`.
    pub fn is_parsed(&self, user: &Arc<str>, database: &Arc<str>, name: &Arc<str>) -> bool {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(user.clone(), database.clone(), name.clone()))
    }

    /// The pool of `key` (a connection to `node`), made on first use.
    pub fn pool(&self, key: &PoolKey, node: &Arc<str>) -> Arc<Pool> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Pool {
                    node: node.clone(),
                    limits: self.limits,
                    state: Mutex::new(State::default()),
                    waits: Mutex::new(WaitStats::default()),
                })
            })
            .clone()
    }

    /// Closes connections idle past the timeout.
    pub fn sweep(&self) {
        let pools: Vec<Arc<Pool>> = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for pool in pools {
            let mut st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
            let before = st.idle.len();
            let (idle, lifetime) = (self.limits.idle_timeout, self.limits.lifetime);
            st.idle
                .retain(|(b, since)| since.elapsed() < idle && b.created.elapsed() < lifetime);
            let closed = before - st.idle.len();
            st.open -= closed;
        }
    }

    /// Every pool's figures.
    pub fn snapshot(&self) -> Vec<PoolSnapshot> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(key, pool)| {
                let st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
                PoolSnapshot {
                    key: key.clone(),
                    node: pool.node.clone(),
                    open: st.open,
                    idle: st.idle.len(),
                    waiting: st.waiters.len(),
                    waits: pool.waits.lock().unwrap_or_else(|p| p.into_inner()).clone(),
                }
            })
            .collect()
    }
}

impl Pool {
    /// A connection of this pool: an idle one, a new one while the pool
    /// is not full (`connect`), or the first one given back within the
    /// wait.
    pub async fn get<F, Fut>(&self, connect: F) -> Result<Backend, PoolError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Backend, BackendError>>,
    {
        let limits = self.limits;
        let started = Instant::now();
        loop {
            let rx = {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                // The newest idle one (its socket the most likely warm),
                // unless the server said something meanwhile (a FATAL
                // before it closed the connection, the end of it: an idle
                // connection has nothing to say). Free unless the socket
                // became readable: tokio knows without a system call.
                while let Some((mut b, since)) = st.idle.pop() {
                    if b.created.elapsed() < limits.lifetime
                        && since.elapsed() < limits.idle_timeout
                        && matches!(b.try_fill(), Ok(None))
                    {
                        return Ok(b);
                    }
                    st.open -= 1;
                }
                if st.open < limits.size {
                    st.open += 1;
                    None
                } else {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    st.waiters.push_back(tx);
                    Some(rx)
                }
            };
            let open = match rx {
                None => true,
                Some(mut rx) => {
                    let left = limits.timeout.saturating_sub(started.elapsed());
                    let got = match tokio::time::timeout(left, &mut rx).await {
                        Ok(got) => Ok(got),
                        // A connection handed over just as the wait ended
                        // is still this client's (else it would be lost
                        // to the pool).
                        Err(elapsed) => {
                            rx.close();
                            rx.try_recv().map(Ok).map_err(|_| elapsed)
                        }
                    };
                    match got {
                        Ok(Ok(Handoff::Conn(b))) => {
                            self.waited(started.elapsed());
                            return Ok(*b);
                        }
                        Ok(Ok(Handoff::Open)) => {
                            self.waited(started.elapsed());
                            true
                        }
                        // The sender went away: look again.
                        Ok(Err(_)) => false,
                        Err(_) => {
                            return Err(PoolError::Busy {
                                node: self.node.clone(),
                                waited: limits.timeout,
                                size: limits.total,
                                threads: limits.threads,
                            });
                        }
                    }
                }
            };
            if open {
                match connect().await {
                    Ok(b) => return Ok(b),
                    Err(e) => {
                        self.closed();
                        return Err(e.into());
                    }
                }
            }
        }
    }

    /// A connection comes back, idle and clean.
    pub fn put(&self, backend: Backend) {
        if backend.created.elapsed() >= self.limits.lifetime {
            drop(backend);
            self.closed();
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut conn = Some(Box::new(backend));
        while let Some(w) = st.waiters.pop_front() {
            match w.send(Handoff::Conn(conn.take().expect("held"))) {
                Ok(()) => return,
                Err(Handoff::Conn(back)) => conn = Some(back),
                Err(Handoff::Open) => unreachable!("sent a connection"),
            }
        }
        st.idle.push((*conn.expect("held"), Instant::now()));
    }

    /// One connection fewer (closed: broken, or left dirty): a waiter may
    /// open one instead.
    pub fn closed(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.open = st.open.saturating_sub(1);
        while let Some(w) = st.waiters.pop_front() {
            if w.send(Handoff::Open).is_ok() {
                st.open += 1;
                return;
            }
        }
    }

    fn waited(&self, d: Duration) {
        let mut w = self.waits.lock().unwrap_or_else(|p| p.into_inner());
        w.count += 1;
        w.sum_us += d.as_micros() as u64;
        let ms = d.as_millis() as u64;
        let i = WAIT_BUCKETS_MS
            .iter()
            .position(|bound| ms <= *bound)
            .unwrap_or(WAIT_BUCKETS_MS.len());
        w.buckets[i] += 1;
    }
}
