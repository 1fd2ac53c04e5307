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
    ClusterView, Decision, Freshness, LocalSession, Lsn, ReadOptions, ReadRequest, SessionKey,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;

use crate::backend::{Backend, BackendError, Connect, Node};
use crate::classify::{Class, ClassCache, Effect, Route, RywCommand};
use crate::protocol::{self, Client, Frame, MAX_MESSAGE, ProtocolError, Startup};
use crate::server::{CancelTarget, Shared};

/// How much of a client's input is buffered while its batch runs.
const CLIENT_BUFFER_CAP: usize = 1 << 20;
/// How long a client has to finish its startup and authentication.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// The proxy's own prepared statement on each backend: the node's position.
const POSITION_STATEMENT: &str = "ryw_position";

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

impl From<ProtocolError> for Closing {
    fn from(e: ProtocolError) -> Closing {
        Closing::Fatal(format!("protocol violation: {e}"))
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
    match outcome {
        Ok(mut session) => {
            let why = session.run(&mut client).await;
            session.abandon().await;
            shared.unregister(session.pid);
            if let Closing::Fatal(why) = why {
                tracing::debug!(%peer, %why, "client session ended");
            }
        }
        Err(Closing::Fatal(why)) => tracing::debug!(%peer, %why, "client refused at startup"),
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
    /// The leader at 0, followers after.
    backends: Vec<Option<Backend>>,
    /// The transaction status the client last saw.
    status: u8,
    /// `SET ryw.session`: a named session in the store, shared with other
    /// connections, proxies and `ryw serve`. `None`: the connection is its
    /// own session.
    named: Option<SessionKey>,
    /// The highest position this connection wrote or saw (and `SET
    /// ryw.token`'s).
    token: Option<Lsn>,
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
    classes: ClassCache,
    phase: Phase,
    /// The extended batch being read.
    batch: Vec<Frame>,
    view: watch::Receiver<Arc<ClusterView>>,
}

async fn read_startup_packet(client: &mut ClientConn) -> Result<Vec<u8>, Closing> {
    loop {
        match protocol::startup_len(&client.inbuf) {
            Ok(Some(n)) => return Ok(client.inbuf.split_to(n).to_vec()),
            Ok(None) => {}
            Err(e) => {
                client
                    .fatal("08P01", &format!("invalid startup packet: {e}"))
                    .await;
                return Err(e.into());
            }
        }
        match client.fill().await {
            Ok(0) | Err(_) => return Err(Closing::Left),
            Ok(_) => {}
        }
    }
}

/// `options=-c ryw.session=k -c search_path=x`: the `ryw.*` settings, and
/// the options left for the nodes.
fn split_options(options: &str) -> (Vec<(String, String)>, String) {
    // PostgreSQL's syntax: words split on spaces, `\` escapes the next
    // character; `-c name=value` or `--name=value`.
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let escape = |w: &str| w.replace('\\', "\\\\").replace(' ', "\\ ");
    let (mut ryw, mut keep) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < words.len() {
        let (setting, used) = match words[i].as_str() {
            "-c" if i + 1 < words.len() => (Some(words[i + 1].clone()), 2),
            w if w.starts_with("--") => (Some(w[2..].to_owned()), 1),
            w if w.starts_with("-c") && w.len() > 2 => (Some(w[2..].to_owned()), 1),
            _ => (None, 1),
        };
        match setting.as_deref().and_then(|s| s.split_once('=')) {
            Some((name, value)) if name.to_ascii_lowercase().starts_with("ryw.") => {
                ryw.push((name[4..].to_ascii_lowercase(), value.to_owned()));
            }
            _ => keep.extend(words[i..i + used].iter().map(|w| escape(w))),
        }
        i += used;
    }
    (ryw, keep.join(" "))
}

async fn startup(
    shared: &Arc<Shared>,
    client: &mut ClientConn,
    peer: SocketAddr,
) -> Result<Session, Closing> {
    let (version, mut params) = loop {
        let packet = read_startup_packet(client).await?;
        match protocol::parse_startup(&packet) {
            Ok(Startup::Ssl | Startup::GssEnc) => {
                // No TLS or GSS encryption here: the client goes on in the
                // clear or gives up, as it chooses.
                client.out.put_u8(b'N');
                client.flush().await?;
            }
            Ok(Startup::Cancel { pid, key }) => {
                if let Some((addr, backend_key)) = shared.cancel_target(pid, key) {
                    Backend::cancel(addr, backend_key).await;
                }
                return Err(Closing::Quiet);
            }
            Ok(Startup::Params { version, params }) => break (version, params),
            Err(e) => {
                let code = match e {
                    ProtocolError::Unsupported(..) => "0A000",
                    _ => "08P01",
                };
                client.fatal(code, &e.to_string()).await;
                return Err(e.into());
            }
        }
    };
    if version == protocol::PROTOCOL_3_2 {
        let unknown: Vec<&str> = params
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| k.starts_with("_pq_."))
            .collect();
        protocol::negotiate_version(&mut client.out, 0, &unknown);
    }
    params.retain(|(k, _)| !k.starts_with("_pq_."));
    let user = match params.iter().find(|(k, _)| k == "user") {
        Some((_, u)) if !u.is_empty() => u.clone(),
        _ => {
            client
                .fatal(
                    "28000",
                    "no PostgreSQL user name specified in startup packet",
                )
                .await;
            return Err(Closing::Quiet);
        }
    };
    if params
        .iter()
        .any(|(k, v)| k == "replication" && v != "false" && v != "0")
    {
        client
            .fatal(
                "0A000",
                "replication connections are not supported by ryw proxy",
            )
            .await;
        return Err(Closing::Quiet);
    }
    let mut ryw_options = Vec::new();
    for (k, v) in params.iter_mut() {
        if k == "options" {
            let (ryw, rest) = split_options(v);
            ryw_options = ryw;
            *v = rest;
        }
    }
    params.retain(|(k, v)| !(k == "options" && v.is_empty()));

    let password = authenticate(shared, client, peer, &user).await?;

    let (pid, key) = shared.register(Arc::new(Mutex::new(None)));
    let cancel = Arc::new(Mutex::new(None));
    shared.unregister(pid);
    let (pid, key) = {
        let _ = key;
        let registered = shared.register(cancel.clone());
        (registered.0, registered.1)
    };
    let _ = pid;
    let mut session = Session {
        shared: shared.clone(),
        pid,
        cancel,
        params,
        password,
        backends: (0..shared.nodes.len()).map(|_| None).collect(),
        status: b'I',
        named: None,
        token: None,
        last_write_ms: None,
        options: ReadOptions::default(),
        served_by: Arc::from("none"),
        statements: HashMap::new(),
        next_version: 1,
        settings: Vec::new(),
        pending_settings: Vec::new(),
        pinned: false,
        classes: ClassCache::new(),
        phase: Phase::Idle,
        batch: Vec::new(),
        view: shared.router.watch_cluster(),
    };
    for (name, value) in ryw_options {
        if let Err((code, message)) = session.set_ryw(&name, Some(&value)) {
            shared.unregister(session.pid);
            client.fatal(code, &message).await;
            return Err(Closing::Quiet);
        }
    }

    // The first node: the leader (the client's startup is checked there:
    // database, role), or, when it is down, a follower for reads.
    let mut opened = None;
    let mut last = None;
    for node in std::iter::once(Node::Leader).chain((0..shared.nodes.len() - 1).map(Node::Follower))
    {
        match session.open(node).await {
            Ok(()) => {
                opened = Some(node);
                break;
            }
            Err(BackendError::Refused { fields, .. }) => {
                shared.unregister(session.pid);
                protocol::error(&mut client.out, "FATAL", &fields.code, &fields.message);
                let _ = client.flush().await;
                return Err(Closing::Quiet);
            }
            Err(e) => last = Some(e),
        }
    }
    let Some(node) = opened else {
        shared.unregister(session.pid);
        client
            .fatal(
                "08006",
                &format!(
                    "no node is reachable: {}",
                    last.map(|e| e.to_string()).unwrap_or_default()
                ),
            )
            .await;
        return Err(Closing::Quiet);
    };
    let backend = session.backend(node);
    for (name, value) in &backend.params {
        // A follower says so; the client is connected to the cluster.
        let value = match (node, name.as_str()) {
            (Node::Follower(_), "in_hot_standby") => "off",
            (Node::Follower(_), "default_transaction_read_only") => "off",
            _ => value.as_str(),
        };
        protocol::parameter(&mut client.out, name, value);
    }
    protocol::key_data(&mut client.out, session.pid, key);
    protocol::ready(&mut client.out, b'I');
    client.flush().await?;
    Ok(session)
}

/// Trust on loopback without an auth file; SCRAM-SHA-256 against it with
/// one. Returns the password to give the nodes.
async fn authenticate(
    shared: &Arc<Shared>,
    client: &mut ClientConn,
    peer: SocketAddr,
    user: &str,
) -> Result<Option<String>, Closing> {
    let Some(auth) = &shared.auth else {
        if !peer.ip().is_loopback() {
            client
                .fatal(
                    "28000",
                    &format!(
                        "no --auth-file: ryw proxy trusts loopback clients only, not {}",
                        peer.ip()
                    ),
                )
                .await;
            return Err(Closing::Quiet);
        }
        protocol::authentication(&mut client.out, 0, &[]);
        return Ok(None);
    };
    let failed = |client: &mut ClientConn| {
        protocol::error(
            &mut client.out,
            "FATAL",
            "28P01",
            &format!("password authentication failed for user \"{user}\""),
        );
    };
    let Some(entry) = auth.user(user) else {
        // Run the exchange anyway, as PostgreSQL does, so a client cannot
        // tell unknown users from wrong passwords by the protocol.
        failed(client);
        let _ = client.flush().await;
        return Err(Closing::Quiet);
    };
    let mut mechanisms = BytesMut::new();
    mechanisms.put_slice(b"SCRAM-SHA-256\0\0");
    protocol::authentication(&mut client.out, 10, &mechanisms);
    client.flush().await?;
    let mut scram = crate::auth::ScramServer::new(entry);
    let first = read_auth_message(client).await?;
    let (mechanism, data) = protocol::parse_sasl_initial(&first)?;
    if mechanism != "SCRAM-SHA-256" {
        client
            .fatal(
                "28000",
                &format!("unsupported SASL mechanism {mechanism:?}"),
            )
            .await;
        return Err(Closing::Quiet);
    }
    let server_first = match scram.client_first(data) {
        Ok(m) => m,
        Err(e) => {
            client.fatal(e.sqlstate(), &e.to_string()).await;
            return Err(Closing::Quiet);
        }
    };
    protocol::authentication(&mut client.out, 11, &server_first);
    client.flush().await?;
    let last = read_auth_message(client).await?;
    match scram.client_final(last.body()) {
        Ok(server_final) => {
            protocol::authentication(&mut client.out, 12, &server_final);
            protocol::authentication(&mut client.out, 0, &[]);
            Ok(entry.backend_password().map(str::to_owned))
        }
        Err(e) if e.sqlstate() == "28P01" => {
            failed(client);
            let _ = client.flush().await;
            Err(Closing::Quiet)
        }
        Err(e) => {
            client.fatal(e.sqlstate(), &e.to_string()).await;
            Err(Closing::Quiet)
        }
    }
}

async fn read_auth_message(client: &mut ClientConn) -> Result<Frame, Closing> {
    loop {
        match protocol::next_frame(&mut client.inbuf, protocol::MAX_STARTUP) {
            Ok(Some(f)) if f.tag == b'p' => return Ok(f),
            Ok(Some(f)) => {
                let e = ProtocolError::UnknownType(f.tag as char);
                client
                    .fatal("08P01", &format!("expected a password message: {e}"))
                    .await;
                return Err(e.into());
            }
            Ok(None) => {}
            Err(e) => {
                client.fatal("08P01", &e.to_string()).await;
                return Err(e.into());
            }
        }
        match client.fill().await {
            Ok(0) | Err(_) => return Err(Closing::Left),
            Ok(_) => {}
        }
    }
}

/// Milliseconds since the epoch, for the sticky window.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn index(node: Node) -> usize {
    match node {
        Node::Leader => 0,
        Node::Follower(i) => i + 1,
    }
}

