//! One client connection: startup and authentication, then the relay.
//!
//! The client's messages are read and framed; a simple `Query`, or an
//! extended-protocol batch up to `Sync` (or `Flush`), is a unit of routing:
//!
//! - inside a transaction (the last `ReadyForQuery` said `T` or `E`), or
//!   for anything not provably read-only: the leader;
//! - a provably read-only statement outside a transaction: a fresh read,
//!   planned by the router for the client's session exactly as `ryw serve`
//!   plans one (rules 2, 4, 5), on the proxy's own connection to that node
//!   (checked against the incarnation the router knows: rule 2);
//! - `SET ryw.*` / `SHOW ryw.*`: answered here.
//!
//! Behind the client's batch the proxy pipelines one statement of its own
//! on the same connection, whose answer it swallows: the node's position,
//! read after the client's batch ended. After a read it raises the
//! session's token to it (rule 7); after a write that committed (the
//! client's `ReadyForQuery` says `I`) it is the write's token (rule 1). The
//! client's `ReadyForQuery` is forwarded only after that.
//!
//! A read on a follower holds back its first replies (`ParseComplete`,
//! `RowDescription`, …) until a row, a completion or an error arrives: if
//! the follower refuses the statement as a write (SQLSTATE 25006), or
//! breaks, or leaves rotation before anything reached the client, the batch
//! runs again on the leader (or another follower), and the client sees one
//! answer. Rows, types, formats, notices and COPY data are relayed as the
//! bytes they arrived as.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::message::frontend;
use ryw_router::{
    ClusterView, Decision, Freshness, LocalSession, Lsn, Position, ReadOptions, ReadRequest,
    SessionKey,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

use crate::backend::{Backend, BackendError, Connect, Node};
use crate::classify::{Class, ClassCache, Effect, Route, RywCommand};
use crate::protocol::{self, Client, Frame, MAX_MESSAGE, ProtocolError, Startup};
use crate::server::{CancelTarget, Shared};

mod batch;
mod commands;
mod replies;
mod startup;

use batch::position_statement;
use startup::startup;

/// How much of a client's input is buffered while its batch runs.
const CLIENT_BUFFER_CAP: usize = 1 << 20;
/// How long a client has to finish its startup and authentication.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// The proxy's own prepared statement on each backend: the node's position.
const POSITION_STATEMENT: &str = "ryw_position";
/// The SQLSTATE of the `NOTICE` that tells a session a failover lost its
/// write (class 01, warning; "R" for ryw).
pub const LOST_WRITE_SQLSTATE: &str = "01R01";

/// Why a session ends.
#[derive(Debug)]
enum Closing {
    /// The client left (`Terminate`, or the socket closed).
    Left,
    /// Nothing more to say (a cancel request was handled).
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

/// Serves one client until it leaves.
pub(crate) async fn serve(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let clients = shared
        .clients
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (rd, wr) = stream.into_split();
    let mut client = ClientConn {
        rd,
        wr,
        inbuf: BytesMut::with_capacity(16 * 1024),
        out: BytesMut::with_capacity(16 * 1024),
    };
    let outcome = if clients >= shared.cfg.max_clients {
        shared.metrics.refused();
        client
            .fatal(
                "53300",
                &format!(
                    "sorry, too many clients already (the proxy's limit is {})",
                    shared.cfg.max_clients
                ),
            )
            .await;
        Err(Closing::Quiet)
    } else {
        match tokio::time::timeout(STARTUP_TIMEOUT, startup(&shared, &mut client, peer)).await {
            Ok(r) => r,
            Err(_) => {
                client
                    .fatal("08P01", "the startup did not complete in time")
                    .await;
                Err(Closing::Quiet)
            }
        }
    };
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
            shared.unregister(session.pid);
            shared.metrics.client(false);
            if let Closing::Fatal(why) = why {
                protocol_error(&why);
                tracing::debug!(%peer, %why, "client session ended");
            }
        }
        Err(Closing::Fatal(why)) => {
            protocol_error(&why);
            tracing::debug!(%peer, %why, "client refused at startup")
        }
        Err(_) => {}
    }
    shared
        .clients
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// The client's socket and buffers.
struct ClientConn {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    inbuf: BytesMut,
    out: BytesMut,
}

impl ClientConn {
    /// Reads more input; `Ok(0)` when the client closed.
    async fn fill(&mut self) -> std::io::Result<usize> {
        if self.inbuf.capacity() - self.inbuf.len() < 4096 {
            self.inbuf.reserve(16 * 1024);
        }
        self.rd.read_buf(&mut self.inbuf).await
    }

    /// Writes out what is pending.
    async fn flush(&mut self) -> Result<(), Closing> {
        if self.out.is_empty() {
            return Ok(());
        }
        let r = self.wr.write_all(&self.out).await;
        self.out.clear();
        r.map_err(|e| Closing::Fatal(format!("writing to the client: {e}")))
    }

    /// A FATAL error, then the connection is closed.
    async fn fatal(&mut self, code: &str, message: &str) {
        protocol::error(&mut self.out, "FATAL", code, message);
        let _ = self.flush().await;
        let _ = self.wr.shutdown().await;
    }
}

/// What the proxy knows of a client's prepared statement.
#[derive(Clone, Debug)]
struct Prepared {
    /// The client's `Parse`, as sent: replayed on a backend that lacks it.
    parse: Bytes,
    class: Class,
    /// Bumped each time the client prepares the name again.
    version: u64,
}

/// The plan of one batch: where it goes and what it does.
#[derive(Debug, Default)]
struct BatchPlan {
    route: Option<Route>,
    /// Why the leader, for logs.
    why: &'static str,
    ends_transaction: bool,
    settings: Vec<String>,
    pins: bool,
    copy: bool,
    /// The batch is the proxy's own commands only.
    ryw: bool,
    /// It mixes `ryw.*` commands with statements for the nodes.
    mixed_ryw: bool,
    /// It only closes statements or portals (answered here; the nodes
    /// close theirs with their next batch).
    close_only: bool,
    /// It runs something (an `Execute`, a `Query`, a function call), as
    /// opposed to preparing or describing: `ryw.served_by` follows it.
    runs: bool,
}

/// A batch sent to a node, until its `ReadyForQuery` has been handled.
#[derive(Debug)]
struct Flight {
    node: Node,
    /// The client's frames, kept to run the batch again elsewhere.
    frames: Vec<Frame>,
    plan: BatchPlan,
    /// A read, with its decision (rule 7 raises its token).
    read: Option<Decision>,
    /// Runs of the batch so far (one retry elsewhere at most).
    attempts: u8,
    /// A follower's epoch when the batch went there: if the router forgets
    /// the follower meanwhile (it broke, stalled or restarted), the read
    /// moves before anything reached the client.
    epoch: Option<u64>,
    /// The client's `Sync` (or `Query`) has been sent: a `ReadyForQuery`
    /// ends the batch. Until then (after a `Flush`) replies just flow.
    synced: bool,
    /// Settings replayed before the batch: their `ReadyForQuery`s to swallow.
    replays: usize,
    /// Replies to the proxy's own `Parse`/`Close` before the batch.
    swallow: usize,
    /// Hold the client's replies until a row, a completion or an error.
    holding: bool,
    held: BytesMut,
    /// Something of this batch reached the client.
    forwarded: bool,
    /// Run the batch again on the leader once the node is done with it.
    to_leader: bool,
    /// The SQLSTATE of the batch's error, if it had one.
    error: Option<String>,
    committed: bool,
    rolled_back: bool,
    copy_in: bool,
    /// The proxy's position statement follows the client's batch.
    position_after: bool,
    /// The position statement goes out once the batch is done (after a
    /// COPY, which would take it for data).
    position_later: bool,
    /// The client's `ReadyForQuery` status, once it arrived (held until the
    /// position statement answered).
    client_ready: Option<u8>,
    position: Option<Lsn>,
    /// On the leader: its position as the tracker knew it when the batch
    /// was sent, before any record of the batch: the floor a failover
    /// judges a write by (`History::write_lost`).
    floor: Option<Position>,
}

/// Where the session is in its request-reply cycle.
#[derive(Debug)]
enum Phase {
    /// Waiting for the client's next batch.
    Idle,
    /// A batch is with a node.
    Flying(Box<Flight>),
}

/// One client's session.
struct Session {
    shared: Arc<Shared>,
    pid: i32,
    cancel: CancelTarget,
    /// The client's startup parameters, as sent to the nodes.
    params: Vec<(String, String)>,
    password: Option<String>,
    /// By the router's node index (the followers, then the node configured
    /// as the leader).
    backends: Vec<Option<Backend>>,
    /// The node that leads, as of the last batch that started outside a
    /// transaction (a transaction stays where it began).
    leader_slot: usize,
    /// The transaction status the client last saw.
    status: u8,
    /// `SET ryw.session`: a named session in the store, shared with other
    /// connections, proxies and `ryw serve`. `None`: the connection is its
    /// own session.
    named: Option<SessionKey>,
    /// The highest position this connection wrote or saw (and `SET
    /// ryw.token`'s).
    token: Option<Position>,
    /// The floor of this connection's latest write (the leader's position
    /// before it): a write a failover lost is told from it.
    written: Option<Position>,
    last_write_ms: Option<u64>,
    options: ReadOptions,
    served_by: Arc<str>,
    statements: HashMap<String, Prepared>,
    next_version: u64,
    /// Session settings in the order they took effect, replayed on every
    /// node the client reaches.
    settings: Vec<String>,
    /// Settings made inside the open transaction: they count at COMMIT.
    pending_settings: Vec<String>,
    /// Temp tables, SQL `PREPARE`, `LISTEN`…: state on the leader only.
    pinned: bool,
    /// The last fresh read of this connection's own session ran on a
    /// follower without a position statement: its bound comes from the
    /// tracker's next poll of that follower (rule 7).
    unsettled: Option<ryw_router::Unsettled>,
    classes: ClassCache,
    phase: Phase,
    /// The extended batch being read.
    batch: Vec<Frame>,
    /// The bytes of the next write to a node, kept between batches so that
    /// a batch allocates nothing.
    scratch: BytesMut,
    view: watch::Receiver<Arc<ClusterView>>,
}

/// Milliseconds since the epoch, for the sticky window.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The metrics' index of a batch routed to `node`: the leader first, then
/// each node as a follower.
fn metric_index(node: Node) -> usize {
    match node {
        Node::Leader => 0,
        Node::Follower(i) => i + 1,
    }
}

impl Session {
    /// The router's index of `node`: a follower's own, or the leader's.
    fn slot(&self, node: Node) -> usize {
        match node {
            Node::Leader => self.leader_slot,
            Node::Follower(i) => i,
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
            Node::Leader => Arc::from(ryw_router::LEADER_NAME),
            Node::Follower(i) => self.shared.addr(i).name.clone(),
        }
    }

    /// Follows the router to the node that leads now, outside a
    /// transaction (a failover moved it). A connection kept to the old
    /// leader is dropped: it died with it, or it is a standby now.
    fn follow_leader(&mut self) {
        if self.status != b'I' {
            return;
        }
        // The view this session already watches: no copy of it per batch.
        let now = self.view.borrow().leader_index.unwrap_or(self.leader_slot);
        if now != self.leader_slot {
            tracing::info!(
                from = %self.shared.addr(self.leader_slot).name,
                to = %self.shared.addr(now).name,
                "the leader moved; this session follows it"
            );
            self.backends[self.leader_slot] = None;
            self.leader_slot = now;
        }
    }

    /// Tells the client that a failover lost a write of its session (rule
    /// of the "Failover" contract: a `NOTICE`, as HTTP sends
    /// `X-Ryw-Write-Lost`).
    fn tell_lost(&self, client: &mut ClientConn, lost: Position) {
        let message = format!(
            "ryw: a write of this session that the old leader acknowledged (after {} on timeline {}) \
             was lost in a failover: the new leader does not have it",
            lost.lsn, lost.timeline
        );
        tracing::warn!(pid = self.pid, lsn = %lost.lsn, timeline = lost.timeline, "told a session its write was lost");
        protocol::notice(&mut client.out, "WARNING", LOST_WRITE_SQLSTATE, &message);
    }

    /// Opens the connection to `node` unless it is open. A follower's is
    /// checked against the incarnation the router knows (rule 2).
    async fn open(&mut self, node: Node) -> Result<(), BackendError> {
        let slot = self.slot(node);
        if self.backends[slot].is_some() {
            return Ok(());
        }
        let addr = self.shared.addr(slot).clone();
        let incarnation = match node {
            Node::Leader => None,
            Node::Follower(i) => match self.shared.router.follower_incarnation(i) {
                Some(started) => Some(started),
                None => return Err(BackendError::Incarnation { node: addr.name }),
            },
        };
        let backend = Backend::connect(
            Connect {
                name: &addr.name,
                addr: addr.addr,
                params: &self.params,
                password: self.password.as_deref(),
                timeout: self.shared.cfg.connect_timeout,
            },
            incarnation,
        )
        .await?;
        self.backends[slot] = Some(backend);
        Ok(())
    }

    /// The classification of a statement text, cached per connection (a
    /// hit costs about 0.1 µs; a parse 4–60 µs).
    fn class_of(&mut self, sql: &str) -> Class {
        self.classes.classify(sql)
    }

    /// Whether a read's position is read after it, in a statement of its
    /// own (rule 7): fresh reads under strategies that keep tokens, on the
    /// leader, or of a named session (whose token other connections read).
    /// A follower read of this connection's own session is bounded by the
    /// tracker's next poll instead (`unsettled`), at no statement.
    fn read_needs_position(&self, d: &Decision) -> bool {
        d.freshness == Freshness::Fresh
            && d.strategy.tracks_tokens()
            && (self.named.is_some() || d.follower_index().is_none())
    }

    /// Takes the bound of an unsettled read from the tracker, if it has
    /// one by now.
    fn settle(&mut self) {
        if let Some(u) = self.unsettled
            && let Some(bound) = self.shared.router.settle(&u)
        {
            self.token = self.token.max(Some(bound));
            self.unsettled = None;
        }
    }

    /// [`Session::settle`], waiting (a poll interval, at most a second) for
    /// the tracker: before the token leaves this connection (`SHOW
    /// ryw.token`, a named session).
    async fn settle_wait(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            self.settle();
            if self.unsettled.is_none() {
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
            Route::StaleOk => Freshness::StaleOk,
            _ => Freshness::Fresh,
        };
        let req = match &self.named {
            Some(key) => ReadRequest::fresh(key).client_token(self.token),
            None => ReadRequest::fresh_local(LocalSession {
                token: self.token,
                write: self.written,
                last_write_ms: self.last_write_ms,
            }),
        };
        req.freshness(freshness).options(self.options)
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
                Phase::Flying(f) => Some((f.node, f.read.is_some() && !f.forwarded)),
                Phase::Idle => None,
            };
            let reading = client.inbuf.len() < CLIENT_BUFFER_CAP;
            match flying {
                None => match client.fill().await {
                    Ok(0) | Err(_) => return Err(Closing::Left),
                    Ok(_) => {}
                },
                Some((node, watch_node)) => {
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

    /// Handles the client's buffered messages as far as the phase allows:
    /// a batch with a node blocks the next one (replies stay in order).
    async fn take_client_frames(&mut self, client: &mut ClientConn) -> Result<(), Closing> {
        loop {
            if let Phase::Flying(f) = &self.phase
                && f.synced
                && !f.copy_in
            {
                return Ok(());
            }
            let frame = match protocol::next_frame(&mut client.inbuf, MAX_MESSAGE) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => {
                    client.fatal("08P01", &e.to_string()).await;
                    return Err(e.into());
                }
            };
            if let Phase::Flying(f) = &mut self.phase
                && f.copy_in
            {
                // COPY FROM STDIN: the data goes to the node as it comes.
                match frame.tag {
                    b'd' | b'c' | b'f' | b'H' | b'S' => {
                        if frame.tag == b'c' || frame.tag == b'f' {
                            f.copy_in = false;
                        }
                        let node = f.node;
                        if let Err(e) = self.backend(node).send(&frame.raw).await {
                            return self.backend_lost(client, e.to_string()).await;
                        }
                        continue;
                    }
                    other => {
                        let e = ProtocolError::UnknownType(other as char);
                        client
                            .fatal("08P01", &format!("unexpected message during COPY: {e}"))
                            .await;
                        return Err(e.into());
                    }
                }
            }
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
                    if !self.batch.is_empty() || matches!(self.phase, Phase::Flying(_)) {
                        let e = ProtocolError::Malformed("Query inside an unfinished batch");
                        client.fatal("08P01", &e.to_string()).await;
                        return Err(e.into());
                    }
                    self.dispatch(client, vec![frame], true).await?;
                }
                Client::Sync => {
                    self.batch.push(frame);
                    let frames = std::mem::take(&mut self.batch);
                    self.dispatch(client, frames, true).await?;
                }
                Client::Flush => {
                    self.batch.push(frame);
                    let frames = std::mem::take(&mut self.batch);
                    self.dispatch(client, frames, false).await?;
                }
                Client::Parse { .. }
                | Client::Bind { .. }
                | Client::Describe { .. }
                | Client::Close { .. }
                | Client::Execute { .. } => {
                    if self.batch.len() >= 100_000 {
                        client
                            .fatal("08P01", "too many messages without a Sync")
                            .await;
                        return Err(Closing::Fatal("unbounded batch".into()));
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
}

/// Whether an `ErrorResponse` ends the node's connection (FATAL, PANIC).
fn is_fatal(body: &[u8]) -> bool {
    let e = protocol::error_fields(body);
    e.severity == "FATAL" || e.severity == "PANIC"
}

/// Sends the replies held back so far.
fn release(f: &mut Flight, client: &mut ClientConn) {
    f.holding = false;
    f.forwarded = true;
    if !f.held.is_empty() {
        client.out.put_slice(&f.held);
        f.held.clear();
    }
}
