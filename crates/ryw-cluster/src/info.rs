//! The saved description of a running cluster: `cluster.json` in its folder.
//! The service (`ryw serve --cluster DIR`) and the bench read it to find the
//! nodes; `status`, `lag`, `failover`, `rejoin` and `down` read it to act on
//! them.
//!
//! Node names are identities (data folder, log, `application_name`, slot);
//! roles move: after `ryw cluster failover`, `follower2` may be the leader
//! and `leader` a failed node, then a follower after `ryw cluster rejoin`.
//!
//! How the nodes replicate (synchronous or not, the timeline, the failovers
//! so far) is in a second file, `replication.json` ([`ReplicationInfo`]):
//! other crates build [`ClusterInfo`] literally in their tests, so its
//! fields stay as they were.

use crate::ClusterError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// File name of the description inside the cluster folder.
pub const FILE: &str = "cluster.json";

/// A node's role as `cluster.json` records it: what the cluster manager
/// made of the node (`up`, `failover`, `rejoin`), with `Failed` for a
/// stopped former leader. (The router discovers roles from the nodes
/// themselves: `ryw_router::Role`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// The primary: every write goes here.
    Leader,
    /// A hot-standby streaming replica.
    Follower,
    /// A former leader that a failover stopped. It may hold WAL the new
    /// timeline does not have; `ryw cluster rejoin` rewinds it and brings it
    /// back as a follower. Nothing reads from or writes to it meanwhile.
    Failed,
}

impl std::fmt::Display for NodeRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            NodeRole::Leader => "leader",
            NodeRole::Follower => "follower",
            NodeRole::Failed => "failed",
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
    pub role: NodeRole,
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
    /// `recovery_min_apply_delay` in milliseconds: a follower's replay delay,
    /// kept when it is promoted (so a rejoin gives it back); `None` for the
    /// first leader.
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

/// A private Redis Cluster, when `up --redis-cluster N` started one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisClusterInfo {
    /// `redis+cluster://127.0.0.1:P1,…` (the masters as seeds): what
    /// `--redis-url` takes.
    pub url: String,
    /// Masters (shards) it was formed with.
    pub masters: usize,
    /// Replicas per master.
    pub replicas: usize,
    /// `cluster-node-timeout` in ms: how long a master may be unreachable
    /// before its replica takes over.
    pub node_timeout_ms: u64,
    /// Every node, the masters it was formed with first (roles move at a
    /// failover: ask the cluster, `CLUSTER SLOTS`).
    pub nodes: Vec<RedisNodeInfo>,
}

/// One node of the private Redis Cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisNodeInfo {
    /// Client port on 127.0.0.1.
    pub port: u16,
    /// Cluster bus port.
    pub bus_port: u16,
    /// Process id.
    pub pid: i32,
    /// Log file.
    pub log: PathBuf,
    /// Its folder (`nodes.conf`, pid file, log).
    pub dir: PathBuf,
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
    /// In the order `up` started them (first leader first, then followers);
    /// the roles say who leads now.
    pub nodes: Vec<NodeInfo>,
    /// The private Redis, if any.
    pub redis: Option<RedisInfo>,
    /// The private Redis Cluster, if any.
    #[serde(default)]
    pub redis_cluster: Option<RedisClusterInfo>,
    /// Seconds `up` took, for the record.
    pub up_secs: f64,
}

impl ClusterInfo {
    /// The URL of the private Redis or Redis Cluster, if `up` started one:
    /// what `--redis-url` takes.
    pub fn redis_url(&self) -> Option<String> {
        self.redis
            .as_ref()
            .map(|r| r.url.clone())
            .or_else(|| self.redis_cluster.as_ref().map(|rc| rc.url.clone()))
    }

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

    /// The leader node: the one whose role is [`NodeRole::Leader`]. `up` and
    /// `failover` always leave exactly one; a hand-edited file without one
    /// gets the first node.
    pub fn leader(&self) -> &NodeInfo {
        self.nodes
            .iter()
            .find(|n| n.role == NodeRole::Leader)
            .unwrap_or(&self.nodes[0])
    }

    /// The followers, in order.
    pub fn followers(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().filter(|n| n.role == NodeRole::Follower)
    }

    /// Finds a follower by number (`1` is the node named `follower1`) or
    /// name. Names, not positions: `follower2` stays `2` when `follower1`
    /// is promoted.
    pub fn follower(&self, which: &str) -> Result<&NodeInfo, ClusterError> {
        let name = match which.parse::<usize>() {
            Ok(i) if i >= 1 => format!("follower{i}"),
            Ok(_) => return Err(ClusterError::NoSuchReplica(which.to_string())),
            Err(_) => which.to_string(),
        };
        let node = self
            .nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| ClusterError::NoSuchReplica(which.to_string()))?;
        if node.role != NodeRole::Follower {
            return Err(ClusterError::NotAFollower {
                node: node.name.clone(),
                role: format!("the {}", node.role),
                hint: "name a follower".into(),
            });
        }
        Ok(node)
    }

    /// Finds any node by name.
    pub fn node(&self, name: &str) -> Result<&NodeInfo, ClusterError> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| ClusterError::NoSuchNode {
                name: name.to_string(),
                nodes: self
                    .nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    fn node_mut(&mut self, name: &str) -> Option<&mut NodeInfo> {
        self.nodes.iter_mut().find(|n| n.name == name)
    }

    /// Sets a node's role (no-op for an unknown name).
    pub(crate) fn set_role(&mut self, name: &str, role: NodeRole) {
        if let Some(n) = self.node_mut(name) {
            n.role = role;
        }
    }
}

