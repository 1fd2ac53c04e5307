//! One virtual user on a SQL front (see [`crate::sql`]): its account, its
//! one or two connections, the statements of one iteration (pay in a
//! transaction, think, read the balance), and the live check of its reads.

use super::RunState;
use crate::history::{Op, OpKind, Seen};
use crate::sql::{
    ACCOUNT_SQL, BALANCE_SQL, OPENING_CENTS, PAY_SQL, PAYMENT_SQL, ReadOn, SqlFront, SqlGroup,
    session_key,
};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

/// The largest payment (cents), as for the HTTP users.
const MAX_AMOUNT: i64 = 100;

/// Pause after an iteration that failed, so a dead front does not turn
/// the bench into a busy loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Node names by port (from `cluster.json`), to name the server that ran a
/// read; a port not in it is named `port N`.
pub(super) type NodeNames = HashMap<i32, String>;

/// What one statement gave: an answer, an error the server sent (its
/// SQLSTATE), or no answer (the connection is then dropped).
enum Outcome<T> {
    Done(T),
    Refused(String),
    Lost,
}

/// How a payment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paid {
    /// Committed, leaving this balance.
    Committed { balance: i64 },
    /// Not enough money: rolled back, nothing charged.
    Refused,
    /// An error or no answer.
    Failed,
}

/// A user's connections: the paying one, and the reading one for
/// [`ReadOn::Other`].
struct Conns {
    pay: Client,
    read: Option<Client>,
}

/// One virtual user on a SQL front.
pub(super) struct SqlUser {
    index: usize,
    group: Arc<SqlGroup>,
    nodes: Arc<NodeNames>,
    user_id: Uuid,
    client: String,
    generation: u32,
    needs_account: bool,
    conns: Option<Conns>,
    iteration: u64,
    /// Highest acknowledged version of the account; `None`: none yet.
    acked: Option<Seen>,
    /// Highest version this user's reads have returned.
    seen: Option<Seen>,
}

impl std::fmt::Debug for SqlUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlUser")
            .field("client", &self.client)
            .field("group", &self.group.label)
            .field("connected", &self.conns.is_some())
            .finish_non_exhaustive()
    }
}

impl SqlUser {
    pub(super) fn new(index: usize, group: Arc<SqlGroup>, nodes: Arc<NodeNames>) -> SqlUser {
        let mut u = SqlUser {
            index,
            group,
            nodes,
            user_id: Uuid::nil(),
            client: String::new(),
            generation: 0,
            needs_account: true,
            conns: None,
            iteration: 0,
            acked: None,
            seen: None,
        };
        u.new_account();
        u
    }

    /// Moves to a fresh account: new user id, new connections (a new
    /// device, and on ryw a new session), nothing seen.
    fn new_account(&mut self) {
        self.user_id = Uuid::new_v4();
        self.generation += 1;
        self.client = format!("s{}.{}", self.index, self.generation);
        self.needs_account = true;
        self.conns = None;
        self.acked = None;
        self.seen = None;
    }

