//! A connection of the proxy to one node, on a client's behalf: opened
//! (with TLS as the node's URL says: `tls.rs`) with the client's startup
//! parameters, authenticated as the client's user
//! (trust, password, md5 or SCRAM-SHA-256 with the auth file's password),
//! and, for a follower, checked against the incarnation the router knows
//! (rule 2).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;
use rustls::pki_types::ServerName;
use ryw_router::NodeId;
use ryw_router::tls::NodeTls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocol::{self, ErrorFields};
use crate::tls::NodeStream;

/// The largest message from a backend that is held whole. Bigger
/// `DataRow`, `CopyData`, `FunctionCallResponse`, `ErrorResponse` and
/// `NoticeResponse` messages are relayed in pieces ([`LARGE_MESSAGE`]);
/// any other message this big breaks the protocol.
pub const MAX_BACKEND_MESSAGE: usize = 1 << 20;

/// Which node a connection goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    /// The leader.
    Leader,
    /// A follower, by the router's id of it.
    Follower(NodeId),
}

/// Why a backend connection could not be had.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The node is unreachable, or went away.
    #[error("{node}: {why}")]
    Unreachable {
        /// The node's name.
        node: Arc<str>,
        /// What failed.
        why: String,
    },
    /// The node refused the client's startup (unknown database, bad
    /// password, too many connections): the client gets the node's error.
    #[error("{node} refused the connection: {} ({})", .fields.message, .fields.code)]
    Refused {
        /// The node's name.
        node: Arc<str>,
        /// The node's error.
        fields: ErrorFields,
    },
    /// Every pooled connection to the node was busy for the whole wait
    /// (`--pool-size`, `--pool-timeout`).
    #[error("{why}")]
    Busy {
        /// The node's name.
        node: Arc<str>,
        /// Which limit, and how long it waited.
        why: String,
    },
    /// The follower restarted since the router last saw it, or the router
    /// knows no position for it (rule 2): not usable for reads now.
    #[error("{node}: not the incarnation the router knows")]
    Incarnation {
        /// The node's name.
        node: Arc<str>,
    },
}

/// A live connection to a node.
#[derive(Debug)]
pub struct Backend {
    /// Its name (`leader`, `follower1`, …).
    pub name: Arc<str>,
    /// Where it listens (for cancel requests).
    pub addr: SocketAddr,
    stream: NodeStream,
    /// What it sent that is not handled yet.
    pub inbuf: BytesMut,
    /// Its process id and key, for cancel requests.
    pub key: (i32, i32),
    /// `ParameterStatus` values it sent at startup.
    pub params: Vec<(String, String)>,
    /// The client's named statements it has, by name, with the version
    /// (the client may re-prepare a name with another text).
    pub prepared: HashMap<String, u64>,
    /// The version of the client's unnamed statement it holds, if any.
    pub unnamed: Option<u64>,
    /// Statements the client closed that this node still holds: closed
    /// with the next batch sent here.
    pub pending_close: Vec<String>,
    /// The client's session settings it has applied since it opened, in
    /// order (the same `Arc`s as the client's list: see
    /// `session/settings.rs`).
    pub settings: Vec<Arc<str>>,
    /// Bytes of a large message still to relay straight to the client (a
    /// `DataRow` or `CopyData` bigger than [`LARGE_MESSAGE`], relayed in
    /// pieces rather than held whole), or to drop (`discard`).
    pub passthrough: usize,
    /// Drop the rest of the large message instead of relaying it (one of
    /// the proxy's own statements answered it).
    pub discard: bool,
    /// When it was opened (`--server-lifetime`).
    pub created: std::time::Instant,
    /// A follower's postmaster start time when it was opened (rule 2: a
    /// pooled connection to a follower that restarted since is not used).
    pub incarnation: Option<i64>,
    /// Transaction pooling: the clients' statements it holds, by their
    /// proxy name (`ryw_<hash>`), with the name each has here (the same, or
    /// `ryw_<hash>_<n>` when a client prepared it again), and when each was
    /// last used (the least recently used are closed past a bound).
    pub pooled: HashMap<Arc<str>, (Arc<str>, u64)>,
    /// Names to close before the next batch (replaced by a newer copy).
    pub stale: Vec<Arc<str>>,
    /// Counts uses and copies, for the two above.
    pub tick: u64,
}

/// A message from a node at least this big is relayed to the client in
/// pieces as it arrives (only `DataRow` and `CopyData`, which the proxy
/// never reads), so the proxy holds at most a read buffer of it.
pub const LARGE_MESSAGE: usize = 64 * 1024;

