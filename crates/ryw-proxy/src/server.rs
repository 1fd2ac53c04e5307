//! [`Proxy`]: build (router, session store, node addresses, auth file),
//! bind, accept clients until a shutdown future resolves. Each client is a
//! task of its own ([`crate::session`]); what they share is here.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ryw_router::{
    MemoryStore, MetricSlot, NodeId, RedisStore, RedisStoreConfig, Router, SessionStore, TokenKey,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::auth::AuthFile;
use crate::catalog::Catalog;
use crate::config::ProxyConfig;
use crate::error::ProxyError;
use crate::metrics::ProxyMetrics;

/// Where a node listens, for the clients' connections.
#[derive(Clone, Debug)]
pub struct NodeAddr {
    /// `leader` or the follower's name.
    pub name: Arc<str>,
    /// Host and port.
    pub addr: SocketAddr,
    /// TLS as its URL says (`sslmode`, `sslrootcert`).
    pub tls: ryw_router::tls::NodeTls,
    /// The URL's host, as the certificate must name it (`verify-full`).
    pub host: rustls::pki_types::ServerName<'static>,
}

/// Where a client's statement is, for its cancel requests.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) enum Running {
    /// Nothing runs: a cancel request does nothing, as on a server.
    #[default]
    Idle,
    /// The proxy is routing the client's batch (waiting, at most a budget,
    /// for a follower): a cancel request cancels it before it is sent.
    Routing { cancelled: bool },
    /// The batch runs on this node's backend (address, process id and key).
    On(SocketAddr, (i32, i32)),
}

/// What a client's cancel request needs.
pub(crate) type CancelTarget = Arc<Mutex<Running>>;

/// What every client task shares.
#[derive(Debug)]
pub(crate) struct ProxyState {
    pub router: Router,
    pub key: TokenKey,
    pub cfg: ProxyConfig,
    /// Every node in the router's order: the followers, then the node
    /// configured as the leader (named as the router names them), indexed
    /// by [`NodeId::index`].
    pub nodes: Vec<NodeAddr>,
    /// The router's id of each node of `nodes`, in the same order.
    pub ids: Vec<NodeId>,
    /// The node configured as the leader: the one that leads until the
    /// router has seen which does.
    configured_leader: NodeId,
    auth: RwLock<Option<Arc<AuthFile>>>,
    /// Sessions by the process id the proxy gave them: (secret key, the
    /// backend running their statement).
    cancels: Mutex<HashMap<i32, (i32, CancelTarget)>>,
    next_pid: AtomicI32,
    /// Clients logged in (`--max-clients`).
    clients: AtomicUsize,
    /// Connections still logging in, oldest first.
    logins: Mutex<BTreeMap<u64, tokio::sync::oneshot::Sender<()>>>,
    next_login: AtomicU64,
    /// What clients are told of the server at login, by role, database and
    /// parameters.
    params: Mutex<HashMap<ParamsKey, (Instant, ServerParams)>>,
    /// Which functions may run on a follower, per database.
    pub catalog: Catalog,
    /// Pooled server connections (transaction mode).
    pub pools: crate::pool::Pools,
    /// Versions of clients' prepared statements, unique in the process (a
    /// pooled connection holds statements of many clients).
    pub next_version: AtomicU64,
    pub metrics: ProxyMetrics,
    /// Clients' TLS: the mode and the certificate in force.
    pub tls: crate::tls::ServerTls,
}

/// The `ParameterStatus` values a client gets at login.
pub(crate) type ServerParams = Arc<Vec<(String, String)>>;

/// How long the server parameters of a login are reused for the next
/// login with the same role, database and parameters.
const PARAMS_TTL: Duration = Duration::from_secs(60);

/// A login's role and startup parameters (database included), as the
/// parameter cache keys them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ParamsKey(Vec<(String, String)>);

impl ParamsKey {
    pub fn new(user: &str, params: &[(String, String)]) -> ParamsKey {
        let mut all: Vec<(String, String)> = params.to_vec();
        all.push(("\0user".to_owned(), user.to_owned()));
        all.sort();
        ParamsKey(all)
    }
}

