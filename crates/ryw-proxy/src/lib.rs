//! `ryw proxy`: read-your-writes for any PostgreSQL client, with no code
//! change. A wire-protocol relay (session or transaction pooling, TLS
//! both ways) that sends writes and transactions to the leader and each
//! provably read-only statement to a follower that has what the session
//! must see, through the same router, strategies, stores and tokens as
//! `ryw serve`.
//!
//! ```no_run
//! # async fn f(nodes: ryw_router::NodeUrls) -> Result<(), Box<dyn std::error::Error>> {
//! use ryw_proxy::{Proxy, ProxyConfig};
//! let cfg = ProxyConfig::new(nodes, ryw_router::TokenKey::generate());
//! let proxy = Proxy::build(cfg).await?;
//! println!("psql -h 127.0.0.1 -p {}", proxy.local_addr().port());
//! proxy.run_until_stopped(std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! | file | what |
//! | --- | --- |
//! | `config.rs` | [`ProxyConfig`] |
//! | `server.rs` | [`Proxy`]: build, bind, accept and hand each client to a relay thread; what client tasks share (router, node addresses, cancel keys) |
//! | `session/` | one client: the relay loop (`mod.rs`), startup and authentication (`startup.rs`), planning and sending a batch (`batch.rs`), the nodes' replies and retries (`replies.rs`), `ryw.*` commands (`commands.rs`) |
//! | `pool.rs` | server connections pooled per node and (role, database) for `--pool-mode transaction` |
//! | `backend.rs` | a connection to one node on a client's behalf (startup, authentication, rule 2 check) |
//! | `protocol.rs` | framing with a size cap, the few decoders and encoders routing needs |
//! | `classify/` | statement classification: read, leader, session effects, `ryw.*` commands, node-local state, the per-connection cache |
//! | `catalog.rs` | which functions may run on a follower: the database's catalog (`pg_proc.provolatile`), per database |
//! | `auth/` | the auth file and the server side of SCRAM-SHA-256 |
//! | `tls.rs` | TLS both ways: [`TlsMode`] and the certificate for clients (reloaded on SIGHUP), the handshake to a node as its URL's `sslmode` says, the client and node stream types |
//! | `metrics.rs` | the proxy's own counters (clients, batches by node and route, retries) |
//! | `admin.rs` | the admin endpoint: `/metrics` (the router's and the proxy's), `/readyz` |
//! | `error.rs` | [`ProxyError`] |
//!
//! "Rule N" in comments: the correctness rules, listed in
//! `docs/architecture.md#correctness-rules` with the code and tests of each.

#![warn(missing_docs)]

mod admin;
pub mod auth;
mod backend;
mod catalog;
pub mod classify;
mod config;
mod error;
mod metrics;
mod pool;
pub mod protocol;
mod server;
mod session;
mod tls;

pub use config::{DEFAULT_SCOPE, PoolMode, ProxyConfig};
pub use error::ProxyError;
pub use server::{POSITION_CONNECTIONS, Proxy};
pub use session::LOST_WRITE_SQLSTATE;
pub use tls::{TlsConfigError, TlsMode};