impl Session {
    fn backend(&mut self, node: Node) -> &mut Backend {
        self.backends[index(node)]
            .as_mut()
            .expect("a backend is opened before it is used")
    }

    /// Opens the connection to `node` unless it is open. A follower's is
    /// checked against the incarnation the router knows (rule 2).
    async fn open(&mut self, node: Node) -> Result<(), BackendError> {
        if self.backends[index(node)].is_some() {
            return Ok(());
        }
        let addr = self.shared.addr(node).clone();
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
        self.backends[index(node)] = Some(backend);
        Ok(())
    }

    /// The classification of a statement text, cached per connection (a
    /// hit costs about 0.1 µs; a parse 4–60 µs).
    fn class_of(&mut self, sql: &str) -> Class {
        self.classes.classify(sql)
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
            && let Some(b) = &self.backends[index(f.node)]
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
                    let backend = self.backends[index(node)]
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

    /// What a batch does: the statements it parses, binds, describes and
    /// runs, and where they may go.
    fn plan_batch(&mut self, frames: &[Frame]) -> BatchPlan {
        let mut plan = BatchPlan {
            why: "",
            ..BatchPlan::default()
        };
        let mut classes: Vec<Class> = Vec::new();
        let mut parsed: HashMap<&str, Class> = HashMap::new();
        let mut portals: HashMap<&str, Class> = HashMap::new();
        for frame in frames {
            let Ok(kind) = protocol::parse_client(frame) else {
                continue;
            };
            match kind {
                Client::Query(sql) => classes.push(self.class_of(sql)),
                Client::Parse { name, query } => {
                    let c = self.class_of(query);
                    parsed.insert(name, c.clone());
                    classes.push(c);
                }
                Client::Bind { portal, statement } => {
                    let c = parsed
                        .get(statement)
                        .cloned()
                        .or_else(|| self.statements.get(statement).map(|p| p.class.clone()));
                    if let Some(c) = c {
                        portals.insert(portal, c.clone());
                        classes.push(c);
                    }
                }
                Client::Describe { kind, name } => {
                    let c = if kind == b'S' {
                        parsed
                            .get(name)
                            .cloned()
                            .or_else(|| self.statements.get(name).map(|p| p.class.clone()))
                    } else {
                        portals.get(name).cloned()
                    };
                    classes.extend(c);
                }
                Client::Execute { portal } => classes.extend(portals.get(portal).cloned()),
                Client::FunctionCall => {
                    plan.route = Some(Route::Leader);
                    plan.why = "function call";
                }
                _ => {}
            }
        }
        let mut route = None;
        let mut ryw = 0;
        for c in &classes {
            if c.ryw.is_some() {
                ryw += 1;
                continue;
            }
            match c.effect {
                Effect::EndsTransaction => plan.ends_transaction = true,
                Effect::PinsToLeader => plan.pins = true,
                Effect::SessionSetting | Effect::None => {}
            }
            if c.why == "copy" {
                plan.copy = true;
            }
            route = Some(match (route, c.route) {
                (Some(Route::Leader), _) | (_, Route::Leader) => {
                    if plan.why.is_empty() {
                        plan.why = c.why;
                    }
                    Route::Leader
                }
                (Some(Route::Read), _) | (_, Route::Read) => Route::Read,
                _ => Route::StaleOk,
            });
        }
        // Settings: the texts of the statements that set something.
        for frame in frames {
            if let Ok(Client::Query(sql) | Client::Parse { query: sql, .. }) =
                protocol::parse_client(frame)
                && self.class_of(sql).effect == Effect::SessionSetting
            {
                plan.settings.push(sql.to_owned());
            }
        }
        plan.ryw = ryw > 0 && ryw == classes.len();
        plan.mixed_ryw = (ryw > 0 && ryw < classes.len())
            || classes
                .iter()
                .any(|c| c.why == "ryw command among multiple statements");
        plan.close_only = frames.iter().all(|f| matches!(f.tag, b'C' | b'S' | b'H'))
            && frames.iter().any(|f| f.tag == b'C');
        plan.runs = frames.iter().any(|f| matches!(f.tag, b'E' | b'Q' | b'F'));
        plan.route = plan.route.or(route);
        plan
    }

    /// Routes a batch and sends it (or answers it here).
    async fn dispatch(
        &mut self,
        client: &mut ClientConn,
        frames: Vec<Frame>,
        synced: bool,
    ) -> Result<(), Closing> {
        // The rest of a batch that went out with a Flush follows it.
        if let Phase::Flying(f) = &mut self.phase {
            let node = f.node;
            f.frames.extend(frames.iter().cloned());
            f.synced = synced;
            let mut out = BytesMut::new();
            for frame in &frames {
                out.put_slice(&frame.raw);
            }
            if synced && f.position_after {
                position_statement(&mut out, node, &mut self.backends[index(node)]);
            }
            self.note_statements(&frames, node);
            if let Err(e) = self.backend(node).send(&out).await {
                return self.backend_lost(client, e.to_string()).await;
            }
            return Ok(());
        }
        let plan = self.plan_batch(&frames);
        if plan.mixed_ryw {
            return self
                .refuse_batch(
                    client,
                    &frames,
                    "0A000",
                    "send SET ryw.* and SHOW ryw.* on their own, not with other statements",
                )
                .await;
        }
        if plan.ryw {
            return self.answer_ryw(client, &frames).await;
        }
        if plan.close_only && synced {
            return self.answer_close(client, &frames).await;
        }
        let route = match plan.route {
            _ if self.status != b'I' => Route::Leader,
            Some(Route::Read | Route::StaleOk) if self.pinned => Route::Leader,
            Some(r) => r,
            None => Route::Leader,
        };
        self.send_batch(client, frames, plan, route, synced, 0)
            .await
    }

    /// Plans the node (reads through the router), opens it if needed, and
    /// sends the batch with what the node lacks before it and the position
    /// statement after it.
    async fn send_batch(
        &mut self,
        client: &mut ClientConn,
        frames: Vec<Frame>,
        plan: BatchPlan,
        route: Route,
        synced: bool,
        attempts: u8,
    ) -> Result<(), Closing> {
        let mut read = None;
        let node = match route {
            Route::Leader => Node::Leader,
            Route::Read | Route::StaleOk => {
                let mut chosen = Node::Leader;
                for _ in 0..3 {
                    let req = self.read_request(route);
                    let decision = match self.shared.router.plan_read(&req).await {
                        Ok(d) => d,
                        Err(e) => {
                            return self
                                .fail_batch(client, &frames, "08006", &e.to_string())
                                .await;
                        }
                    };
                    let node = match decision.follower_index() {
                        Some(i) => Node::Follower(i),
                        None => Node::Leader,
                    };
                    match self.open(node).await {
                        Ok(()) => {
                            chosen = node;
                            read = Some(decision);
                            break;
                        }
                        Err(
                            e @ (BackendError::Unreachable { .. }
                            | BackendError::Incarnation { .. }),
                        ) if node != Node::Leader => {
                            // Rule 3: forget it, plan again.
                            self.shared.router.report_lost(&decision, &e.to_string());
                        }
                        Err(e) => return self.open_failed(client, &frames, e).await,
                    }
                }
                chosen
            }
        };
        if read.is_none()
            && let Err(e) = self.open(node).await
        {
            return self.open_failed(client, &frames, e).await;
        }
        // Rule 1 and rule 7: the node's position after the batch, pipelined
        // behind its Sync (once the Sync is there). Not behind a COPY: the
        // node would read it as COPY data; it is asked after the batch.
        let wants_position = read.is_some() || self.status == b'I' || plan.ends_transaction;
        let position_after = wants_position && !plan.copy;
        let position_later = wants_position && plan.copy;
        let holding = read.is_some() && synced && node != Node::Leader;
        let mut out = BytesMut::new();
        let replays = self.replay_settings(node, &mut out);
        let swallow = self.inject_statements(node, &frames, &mut out);
        for frame in &frames {
            out.put_slice(&frame.raw);
        }
        self.note_statements(&frames, node);
        if position_after && synced {
            position_statement(&mut out, node, &mut self.backends[index(node)]);
        }
        let epoch = match node {
            Node::Follower(i) => self.view.borrow().followers.get(i).map(|f| f.epoch),
            Node::Leader => None,
        };
        let backend = self.backend(node);
        let target = (backend.addr, backend.key);
        *self.cancel.lock().unwrap_or_else(|p| p.into_inner()) = Some(target);
        self.phase = Phase::Flying(Box::new(Flight {
            node,
            frames,
            plan,
            read,
            attempts: attempts + 1,
            epoch,
            synced,
            replays,
            swallow,
            holding,
            held: BytesMut::new(),
            forwarded: false,
            to_leader: false,
            error: None,
            committed: false,
            rolled_back: false,
            copy_in: false,
            position_after,
            position_later,
            client_ready: None,
            position: None,
        }));
        if let Err(e) = self.backend(node).send(&out).await {
            return self.backend_lost(client, e.to_string()).await;
        }
        Ok(())
    }

    /// Replays the session settings `node` has not applied, each as a query
    /// of its own (`DISCARD ALL` cannot run in a multi-statement one).
    /// Returns how many `ReadyForQuery`s to swallow.
    fn replay_settings(&mut self, node: Node, out: &mut BytesMut) -> usize {
        let settings = &self.settings;
        let backend = self.backends[index(node)]
            .as_mut()
            .expect("opened before replay");
        let todo = &settings[backend.settings_applied.min(settings.len())..];
        for sql in todo {
            let _ = frontend::query(sql, out);
            if sql.trim_start().to_ascii_lowercase().starts_with("discard") {
                backend.prepared.clear();
                backend.position_prepared = false;
            }
        }
        if !todo.is_empty() {
            // A simple query drops the unnamed statement.
            backend.unnamed = None;
        }
        backend.settings_applied = settings.len();
        todo.len()
    }

    /// The client's prepared statements a batch uses that `node` lacks:
    /// their `Parse` (and a `Close` of an older version) go first. Returns
    /// how many replies to swallow.
    fn inject_statements(&mut self, node: Node, frames: &[Frame], out: &mut BytesMut) -> usize {
        let backend = self.backends[index(node)]
            .as_mut()
            .expect("opened before injection");
        let mut parsed_here: Vec<&str> = Vec::new();
        let mut swallow = 0;
        for name in backend.pending_close.drain(..) {
            close_statement(out, &name);
            swallow += 1;
        }
        for frame in frames {
            let name = match protocol::parse_client(frame) {
                Ok(Client::Parse { name, .. }) => {
                    parsed_here.push(name);
                    // Parsing a name the node has an older version of: close it first.
                    if !name.is_empty() && backend.prepared.contains_key(name) {
                        close_statement(out, name);
                        backend.prepared.remove(name);
                        swallow += 1;
                    }
                    continue;
                }
                Ok(Client::Bind { statement, .. }) => statement,
                Ok(Client::Describe { kind: b'S', name }) => name,
                _ => continue,
            };
            if parsed_here.contains(&name) {
                continue;
            }
            let Some(p) = self.statements.get(name) else {
                continue;
            };
            let has = if name.is_empty() {
                backend.unnamed == Some(p.version)
            } else {
                backend.prepared.get(name) == Some(&p.version)
            };
            if has {
                continue;
            }
            if !name.is_empty() && backend.prepared.contains_key(name) {
                close_statement(out, name);
                swallow += 1;
            }
            out.put_slice(&p.parse);
            swallow += 1;
            if name.is_empty() {
                backend.unnamed = Some(p.version);
            } else {
                backend.prepared.insert(name.to_owned(), p.version);
            }
            parsed_here.push(name);
        }
        swallow
    }

    /// Keeps the registry of the client's prepared statements, and which
    /// of them `node` has, in step with a batch sent there.
    fn note_statements(&mut self, frames: &[Frame], node: Node) {
        for frame in frames {
            match protocol::parse_client(frame) {
                Ok(Client::Parse { name, query }) => {
                    let class = self.class_of(query);
                    let version = self.next_version;
                    self.next_version += 1;
                    self.statements.insert(
                        name.to_owned(),
                        Prepared {
                            parse: frame.raw.clone(),
                            class,
                            version,
                        },
                    );
                    let backend = self.backends[index(node)].as_mut().expect("open");
                    if name.is_empty() {
                        backend.unnamed = Some(version);
                    } else {
                        backend.prepared.insert(name.to_owned(), version);
                    }
                }
                Ok(Client::Close { kind: b'S', name }) => {
                    self.statements.remove(name);
                    let backend = self.backends[index(node)].as_mut().expect("open");
                    if name.is_empty() {
                        backend.unnamed = None;
                    } else {
                        backend.prepared.remove(name);
                    }
                }
                Ok(Client::Query(_)) => {
                    let backend = self.backends[index(node)].as_mut().expect("open");
                    backend.unnamed = None;
                }
                _ => {}
            }
        }
    }

    /// Handles the node's replies that have arrived.
    async fn take_backend_frames(&mut self, client: &mut ClientConn) -> Result<(), Closing> {
        loop {
            let Phase::Flying(f) = &mut self.phase else {
                return Ok(());
            };
            let node = f.node;
            let backend = self.backends[index(node)].as_mut().expect("open");
            let frame =
                match protocol::next_frame(&mut backend.inbuf, crate::backend::MAX_BACKEND_MESSAGE)
                {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return Ok(()),
                    Err(e) => return self.backend_lost(client, format!("protocol: {e}")).await,
                };
            let tag = frame.tag;
            // Settings replayed before the batch.
            if f.replays > 0 {
                match tag {
                    b'Z' => f.replays -= 1,
                    b'E' => {
                        let e = protocol::error_fields(frame.body());
                        tracing::warn!(node = %backend.name, code = %e.code, message = %e.message, "a session setting failed to replay");
                    }
                    _ => {}
                }
                continue;
            }
            // The proxy's own Parse/Close before the batch.
            if f.swallow > 0 && f.client_ready.is_none() {
                match tag {
                    b'1' | b'3' => {
                        f.swallow -= 1;
                        continue;
                    }
                    b'E' => {
                        // The server now skips to the client's Sync.
                        f.swallow = 0;
                        if f.read.is_some() && !f.forwarded && node != Node::Leader {
                            f.to_leader = true;
                            continue;
                        }
                    }
                    _ => f.swallow = 0,
                }
            }
            if f.client_ready.is_none() {
                match tag {
                    b'Z' if f.synced => {
                        let status = protocol::ready_status(&frame.raw).unwrap_or(b'I');
                        f.client_ready = Some(status);
                        if f.to_leader {
                            if !f.position_after {
                                return self.retry_on_leader(client).await;
                            }
                            continue;
                        }
                        release(f, client);
                        if f.position_after {
                            continue;
                        }
                        if f.position_later {
                            f.position_after = true;
                            let mut out = BytesMut::new();
                            position_statement(&mut out, node, &mut self.backends[index(node)]);
                            if let Err(e) = self.backend(node).send(&out).await {
                                return self.backend_lost(client, e.to_string()).await;
                            }
                            continue;
                        }
                        return self.land(client, Some(frame.raw)).await;
                    }
                    _ if f.to_leader => continue,
                    b'E' if is_fatal(frame.body()) => {
                        // The node ends this connection (shutting down, a
                        // crash): the client's own connection goes on.
                        let e = protocol::error_fields(frame.body());
                        let why = format!("{} ({})", e.message, e.code);
                        return self.backend_lost(client, why).await;
                    }
                    b'E' => {
                        let e = protocol::error_fields(frame.body());
                        if f.holding && !f.forwarded && e.code == "25006" {
                            // Rule: a read a follower refuses as a write runs
                            // on the leader, before anything reached the client.
                            f.to_leader = true;
                            f.held.clear();
                            continue;
                        }
                        f.error = Some(e.code);
                        release(f, client);
                        client.out.put_slice(&frame.raw);
                    }
                    b'C' => {
                        let tag = protocol::command_tag(frame.body());
                        if tag == "COMMIT" {
                            f.committed = true;
                        } else if tag == "ROLLBACK" {
                            f.rolled_back = true;
                        }
                        release(f, client);
                        client.out.put_slice(&frame.raw);
                    }
                    b'G' => {
                        f.copy_in = true;
                        release(f, client);
                        client.out.put_slice(&frame.raw);
                        // The client sends its data once it reads this.
                        client.flush().await?;
                    }
                    b'1' | b'2' | b'3' | b't' | b'T' | b'n' | b'S' | b'N' if f.holding => {
                        f.held.put_slice(&frame.raw);
                    }
                    _ => {
                        release(f, client);
                        client.out.put_slice(&frame.raw);
                    }
                }
                continue;
            }
            // The position statement after the batch.
            match tag {
                b'D' => {
                    f.position =
                        protocol::first_column(frame.body()).and_then(|v| v.parse::<Lsn>().ok());
                }
                b'Z' => {
                    if f.to_leader {
                        return self.retry_on_leader(client).await;
                    }
                    return self.land(client, None).await;
                }
                _ => {}
            }
        }
    }

    /// The batch is done: the session's token and settings follow what it
    /// did, then the client gets its `ReadyForQuery`.
    async fn land(&mut self, client: &mut ClientConn, ready: Option<Bytes>) -> Result<(), Closing> {
        let Phase::Flying(mut f) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return Ok(());
        };
        *self.cancel.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let status = f.client_ready.unwrap_or(b'I');
        let router = &self.shared.router;
        if f.plan.runs {
            self.served_by = self.shared.addr(f.node).name.clone();
        }
        if let Some(decision) = f.read.as_mut() {
            match f.position {
                // Rule 7: what the read saw, bounded by the position read
                // after it on the same connection.
                Some(lsn) => router.raise_token(decision, lsn).await,
                None if f.position_after && decision.follower_index().is_some() => {
                    router.report_lost(decision, "no replay position after a read");
                }
                None => {}
            }
            self.token = self.token.max(decision.token);
        } else if status == b'I'
            && let Some(lsn) = f.position
        {
            // Rule 1: the leader's position after the write committed.
            match &self.named {
                Some(key) => router.record_write_at(key, lsn).await,
                None => router.note_leader_position(lsn),
            }
            self.token = self.token.max(Some(lsn));
            self.last_write_ms = Some(now_ms());
        }
        if f.error.is_none() {
            if f.plan.pins {
                self.pinned = true;
            }
            match self.status_after_settings(&f, status) {
                SettingsFate::Keep => self.settings.append(&mut f.plan.settings),
                SettingsFate::Pending => self.pending_settings.append(&mut f.plan.settings),
                SettingsFate::Drop => {}
            }
        }
        if f.committed {
            self.settings.append(&mut self.pending_settings);
        } else if f.rolled_back || (status == b'I' && f.error.is_some()) {
            self.pending_settings.clear();
        }
        if f.node == Node::Leader {
            // The client's own settings ran there.
            let n = self.settings.len();
            if let Some(b) = self.backends[index(f.node)].as_mut() {
                b.settings_applied = n;
            }
        }
        self.status = status;
        match ready {
            Some(raw) => client.out.put_slice(&raw),
            None => protocol::ready(&mut client.out, status),
        }
        client.flush().await
    }