/// A connection's place among those still logging in: the oldest is
/// evicted when too many are pending, so sockets that never log in cannot
/// lock real clients out.
#[derive(Debug)]
pub(crate) struct Login {
    shared: Arc<ProxyState>,
    id: u64,
    evicted: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl Login {
    /// Resolves when a newer connection took this one's place.
    pub async fn evicted(&mut self) {
        match self.evicted.as_mut() {
            Some(rx) => {
                let _ = rx.await;
            }
            None => std::future::pending().await,
        }
    }
}

impl Drop for Login {
    fn drop(&mut self) {
        self.shared
            .logins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// A logged-in client's slot (`--max-clients`), given back on drop.
#[derive(Debug)]
pub(crate) struct ClientSlot(Arc<ProxyState>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ProxyState {
    /// The auth file in force (reloaded on SIGHUP).
    pub fn auth(&self) -> Option<Arc<AuthFile>> {
        self.auth.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the auth file (clients logged in stay).
    pub fn set_auth(&self, auth: AuthFile) {
        *self.auth.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(auth));
    }

    /// A place for a connection that starts logging in; the oldest pending
    /// one is evicted when `--max-pending-logins` are pending.
    pub fn login(self: &Arc<Self>) -> Login {
        let id = self.next_login.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        while logins.len() >= self.cfg.max_pending_logins.max(1) {
            match logins.pop_first() {
                Some((_, oldest)) => {
                    let _ = oldest.send(());
                }
                None => break,
            }
        }
        logins.insert(id, tx);
        Login {
            shared: self.clone(),
            id,
            evicted: Some(rx),
        }
    }

    /// A slot for a client that logged in, unless `--max-clients` are in.
    pub fn client_slot(self: &Arc<Self>) -> Option<ClientSlot> {
        let before = self.clients.fetch_add(1, Ordering::Relaxed);
        let slot = ClientSlot(self.clone());
        (before < self.cfg.max_clients).then_some(slot)
    }

    /// Server parameters of an earlier login like this one, if recent.
    pub fn cached_params(&self, key: &ParamsKey) -> Option<ServerParams> {
        let cache = self.params.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(key)
            .filter(|(at, _)| at.elapsed() < PARAMS_TTL)
            .map(|(_, v)| v.clone())
    }

    /// Remembers a login's server parameters.
    pub fn cache_params(&self, key: ParamsKey, values: ServerParams) {
        let mut cache = self.params.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= 1024 {
            cache.retain(|_, (at, _)| at.elapsed() < PARAMS_TTL);
            if cache.len() >= 1024 {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), values));
    }

    /// The address of node `node`.
    pub fn addr(&self, node: NodeId) -> &NodeAddr {
        &self.nodes[node.index()]
    }

    /// The node configured as the leader (which may not lead now).
    pub fn configured_leader(&self) -> NodeId {
        self.configured_leader
    }

    /// The node that leads now (the router's tracker follows promotions),
    /// else the node configured as the leader.
    pub fn leader_slot(&self) -> NodeId {
        self.router
            .cluster_view()
            .leader_id
            .unwrap_or(self.configured_leader)
    }

    /// A process id and key for a new session, registered for cancels.
    pub fn register(&self, target: CancelTarget) -> (i32, i32) {
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
        let key: i32 = rand::random();
        self.cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid, (key, target));
        (pid, key)
    }

    /// Forgets a session that ended.
    pub fn unregister(&self, pid: i32) {
        self.cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
    }

    /// The backend to cancel for a client's cancel request, if the pair is
    /// one the proxy gave out and its session runs a statement now.
    pub fn cancel_target(&self, pid: i32, key: i32) -> Option<(SocketAddr, (i32, i32))> {
        let map = self.cancels.lock().unwrap_or_else(|p| p.into_inner());
        let (k, target) = map.get(&pid)?;
        if *k != key {
            return None;
        }
        let mut running = target.lock().unwrap_or_else(|p| p.into_inner());
        match *running {
            Running::On(addr, key) => Some((addr, key)),
            Running::Routing { .. } => {
                *running = Running::Routing { cancelled: true };
                None
            }
            Running::Idle => None,
        }
    }
}

/// A built proxy, bound to its port.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<ProxyState>,
    listener: TcpListener,
    addr: SocketAddr,
    admin: Option<(TcpListener, SocketAddr)>,
}

/// The router's own connections to the leader for positions (its write
/// pool): with the tracker's and the router's read connection, what the
/// proxy holds of a node beside the clients' connections.
pub const POSITION_CONNECTIONS: usize = 2;

impl Proxy {
    /// Connects the router (and the session store), reads the auth file,
    /// resolves the nodes' addresses and binds.
    pub async fn build(cfg: ProxyConfig) -> Result<Proxy, ProxyError> {
        let store: Arc<dyn SessionStore> = match &cfg.redis_url {
            Some(url) => Arc::new(
                RedisStore::connect(RedisStoreConfig::new(url.clone()))
                    .await
                    .map_err(|e| ProxyError::Config(format!("session store at {url}: {e}")))?,
            ),
            None => Arc::new(MemoryStore::default()),
        };
        let tls = crate::tls::ServerTls::new(
            cfg.tls_mode,
            cfg.tls_cert.as_deref(),
            cfg.tls_key.as_deref(),
        )
        .map_err(|e| ProxyError::Config(e.to_string()))?;
        let nodes = node_addrs(&cfg).await?;
        let auth =
            match &cfg.auth_file {
                Some(path) => Some(AuthFile::load(path).map_err(|e| {
                    ProxyError::Config(format!("auth file {}: {e}", path.display()))
                })?),
                None => None,
            };
        // The router's write pool reads only positions for the proxy (one
        // fetch at a time, coalesced): two connections are plenty.
        let mut router_cfg = cfg.router.clone();
        router_cfg.pool_size = router_cfg.pool_size.min(POSITION_CONNECTIONS);
        let router = Router::connect(router_cfg, cfg.nodes.clone(), store)
            .await
            .map_err(|e| ProxyError::Config(e.to_string()))?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| ProxyError::Config(format!("binding {}: {e}", cfg.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ProxyError::Config(e.to_string()))?;
        let admin = match cfg.admin_listen {
            Some(at) => {
                let l = TcpListener::bind(at).await.map_err(|e| {
                    ProxyError::Config(format!("binding the admin endpoint {at}: {e}"))
                })?;
                let a = l
                    .local_addr()
                    .map_err(|e| ProxyError::Config(e.to_string()))?;
                Some((l, a))
            }
            None => None,
        };
        // Counted as routed: the leader, then each node as a follower.
        let metrics =
            ProxyMetrics::new(MetricSlot::labels(nodes.iter().map(|n| n.name.to_string())));
        let view = router.cluster_view();
        let ids: Vec<NodeId> = view.ids().collect();
        let configured_leader = view
            .configured_leader()
            .ok_or_else(|| ProxyError::Config("no nodes".to_owned()))?;
        let catalog = Catalog::new(cfg.nodes.leader.clone());
        // Each relay thread pools its own sockets: the size shared out.
        let pool_share = (cfg.pool_size / cfg.threads.max(1)).max(1);
        let cfg_pool = (
            cfg.pool_timeout,
            cfg.server_idle_timeout,
            cfg.server_lifetime,
        );
        let (pool_total, pool_threads) = (cfg.pool_size, cfg.threads.max(1));
        // The router's own database: known before the first client.
        if let Ok((pg, _)) = ryw_router::tls::parse_node_url(&cfg.nodes.leader)
            && let Some(db) = pg.get_dbname()
        {
            catalog.load(db, cfg.connect_timeout).await;
        }
        Ok(Proxy {
            admin,
            shared: Arc::new(ProxyState {
                metrics,
                router,
                key: cfg.token_key.clone(),
                cfg,
                nodes,
                ids,
                configured_leader,
                auth: RwLock::new(auth.map(Arc::new)),
                cancels: Mutex::new(HashMap::new()),
                next_pid: AtomicI32::new(1),
                clients: AtomicUsize::new(0),
                logins: Mutex::new(BTreeMap::new()),
                next_login: AtomicU64::new(0),
                params: Mutex::new(HashMap::new()),
                catalog,
                pools: crate::pool::Pools::new(crate::pool::PoolLimits {
                    size: pool_share,
                    total: pool_total,
                    threads: pool_threads,
                    timeout: cfg_pool.0,
                    idle_timeout: cfg_pool.1,
                    lifetime: cfg_pool.2,
                }),
                next_version: AtomicU64::new(1),
                tls,
            }),
            listener,
            addr,
        })
    }

    /// Where it listens (the real port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the admin endpoint listens, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, a)| *a)
    }