/// What a backend connection needs.
#[derive(Clone, Debug)]
pub struct Connect<'a> {
    /// Its name.
    pub name: &'a Arc<str>,
    /// Its address.
    pub addr: SocketAddr,
    /// The startup parameters (the client's, `ryw.*` options removed).
    pub params: &'a [(String, String)],
    /// The user's password, from the auth file, if the node asks for one.
    pub password: Option<&'a str>,
    /// Longest the connection and startup may take.
    pub timeout: Duration,
    /// TLS as the node's URL says (`sslmode`, `sslrootcert`).
    pub tls: &'a NodeTls,
    /// The URL's host, checked against the certificate (`verify-full`).
    pub host: &'a ServerName<'static>,
}

/// The start time query of rule 2 (µs since the epoch, as the tracker
/// reads it).
const START_TIME: &str = "SELECT (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::int8";

impl Backend {
    /// A statement the proxy prepared here is not here after all (its
    /// `Parse` failed or never ran): `""` the unnamed one, else a client's
    /// name (session pooling) or the proxy's (transaction pooling).
    pub fn forget_statement(&mut self, name: &str) {
        if name.is_empty() {
            self.unnamed = None;
        } else {
            self.prepared.remove(name);
            self.pooled.remove(name);
        }
    }

    /// Opens, authenticates and waits until the node is ready. With
    /// `incarnation` (a follower), also checks that the server's postmaster
    /// start time is that one (rule 2).
    pub async fn connect(
        c: Connect<'_>,
        incarnation: Option<i64>,
    ) -> Result<Backend, BackendError> {
        let name = c.name.clone();
        let unreachable = |why: String| BackendError::Unreachable {
            node: name.clone(),
            why,
        };
        let opened = tokio::time::timeout(c.timeout, async {
            let stream = crate::tls::connect_node(c.addr, c.tls, c.host)
                .await
                .map_err(unreachable)?;
            let mut b = Backend {
                name: c.name.clone(),
                addr: c.addr,
                stream,
                inbuf: BytesMut::with_capacity(16 * 1024),
                key: (0, 0),
                params: Vec::new(),
                prepared: HashMap::new(),
                unnamed: None,
                pending_close: Vec::new(),
                settings: Vec::new(),
                passthrough: 0,
                discard: false,
                created: std::time::Instant::now(),
                incarnation,
                pooled: HashMap::new(),
                stale: Vec::new(),
                tick: 0,
            };
            b.startup(&c).await?;
            if let Some(expected) = incarnation {
                let started = b.start_time().await?;
                if started != expected {
                    return Err(BackendError::Incarnation {
                        node: c.name.clone(),
                    });
                }
            }
            Ok(b)
        })
        .await;
        match opened {
            Ok(r) => r,
            Err(_) => Err(unreachable(format!("no answer within {:?}", c.timeout))),
        }
    }

