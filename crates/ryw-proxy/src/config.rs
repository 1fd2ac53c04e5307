//! [`ProxyConfig`]: everything `ryw proxy` needs, typed; the binary builds
//! it from flags and `RYW_*` variables, tests build it directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ryw_router::{NodeUrls, RouterConfig, Scope, TokenKey};

pub use crate::pool::PoolMode;
use crate::tls::TlsMode;

/// The proxy's default scope of fresh reads (`--scope`; a client's `SET
/// ryw.scope` overrides it): why this one is in the README ("Scopes").
pub const DEFAULT_SCOPE: Scope = Scope::Session;

/// Where the proxy listens, which nodes it routes to, and how.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Where clients connect (default `127.0.0.1:6432`); port 0 picks one.
    pub listen: SocketAddr,
    /// The leader and the followers. The router's own connections (its
    /// tracker) use these URLs as given; clients' connections go to the
    /// same hosts and ports with the client's user and database.
    pub nodes: NodeUrls,
    /// Routing: default strategy and scope ([`DEFAULT_SCOPE`]), windows
    /// and budgets, lag limits.
    pub router: RouterConfig,
    /// Redis for sessions shared with other proxies and with `ryw serve`
    /// (the same keys); `None` keeps named sessions in this process.
    pub redis_url: Option<String>,
    /// Signs and verifies `SET ryw.token` / `SHOW ryw.token` values; share
    /// it with the other instances.
    pub token_key: TokenKey,
    /// Users and passwords (PgBouncer's `userlist.txt` format): clients
    /// then authenticate with SCRAM-SHA-256, and the proxy authenticates to
    /// the nodes with the same password. Without it only loopback clients
    /// are accepted, without a password.
    pub auth_file: Option<PathBuf>,
    /// Longest a connection to a node (and its startup) may take.
    pub connect_timeout: Duration,
    /// Most clients logged in at once; the next one is refused with
    /// SQLSTATE 53300 (too many connections). Connections still logging in
    /// do not count (see `max_pending_logins`).
    pub max_clients: usize,
    /// Most connections logging in at once (startup and authentication not
    /// finished). A new one beyond it evicts the oldest, which is told
    /// 53300: sockets that connect and send nothing cannot lock real
    /// clients out.
    pub max_pending_logins: usize,
    /// Longest a connection may take to log in (PgBouncer's
    /// `client_login_timeout`, whose default is 60 s; here 10 s, as a
    /// client on loopback or a LAN logs in within milliseconds).
    pub login_timeout: Duration,
    /// Most bytes the proxy holds for one client: the messages it sent
    /// since its last `Sync`, its prepared statements and its session
    /// settings. Beyond it the client gets SQLSTATE 54000 and is closed,
    /// with nothing of the batch sent. Big rows and COPY data are relayed
    /// in pieces and do not count.
    pub client_memory_limit: usize,
    /// Where the admin endpoint (`/metrics`, `/readyz`) listens; `None`:
    /// no admin endpoint.
    pub admin_listen: Option<SocketAddr>,
    /// `session`: each client has its own connections to the nodes;
    /// `transaction`: clients share pooled ones (see `pool.rs`).
    pub pool_mode: PoolMode,
    /// In transaction mode, server connections per node and per (role,
    /// database): PgBouncer's `default_pool_size`.
    pub pool_size: usize,
    /// In transaction mode, longest a client waits for a free connection
    /// before SQLSTATE 53300.
    pub pool_timeout: Duration,
    /// A pooled connection idle this long is closed
    /// (`server_idle_timeout`).
    pub server_idle_timeout: Duration,
    /// A pooled connection open this long is closed when it comes back
    /// (`server_lifetime`).
    pub server_lifetime: Duration,
    /// Relay threads. 0 or 1: every client on the runtime that runs
    /// [`crate::Proxy::run_until_stopped`]. N > 1: N - 1 more threads, each
    /// a single-threaded runtime of its own, and new clients handed to
    /// them and to the caller's runtime in turn. A client stays on its
    /// thread, so relaying a statement wakes no other thread (a
    /// work-stealing runtime moves tasks between workers and wakes idle
    /// ones, which cost the relay a third of its CPU on two cores).
    pub threads: usize,
    /// Clients' TLS: `disable` answers `SSLRequest` with `N`, `allow` takes
    /// TLS and the clear, `require` refuses a startup in the clear.
    pub tls_mode: TlsMode,
    /// The proxy's certificate chain (PEM), for `allow` and `require`;
    /// read again on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
}

impl ProxyConfig {
    /// The documented defaults for these nodes.
    pub fn new(nodes: NodeUrls, token_key: TokenKey) -> ProxyConfig {
        ProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 6432)),
            nodes,
            router: RouterConfig {
                default_scope: DEFAULT_SCOPE,
                ..RouterConfig::default()
            },
            redis_url: None,
            token_key,
            auth_file: None,
            connect_timeout: Duration::from_secs(2),
            max_clients: 1000,
            max_pending_logins: 1024,
            login_timeout: Duration::from_secs(10),
            client_memory_limit: 16 << 20,
            pool_mode: PoolMode::Session,
            pool_size: 20,
            pool_timeout: Duration::from_secs(5),
            server_idle_timeout: Duration::from_secs(600),
            server_lifetime: Duration::from_secs(3600),
            admin_listen: None,
            threads: 0,
            tls_mode: TlsMode::Disable,
            tls_cert: None,
            tls_key: None,
        }
    }
}