    /// The router it routes with (its view, metrics, health).
    pub fn router(&self) -> &Router {
        &self.shared.router
    }

    /// Accepts clients until `shutdown` resolves, then closes every client
    /// connection and stops the router's tasks.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ProxyError> {
        let mut clients = JoinSet::new();
        let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin = self.admin.map(|(listener, _)| {
            let app = crate::admin::app(self.shared.clone());
            tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = admin_stopped.await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::warn!(error = %e, "admin endpoint stopped");
                }
            })
        });
        let workers = match RelayThreads::start(self.shared.cfg.threads.saturating_sub(1)) {
            Ok(w) => w,
            Err(e) => {
                let _ = admin_stop.send(());
                self.shared.router.shutdown();
                return Err(ProxyError::Config(format!("starting relay threads: {e}")));
            }
        };
        let sweeper = {
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    shared.pools.sweep();
                }
            })
        };
        let reload = (self.shared.cfg.auth_file.is_some() || self.shared.cfg.tls_cert.is_some())
            .then(|| tokio::spawn(reload_on_sighup(self.shared.clone())));
        let mut turn = 0usize;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let shared = self.shared.clone();
                        let login = shared.login();
                        // Clients in turn: this runtime, then each relay thread.
                        turn = (turn + 1) % (workers.handles.len() + 1);
                        match turn.checked_sub(1).map(|i| &workers.handles[i]) {
                            None => {
                                clients.spawn(crate::session::serve(shared, stream, peer, login, 0));
                            }
                            Some(handle) => match stream.into_std() {
                                // Relay thread `turn` (the caller's runtime is 0).
                                // Registered again with that thread's own I/O driver.
                                Ok(std) => {
                                    clients.spawn_on(
                                        async move {
                                            match TcpStream::from_std(std) {
                                                Ok(s) => crate::session::serve(shared, s, peer, login, turn).await,
                                                Err(e) => tracing::warn!(error = %e, "a client could not be handed to a relay thread"),
                                            }
                                        },
                                        handle,
                                    );
                                }
                                Err(e) => tracing::warn!(error = %e, "a client could not be handed to a relay thread"),
                            },
                        }
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
                Some(_) = clients.join_next(), if !clients.is_empty() => {}
            }
        }
        if let Some(r) = reload {
            r.abort();
        }
        sweeper.abort();
        clients.shutdown().await;
        workers.stop().await;
        let _ = admin_stop.send(());
        if let Some(a) = admin {
            let _ = a.await;
        }
        self.shared.router.stop().await;
        Ok(())
    }
}