    fn status_after_settings(&self, f: &Flight, status: u8) -> SettingsFate {
        if f.plan.settings.is_empty() {
            SettingsFate::Drop
        } else if status == b'I' {
            SettingsFate::Keep
        } else {
            SettingsFate::Pending
        }
    }

    /// The node refused the read as a write (25006), or its injected
    /// statements failed: the same batch on the leader.
    async fn retry_on_leader(&mut self, client: &mut ClientConn) -> Result<(), Closing> {
        let Phase::Flying(f) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return Ok(());
        };
        tracing::debug!(node = ?f.node, "read refused by a follower; running it on the leader");
        self.send_batch(
            client,
            f.frames,
            f.plan,
            Route::Leader,
            f.synced,
            f.attempts,
        )
        .await
    }

    /// The connection to the node of the batch in flight broke. Before
    /// anything reached the client, a read runs once more elsewhere (rule
    /// 8); otherwise the client gets an error (and, inside a transaction,
    /// loses its connection, as it would to a server that went away).
    async fn backend_lost(&mut self, client: &mut ClientConn, why: String) -> Result<(), Closing> {
        let Phase::Flying(f) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return Ok(());
        };
        *self.cancel.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.backends[index(f.node)] = None;
        let name = self.shared.addr(f.node).name.clone();
        if let Some(decision) = &f.read {
            // Rule 3: forget the follower's position now.
            self.shared.router.report_lost(decision, &why);
        }
        if f.read.is_some() && !f.forwarded && f.attempts < 3 && f.synced {
            tracing::info!(node = %name, %why, "read lost its node; running it elsewhere");
            let route = f.plan.route.unwrap_or(Route::Read);
            // Boxed: sending may find this connection lost in turn.
            return Box::pin(self.send_batch(client, f.frames, f.plan, route, true, f.attempts))
                .await;
        }
        let message = format!("the connection to {name} was lost: {why}");
        if self.status != b'I' || f.node == Node::Leader && f.read.is_none() && f.forwarded {
            client.fatal("08006", &message).await;
            return Err(Closing::Fatal(message));
        }
        protocol::error(&mut client.out, "ERROR", "08006", &message);
        if f.synced {
            protocol::ready(&mut client.out, self.status);
        }
        client.flush().await
    }

    /// A read waits on a follower: if the follower leaves rotation (it
    /// stalled, rule 8) before anything reached the client, the read runs
    /// elsewhere and the stalled connection is dropped.
    async fn check_follower_still_eligible(
        &mut self,
        client: &mut ClientConn,
    ) -> Result<(), Closing> {
        let Phase::Flying(f) = &self.phase else {
            return Ok(());
        };
        let Node::Follower(i) = f.node else {
            return Ok(());
        };
        // Lagging past the limit is no reason to drop a read in progress,
        // nor a restart (this connection then breaks by itself); a follower
        // the tracker forgot and that does not answer its polls (stopped,
        // a partition: rule 3) is.
        let gone = {
            let view = self.view.borrow_and_update();
            view.followers
                .get(i)
                .is_none_or(|s| !s.healthy && Some(s.epoch) != f.epoch)
        };
        if gone && !f.forwarded && f.synced {
            self.backend_lost(client, "stopped answering while the read waited".into())
                .await
        } else {
            Ok(())
        }
    }

    /// No connection to the node could be had for this batch.
    async fn open_failed(
        &mut self,
        client: &mut ClientConn,
        frames: &[Frame],
        e: BackendError,
    ) -> Result<(), Closing> {
        let (code, message) = match &e {
            BackendError::Refused { fields, .. } => (fields.code.clone(), fields.message.clone()),
            BackendError::Unreachable { node, .. } if &**node == ryw_router::LEADER_NAME => (
                "57P03".to_owned(),
                format!("the leader is unavailable: {e}"),
            ),
            _ => ("08006".to_owned(), e.to_string()),
        };
        self.fail_batch(client, frames, &code, &message).await
    }

    /// Answers a batch with an error, as a server would: one
    /// `ErrorResponse`, and a `ReadyForQuery` if the batch was synced.
    async fn fail_batch(
        &mut self,
        client: &mut ClientConn,
        frames: &[Frame],
        code: &str,
        message: &str,
    ) -> Result<(), Closing> {
        protocol::error(&mut client.out, "ERROR", code, message);
        if frames
            .last()
            .is_some_and(|f| f.tag == b'S' || f.tag == b'Q' || f.tag == b'F')
        {
            protocol::ready(&mut client.out, self.status);
        }
        client.flush().await
    }

    async fn refuse_batch(
        &mut self,
        client: &mut ClientConn,
        frames: &[Frame],
        code: &str,
        message: &str,
    ) -> Result<(), Closing> {
        self.fail_batch(client, frames, code, message).await
    }

    /// Answers a batch that only closes statements and portals: the client
    /// gets its `CloseComplete`s at once; each node that holds a closed
    /// statement closes it with the next batch sent there. (A portal lives
    /// until the end of its transaction, and outside one that is the
    /// `Sync` that ended the batch that made it: nothing to close.)
    async fn answer_close(
        &mut self,
        client: &mut ClientConn,
        frames: &[Frame],
    ) -> Result<(), Closing> {
        for frame in frames {
            match protocol::parse_client(frame) {
                Ok(Client::Close { kind, name }) => {
                    if kind == b'S' {
                        self.statements.remove(name);
                        for b in self.backends.iter_mut().flatten() {
                            if name.is_empty() {
                                b.unnamed = None;
                            } else if b.prepared.remove(name).is_some() {
                                b.pending_close.push(name.to_owned());
                            }
                        }
                    }
                    protocol::bare(&mut client.out, b'3');
                }
                Ok(Client::Sync) => protocol::ready(&mut client.out, self.status),
                _ => {}
            }
        }
        client.flush().await
    }

    /// Answers a batch of `SET ryw.*` / `SHOW ryw.*` here, as a server
    /// would answer the same messages.
    async fn answer_ryw(
        &mut self,
        client: &mut ClientConn,
        frames: &[Frame],
    ) -> Result<(), Closing> {
        let mut portals: HashMap<String, Class> = HashMap::new();
        let mut parsed: HashMap<String, Class> = HashMap::new();
        let mut failed = false;
        for frame in frames {
            let Ok(kind) = protocol::parse_client(frame) else {
                continue;
            };
            if failed && !matches!(kind, Client::Sync) {
                continue;
            }
            match kind {
                Client::Query(sql) => {
                    let class = self.class_of(sql);
                    self.answer_command(client, &class, true)?;
                    protocol::ready(&mut client.out, self.status);
                }
                Client::Parse { name, query } => {
                    let class = self.class_of(query);
                    parsed.insert(name.to_owned(), class.clone());
                    let version = self.next_version;
                    self.next_version += 1;
                    self.statements.insert(
                        name.to_owned(),
                        Prepared {
                            parse: frame.raw.clone(),
                            class,
                            version,
                        },
                    );
                    protocol::bare(&mut client.out, b'1');
                }
                Client::Bind { portal, statement } => {
                    let class = parsed
                        .get(statement)
                        .cloned()
                        .or_else(|| self.statements.get(statement).map(|p| p.class.clone()));
                    if let Some(class) = class {
                        portals.insert(portal.to_owned(), class);
                    }
                    protocol::bare(&mut client.out, b'2');
                }
                Client::Describe { kind, name } => {
                    let class = if kind == b'S' {
                        parsed
                            .get(name)
                            .cloned()
                            .or_else(|| self.statements.get(name).map(|p| p.class.clone()))
                    } else {
                        portals.get(name).cloned()
                    };
                    if kind == b'S' {
                        protocol::no_parameters(&mut client.out);
                    }
                    match class.as_ref().and_then(|c| c.ryw.as_ref()) {
                        Some(RywCommand::Show(name)) => {
                            protocol::row_description(&mut client.out, &[&format!("ryw.{name}")])
                        }
                        _ => protocol::bare(&mut client.out, b'n'),
                    }
                }
                Client::Execute { portal } => match portals.get(portal).cloned() {
                    Some(class) => {
                        if !self.answer_command(client, &class, false)? {
                            failed = true;
                        }
                    }
                    None => {
                        protocol::error(&mut client.out, "ERROR", "34000", "portal does not exist");
                        failed = true;
                    }
                },
                Client::Close { .. } => protocol::bare(&mut client.out, b'3'),
                Client::Sync => protocol::ready(&mut client.out, self.status),
                _ => {}
            }
        }
        client.flush().await
    }

    /// Runs one `ryw.*` command and writes its answer (with its row
    /// description in the simple protocol). `Ok(false)`: it was refused
    /// (an ErrorResponse was written).
    fn answer_command(
        &mut self,
        client: &mut ClientConn,
        class: &Class,
        simple: bool,
    ) -> Result<bool, Closing> {
        let Some(cmd) = &class.ryw else {
            return Ok(true);
        };
        let result = match cmd {
            RywCommand::Show(name) => match self.show_ryw(name) {
                Ok(value) => {
                    if simple {
                        protocol::row_description(&mut client.out, &[&format!("ryw.{name}")]);
                    }
                    protocol::data_row(&mut client.out, &[Some(&value)]);
                    protocol::complete(&mut client.out, "SHOW");
                    Ok(())
                }
                Err(e) => Err(e),
            },
            RywCommand::SetSession(v) => self.set_ryw("session", Some(v)),
            RywCommand::SetToken(v) => self.set_ryw("token", Some(v)),
            RywCommand::SetStrategy(v) => self.set_ryw("strategy", Some(v)),
            RywCommand::Reset(name) => self.set_ryw(name, None),
            RywCommand::Invalid(message) => Err(("22023", message.clone())),
        };
        match result {
            Ok(()) => {
                if !matches!(cmd, RywCommand::Show(_)) {
                    let tag = if matches!(cmd, RywCommand::Reset(_)) {
                        "RESET"
                    } else {
                        "SET"
                    };
                    protocol::complete(&mut client.out, tag);
                }
                Ok(true)
            }
            Err((code, message)) => {
                protocol::error(&mut client.out, "ERROR", code, &message);
                Ok(false)
            }
        }
    }

    /// `SHOW ryw.<name>`.
    fn show_ryw(&self, name: &str) -> Result<String, (&'static str, String)> {
        Ok(match name {
            "token" => self.shared.key.sign(self.token.unwrap_or(Lsn::ZERO)),
            "served_by" => self.served_by.to_string(),
            "session" => self
                .named
                .as_ref()
                .map(|k| k.to_string())
                .unwrap_or_default(),
            "strategy" => match self.options.strategy {
                Some(_) => self.options.to_string(),
                None => self.shared.router.config().default_strategy.to_string(),
            },
            other => return Err(unknown_setting(other)),
        })
    }

    /// `SET ryw.<name> = value`, or `RESET` with `None`.
    fn set_ryw(&mut self, name: &str, value: Option<&str>) -> Result<(), (&'static str, String)> {
        match (name, value) {
            ("session", Some(v)) => {
                let key = SessionKey::new(v).map_err(|_| {
                    (
                        "22023",
                        "invalid value for ryw.session: 1–128 visible characters, no spaces"
                            .to_owned(),
                    )
                })?;
                self.named = Some(key);
            }
            ("session", None) => self.named = None,
            ("token", Some(v)) => {
                let lsn = self
                    .shared
                    .key
                    .verify(v.trim())
                    .map_err(|e| ("22023", format!("invalid value for ryw.token: {e}")))?;
                // Rule 4: verified, so it can raise the session's token but
                // never make a read wait past its budget.
                self.token = self.token.max(Some(lsn));
            }
            ("token", None) => self.token = None,
            ("strategy", Some(v)) => {
                self.options = v.parse().map_err(|_| {
                    (
                        "22023",
                        format!(
                            "invalid value for ryw.strategy: {:?}; use one of leader, legacy, sticky, \
                             causal, hybrid, per-read-check, optionally with :<duration>",
                            v.chars().take(64).collect::<String>()
                        ),
                    )
                })?;
            }
            ("strategy", None) => self.options = ReadOptions::default(),
            (other, _) => return Err(unknown_setting(other)),
        }
        Ok(())
    }
}

