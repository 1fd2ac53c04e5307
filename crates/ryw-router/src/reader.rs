//! Shared read connections: a few `tokio-postgres` clients per node that all
//! concurrent reads use at once ([`ReadConn`]).
//!
//! A `tokio-postgres` client pipelines: queries from many tasks go out on one
//! socket back to back, without waiting for each other's answers, and the
//! server answers them in order. For short reads this beats a pool, where
//! each query holds a connection for its whole round trip. Measured on two
//! cores through the whole ryw service: 32.5k fresh reads/s against 12.4k
//! with a pool of 8 connections per node, 0.81× of `pgbench -S` on the same
//! follower (`docs/results.md`).
//!
//! What sharing costs: no transactions or session state on a read
//! connection (the API gives `&Client` only, so `transaction()` is out of
//! reach), and a slow statement delays the reads queued behind it on the
//! same client — hence [`RouterConfig::read_connections`] clients per node,
//! used round robin. A stalled node stalls every read in flight on it; the
//! caller times them out and calls [`Router::report_stall`], which retires
//! the client so the next read gets a new one.
//!
//! Rule 2 holds as with pooled connections: a new connection to a follower
//! first reads the server's postmaster start time and is refused if the
//! server restarted since the tracker last saw it.
//!
//! [`RouterConfig::read_connections`]: crate::RouterConfig::read_connections
//! [`Router::report_stall`]: crate::Router::report_stall

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio_postgres::{Client, Statement};

use crate::pg::{describe_pg, first_value, position_expr};
use crate::tracker::{START_TIME_QUERY, Shared};
use crate::view::{NodeId, Role};

/// Prepared statements kept per client; past this the cache starts over, so
/// a caller building SQL text per request cannot grow it without bound.
const MAX_CACHED_STATEMENTS: usize = 256;

/// A connection for one read, shared with other concurrent reads of the same
/// node (see the module docs). Derefs to [`tokio_postgres::Client`] for
/// running statements; [`ReadConn::prepare_cached`] prepares once per
/// connection.
///
/// Run single statements only: no `BEGIN`, no `SET` — other reads share the
/// session.
#[derive(Clone)]
pub struct ReadConn {
    client: Arc<ReadClient>,
}

impl ReadConn {
    /// A prepared statement for `sql`, prepared on this connection the first
    /// time and cached (like `deadpool_postgres`'s `prepare_cached`).
    pub async fn prepare_cached(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(stmt) = self.client.cached(sql) {
            return Ok(stmt);
        }
        let stmt = self.client.client.prepare(sql).await?;
        self.client.remember(sql, &stmt);
        Ok(stmt)
    }

    /// The statement of a fresh read: `sql` with the node's position as one
    /// more, last column (rule 7), prepared once per connection. A statement
    /// that cannot be wrapped (not a plain query: `SHOW`, `EXPLAIN`, …) is
    /// prepared as it is, and its position is then read by a statement of
    /// its own after it.
    pub(crate) async fn prepare_fresh(
        &self,
        sql: &str,
        role: Role,
    ) -> Result<FreshStatement, tokio_postgres::Error> {
        if let Some(stmt) = self.client.cached_fresh(sql) {
            return Ok(stmt);
        }
        let fresh = match self.client.client.prepare(&with_position(sql, role)).await {
            Ok(stmt) => FreshStatement::InStatement(stmt),
            Err(e) if crate::pg::connection_lost(&e) => return Err(e),
            // Not wrappable, or wrong: the statement as written decides.
            Err(_) => FreshStatement::After(self.client.client.prepare(sql).await?),
        };
        self.client.remember_fresh(sql, &fresh);
        Ok(fresh)
    }

    /// Marks this connection as unusable: reads that already have it finish
    /// (or time out) on it, the next read of the node opens a new one.
    pub(crate) fn retire(&self) {
        self.client.broken.store(true, Ordering::Relaxed);
    }
}

impl Deref for ReadConn {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client.client
    }
}