/// Reads the auth file and the TLS certificate and key again on each
/// SIGHUP; clients logged in stay, new logins use the new files. A file
/// that does not load leaves the old one in force.
async fn reload_on_sighup(shared: Arc<ProxyState>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!(
            "cannot listen for SIGHUP: the auth file and certificate will not be reloaded"
        );
        return;
    };
    while hup.recv().await.is_some() {
        if let Some(path) = &shared.cfg.auth_file {
            match AuthFile::load(path) {
                Ok(auth) => {
                    tracing::info!(file = %path.display(), users = auth.len(), "auth file reloaded");
                    shared.set_auth(auth);
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "auth file not reloaded; the old one stays in force");
                }
            }
        }
        match shared.tls.reload() {
            Ok(true) => tracing::info!("TLS certificate and key reloaded"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate not reloaded; the old one stays in force");
            }
        }
    }
}

/// The relay threads of [`ProxyConfig::threads`]: single-threaded
/// runtimes, each running until told to stop.
struct RelayThreads {
    handles: Vec<tokio::runtime::Handle>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl RelayThreads {
    fn start(n: usize) -> std::io::Result<RelayThreads> {
        let mut w = RelayThreads {
            handles: Vec::with_capacity(n),
            stops: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
        };
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            w.handles.push(rt.handle().clone());
            w.stops.push(stop);
            w.threads.push(
                std::thread::Builder::new()
                    .name(format!("ryw-relay-{}", i + 1))
                    .spawn(move || {
                        rt.block_on(async move {
                            let _ = stopped.await;
                        })
                    })?,
            );
        }
        Ok(w)
    }

    /// Stops the threads (their clients are gone by then) and waits.
    async fn stop(self) {
        drop(self.stops);
        for t in self.threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// Each node's host and port, from the router's URLs, in the router's
/// order (the followers, then the node configured as the leader).
async fn node_addrs(cfg: &ProxyConfig) -> Result<Vec<NodeAddr>, ProxyError> {
    let mut out = Vec::with_capacity(cfg.nodes.followers.len() + 1);
    let all = cfg
        .nodes
        .followers
        .iter()
        .map(|(n, u)| (n.as_str(), u.as_str()))
        .chain(std::iter::once((
            ryw_router::FORMER_LEADER_NAME,
            cfg.nodes.leader.as_str(),
        )));
    for (name, url) in all {
        let (pg, tls) = ryw_router::tls::parse_node_url(url)
            .map_err(|e| ProxyError::Config(format!("{name}: {e}")))?;
        let host = match pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(_) => {
                return Err(ProxyError::Config(format!(
                    "{name}: the proxy reaches nodes over TCP; give a host name or address, not a socket folder"
                )));
            }
            None => "localhost".to_owned(),
        };
        let port = pg.get_ports().first().copied().unwrap_or(5432);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| ProxyError::Config(format!("{name}: cannot resolve {host}:{port}")))?;
        let host = ryw_router::tls::server_name(&host)
            .map_err(|e| ProxyError::Config(format!("{name}: {e}")))?;
        out.push(NodeAddr {
            name: Arc::from(name),
            addr,
            tls,
            host,
        });
    }
    Ok(out)
}