enum SettingsFate {
    Keep,
    Pending,
    Drop,
}

fn unknown_setting(name: &str) -> (&'static str, String) {
    (
        "22023",
        format!(
            "unknown setting ryw.{}; ryw proxy knows ryw.session, ryw.token, ryw.strategy \
             and (SHOW) ryw.served_by",
            name.chars().take(64).collect::<String>()
        ),
    )
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

/// A `Close` of the client's statement `name`.
fn close_statement(out: &mut BytesMut, name: &str) {
    let _ = frontend::close(b'S', name, out);
}

/// The proxy's own position statement, prepared once per connection:
/// `pg_current_wal_lsn()` on the leader (rule 1: read after COMMIT
/// returned), `pg_last_wal_replay_lsn()` on a follower (rule 7).
fn position_statement(out: &mut BytesMut, node: Node, backend: &mut Option<Backend>) {
    let Some(b) = backend.as_mut() else { return };
    if !b.position_prepared {
        let sql = match node {
            Node::Leader => "SELECT pg_current_wal_lsn()::text",
            Node::Follower(_) => "SELECT pg_last_wal_replay_lsn()::text",
        };
        let _ = frontend::parse(POSITION_STATEMENT, sql, std::iter::empty(), out);
        b.position_prepared = true;
    }
    let _ = frontend::bind(
        "",
        POSITION_STATEMENT,
        std::iter::empty::<i16>(),
        std::iter::empty::<Option<&[u8]>>(),
        |_: Option<&[u8]>, _: &mut BytesMut| Ok(postgres_protocol::IsNull::Yes),
        Some(0),
        out,
    );
    let _ = frontend::execute("", 0, out);
    frontend::sync(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ryw_options_are_taken_out_of_the_startup_options() {
        let (ryw, rest) =
            split_options("-c ryw.session=alice -c search_path=app --ryw.strategy=causal:0ms");
        assert_eq!(
            ryw,
            vec![
                ("session".to_owned(), "alice".to_owned()),
                ("strategy".to_owned(), "causal:0ms".to_owned())
            ]
        );
        assert_eq!(rest, "-c search_path=app");
        let (ryw, rest) = split_options("-c application_name=a\\ b");
        assert!(ryw.is_empty());
        assert_eq!(rest, "-c application_name=a\\ b");
        assert_eq!(split_options("").1, "");
    }
}
