//! The command line (the README documents every command and flag). Values are parsed by
//! clap into their types ([`Dur`], `Strategy`, `SocketAddr`); defaults are
//! the library's (`RouterConfig::default()`, `FrontLimits::default()`, …),
//! written once. `ryw serve` and `ryw proxy` share the node, routing and
//! token flags ([`NodeArgs`], [`RoutingArgs`], [`TokenArgs`]).

use clap::{Args, Parser, Subcommand};
use ryw_router::{RouterConfig, Scope, Strategy};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A duration flag: `100ms`, `2s`, `1m30s` or `0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = ryw_router::Error;
    fn from_str(s: &str) -> Result<Dur, Self::Err> {
        ryw_router::parse_duration(s).map(Dur)
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0");
        }
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// A size in bytes: `16777216`, `64KiB`, `16MiB`, `1GiB` (also kB, MB, GB
/// as powers of 1024, as PostgreSQL reads them).
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: usize = n
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 16MiB)"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
    };
    n.checked_mul(scale)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("{s:?} is not a usable size"))
}

/// The router's defaults, for the flags' defaults.
fn router_default() -> RouterConfig {
    RouterConfig::default()
}

/// Read-your-writes consistency on PostgreSQL leader–follower replication.
#[derive(Debug, Parser)]
#[command(name = "ryw", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output from ryw itself (-v: debug, -vv: trace). Never
    /// statement text or parameters: see --log-statements. `RUST_LOG`
    /// overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Also log statement texts and their parameters (the SQL parser's and
    /// the PostgreSQL client's debug output): they may hold personal data
    /// and secrets, so only when asked.
    #[arg(long, global = true)]
    pub log_statements: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The main job: a local cluster, the service and the bench over every
    /// strategy, then the comparison table; tears everything down.
    Demo(DemoArgs),
    /// Manage a local PostgreSQL primary + streaming followers (+ Redis).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Run the HTTP service (API, dashboard, OpenAPI, metrics) on the router.
    Serve(Box<ServeArgs>),
    /// Run the PostgreSQL wire-protocol proxy: read-your-writes for any
    /// client, in any language, with no code change.
    Proxy(Box<ProxyArgs>),
    /// The workload, the consistency checker and the report.
    Bench(Box<BenchArgs>),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    #[command(flatten)]
    pub run: BenchRunArgs,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Check a recorded history (JSON lines) for RYW and monotonic-read violations.
    Check {
        /// The history file (`history.jsonl` from `--report DIR`, or your own).
        file: PathBuf,
        /// A cluster folder whose followers' delays give the oracle line.
        #[arg(long)]
        cluster: Option<PathBuf>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Throughput of `GET /api/balance` (causal) through ryw, against the
    /// same query on a minimal no-routing server and `pgbench -S`, on one
    /// follower, interleaved A B C A B C in one run.
    Calibrate(CalibrateArgs),
    /// Pgpool-II and `ryw proxy` side by side on one cluster, in one run,
    /// under the same workload: pay in a transaction, then read the balance
    /// on the same connection and on another one. Stale reads and leader
    /// share for each.
    Peers(PeersArgs),
    /// What `ryw proxy` costs: `pgbench -n -S -c8 -j2` straight to
    /// follower1, through PgBouncer (session pooling) and through `ryw
    /// proxy` (causal), interleaved A B C A B C, with `-M prepared` and
    /// `-M simple`; medians and per-round ratios.
    Overhead(OverheadArgs),
    /// The scaling model (docs/scaling.md): predict each strategy's leader
    /// share of fresh reads, its waits and stale reads, and the query rate
    /// on every node, from the think time, the workload's rate, the
    /// followers' catch-up times and the tracker's polls; with `--compare
    /// FILE`, beside what a `ryw bench --json FILE` run measured.
    Model(ModelArgs),
    /// Fresh-read throughput over every follower: `GET /api/balance`
    /// (causal) through ryw on the leader and all followers while a steady
    /// stream of payments keeps their positions apart, with followers
    /// chosen by load (the default) against the old least-lagged choice
    /// (`causal@least-lagged`), interleaved A B A B in one run; req/s,
    /// latency and each follower's share of the reads.
    Spread(SpreadArgs),
    /// The read scopes' cost through `ryw proxy` in the pooled pattern (a
    /// write on one connection, reads at once on another, no named
    /// session): each scope, and Pgpool-II (`--pgpool`), interleaved in
    /// one run; reads/s, share on followers, stale reads, p50/p99.
    Scopes(ScopesArgs),
}