    async fn startup(&mut self, c: &Connect<'_>) -> Result<(), BackendError> {
        let mut out = BytesMut::new();
        frontend::startup_message(
            c.params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &mut out,
        )
        .map_err(|e| self.lost(format!("startup: {e}")))?;
        self.send(&out).await?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                b'R' => {
                    let (code, data) = protocol::auth_request(frame.body())
                        .ok_or_else(|| self.lost("malformed authentication request".into()))?;
                    out.clear();
                    match code {
                        0 => {}
                        3 => {
                            let pw = self.password(c)?;
                            frontend::password_message(pw.as_bytes(), &mut out)
                                .map_err(|e| self.lost(e.to_string()))?;
                        }
                        5 => {
                            let pw = self.password(c)?;
                            let salt: [u8; 4] = data
                                .get(..4)
                                .and_then(|s| s.try_into().ok())
                                .ok_or_else(|| self.lost("malformed md5 salt".into()))?;
                            let user = c
                                .params
                                .iter()
                                .find(|(k, _)| k == "user")
                                .map(|(_, v)| v.as_str())
                                .unwrap_or_default();
                            let hash = postgres_protocol::authentication::md5_hash(
                                user.as_bytes(),
                                pw.as_bytes(),
                                salt,
                            );
                            frontend::password_message(hash.as_bytes(), &mut out)
                                .map_err(|e| self.lost(e.to_string()))?;
                        }
                        10 => {
                            let pw = self.password(c)?;
                            let client =
                                ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                            frontend::sasl_initial_response(
                                SCRAM_SHA_256,
                                client.message(),
                                &mut out,
                            )
                            .map_err(|e| self.lost(e.to_string()))?;
                            scram = Some(client);
                        }
                        11 => {
                            let client = scram
                                .as_mut()
                                .ok_or_else(|| self.lost("SASL continue before SASL".into()))?;
                            client
                                .update(data)
                                .map_err(|e| self.lost(format!("SCRAM: {e}")))?;
                            frontend::sasl_response(client.message(), &mut out)
                                .map_err(|e| self.lost(e.to_string()))?;
                        }
                        12 => {
                            let client = scram
                                .as_mut()
                                .ok_or_else(|| self.lost("SASL final before SASL".into()))?;
                            client
                                .finish(data)
                                .map_err(|e| self.lost(format!("SCRAM: {e}")))?;
                        }
                        other => {
                            return Err(
                                self.lost(format!("unsupported authentication request {other}"))
                            );
                        }
                    }
                    if !out.is_empty() {
                        self.send(&out).await?;
                    }
                }
                b'S' => {
                    if let Some((k, v)) = protocol::parameter_status(frame.body()) {
                        self.params.push((k.to_owned(), v.to_owned()));
                    }
                }
                b'K' => {
                    self.key = protocol::backend_key(frame.body()).unwrap_or_default();
                }
                b'E' => {
                    return Err(BackendError::Refused {
                        node: self.name.clone(),
                        fields: protocol::error_fields(frame.body()),
                    });
                }
                b'N' | b'v' => {}
                b'Z' => return Ok(()),
                other => {
                    return Err(self.lost(format!(
                        "unexpected message {:?} during startup",
                        other as char
                    )));
                }
            }
        }
    }

    fn password<'p>(&self, c: &Connect<'p>) -> Result<&'p str, BackendError> {
        c.password.ok_or_else(|| BackendError::Refused {
            node: self.name.clone(),
            fields: ErrorFields {
                severity: "FATAL".into(),
                code: "28P01".into(),
                message: format!(
                    "{} asks for a password, and the proxy has none for this user \
                     (give users and passwords with --auth-file)",
                    self.name
                ),
            },
        })
    }

    /// The server's postmaster start time, in a statement of its own.
    async fn start_time(&mut self) -> Result<i64, BackendError> {
        let mut out = BytesMut::new();
        frontend::query(START_TIME, &mut out).map_err(|e| self.lost(e.to_string()))?;
        self.send(&out).await?;
        let mut started = None;
        loop {
            let frame = self.read_frame().await?;
            match frame.tag {
                b'D' => started = protocol::first_column(frame.body()).and_then(|v| v.parse().ok()),
                b'E' => {
                    let e = protocol::error_fields(frame.body());
                    return Err(self.lost(format!("start time: {} ({})", e.message, e.code)));
                }
                b'Z' => break,
                _ => {}
            }
        }
        started.ok_or_else(|| self.lost("no postmaster start time".into()))
    }

    fn lost(&self, why: String) -> BackendError {
        BackendError::Unreachable {
            node: self.name.clone(),
            why,
        }
    }

    /// Ready when the node may have sent something (the readiness can be
    /// stale: follow with [`Backend::try_fill`]); a poll, for a wait on
    /// several nodes at once without a future per node.
    pub fn poll_readable(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream.poll_readable(cx)
    }

    /// Reads what the node has sent, without waiting: `Ok(None)` when
    /// there is nothing after all (readiness reported earlier data).
    pub fn try_fill(&mut self) -> Result<Option<usize>, BackendError> {
        if self.inbuf.capacity() - self.inbuf.len() < 4096 {
            self.inbuf.reserve(16 * 1024);
        }
        match self.stream.try_read_buf(&mut self.inbuf) {
            Ok(0) => Err(self.lost("closed the connection".into())),
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(self.lost(format!("read: {e}"))),
        }
    }

    /// Writes `bytes` to the node.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        self.stream
            .send(bytes)
            .await
            .map_err(|e| self.lost(format!("write: {e}")))
    }

    /// Reads what the node sent next into `inbuf`; an error when it closed.
    pub async fn fill(&mut self) -> Result<usize, BackendError> {
        if self.inbuf.capacity() - self.inbuf.len() < 4096 {
            self.inbuf.reserve(16 * 1024);
        }
        match self.stream.read_buf(&mut self.inbuf).await {
            Ok(0) => Err(self.lost("closed the connection".into())),
            Ok(n) => Ok(n),
            Err(e) => Err(self.lost(format!("read: {e}"))),
        }
    }

    /// The next whole message, reading as needed.
    pub async fn read_frame(&mut self) -> Result<protocol::Frame, BackendError> {
        loop {
            match protocol::next_frame(&mut self.inbuf, MAX_BACKEND_MESSAGE) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {
                    self.fill().await?;
                }
                Err(e) => return Err(self.lost(format!("protocol: {e}"))),
            }
        }
    }

    /// Sends a cancel request for this connection's running statement, on a
    /// connection of its own, in the clear (as libpq before 17 sends them;
    /// the server takes them before any `pg_hba.conf` check).
    pub async fn cancel(addr: SocketAddr, key: (i32, i32)) {
        let mut out = BytesMut::new();
        frontend::cancel_request(key.0, key.1, &mut out);
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await {
            Ok(Ok(mut s)) => {
                let _ = s.write_all(&out).await;
                // The server closes it once done; wait briefly so the
                // cancel is delivered before we drop the socket.
                let mut sink = [0u8; 1];
                let _ = tokio::time::timeout(Duration::from_secs(1), s.read(&mut sink)).await;
            }
            _ => tracing::debug!(%addr, "cancel: backend unreachable"),
        }
    }
}
