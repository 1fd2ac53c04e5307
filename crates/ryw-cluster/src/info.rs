//! The saved description of a running cluster: `cluster.json` in its folder.
//! The service (`ryw serve --cluster DIR`) and the bench read it to find the
//! nodes; `status`, `lag` and `down` read it to act on them.

use crate::ClusterError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File name of the description inside the cluster folder.
pub const FILE: &str = "cluster.json";

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The primary: every write goes here.
    Leader,
    /// A hot-standby streaming replica.
    Follower,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
        })
    }
}

/// One PostgreSQL server of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `leader`, `follower1`, `follower2`, … (also the follower's
    /// `application_name`, so it shows in `pg_stat_replication`).
    pub name: String,
    /// Leader or follower.
    pub role: Role,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Postmaster pid when `up` finished (`status` re-reads the live one).
    pub pid: i32,
    /// libpq URL of the application database on this node.
    pub url: String,
    /// Data folder (also holds the Unix socket).
    pub data_dir: PathBuf,
    /// Server log file.
    pub log: PathBuf,
    /// `recovery_min_apply_delay` in milliseconds (followers only).
    pub delay_ms: Option<u64>,
}

/// The private Redis, when `up --redis` started one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisInfo {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Process id.
    pub pid: i32,
    /// `redis://127.0.0.1:PORT/`.
    pub url: String,
    /// Log file.
    pub log: PathBuf,
}

/// Everything `up` started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Format version of this file.
    pub version: u32,
    /// The cluster folder.
    pub dir: PathBuf,
    /// Folder of the PostgreSQL binaries used (so `down` uses the same `pg_ctl`).
    pub pg_bin: PathBuf,
    /// OS user that runs the servers.
    pub os_user: String,
    /// Leader first, then followers in order.
    pub nodes: Vec<NodeInfo>,
    /// The private Redis, if any.
    pub redis: Option<RedisInfo>,
    /// Seconds `up` took, for the record.
    pub up_secs: f64,
}

impl ClusterInfo {
    /// Reads `DIR/cluster.json`.
    pub fn load(dir: &Path) -> Result<ClusterInfo, ClusterError> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ClusterError::NotFound {
                    dir: dir.to_path_buf(),
                });
            }
            Err(e) => {
                return Err(ClusterError::Io {
                    what: "reading",
                    path,
                    source: e,
                });
            }
        };
        serde_json::from_str(&text).map_err(|source| ClusterError::Json { path, source })
    }

    /// Writes `DIR/cluster.json` atomically (write, then rename).
    pub fn save(&self) -> Result<(), ClusterError> {
        let path = self.dir.join(FILE);
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|source| ClusterError::Json {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, text).map_err(ClusterError::io("writing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(ClusterError::io("renaming", &path))
    }

    /// The leader node.
    pub fn leader(&self) -> &NodeInfo {
        // `up` always writes the leader first; a hand-edited file without one
        // is caught by `load` users through `followers()`/`leader()` order.
        &self.nodes[0]
    }

    /// The followers, in order.
    pub fn followers(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().filter(|n| n.role == Role::Follower)
    }

    /// Finds a follower by 1-based index (`1`) or name (`follower1`).
    pub fn follower(&self, which: &str) -> Result<&NodeInfo, ClusterError> {
        let found = match which.parse::<usize>() {
            Ok(i) if i >= 1 => self.followers().nth(i - 1),
            Ok(_) => None,
            Err(_) => self.followers().find(|n| n.name == which),
        };
        found.ok_or_else(|| ClusterError::NoSuchReplica(which.to_string()))
    }
}