#[derive(Debug, Args)]
pub struct ScopesArgs {
    /// The cluster folder (from `ryw cluster up`; e.g. `--lag 20ms,300ms
    /// --redis`).
    #[arg(long, default_value = ryw_cluster::DEFAULT_DIR)]
    pub cluster: PathBuf,
    /// The proxy's Redis (global's mark); default the cluster's, if any.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Rounds; each runs every contender once, in the same order.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Length of each contender's run.
    #[arg(long, default_value = "10s")]
    pub duration: Dur,
    /// Writer/reader connection pairs.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Reads after each write.
    #[arg(long, default_value_t = 4)]
    pub reads_per_write: usize,
    /// Also Pgpool-II (`disable_load_balance_on_write` always and
    /// transaction).
    #[arg(long)]
    pub pgpool: bool,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SpreadArgs {
    /// The cluster folder (from `ryw cluster up`; 3 followers at 20, 50
    /// and 100 ms: `--replicas 3 --lag 20ms,50ms,100ms`).
    #[arg(long, default_value = ryw_cluster::DEFAULT_DIR)]
    pub cluster: PathBuf,
    /// Rounds; each measures both choices once, in the same order.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Length of each measurement.
    #[arg(long, default_value = "10s")]
    pub duration: Dur,
    /// Concurrent HTTP connections.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Readers (accounts created first); each request reads the balance
    /// of the next one, so each session reads every `users / req/s`
    /// seconds.
    #[arg(long, default_value_t = 2000)]
    pub users: usize,
    /// Payments per second meanwhile (another user), so the followers'
    /// positions differ as they do under a real write load.
    #[arg(long, default_value_t = 100)]
    pub writes: u32,
    /// Shared read connections per node in the service (`--read-connections`).
    #[arg(long, default_value_t = 1)]
    pub read_connections: usize,
    /// HTTP load generator: `wrk`, `builtin` or `auto` (wrk if installed).
    #[arg(long, default_value = "auto")]
    pub generator: String,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Strategies, as for `ryw bench` (`all`, `sweep`, `causal:20ms`, …).
    #[arg(long, default_value = "all")]
    pub strategies: String,
    /// Think time between a write and the fresh read after it: `200ms`,
    /// `0ms..1s` (uniform) or `exp:300ms`.
    #[arg(long, default_value = "0ms..1s")]
    pub think: String,
    /// Closed-loop users (each strategy predicted as if all of them ran it).
    #[arg(long, default_value_t = 32)]
    pub users: usize,
    /// Iterations per second instead of closed-loop users (one iteration:
    /// a write, a think time, a fresh read; `--profile-every` adds a pair,
    /// `--products-every` a stale-ok read).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Mean time of one request, as a closed-loop user sees it.
    #[arg(long, default_value = "1ms")]
    pub request_time: Dur,
    /// Each follower's catch-up time after a commit, comma-separated (on
    /// `ryw cluster`: its replay delay + about 1 ms).
    #[arg(long, default_value = "101ms,401ms", value_delimiter = ',')]
    pub lags: Vec<Dur>,
    /// The tracker's poll interval.
    #[arg(long, default_value_t = Dur(router_default().poll_interval))]
    pub poll_interval: Dur,
    /// Service instances, each with its own tracker.
    #[arg(long, default_value_t = 1)]
    pub instances: u32,
    /// The shared position feed is on: one instance polls for all.
    #[arg(long)]
    pub feed: bool,
    /// A write + fresh read pair on the profile every N-th iteration (0 = never).
    #[arg(long, default_value_t = 5)]
    pub profile_every: u32,
    /// A stale-ok read every N-th iteration (0 = never).
    #[arg(long, default_value_t = 2)]
    pub products_every: u32,
    /// The mix of one iteration instead of the bench's: writes, fresh
    /// reads (each after a think time since a write), stale-ok reads, e.g.
    /// `1,1,8`.
    #[arg(long, value_delimiter = ',', num_args = 1)]
    pub mix: Option<Vec<f64>>,
    /// A `ryw bench --json` report, or a `--report DIR` folder (then also
    /// the requests each node served, from its history): predict each of
    /// its strategies for its own think time, users and followers' median
    /// lag, and print the prediction beside the measurement.
    #[arg(long)]
    pub compare: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PeersArgs {
    /// The cluster folder (from `ryw cluster up`); Pgpool-II and `ryw
    /// proxy` are started on it, Pgpool-II's files go into it (`pgpool/`).
    #[arg(long, default_value = ryw_cluster::DEFAULT_DIR)]
    pub cluster: PathBuf,
    /// ryw proxy's strategies (a row each, on the same connection and on
    /// another one).
    #[arg(long, default_value = "hybrid,causal,causal:0ms")]
    pub strategies: String,
    /// Virtual users in total (split over every row).
    #[arg(long, default_value_t = 32)]
    pub users: usize,
    /// How long the workload runs.
    #[arg(long, default_value = "30s")]
    pub duration: Dur,
    /// Think time between a payment and the balance read.
    #[arg(long, default_value = "0ms..1s")]
    pub think: String,
    /// Pgpool-II's `delay_threshold` in WAL bytes, comma-separated: one
    /// Pgpool-II per value, side by side (`pgpool-1B/…` rows). 1 is the
    /// strictest (a standby behind at all at the last check gets no
    /// reads); 10000000 is the documentation's example.
    #[arg(long, default_value = "1,10000000")]
    pub delay_threshold: String,
    /// Use the cluster's Redis (from `cluster up --redis` or
    /// `--redis-cluster N`) as ryw proxy's
    /// session store.
    #[arg(long)]
    pub redis: bool,
    /// Write the JSON report to this file (`-` for stdout).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an HTML report with SVG charts (and the history) to this folder.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct OverheadArgs {
    /// The cluster folder (from `ryw cluster up`); PgBouncer's files go
    /// into it (`pgbouncer/`). pgbench's tables are (re)created on it.
    #[arg(long, default_value = ryw_cluster::DEFAULT_DIR)]
    pub cluster: PathBuf,
    /// Rounds; each runs every contender once per mode, in the same order.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Length of each pgbench run.
    #[arg(long, default_value = "10s")]
    pub duration: Dur,
    /// pgbench query modes, comma-separated (`prepared`, `simple`,
    /// `extended`).
    #[arg(long, default_value = "prepared,simple")]
    pub modes: String,
    /// Print JSON instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// Measure these ryw proxy builds or settings, each a process of its
    /// own, in the same rounds instead of the proxy in this process:
    /// `NAME=PROGRAM [ARGS…]` (repeatable), e.g. `before=/tmp/ryw-before`
    /// or `t1=target/release/ryw --threads 1`. Each runs as `PROGRAM proxy
    /// --leader-url … --follower-url … --listen … --strategy causal ARGS`.
    #[arg(long = "proxy-variant", value_name = "NAME=PROGRAM [ARGS]")]
    pub proxy_variants: Vec<String>,
    /// Pool modes, comma-separated (`session`, `transaction`): PgBouncer
    /// and the in-process proxy run in each (a variant with `--pool-mode
    /// transaction` is compared with PgBouncer in transaction mode).
    #[arg(long, default_value = "session")]
    pub pool_modes: String,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// The cluster folder (from `ryw cluster up`).
    #[arg(long, default_value = ryw_cluster::DEFAULT_DIR)]
    pub cluster: PathBuf,
    /// Rounds; each measures every contender once, in the same order.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Length of each measurement.
    #[arg(long, default_value = "10s")]
    pub duration: Dur,
    /// Concurrent HTTP connections (pgbench uses -c8 -j2).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// HTTP load generator: `wrk` (a process of its own, `apt-get install
    /// wrk`), `builtin` (in this process), or `auto` (wrk if installed).
    #[arg(long, default_value = "auto")]
    pub generator: String,
    /// Also measure an already-running service, e.g. an older `ryw serve
    /// --allow-strategy-header` on the same cluster (repeatable): the same
    /// `GET /api/balance` (same user and headers) in the same rounds,
    /// reported with its ratio to ryw.
    #[arg(long = "compare", value_name = "NAME=URL")]
    pub compare: Vec<ryw_bench::CompareTarget>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchRunArgs {
    /// A running service (`ryw serve --allow-strategy-header`); repeat for
    /// several instances (a user writes through one and reads through another).
    #[arg(long = "target", conflicts_with = "cluster")]
    pub targets: Vec<String>,
    /// A cluster folder: the bench starts the service in-process on it
    /// (with `--proxy`: `ryw proxy`).
    #[arg(long)]
    pub cluster: Option<PathBuf>,
    /// Bench through a SQL front instead of HTTP: `--proxy PGURL` (a
    /// running `ryw proxy`, e.g. postgres://postgres@127.0.0.1:6432/ryw), or
    /// `--proxy` alone with `--cluster D` to start `ryw proxy` in this
    /// process. Each user pays in a transaction on one connection and reads
    /// its balance on another (`--read-on`), both bound to the user's
    /// `ryw.session`; a group per strategy via `SET ryw.strategy`. With
    /// `--cluster`, the service's tables are created on the cluster first.
    #[arg(long, num_args = 0..=1, value_name = "PGURL", conflicts_with = "targets")]
    pub proxy: Option<Option<String>>,
    /// With `--proxy`: read the balance on the `other` connection (bound to
    /// the same `ryw.session`), on the `same` one that paid, or `both` (a
    /// row each).
    #[arg(long, default_value = "other", requires = "proxy")]
    pub read_on: String,
    /// Strategies, comma-separated: `all`, `sweep` (causal at 0, 5, 20, 50
    /// and 200 ms, and hybrid) or names with an optional `:duration` (e.g.
    /// `legacy,sticky:2s,causal:0ms`).
    #[arg(long, default_value = "all")]
    pub strategies: String,
    /// Virtual users in total (split over the strategies).
    #[arg(long, default_value_t = 32)]
    pub users: usize,
    /// How long the workload runs.
    #[arg(long, default_value = "20s")]
    pub duration: Dur,
    /// Think time between a write and the read after it: `200ms`,
    /// `0ms..1s` (uniform) or `exp:300ms`.
    #[arg(long, default_value = "0ms..1s")]
    pub think: String,
    /// `closed` or `open:RATE` (iterations per second).
    #[arg(long, default_value = "closed")]
    pub load: String,
    /// Do not echo `X-Consistency-Token` (rely on the server's session store).
    #[arg(long)]
    pub no_token: bool,
    /// Use the cluster's Redis (from `cluster up --redis` or
    /// `--redis-cluster N`) as session store
    /// for the in-process service.
    #[arg(long)]
    pub redis: bool,
    /// Write the JSON report to this file (`-` for stdout).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an HTML report with SVG charts (and the history) to this folder.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Where the nodes are: `ryw serve` and `ryw proxy`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// A local cluster folder (from `ryw cluster up`): node URLs come from
    /// its cluster.json (and `ryw serve`'s dashboard may change follower
    /// lag).
    #[arg(long, env = "RYW_CLUSTER", conflicts_with = "leader_url")]
    pub cluster: Option<PathBuf>,
    /// The leader (primary) URL, e.g. postgres://app@db1:5432/app; or
    /// several candidates, comma-separated (each `URL` or `NAME=URL`): the
    /// router writes to the one that is not in recovery and follows a
    /// promotion. A candidate that is also a `--follower-url` is one node.
    #[arg(
        long,
        env = "RYW_LEADER_URL",
        required_unless_present = "cluster",
        value_delimiter = ','
    )]
    pub leader_url: Vec<String>,
    /// A follower URL, as `NAME=URL` or plain `URL` (named followerN);
    /// repeat it, or separate with commas in RYW_FOLLOWER_URL.
    #[arg(long = "follower-url", env = "RYW_FOLLOWER_URL", value_delimiter = ',')]
    pub follower_urls: Vec<String>,
    /// Redis URL for the shared session store (several instances, and
    /// `ryw serve` and `ryw proxy` sharing sessions): `redis://host:port/`
    /// for one Redis, `redis+cluster://host:port,host:port` for a Redis
    /// Cluster (any nodes as seeds). Default: the cluster's Redis with
    /// `--cluster` on a cluster started with `--redis` or
    /// `--redis-cluster N`; else sessions live in this process's memory.
    #[arg(long, env = "RYW_REDIS_URL")]
    pub redis_url: Option<String>,
}

/// How fresh reads are routed and followers watched: `ryw serve` and
/// `ryw proxy`.
#[derive(Debug, Args)]
pub struct RoutingArgs {
    /// Default strategy of fresh reads: leader, legacy, sticky, causal,
    /// hybrid, per-read-check.
    #[arg(long, env = "RYW_STRATEGY", default_value_t = router_default().default_strategy)]
    pub strategy: Strategy,
    /// Default scope of fresh reads (whose writes they must see):
    /// connection, session, global, cluster. Default: `session` for `ryw
    /// serve`, the README's choice for `ryw proxy` (`ryw_proxy::DEFAULT_SCOPE`).
    #[arg(long, env = "RYW_SCOPE")]
    pub scope: Option<Scope>,
    /// Sticky window: after a write, the session reads from the leader this
    /// long (`sticky`; `hybrid` only for a write whose position it does not
    /// know, such as the .NET demo's `user:{id}:last_write_utc`).
    #[arg(long, env = "RYW_STICKY_WINDOW", default_value_t = Dur(router_default().sticky_window))]
    pub sticky_window: Dur,
    /// Causal wait budget: longest a `causal` fresh read waits for a
    /// follower (0 = never).
    #[arg(long, env = "RYW_CAUSAL_WAIT", default_value_t = Dur(router_default().causal_wait))]
    pub causal_wait: Dur,
    /// Hybrid wait budget: longest a `hybrid` fresh read waits, only for a
    /// follower the tracker predicts will catch up within it (0 = never).
    #[arg(long, env = "RYW_HYBRID_WAIT", default_value_t = Dur(router_default().hybrid_wait))]
    pub hybrid_wait: Dur,
    /// A follower lagging more than this leaves rotation.
    #[arg(long, env = "RYW_MAX_LAG", default_value_t = Dur(router_default().max_lag_time))]
    pub max_lag: Dur,
    /// A follower more than this many WAL bytes behind leaves rotation.
    #[arg(long, env = "RYW_MAX_LAG_BYTES", default_value_t = router_default().max_lag_bytes)]
    pub max_lag_bytes: u64,
    /// How often the tracker polls every node.
    #[arg(long, env = "RYW_POLL_INTERVAL", default_value_t = Dur(router_default().poll_interval))]
    pub poll_interval: Dur,
    /// Shared, pipelining read connections per node.
    #[arg(long, env = "RYW_READ_CONNECTIONS", default_value_t = router_default().read_connections)]
    pub read_connections: usize,
    /// Longest one read statement may take before its node counts as
    /// stalled (the read is retried once elsewhere).
    #[arg(long, env = "RYW_READ_TIMEOUT", default_value_t = Dur(router_default().read_timeout))]
    pub read_timeout: Dur,
    /// The shared position feed, with a Redis (`--redis-url` or the
    /// cluster's): one instance at a time polls the nodes and publishes
    /// their positions, the others listen and poll only while it is quiet.
    /// `off`: every instance polls on its own.
    #[arg(long, env = "RYW_FEED", default_value = "on", value_parser = ["on", "off"])]
    pub feed: String,
    /// Same as `--feed off`.
    #[arg(long, conflicts_with = "feed")]
    pub no_feed: bool,
}

/// The consistency tokens' key: `ryw serve` and `ryw proxy`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// HMAC key of consistency tokens (at least 16 bytes); share it between
    /// instances. Without it (and without --token-key-file) a random key is
    /// made per start, and tokens do not survive a restart.
    #[arg(long, env = "RYW_TOKEN_KEY", hide_env_values = true)]
    pub token_key: Option<String>,
    /// File holding the token key.
    #[arg(long, env = "RYW_TOKEN_KEY_FILE", conflicts_with = "token_key")]
    pub token_key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub nodes: NodeArgs,
    #[command(flatten)]
    pub routing: RoutingArgs,
    #[command(flatten)]
    pub token: TokenArgs,
    /// Connections in the leader's write pool.
    #[arg(long, env = "RYW_POOL_SIZE", default_value_t = router_default().pool_size)]
    pub pool_size: usize,
    /// Accept `X-Read-Strategy` per request (dashboard, bench).
    #[arg(long, env = "RYW_ALLOW_STRATEGY_HEADER")]
    pub allow_strategy_header: bool,
    /// Let `POST /api/cluster/lag` (the dashboard's lag control) change a
    /// follower's replay delay; with `--cluster` only. It changes
    /// replication, so it is off unless asked for (`ryw demo` turns it on).
    #[arg(long, env = "RYW_ALLOW_LAG_CONTROL")]
    pub allow_lag_control: bool,
    /// Listen address.
    #[arg(long, env = "RYW_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Opening balance of new accounts, in cents.
    #[arg(long, env = "RYW_OPENING_BALANCE", default_value_t = ryw_service::config::DEFAULT_OPENING_BALANCE_CENTS)]
    pub opening_balance: i64,
    /// Longest a request may take before it is answered 503.
    #[arg(long, env = "RYW_REQUEST_TIMEOUT", default_value_t = Dur(ryw_service::config::DEFAULT_REQUEST_TIMEOUT))]
    pub request_timeout: Dur,
    /// Longest a request head may take from its first byte (a client that
    /// sends half a head is closed then).
    #[arg(long, env = "RYW_HEADER_READ_TIMEOUT",
          default_value_t = Dur(ryw_service::front::FrontLimits::default().header_read_timeout))]
    pub header_read_timeout: Dur,
    /// Longest a connection may stay silent with no request in progress
    /// (a new connection, or keep-alive between requests).
    #[arg(long, env = "RYW_IDLE_TIMEOUT",
          default_value_t = Dur(ryw_service::front::FrontLimits::default().idle_timeout))]
    pub idle_timeout: Dur,
    /// Most client connections held at once; the next ones are answered 503
    /// and closed.
    #[arg(long, env = "RYW_MAX_CONNECTIONS",
          default_value_t = ryw_service::front::FrontLimits::default().max_connections)]
    pub max_connections: usize,
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    #[command(flatten)]
    pub nodes: NodeArgs,
    #[command(flatten)]
    pub routing: RoutingArgs,
    #[command(flatten)]
    pub token: TokenArgs,
    /// Where PostgreSQL clients connect.
    #[arg(long, env = "RYW_PROXY_LISTEN", default_value = "127.0.0.1:6432")]
    pub listen: std::net::SocketAddr,
    /// Users and passwords (PgBouncer's userlist.txt format: `"user"
    /// "password"` per line; a SCRAM verifier instead of a password is
    /// accepted too). Clients then log in with SCRAM-SHA-256, and the
    /// proxy logs in to the nodes with the same password. Without it only
    /// loopback clients are accepted, without a password.
    #[arg(long, env = "RYW_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// Where the admin endpoint listens (`GET /metrics`, `GET /readyz`);
    /// without it, none.
    #[arg(long, env = "RYW_PROXY_ADMIN_LISTEN")]
    pub admin_listen: Option<std::net::SocketAddr>,
    /// Most clients logged in at once (more get SQLSTATE 53300).
    /// Connections still logging in do not count.
    #[arg(long, env = "RYW_PROXY_MAX_CLIENTS", default_value_t = 1000)]
    pub max_clients: usize,
    /// Most connections logging in at once; a new one beyond it evicts the
    /// oldest, so sockets that never log in cannot lock clients out.
    #[arg(long, env = "RYW_PROXY_MAX_PENDING_LOGINS", default_value_t = 1024)]
    pub max_pending_logins: usize,
    /// Longest a connection may take to log in (PgBouncer's
    /// client_login_timeout).
    #[arg(long, env = "RYW_PROXY_LOGIN_TIMEOUT", default_value = "10s")]
    pub login_timeout: Dur,
    /// Most bytes held for one client: what it sent since its last Sync,
    /// its prepared statements and settings (more: SQLSTATE 54000 and the
    /// connection closed). Big rows and COPY data are relayed in pieces
    /// and do not count.
    #[arg(long, env = "RYW_PROXY_CLIENT_MEMORY_LIMIT", default_value = "16MiB", value_parser = parse_bytes)]
    pub client_memory_limit: usize,
    /// Longest a connection to a node (and its startup) may take.
    #[arg(long, env = "RYW_PROXY_CONNECT_TIMEOUT", default_value_t = Dur(router_default().connect_timeout))]
    pub connect_timeout: Dur,
    /// Relay threads: N ≥ 1 runs N single-threaded runtimes, each client
    /// staying on one, so relaying a statement wakes no other thread; 0
    /// takes tokio's work-stealing runtime with a worker per core (the
    /// proxy's runtime before 2026-11-30). 1, as PgBouncer, cost the least
    /// CPU per statement where the proxy shares two cores with pgbench
    /// and PostgreSQL (docs/results.md); give more where cores are spare.
    #[arg(long, env = "RYW_PROXY_THREADS", default_value_t = 1)]
    pub threads: usize,
    /// How clients hold server connections: `session` (each client its
    /// own, for as long as it stays) or `transaction` (pooled: one for a
    /// transaction, or a statement outside one; PgBouncer's pool modes).
    #[arg(long, env = "RYW_PROXY_POOL_MODE", default_value = "session")]
    pub pool_mode: ryw_proxy::PoolMode,
    /// Transaction pooling: most server connections per node, per role and
    /// database (PgBouncer's default_pool_size), shared by the relay
    /// threads.
    #[arg(long, env = "RYW_PROXY_POOL_SIZE", default_value_t = 20)]
    pub pool_size: usize,
    /// Transaction pooling: longest a client waits for a server connection
    /// when all are busy (then SQLSTATE 53300 naming the limit).
    #[arg(long, env = "RYW_PROXY_POOL_TIMEOUT", default_value = "5s")]
    pub pool_timeout: Dur,
    /// Transaction pooling: a server connection idle this long is closed.
    #[arg(long, env = "RYW_PROXY_SERVER_IDLE_TIMEOUT", default_value = "600s")]
    pub server_idle_timeout: Dur,
    /// Transaction pooling: a server connection open this long is closed
    /// when it is next given back.
    #[arg(long, env = "RYW_PROXY_SERVER_LIFETIME", default_value = "3600s")]
    pub server_lifetime: Dur,
    /// Clients' TLS: `disable` (an SSLRequest is answered N), `allow` (TLS
    /// for clients that ask, the clear for the others) or `require` (a
    /// startup in the clear is refused). Default: `allow` with
    /// --tls-cert and --tls-key, else `disable`. Node connections follow
    /// each node URL's sslmode and sslrootcert instead.
    #[arg(long, env = "RYW_PROXY_TLS_MODE")]
    pub tls_mode: Option<ryw_proxy::TlsMode>,
    /// The proxy's certificate chain (PEM) for clients' TLS; read again on
    /// SIGHUP.
    #[arg(long, env = "RYW_PROXY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM); read again on SIGHUP.
    #[arg(long, env = "RYW_PROXY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// After the bench, leave the cluster and the dashboard up until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
    /// Use a private Redis as the session store (default: in-memory).
    #[arg(long)]
    pub redis: bool,
    /// How long the bench runs.
    #[arg(long, default_value = "40s")]
    pub duration: Dur,
    /// Virtual users in total, split over the 11 strategies (about 12
    /// each: enough reads per strategy for its p99 and leader share to
    /// settle, a light load on the cluster).
    #[arg(long, default_value_t = 128)]
    pub users: usize,
    /// Where the HTML report goes.
    #[arg(long, default_value = "ryw-report")]
    pub report: PathBuf,
    /// Dashboard address when --keep is given.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Folder of the PostgreSQL server binaries.
    #[arg(long, env = "PG_BIN")]
    pub pg_bin: Option<PathBuf>,
    /// Also run every strategy through `ryw proxy` (in-process) at the same
    /// time: the `proxy/…` rows, a payment in a transaction on one
    /// connection and the balance read on another bound to the same
    /// `ryw.session`.
    #[arg(long)]
    pub proxy: bool,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start a primary and N streaming hot-standby followers.
    Up(UpArgs),
    /// Role, port, pid, liveness, LSN, lag and streaming state of every node.
    Status(StatusArgs),
    /// Change one follower's replay delay live.
    Lag(LagArgs),
    /// Stop the leader, promote the follower that received the most WAL
    /// (or --to NAME), re-point the other followers at it.
    Failover(FailoverArgs),
    /// Rewind a stopped node (a failed former leader) with pg_rewind and
    /// start it as a follower of the leader.
    Rejoin(RejoinArgs),
    /// Stop everything `up` started.
    Down(DownArgs),
}

