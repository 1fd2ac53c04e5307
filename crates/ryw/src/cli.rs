//! The command line (see "Command line" in DESIGN.md).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Read-your-writes consistency on PostgreSQL leader–follower replication.
#[derive(Debug, Parser)]
#[command(name = "ryw", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). `RUST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
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
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Leave the cluster up (until Ctrl-C) instead of tearing it down.
    #[arg(long)]
    pub keep: bool,
    /// Folder of the PostgreSQL server binaries.
    #[arg(long, env = "PG_BIN")]
    pub pg_bin: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start a primary and N streaming hot-standby followers.
    Up(UpArgs),
    /// Role, port, pid, liveness, LSN, lag and streaming state of every node.
    Status(StatusArgs),
    /// Change one follower's replay delay live.
    Lag(LagArgs),
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
    #[arg(long)]
    pub redis: bool,
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
    pub delay: String,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub dir: DirArg,
    /// Also remove the data folders.
    #[arg(long)]
    pub purge: bool,
}