impl fmt::Debug for ReadConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadConn")
            .field("closed", &self.client.client.is_closed())
            .field("broken", &self.client.broken.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A fresh read's prepared statement and where its position comes from.
#[derive(Clone, Debug)]
pub(crate) enum FreshStatement {
    /// The position is the statement's last column.
    InStatement(Statement),
    /// The statement could not carry it: read it after, on the same
    /// connection.
    After(Statement),
}

/// `sql` as a subquery with the node's position beside its columns:
/// `SELECT *, <position> AS ryw_position FROM (<sql>) AS ryw_read`. The
/// position is evaluated after the statement's snapshot was taken, so it
/// bounds what the read saw, at no extra statement (rule 7). The subquery
/// keeps its rows' order (PostgreSQL does not flatten a subquery with
/// `ORDER BY` or `LIMIT`, and a plain scan of it preserves the order).
pub(crate) fn with_position(sql: &str, role: Role) -> String {
    let mut body = sql.trim_end();
    while let Some(rest) = body.strip_suffix(';') {
        body = rest.trim_end();
    }
    // The newline ends a trailing `--` comment before the parenthesis.
    format!(
        "SELECT *, {} AS ryw_position FROM (\n{body}\n) AS ryw_read",
        position_expr(role)
    )
}

/// One shared client, its statement caches, and its connection task (aborted
/// when the last user drops it, so a stalled server's socket is closed).
struct ReadClient {
    client: Client,
    statements: Mutex<HashMap<Box<str>, Statement>>,
    fresh: Mutex<HashMap<Box<str>, FreshStatement>>,
    broken: AtomicBool,
    task: AbortHandle,
}

impl ReadClient {
    fn usable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed) && !self.client.is_closed()
    }

    fn cached(&self, sql: &str) -> Option<Statement> {
        self.statements
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql)
            .cloned()
    }

    fn remember(&self, sql: &str, stmt: &Statement) {
        let mut map = self.statements.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_CACHED_STATEMENTS {
            map.clear();
        }
        map.insert(sql.into(), stmt.clone());
    }

    fn cached_fresh(&self, sql: &str) -> Option<FreshStatement> {
        self.fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(sql)
            .cloned()
    }

    fn remember_fresh(&self, sql: &str, stmt: &FreshStatement) {
        let mut map = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_CACHED_STATEMENTS {
            map.clear();
        }
        map.insert(sql.into(), stmt.clone());
    }
}

impl Drop for ReadClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One of a node's shared clients, replaced when it breaks.
#[derive(Default)]
struct Slot {
    current: RwLock<Option<Arc<ReadClient>>>,
    /// Serialises reconnects: one task connects, the others wait for it.
    connecting: tokio::sync::Mutex<()>,
    /// Connect attempts so far: a task that waited for another's attempt
    /// does not try again at once (no pile of connects to a dead node).
    attempts: AtomicU64,
}

impl Slot {
    fn usable(&self) -> Option<Arc<ReadClient>> {
        let guard = self.current.read().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|c| c.usable()).cloned()
    }

    fn set(&self, client: Option<Arc<ReadClient>>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = client;
    }
}

/// The follower a node's connections must belong to (rule 2).
pub(crate) struct FollowerGuard {
    pub shared: Arc<Shared>,
    pub node: NodeId,
}

/// The shared read clients of one node.
pub(crate) struct Readers {
    pg: tokio_postgres::Config,
    tls: crate::tls::NodeTls,
    slots: Box<[Slot]>,
    next: AtomicUsize,
    connect_timeout: Duration,
    follower: Option<FollowerGuard>,
    closed: AtomicBool,
}

impl Readers {
    pub(crate) fn new(
        pg: tokio_postgres::Config,
        tls: crate::tls::NodeTls,
        connections: usize,
        connect_timeout: Duration,
        follower: Option<FollowerGuard>,
    ) -> Readers {
        Readers {
            pg,
            tls,
            slots: (0..connections.max(1)).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
            connect_timeout,
            follower,
            closed: AtomicBool::new(false),
        }
    }