/// File name of the replication description inside the cluster folder.
pub const REPLICATION_FILE: &str = "replication.json";

/// How the cluster replicates, and the failovers so far (`replication.json`).
/// A folder without the file (a cluster from an older `ryw`) reads as
/// asynchronous, timeline 1, no failover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationInfo {
    /// `ryw cluster up --sync`: a commit returns once a follower flushed it
    /// (`synchronous_standby_names = 'ANY 1 (…followers…)'`).
    pub sync: bool,
    /// The leader's timeline: 1 after `up`, one more per failover.
    pub timeline: u32,
    /// Every failover, oldest first.
    pub failovers: Vec<FailoverRecord>,
}

impl Default for ReplicationInfo {
    fn default() -> Self {
        ReplicationInfo {
            sync: false,
            timeline: 1,
            failovers: Vec::new(),
        }
    }
}

/// One failover, as `replication.json` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverRecord {
    /// The timeline the promotion started.
    pub timeline: u32,
    /// Where that timeline begins: the previous one's end in its history
    /// file (`X/Y`). A position on the previous timeline past this point
    /// is not in the new history.
    pub switch_lsn: String,
    /// The leader that was stopped.
    pub from: String,
    /// The follower that was promoted.
    pub to: String,
    /// Milliseconds since the Unix epoch when the promotion finished.
    pub at_unix_ms: u64,
}

impl ReplicationInfo {
    /// Reads `DIR/replication.json` (the default when it is absent).
    pub fn load(dir: &Path) -> Result<ReplicationInfo, ClusterError> {
        let path = dir.join(REPLICATION_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|source| ClusterError::Json { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ReplicationInfo::default()),
            Err(e) => Err(ClusterError::Io {
                what: "reading",
                path,
                source: e,
            }),
        }
    }

    /// Writes `DIR/replication.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), ClusterError> {
        let path = dir.join(REPLICATION_FILE);
        let tmp = dir.join(format!("{REPLICATION_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).map_err(|source| ClusterError::Json {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, text).map_err(ClusterError::io("writing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(ClusterError::io("renaming", &path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ClusterInfo {
        let node = |name: &str, role| NodeInfo {
            name: name.into(),
            role,
            port: 1,
            pid: 0,
            url: String::new(),
            data_dir: PathBuf::new(),
            log: PathBuf::new(),
            delay_ms: None,
        };
        ClusterInfo {
            version: 1,
            dir: PathBuf::new(),
            pg_bin: PathBuf::new(),
            os_user: "postgres".into(),
            nodes: vec![
                node("leader", NodeRole::Failed),
                node("follower1", NodeRole::Follower),
                node("follower2", NodeRole::Leader),
            ],
            redis: None,
            redis_cluster: None,
            up_secs: 0.0,
        }
    }

    #[test]
    fn the_leader_is_found_by_role_not_position() {
        assert_eq!(info().leader().name, "follower2");
        assert_eq!(
            info().followers().map(|n| &n.name[..]).collect::<Vec<_>>(),
            ["follower1"]
        );
    }

    #[test]
    fn a_follower_number_means_its_name_and_a_promoted_one_is_refused() {
        let i = info();
        assert_eq!(i.follower("1").unwrap().name, "follower1");
        let err = i.follower("2").unwrap_err();
        assert!(matches!(err, ClusterError::NotAFollower { .. }), "{err:?}");
        assert!(err.to_string().contains("follower2 is the leader"), "{err}");
        assert!(matches!(
            i.follower("7"),
            Err(ClusterError::NoSuchReplica(_))
        ));
        assert!(
            i.node("nope")
                .unwrap_err()
                .to_string()
                .contains("leader, follower1, follower2")
        );
    }

    #[test]
    fn a_missing_replication_file_reads_as_asynchronous_timeline_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            ReplicationInfo::load(dir.path()).unwrap(),
            ReplicationInfo::default()
        );
        let r = ReplicationInfo {
            sync: true,
            timeline: 2,
            failovers: vec![FailoverRecord {
                timeline: 2,
                switch_lsn: "0/3000148".into(),
                from: "leader".into(),
                to: "follower1".into(),
                at_unix_ms: 1,
            }],
        };
        r.save(dir.path()).unwrap();
        assert_eq!(ReplicationInfo::load(dir.path()).unwrap(), r);
    }
}