#[derive(Debug, Args)]
pub struct DirArg {
    /// Cluster folder (holds cluster.json and the data).
    #[arg(long, default_value = ryw_cluster::DEFAULT_DIR, env = "RYW_CLUSTER_DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// Number of followers.
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    /// Replay delay per follower, comma-separated (the last one repeats).
    #[arg(long, default_value = "100ms,400ms")]
    pub lag: String,
    /// Leader port; followers take the next ones (keep below 32768).
    #[arg(long, default_value_t = ryw_cluster::DEFAULT_PORT)]
    pub port: u16,
    /// Also start a private redis-server (no persistence) on a free port.
    #[arg(long, conflicts_with = "redis_cluster")]
    pub redis: bool,
    /// Also start a private Redis Cluster of N masters (3..=16; no
    /// persistence, free ports below 32768); its `redis+cluster://` URL is
    /// in cluster.json and `--cluster DIR` uses it for sessions and the
    /// position feed.
    #[arg(long, value_name = "N")]
    pub redis_cluster: Option<usize>,
    /// With --redis-cluster: replicas per master (0..=2); a master that
    /// dies is replaced by its replica after the node timeout (2 s).
    #[arg(long, default_value_t = 0, requires = "redis_cluster")]
    pub redis_replicas: usize,
    /// Folder of the PostgreSQL server binaries (default: PG_BIN,
    /// `pg_config --bindir`, PATH, highest /usr/lib/postgresql/*/bin).
    #[arg(long, env = "PG_BIN")]
    pub pg_bin: Option<PathBuf>,
    /// OS user that runs the servers when ryw runs as root.
    #[arg(long, default_value = "postgres")]
    pub os_user: String,
    /// shared_buffers of every node.
    #[arg(long, default_value = "256MB")]
    pub shared_buffers: String,
    /// Synchronous replication: a commit returns once one follower has
    /// flushed it (synchronous_standby_names = 'ANY 1 (…followers…)').
    #[arg(long)]
    pub sync: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LagArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// Follower: 1-based index or name (`follower1`).
    #[arg(long)]
    pub replica: String,
    /// New replay delay, e.g. `800ms`, `2s`, `0`.
    #[arg(long)]
    pub delay: Dur,
}

#[derive(Debug, Args)]
pub struct FailoverArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// The follower to promote (default: the alive follower that received
    /// the most WAL).
    #[arg(long, value_name = "NAME")]
    pub to: Option<String>,
    /// SIGKILL the leader (a crash) instead of a fast shutdown.
    #[arg(long)]
    pub kill: bool,
    /// How long to wait for the other followers to stream from the new
    /// leader (0: do not wait).
    #[arg(long, default_value = "10s")]
    pub wait: Dur,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RejoinArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// The stopped node to bring back (e.g. `leader` after a failover).
    pub name: String,
    /// Its replay delay (default: the one recorded for it; 0 for the first
    /// leader).
    #[arg(long)]
    pub delay: Option<Dur>,
    /// How long to wait for it to stream from the leader.
    #[arg(long, default_value = "30s")]
    pub wait: Dur,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// Also remove the data folders.
    #[arg(long)]
    pub purge: bool,
}