    /// A connection for one read: the next shared client round robin,
    /// opened (and for a follower checked, rule 2) if it is not open.
    /// `Err` says why none could be had.
    pub(crate) async fn get(&self) -> Result<ReadConn, String> {
        if self.closed.load(Ordering::Relaxed) {
            return Err("router shut down".to_owned());
        }
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        if let Some(client) = slot.usable() {
            return Ok(ReadConn { client });
        }
        let seen = slot.attempts.load(Ordering::Acquire);
        let _one_at_a_time = slot.connecting.lock().await;
        if let Some(client) = slot.usable() {
            return Ok(ReadConn { client });
        }
        if slot.attempts.load(Ordering::Acquire) != seen {
            return Err("connecting failed just now".to_owned());
        }
        slot.attempts.fetch_add(1, Ordering::AcqRel);
        let client = self.open().await?;
        if self.closed.load(Ordering::Relaxed) {
            return Err("router shut down".to_owned());
        }
        slot.set(Some(client.clone()));
        Ok(ReadConn { client })
    }

    /// Drops every client (their connection tasks end once in-flight reads
    /// let go of them); `get` fails from now on.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        for slot in &self.slots {
            slot.set(None);
        }
    }

    async fn open(&self) -> Result<Arc<ReadClient>, String> {
        let connecting = tokio::time::timeout(
            self.connect_timeout,
            self.pg.connect(self.tls.make_connect()),
        );
        let (client, connection) = match connecting.await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return Err(self.failed(&describe_pg(&e))),
            Err(_) => {
                return Err(self.failed(&format!(
                    "connect timed out after {:?}",
                    self.connect_timeout
                )));
            }
        };
        let task = tokio::spawn(async move {
            if let Err(e) = Batching::new(connection).await {
                tracing::debug!(error = %e, "read connection closed");
            }
        })
        .abort_handle();
        let client = Arc::new(ReadClient {
            client,
            statements: Mutex::new(HashMap::new()),
            fresh: Mutex::new(HashMap::new()),
            broken: AtomicBool::new(false),
            task,
        });
        if let Some(guard) = &self.follower {
            let started = tokio::time::timeout(
                self.connect_timeout,
                client.client.simple_query(START_TIME_QUERY),
            )
            .await;
            let started: i64 = match started {
                Ok(Ok(rows)) => match first_value(&rows).and_then(|v| v.parse().ok()) {
                    Some(started) => started,
                    None => return Err(self.failed("no postmaster start time")),
                },
                Ok(Err(e)) => return Err(self.failed(&describe_pg(&e))),
                Err(_) => return Err(self.failed("no postmaster start time in time")),
            };
            let known = guard.shared.known_incarnation(guard.node);
            if let Err(why) = check_incarnation(known, started) {
                // Unknown: the tracker has not seen it yet; nothing to forget.
                return Err(if known.is_some() {
                    self.failed(why)
                } else {
                    why.to_owned()
                });
            }
        }
        Ok(client)
    }

    /// A failed connect: a follower is forgotten at once (rule 3).
    fn failed(&self, why: &str) -> String {
        let why = format!("no read connection: {why}");
        if let Some(guard) = &self.follower {
            guard.shared.forget_follower(guard.node, &why);
        }
        why
    }
}

/// Rule 2 for new connections: the server's postmaster start time must be
/// the one the follower's known position was observed under.
pub(crate) fn check_incarnation(known: Option<i64>, started: i64) -> Result<(), &'static str> {
    match known {
        Some(k) if k == started => Ok(()),
        Some(_) => Err("follower restarted since last poll"),
        None => Err("follower position unknown"),
    }
}

/// Drives a connection, but lets the other runnable tasks go first each
/// time it is woken, so that the queries they send meanwhile go out in the
/// same write (and their answers come back in the same read).
///
/// Without it, tokio runs a task woken by another right after it (the "LIFO
/// slot"): each handler's query wakes the connection task, which flushes
/// that one query in a syscall of its own before the next handler runs. Under
/// load the deferral batches a whole round of handlers into one `send`; when
/// idle it costs one extra poll.
struct Batching<F> {
    inner: F,
    deferred: bool,
}

impl<F> Batching<F> {
    fn new(inner: F) -> Self {
        Batching {
            inner,
            deferred: false,
        }
    }
}

impl<F: Future + Unpin> Future for Batching<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if !self.deferred {
            // A task that wakes itself while running is queued behind the
            // others (tokio treats it as a yield).
            self.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.deferred = false;
        Pin::new(&mut self.inner).poll(cx)
    }
}
