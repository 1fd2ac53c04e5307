//! One client connection: startup and authentication, then the relay.
//!
//! The client's messages are read and framed; a simple `Query`, or an
//! extended-protocol batch up to `Sync` (or `Flush`), is a unit of routing:
//!
//! - inside a transaction (the last `ReadyForQuery` said `T` or `E`), or
//!   for anything not provably read-only: the leader;
//! - a provably read-only statement outside a transaction: a fresh read,
//!   planned by the router for the client's session exactly as `ryw serve`
//!   plans one (rules 2, 4, 5), on the proxy's connection to that node for
//!   this client (checked against the incarnation the router knows: rule 2);
//! - `SET ryw.*` / `SHOW ryw.*` / a plain `set_config('ryw.…', …)`:
//!   answered here, with PostgreSQL's semantics inside transactions.
//!
//! # Positions nobody can touch
//!
//! After a write commits, the write's position is read by the *router*, on
//! its own connection to the leader, by a statement sent after the commit
//! returned (rule 1; [`ryw_router::FrontWrite`], coalesced across clients).
//! After a read that needs one (rule 7), the proxy pipelines a statement of
//! its own behind the client's batch on the same connection: a simple query
//! of schema-qualified built-ins ([`POSITION_SQL`]), no prepared statement,
//! no cast, nothing a client's `search_path`, `PREPARE`/`DEALLOCATE`/
//! `DISCARD`, `SET ROLE` or own functions can shadow, sent only after the
//! client's batch ended outside a transaction; its answer is swallowed, and
//! believed only if some node could have it ([`ryw_router::FrontRead::saw`]).
//! A position that could not be read is *unknown*: the session's fresh
//! reads go to the leader until one is known (`land.rs`).
//!
//! # The phases of a batch
//!
//! [`Phase::Idle`] waits for the client (and relays what the nodes send
//! unasked: notifications, notices, parameter changes). [`Phase::Flying`]
//! holds a [`Flight`], whose [`Stage`] says what the node's next replies
//! answer: the proxy's preamble (settings replayed, statements prepared),
//! the client's batch (held back on a follower until the read cannot move,
//! so a read the follower refuses or loses runs elsewhere unseen), a
//! redirect to the leader, or the position statement after it. Rows, types,
//! formats, notices and COPY data are relayed as the bytes they arrived as;
//! a big row is relayed in pieces as it comes.
//!
//! # Layout
//!
//! | file | what |
//! | --- | --- |
//! | `mod.rs` | the session's state and the relay loop |
//! | `startup.rs` | startup, authentication, the parameters the client gets |
//! | `flight.rs` | a batch with a node: its plan, its stage, what it did and how to take it back |
//! | `batch.rs` | what a batch does ([`BatchPlan`]), where it goes, sending it with its preamble |
//! | `prepare.rs` | the client's statements on a batch's node: what it lacks first, what the batch parses and closes, taken back if it did not run |
//! | `replies.rs` | the node's replies, stage by stage; retries before anything reached the client |
//! | `land.rs` | after a batch: tokens (rules 1 and 7), settings, pins, prepared statements |
//! | `nodes.rs` | the session's connections to the nodes: opened (or lent by a pool), given back |
//! | `idle.rs` | what nodes send while the client is idle; the pin check |
//! | `commands.rs` | `ryw.*` commands, and batches answered here |
//! | `settings.rs` | the client's session settings, replayed on every node it reaches |
//! | `statements.rs` | the client's prepared statements, bounded |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use postgres_protocol::message::frontend;
use ryw_router::{
    ClusterView, FrontRead, FrontWrite, LocalSession, MetricSlot, NodeId, Position, ReadOptions,
    ReadRequest, Scope, SessionKey, Unsettled,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::backend::{Backend, BackendError, Connect, Node};
use crate::classify::{Class, ClassCache, Effect, Route, RywCommand};
use crate::pool::PoolMode;
use crate::protocol::{self, Client, Frame, ProtocolError, Startup, tag};
use crate::server::{CancelTarget, ProxyState, Running};
use crate::tls::ClientStream;

mod batch;
mod commands;
mod flight;
mod idle;
mod land;
mod nodes;
mod pooled;
mod prepare;
mod replies;
mod settings;
mod startup;
mod statements;

use flight::{BatchPlan, Flight, Outcome, Phase, Stage, Undo, Undoes};
use nodes::Backends;
use settings::Settings;
use startup::startup;
use statements::Statements;

/// How much of a client's input is read ahead while its batch runs.
const CLIENT_READ_AHEAD: usize = 1 << 20;
/// The proxy's statement after a read: the node's position. Built-ins,
/// schema-qualified, no cast (pg_lsn's own output): nothing a client can
/// define shadows them. A follower promoted since the read was planned
/// answers its current position (its replay position stops).
pub(crate) const POSITION_SQL: &str = "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() \
     THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_lsn() END";
/// The SQLSTATE of the `NOTICE` that tells a session a failover lost its
/// write (class 01, warning; "R" for ryw).
pub const LOST_WRITE_SQLSTATE: &str = "01R01";

/// Why a session ends.
#[derive(Debug)]
enum Closing {
    /// The client left (`Terminate`, or the socket closed).
    Left,
    /// Nothing more to say (a cancel request was handled, a login refused).
    Quiet,
    /// A fatal error was sent to the client, or it cannot be reached.
    Fatal(String),
}

/// How a [`Closing::Fatal`] for a protocol violation begins (counted).
const PROTOCOL_VIOLATION: &str = "protocol violation";

impl From<ProtocolError> for Closing {
    fn from(e: ProtocolError) -> Closing {
        Closing::Fatal(format!("{PROTOCOL_VIOLATION}: {e}"))
    }
}

/// Serves one client until it leaves. `login` is its place among the
/// connections still logging in: given up once logged in (or evicted by a
/// newer one when too many are pending).
pub(crate) async fn serve(
    shared: Arc<ProxyState>,
    stream: TcpStream,
    peer: SocketAddr,
    mut login: crate::server::Login,
    thread: usize,
) {
    let mut client = ClientConn {
        stream: ClientStream::Plain(stream),
        end_point: None,
        inbuf: BytesMut::with_capacity(16 * 1024),
        out: BytesMut::with_capacity(16 * 1024),
        passthrough: 0,
    };
    let timeout = shared.cfg.login_timeout;
    let outcome = tokio::select! {
        r = tokio::time::timeout(timeout, startup(&shared, &mut client, peer, thread)) => match r {
            Ok(r) => r,
            Err(_) => {
                shared.metrics.count(crate::metrics::Event::LoginTimeout);
                client
                    .fatal("08P01", &format!("the login did not complete within {timeout:?}"))
                    .await;
                Err(Closing::Quiet)
            }
        },
        () = login.evicted() => {
            shared.metrics.count(crate::metrics::Event::LoginEvicted);
            client
                .fatal(
                    "53300",
                    "too many connections are logging in at once; this one waited longest",
                )
                .await;
            Err(Closing::Quiet)
        }
    };
    drop(login);
    let protocol_error = |why: &str| {
        if why.starts_with(PROTOCOL_VIOLATION) {
            shared.metrics.protocol_error();
        }
    };
    match outcome {
        Ok(mut session) => {
            shared.metrics.client(true);
            let why = session.run(&mut client).await;
            session.abandon().await;
            session.give_back();
            shared.unregister(session.pid);
            shared.metrics.client(false);
            if let Closing::Fatal(why) = why {
                protocol_error(&why);
                if why.starts_with(PROTOCOL_VIOLATION) {
                    tracing::warn!(%peer, %why, "client session ended");
                } else {
                    tracing::debug!(%peer, %why, "client session ended");
                }
            }
        }
        Err(Closing::Fatal(why)) => {
            protocol_error(&why);
            tracing::info!(%peer, %why, "client refused at startup")
        }
        Err(_) => {}
    }
}

/// The client's socket (TLS once it asked) and buffers.
struct ClientConn {
    stream: ClientStream,
    /// Over TLS: the proxy certificate's `tls-server-end-point` hash, for
    /// SCRAM channel binding (none when its algorithm has none here).
    end_point: Option<Arc<[u8]>>,
    inbuf: BytesMut,
    out: BytesMut,
    /// Bytes of a large `CopyData` still to relay straight to the node.
    passthrough: usize,
}

impl ClientConn {
    /// Reads more input; `Ok(0)` when the client closed.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.inbuf.capacity() - self.inbuf.len() < 4096 {
            self.inbuf.reserve(16 * 1024);
        }
        self.stream.read_buf(&mut self.inbuf).await
    }

    /// Writes out what is pending. While the client does not read, this
    /// waits, and nothing more is read from the node (backpressure).
    async fn flush(&mut self) -> Result<(), Closing> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.stream.send(&self.out).await;
        self.out.clear();
        if self.out.capacity() > 1 << 20 {
            // A burst of held replies: give the memory back.
            self.out = BytesMut::with_capacity(16 * 1024);
        }
        r.map_err(|e| Closing::Fatal(format!("writing to the client: {e}")))
    }

    /// A FATAL error, then the connection is closed.
    async fn fatal(&mut self, code: &str, message: &str) {
        protocol::error(&mut self.out, "FATAL", code, message);
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

/// Who the client is, as the nodes must see it.
#[derive(Debug)]
struct Identity {
    /// The authenticated role (the startup packet's `user`).
    user: Arc<str>,
    /// The database (the startup packet's, or the user's name).
    database: Arc<str>,
    /// The startup parameters for the nodes (`ryw.*` options taken out).
    params: Vec<(String, String)>,
    /// The role's password from the auth file, for nodes that ask.
    password: Option<String>,
}

/// What a client `SET`s of `ryw.*`: transactional, as PostgreSQL's own
/// settings (a `SET` in a transaction that rolls back is undone; `SET
/// LOCAL` lasts until the transaction ends).
#[derive(Clone, Debug, Default)]
struct RywSettings {
    /// `ryw.session`: the name as given, and the store's key (the name
    /// under the role that bound it).
    named: Option<(Arc<str>, SessionKey)>,
    options: ReadOptions,
    /// `ryw.scope`: whose writes fresh reads must see (`None`: the
    /// proxy's `--scope`).
    scope: Option<Scope>,
}

/// What the connection knows of its positions.
#[derive(Debug, Default)]
struct Positions {
    /// The highest position this connection wrote or saw (and `SET
    /// ryw.token`'s, clamped).
    token: Option<Position>,
    /// The floor of this connection's latest write (the leader's position
    /// before it): a write a failover lost is told from it.
    written: Option<Position>,
    last_write_ms: Option<u64>,
    /// A write committed whose position could not be read: until one is
    /// (the next fetch of the leader's position), fresh reads go to the
    /// leader. Holds the write's floor.
    unknown: Option<Option<Position>>,
    /// The last fresh read of this connection's own session ran on a
    /// follower without a position statement: its bound comes from the
    /// tracker's next poll of that follower (rule 7).
    unsettled: Option<Unsettled>,
}

/// Pins: session state that lives on the leader only (temp tables,
/// `LISTEN`, SQL `PREPARE`, holdable cursors, session advisory locks), so
/// the connection's reads stay there while it exists.
#[derive(Debug, Default)]
struct Pins {
    /// Some such state may exist.
    pinned: bool,
    /// State that cannot be asked about (`standard_conforming_strings`
    /// off, a computed `set_config`): lifted only by `RESET ALL` or
    /// `DISCARD ALL`.
    lasting: bool,
    /// Something ran on the leader since the last check that may have
    /// dropped the state: ask the leader before the next read.
    check_due: bool,
    /// The state lives on the leader connection the client has (not the
    /// leader's statistics, which any connection there reads): under
    /// transaction pooling the client keeps that connection.
    holds: bool,
}

/// One client's session.
struct Session {
    shared: Arc<ProxyState>,
    peer: SocketAddr,
    /// The relay thread it runs on (its pools are that thread's).
    thread: usize,
    pid: i32,
    cancel: CancelTarget,
    id: Identity,
    /// By the router's [`NodeId`].
    backends: Backends,
    /// Transaction pooling: the pool of each node reached so far, by the
    /// node's index.
    pools: Vec<Option<Arc<crate::pool::Pool>>>,
    /// The node that leads, as of the last batch that started outside a
    /// transaction (a transaction stays where it began).
    leader_slot: NodeId,
    /// The transaction status the client last saw.
    status: u8,
    ryw: RywSettings,
    /// `ryw.*` as they were when the open transaction began (to undo a
    /// rollback), once a `ryw.*` command ran in it; and the `SET LOCAL`s.
    ryw_txn: Option<RywTxn>,
    positions: Positions,
    served_by: Arc<str>,
    statements: Statements,
    settings: Settings,
    pins: Pins,
    classes: ClassCache,
    phase: Phase,
    /// The extended batch being read, and its size.
    batch: Vec<Frame>,
    batch_bytes: usize,
    /// The bytes of the next write to a node, kept between batches so that
    /// a batch allocates nothing.
    scratch: BytesMut,
    /// The buffer a follower read holds its first replies in, between
    /// reads.
    hold_spare: BytesMut,
    view: watch::Receiver<Arc<ClusterView>>,
    /// Its place among the clients (`--max-clients`), given back on drop.
    _slot: crate::server::ClientSlot,
}

/// `ryw.*` inside a transaction.
#[derive(Debug)]
struct RywTxn {
    /// As at the transaction's start.
    before: RywSettings,
    /// As they will be after a `COMMIT` (the `SET`s, not the `SET LOCAL`s).
    committed: RywSettings,
}

/// Milliseconds since the epoch, for the sticky window.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where the metrics count a batch routed to `node`.
fn metric_slot(node: Node) -> MetricSlot {
    match node {
        Node::Leader => MetricSlot::Leader,
        Node::Follower(id) => MetricSlot::Node(id),
    }
}

/// At most `n` characters of a client's text, for a message or a log.
pub(crate) fn cut(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

impl Session {
    /// The router's id of `node`: a follower's own, or the leader's.
    fn slot(&self, node: Node) -> NodeId {
        match node {
            Node::Leader => self.leader_slot,
            Node::Follower(id) => id,
        }
    }

    fn backend(&mut self, node: Node) -> &mut Backend {
        let slot = self.slot(node);
        self.backends[slot]
            .as_mut()
            .expect("a backend is opened before it is used")
    }

    /// What `X-Served-By` would say of `node`.
    fn node_name(&self, node: Node) -> Arc<str> {
        match node {
            Node::Leader => {
                static LEADER: std::sync::LazyLock<Arc<str>> =
                    std::sync::LazyLock::new(|| Arc::from(ryw_router::LEADER_NAME));
                LEADER.clone()
            }
            Node::Follower(i) => self.shared.addr(i).name.clone(),
        }
    }

    /// The session this connection's reads and writes belong to.
    fn named(&self) -> Option<&SessionKey> {
        self.ryw.named.as_ref().map(|(_, k)| k)
    }

    /// Follows the router to the node that leads now, outside a
    /// transaction (a failover moved it). A connection kept to the old
    /// leader is dropped: it died with it, or it is a standby now.
    fn follow_leader(&mut self) {
        if self.status != b'I' {
            return;
        }
        // The view this session already watches: no copy of it per batch.
        let now = self.view.borrow().leader_id.unwrap_or(self.leader_slot);
        if now != self.leader_slot {
            tracing::info!(
                from = %self.shared.addr(self.leader_slot).name,
                to = %self.shared.addr(now).name,
                "the leader moved; this session follows it"
            );
            self.drop_backend(self.leader_slot);
            self.leader_slot = now;
            // Its session state died with it.
            self.pins = Pins::default();
        }
    }

    /// Tells the client that a failover lost a write of its session (a
    /// `NOTICE`, as HTTP sends `X-Ryw-Write-Lost`).
    fn tell_lost(&self, client: &mut ClientConn, lost: Position) {
        let message = format!(
            "ryw: a write of this session that the old leader acknowledged (after {} on timeline {}) \
             was lost in a failover: the new leader does not have it",
            lost.lsn, lost.timeline
        );
        tracing::warn!(pid = self.pid, lsn = %lost.lsn, timeline = lost.timeline, "told a session its write was lost");
        protocol::notice(&mut client.out, "WARNING", LOST_WRITE_SQLSTATE, &message);
    }

    /// The classification of a statement text, cached per connection (a
    /// hit costs about 0.1 µs; a parse 4–60 µs).
    fn class_of(&mut self, sql: &str) -> Class {
        self.classes.classify(sql)
    }

    /// Takes the bound of an unsettled read from the tracker, if it has
    /// one by now.
    fn settle(&mut self) {
        if let Some(u) = self.positions.unsettled
            && let Some(bound) = self.shared.router.settle(&u)
        {
            self.positions.token = self.positions.token.max(Some(bound));
            self.positions.unsettled = None;
        }
    }

    /// [`Session::settle`], waiting (a poll interval, at most a second) for
    /// the tracker: before the token leaves this connection (`SHOW
    /// ryw.token`, a named session).
    async fn settle_wait(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            self.settle();
            if self.positions.unsettled.is_none() {
                return;
            }
            if tokio::time::timeout_at(deadline, self.view.changed())
                .await
                .is_err()
            {
                tracing::warn!("a read's bound did not settle within a second");
                return;
            }
        }
    }

    /// The session's read request for a statement routed `route`.
    fn read_request(&self, route: Route) -> ReadRequest<'_> {
        let freshness = match route {
            Route::StaleOk => ryw_router::Freshness::StaleOk,
            _ => ryw_router::Freshness::Fresh,
        };
        let p = &self.positions;
        let req = match self.named() {
            Some(key) => ReadRequest::fresh(key).client_token(p.token),
            None => ReadRequest::fresh_local(LocalSession {
                token: p.token,
                write: p.written,
                last_write_ms: p.last_write_ms,
            }),
        };
        req.freshness(freshness)
            .options(self.ryw.options)
            .scope(self.scope())
    }

    /// The scope of the session's fresh reads: `ryw.scope`, else the
    /// proxy's `--scope`.
    fn scope(&self) -> Scope {
        self.ryw
            .scope
            .unwrap_or(self.shared.router.config().default_scope)
    }

    /// Whether a read must read its node's position after it (rule 7):
    /// a session others read too, or a scope whose reads start from a
    /// fetched position (they never leave a read unsettled, which would
    /// send the next one to the last follower without that position).
    fn shares_positions(&self) -> bool {
        self.named().is_some() || self.scope().fetches()
    }

    /// Where the client's statement runs, for its cancel requests.
    fn running(&self, now: Running) {
        *self.cancel.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    /// The batch is about to be sent to `target`: `false` if a cancel
    /// request came while it was being routed (then nothing runs).
    fn start_running(&self, target: Running) -> bool {
        let mut running = self.cancel.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*running, Running::Routing { cancelled: true }) {
            *running = Running::Idle;
            return false;
        }
        *running = target;
        true
    }

    /// The client is gone: a statement still running for it is cancelled
    /// (a backend does not notice a closed socket while it computes), then
    /// the connections close (which rolls back what was open).
    async fn abandon(&mut self) {
        if let Phase::Flying(f) = &self.phase
            && let Some(b) = &self.backends[self.slot(f.node)]
        {
            Backend::cancel(b.addr, b.key).await;
        }
    }

    async fn run(&mut self, client: &mut ClientConn) -> Closing {
        match self.relay(client).await {
            Ok(()) => Closing::Left,
            Err(c) => c,
        }
    }

    async fn relay(&mut self, client: &mut ClientConn) -> Result<(), Closing> {
        loop {
            self.take_client_frames(client).await?;
            client.flush().await?;
            let flying = match &self.phase {
                Phase::Flying(f) => Some((
                    f.node,
                    f.read.is_some() && !f.forwarded,
                    matches!(f.stage, Stage::Client { copy_in: true, .. }),
                )),
                Phase::Idle => None,
            };
            match flying {
                None => self.wait_idle(client).await?,
                Some((node, watch_node, copy_in)) => {
                    // During COPY FROM STDIN the client's data is the batch.
                    let reading = copy_in || client.inbuf.len() < CLIENT_READ_AHEAD;
                    let slot = self.slot(node);
                    let backend = self.backends[slot]
                        .as_mut()
                        .expect("a flight's backend is open");
                    let view = &mut self.view;
                    tokio::select! {
                        r = client.fill(), if reading => match r {
                            Ok(0) | Err(_) => return Err(Closing::Left),
                            Ok(_) => {}
                        },
                        r = backend.fill() => match r {
                            Ok(_) => self.take_backend_frames(client).await?,
                            Err(e) => self.backend_lost(client, e.to_string()).await?,
                        },
                        Ok(()) = view.changed(), if watch_node && matches!(node, Node::Follower(_)) => {
                            self.check_follower_still_eligible(client).await?;
                        }
                    }
                }
            }
        }
    }

    /// Bytes the client makes the proxy hold: its batch being read, its
    /// prepared statements and its settings.
    fn held_bytes(&self) -> usize {
        self.batch_bytes + self.statements.bytes() + self.settings.bytes()
    }

    /// Refuses a client over its memory limit (SQLSTATE 54000), closing
    /// the connection; nothing of the batch was sent.
    async fn over_limit(&mut self, client: &mut ClientConn, what: &str) -> Result<(), Closing> {
        let limit = self.shared.cfg.client_memory_limit;
        self.shared
            .metrics
            .count(crate::metrics::Event::MemoryLimit);
        let message = format!(
            "{what} would make ryw proxy hold more than {limit} bytes for this connection \
             (--client-memory-limit); send Sync sooner, or prepare fewer or smaller statements"
        );
        tracing::warn!(peer = %self.peer, %message, "client over its memory limit");
        client.fatal("54000", &message).await;
        Err(Closing::Fatal(message))
    }

    /// Handles the client's buffered messages as far as the phase allows:
    /// a batch with a node blocks the next one (replies stay in order).
    async fn take_client_frames(&mut self, client: &mut ClientConn) -> Result<(), Closing> {
        loop {
            let copy_in = match &self.phase {
                Phase::Flying(f) => match f.stage {
                    Stage::Client { copy_in, .. } => copy_in,
                    _ => false,
                },
                Phase::Idle => false,
            };
            if let Phase::Flying(f) = &self.phase
                && f.synced
                && !copy_in
            {
                return Ok(());
            }
            if copy_in {
                match self.relay_copy_data(client).await? {
                    true => continue,
                    false => return Ok(()),
                }
            }
            let cap = self
                .shared
                .cfg
                .client_memory_limit
                .saturating_sub(self.held_bytes())
                .min(protocol::MAX_MESSAGE);
            let frame = match protocol::next_frame(&mut client.inbuf, cap) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(ProtocolError::TooLarge(n)) if n <= protocol::MAX_MESSAGE => {
                    return self
                        .over_limit(client, &format!("a message of {n} bytes"))
                        .await;
                }
                Err(e) => {
                    client.fatal("08P01", &e.to_string()).await;
                    return Err(e.into());
                }
            };
            let kind = match protocol::parse_client(&frame) {
                Ok(k) => k,
                Err(e) => {
                    client.fatal("08P01", &e.to_string()).await;
                    return Err(e.into());
                }
            };
            match kind {
                Client::Terminate => return Err(Closing::Left),
                Client::Query(_) | Client::FunctionCall => {
                    // PostgreSQL runs a Query that follows extended
                    // messages (with or without a Flush) after them, in
                    // the same implicit transaction; its ReadyForQuery
                    // ends them all.
                    self.batch.push(frame);
                    let frames = std::mem::take(&mut self.batch);
                    self.batch_bytes = 0;
                    self.dispatch(client, frames, true).await?;
                }
                Client::Sync => {
                    self.batch.push(frame);
                    let frames = std::mem::take(&mut self.batch);
                    self.batch_bytes = 0;
                    self.dispatch(client, frames, true).await?;
                }
                Client::Flush => {
                    if self.batch.is_empty() && matches!(self.phase, Phase::Idle) {
                        // Nothing pending: the proxy sends every reply at
                        // once anyway (libpq ends a pipeline with Sync, Flush).
                        continue;
                    }
                    self.batch.push(frame);
                    let frames = std::mem::take(&mut self.batch);
                    self.batch_bytes = 0;
                    self.dispatch(client, frames, false).await?;
                }
                Client::Parse { .. }
                | Client::Bind { .. }
                | Client::Describe { .. }
                | Client::Close { .. }
                | Client::Execute { .. } => {
                    self.batch_bytes += frame.raw.len();
                    if self.held_bytes() > self.shared.cfg.client_memory_limit {
                        return self
                            .over_limit(client, "the messages sent without a Sync")
                            .await;
                    }
                    self.batch.push(frame);
                }
                Client::CopyData | Client::CopyDone | Client::CopyFail => {
                    // Outside COPY the server ignores these too.
                }
                Client::Password => {
                    let e = ProtocolError::UnknownType('p');
                    client
                        .fatal("08P01", &format!("unexpected password message: {e}"))
                        .await;
                    return Err(e.into());
                }
            }
        }
    }

    /// COPY FROM STDIN: the client's data goes to the node as it comes, a
    /// big `CopyData` in pieces. Returns whether it made progress.
    async fn relay_copy_data(&mut self, client: &mut ClientConn) -> Result<bool, Closing> {
        let Phase::Flying(f) = &self.phase else {
            return Ok(false);
        };
        let node = f.node;
        if client.passthrough > 0 {
            let n = client.passthrough.min(client.inbuf.len());
            if n == 0 {
                return Ok(false);
            }
            let piece = client.inbuf.split_to(n);
            client.passthrough -= n;
            if let Err(e) = self.backend(node).send(&piece).await {
                self.backend_lost(client, e.to_string()).await?;
            }
            return Ok(true);
        }
        let Some((t, total)) = protocol::peek_header(&client.inbuf) else {
            return Ok(false);
        };
        let total = match total {
            Ok(n) => n,
            Err(e) => {
                client.fatal("08P01", &e.to_string()).await;
                return Err(e.into());
            }
        };
        match t {
            tag::frontend::COPY_DATA if total > crate::backend::LARGE_MESSAGE => {
                let n = total.min(client.inbuf.len());
                let piece = client.inbuf.split_to(n);
                client.passthrough = total - n;
                if let Err(e) = self.backend(node).send(&piece).await {
                    self.backend_lost(client, e.to_string()).await?;
                }
                Ok(true)
            }
            tag::frontend::COPY_DATA
            | tag::frontend::COPY_DONE
            | tag::frontend::COPY_FAIL
            | tag::frontend::FLUSH
            | tag::frontend::SYNC => {
                let frame = match protocol::next_frame(&mut client.inbuf, protocol::MAX_MESSAGE) {
                    Ok(Some(f)) => f,
                    Ok(None) => return Ok(false),
                    Err(e) => {
                        client.fatal("08P01", &e.to_string()).await;
                        return Err(e.into());
                    }
                };
                if matches!(t, tag::frontend::COPY_DONE | tag::frontend::COPY_FAIL)
                    && let Phase::Flying(f) = &mut self.phase
                    && let Stage::Client { copy_in, .. } = &mut f.stage
                {
                    *copy_in = false;
                }
                if let Err(e) = self.backend(node).send(&frame.raw).await {
                    self.backend_lost(client, e.to_string()).await?;
                }
                Ok(true)
            }
            other => {
                let e = ProtocolError::UnknownType(other as char);
                client
                    .fatal("08P01", &format!("unexpected message during COPY: {e}"))
                    .await;
                Err(e.into())
            }
        }
    }
}

/// Whether an `ErrorResponse` ends the node's connection (FATAL, PANIC).
fn is_fatal(fields: &protocol::ErrorFields) -> bool {
    fields.severity == "FATAL" || fields.severity == "PANIC"
}

/// Bytes to keep between batches for a statement the proxy sends itself.
fn simple_query(out: &mut BytesMut, sql: &str) {
    let _ = frontend::query(sql, out);
}

/// A helper the modules share: a `BufMut` write of a whole frame.
fn put_frame(out: &mut BytesMut, frame: &Frame) {
    out.put_slice(&frame.raw);
}