    /// Opens one connection to the front and says what ryw must know.
    async fn open(&self, sh: &RunState, bind_session: bool) -> Result<Client, String> {
        let mut cfg: tokio_postgres::Config = self.group.url.parse().map_err(|e| format!("{e}"))?;
        cfg.connect_timeout(sh.config.request_timeout);
        cfg.application_name("ryw-bench");
        let (client, conn) = tokio::time::timeout(sh.config.request_timeout, cfg.connect(NoTls))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| describe(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        if let SqlFront::Ryw { strategy } = self.group.front {
            // One statement per query: ryw proxy answers `SET ryw.*`
            // itself, and only on its own (0A000 in a batch with others).
            let mut sets = Vec::new();
            if let Some(s) = strategy {
                sets.push(format!("SET ryw.strategy = '{s}'"));
            }
            if bind_session {
                sets.push(format!(
                    "SET ryw.session = '{}'",
                    session_key(&self.user_id)
                ));
            }
            for set in sets {
                tokio::time::timeout(sh.config.request_timeout, client.batch_execute(&set))
                    .await
                    .map_err(|_| format!("{set}: timed out"))?
                    .map_err(|e| format!("{set}: {}", describe(&e)))?;
            }
        }
        Ok(client)
    }

    /// The user's connections, opened when missing. A connection that
    /// cannot be opened is recorded as the operation it held up (status 0,
    /// problem `connect`), so a dead front shows as errors in the report.
    async fn connect(&mut self, sh: &RunState) -> bool {
        // A server's FATAL error (or a closed socket) leaves a client that
        // can only fail: open new ones.
        if let Some(c) = &self.conns
            && (c.pay.is_closed() || c.read.as_ref().is_some_and(Client::is_closed))
        {
            self.conns = None;
        }
        if self.conns.is_some() {
            return true;
        }
        // With one connection it is its own session (the proxy's default);
        // with two, both name the user's session.
        let other = self.group.read_on == ReadOn::Other;
        let sent_us = sh.now_us();
        let opened = async {
            let pay = self.open(sh, other).await?;
            let read = match other {
                true => Some(self.open(sh, true).await?),
                false => None,
            };
            Ok::<_, String>(Conns { pay, read })
        }
        .await;
        match opened {
            Ok(c) => {
                self.conns = Some(c);
                true
            }
            Err(_) => {
                let kind = match self.needs_account {
                    true => OpKind::Account,
                    false => OpKind::Pay,
                };
                let mut op = self.op(kind, sent_us, sh.now_us());
                op.problem = Some("connect".into());
                self.record(sh, op);
                false
            }
        }
    }

    /// A new history line for this user.
    fn op(&self, kind: OpKind, sent_us: u64, recv_us: u64) -> Op {
        Op {
            user: self.user_id.to_string(),
            client: self.client.clone(),
            strategy: self.group.label.clone(),
            kind,
            sent_us,
            recv_us,
            status: 0,
            version: None,
            served_by: None,
            waited_ms: None,
            problem: None,
        }
    }

    /// Records `op`, and checks a read against what this user knows (the
    /// progress bar's live counts).
    fn record(&mut self, sh: &RunState, op: Op) {
        let live = &sh.live;
        if op.is_error() {
            live.errors.fetch_add(1, Relaxed);
        } else if let (true, Some(v)) = (op.kind.is_write(), op.version) {
            self.acked = self.acked.max(Some(Seen::Version(v)));
        } else if let Some(got) = op.seen() {
            live.reads.fetch_add(1, Relaxed);
            if Some(got) < self.acked {
                live.ryw.fetch_add(1, Relaxed);
            }
            if Some(got) < self.seen {
                live.monotonic.fetch_add(1, Relaxed);
            }
            self.seen = self.seen.max(Some(got));
        }
        sh.ops.lock().expect("history lock").push(op);
    }

    /// Sets `op`'s status from an outcome; drops the connections when no
    /// answer came (a timed-out statement may still run on its server).
    fn settle<T>(&mut self, op: &mut Op, outcome: Outcome<T>) -> Option<T> {
        match outcome {
            Outcome::Done(v) => Some(v),
            Outcome::Refused(code) => {
                op.status = 500;
                op.problem = Some(code);
                None
            }
            Outcome::Lost => {
                self.conns = None;
                None
            }
        }
    }

    /// Creates the account (autocommit, on the paying connection).
    async fn create_account(&mut self, sh: &RunState) -> bool {
        let Some(c) = &self.conns else { return false };
        let id = self.user_id;
        let sent_us = sh.now_us();
        let outcome = run(sh, async {
            c.pay
                .query_typed(
                    ACCOUNT_SQL,
                    &[
                        (&id as &(dyn ToSql + Sync), Type::UUID),
                        (&OPENING_CENTS, Type::INT8),
                    ],
                )
                .await
        })
        .await;
        let mut op = self.op(OpKind::Account, sent_us, sh.now_us());
        let created = match self.settle(&mut op, outcome) {
            Some(rows) => {
                op.status = if rows.is_empty() { 200 } else { 201 };
                op.version = rows.first().map(|r| r.get::<_, i64>(0) as u64);
                op.served_by = Some("leader".into());
                true
            }
            None => false,
        };
        self.record(sh, op);
        created
    }

    /// Pays `amount` in one transaction on the paying connection.
    async fn pay(&mut self, sh: &RunState, amount: i64) -> Paid {
        let Some(c) = &mut self.conns else {
            return Paid::Failed;
        };
        let id = self.user_id;
        let sent_us = sh.now_us();
        let outcome = run(sh, async {
            let tx = c.pay.transaction().await?;
            let debited = tx
                .query_typed(
                    PAY_SQL,
                    &[
                        (&id as &(dyn ToSql + Sync), Type::UUID),
                        (&amount, Type::INT8),
                    ],
                )
                .await?;
            let Some(row) = debited.first() else {
                tx.rollback().await?;
                return Ok(None);
            };
            let (balance, version): (i64, i64) = (row.get(0), row.get(1));
            let hash = amount.to_be_bytes().to_vec();
            tx.query_typed(
                PAYMENT_SQL,
                &[
                    (&Uuid::new_v4() as &(dyn ToSql + Sync), Type::UUID),
                    (&id, Type::UUID),
                    (&hash, Type::BYTEA),
                    (&amount, Type::INT8),
                    (&"ryw bench (sql)", Type::TEXT),
                    (&balance, Type::INT8),
                    (&version, Type::INT8),
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(Some((balance, version)))
        })
        .await;
        let mut op = self.op(OpKind::Pay, sent_us, sh.now_us());
        let paid = match self.settle(&mut op, outcome) {
            Some(Some((balance, v))) => {
                op.status = 201;
                op.version = Some(v as u64);
                op.served_by = Some("leader".into());
                Paid::Committed { balance }
            }
            Some(None) => {
                op.status = 422;
                op.problem = Some("insufficient-funds".into());
                Paid::Refused
            }
            None => Paid::Failed,
        };
        self.record(sh, op);
        paid
    }

    /// Reads the balance, on the reading connection if there is one.
    async fn read(&mut self, sh: &RunState) {
        let Some(c) = &self.conns else { return };
        let reader = c.read.as_ref().unwrap_or(&c.pay);
        let id = self.user_id;
        let sent_us = sh.now_us();
        let outcome = run(sh, async {
            reader
                .query_typed(BALANCE_SQL, &[(&id as &(dyn ToSql + Sync), Type::UUID)])
                .await
        })
        .await;
        let mut op = self.op(OpKind::Balance, sent_us, sh.now_us());
        if let Some(rows) = self.settle(&mut op, outcome)
            && let Some(row) = rows.first()
        {
            let version: Option<i64> = row.get(1);
            let port: Option<i32> = row.get(2);
            let read_only: String = row.get(3);
            op.served_by = Some(if read_only == "off" {
                "leader".to_string()
            } else {
                port.and_then(|p| self.nodes.get(&p).cloned())
                    .unwrap_or_else(|| format!("port {}", port.unwrap_or(0)))
            });
            match version {
                Some(v) => {
                    op.status = 200;
                    op.version = Some(v as u64);
                }
                None => {
                    op.status = 404;
                    op.problem = Some("no-account".into());
                }
            }
        }
        self.record(sh, op);
    }

    async fn think(&self, sh: &RunState) {
        let pause = sh.config.think.sample(&mut rand::rng());
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }

    /// One iteration: (connect, create the account,) pay, think, read.
    pub(super) async fn iteration(&mut self, sh: &RunState) {
        if !self.connect(sh).await {
            tokio::time::sleep(ERROR_BACKOFF).await;
            return;
        }
        if self.needs_account {
            if !self.create_account(sh).await {
                tokio::time::sleep(ERROR_BACKOFF).await;
                return;
            }
            self.needs_account = false;
        }
        self.iteration += 1;
        let amount: i64 = rand::random_range(1..=MAX_AMOUNT);
        let paid = self.pay(sh, amount).await;
        if paid == Paid::Failed {
            tokio::time::sleep(ERROR_BACKOFF).await;
        }
        self.think(sh).await;
        self.read(sh).await;
        // Out of money (or about to be): carry on as a new user.
        if paid == Paid::Refused
            || matches!(paid, Paid::Committed { balance } if balance < MAX_AMOUNT)
        {
            self.new_account();
        }
    }
}

/// Runs one exchange with the request timeout: its answer, the SQLSTATE of
/// an error the server sent (the connection stays usable), or `Lost`.
async fn run<T>(
    sh: &RunState,
    exchange: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Outcome<T> {
    match tokio::time::timeout(sh.config.request_timeout, exchange).await {
        Ok(Ok(v)) => Outcome::Done(v),
        Ok(Err(e)) => match (e.code(), e.is_closed()) {
            (Some(code), false) => Outcome::Refused(code.code().to_string()),
            _ => Outcome::Lost,
        },
        Err(_) => Outcome::Lost,
    }
}

/// An error in words, with the server's SQLSTATE and message when it sent
/// one (tokio-postgres' `Display` says only "db error").
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}
