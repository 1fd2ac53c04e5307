//! One call that gives an integration test a running cluster.
//!
//! ```no_run
//! # async fn t() {
//! use std::time::Duration;
//! let cluster = ryw_cluster::harness::TestCluster::start(&[Duration::from_millis(100)]).await;
//! let leader = cluster.leader_url();
//! # }
//! ```
//!
//! Every cluster gets its own temporary folder and a random block of ports
//! below 32768, so tests (and test processes) run in parallel without
//! colliding; a bring-up that loses a port race is retried on other ports.
//! The cluster is stopped and its folder removed on drop, also when the test
//! panics. Missing prerequisites fail loudly with the command that fixes them.
//!
//! Failover under test:
//!
//! ```no_run
//! # async fn t() {
//! use ryw_cluster::harness::TestCluster;
//! use ryw_cluster::{FailoverOptions, RejoinOptions};
//! use std::time::Duration;
//! let cluster = TestCluster::start_sync(&[Duration::ZERO, Duration::from_millis(100)]).await;
//! let report = cluster.failover(FailoverOptions::kill()).await; // SIGKILL, promote, re-point
//! assert_eq!(cluster.leader_name(), report.new_leader);
//! cluster.rejoin(&report.old_leader, RejoinOptions::default()).await; // pg_rewind, follow
//! # }
//! ```
//!
//! Node names stay; roles move. Go through the harness (not
//! [`crate::failover()`] on [`TestCluster::dir`]) so that its copy of
//! `cluster.json` follows.

use crate::failover::{FailoverOptions, FailoverReport, RejoinOptions, RejoinReport};
use crate::info::{ClusterInfo, NodeRole};
use crate::redis_cluster::{RedisClusterSpec, RedisMaster};
use crate::up::{UpOptions, up};
use crate::{ClusterError, ops, redis};
use rand::Rng;
use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex;
use std::time::Duration;

/// What a test needs.
#[derive(Debug, Clone, Default)]
pub struct TestClusterOptions {
    /// Replay delay per follower (one follower per entry).
    pub lags: Vec<Duration>,
    /// Start a private Redis as well.
    pub redis: bool,
}

/// A running cluster owned by a test; stopped and removed on drop.
#[derive(Debug)]
pub struct TestCluster {
    info: Mutex<ClusterInfo>,
    dir: Option<tempfile::TempDir>,
}

impl TestCluster {
    /// A leader and one follower per entry of `lags`.
    pub async fn start(lags: &[Duration]) -> TestCluster {
        Self::start_with(TestClusterOptions {
            lags: lags.to_vec(),
            redis: false,
        })
        .await
    }

    /// A leader and one follower per entry of `lags`, with synchronous
    /// replication (`ryw cluster up --sync`): a commit returns once one
    /// follower has flushed it.
    pub async fn start_sync(lags: &[Duration]) -> TestCluster {
        Self::start_inner(
            TestClusterOptions {
                lags: lags.to_vec(),
                redis: false,
            },
            true,
            None,
        )
        .await
    }

    /// A cluster as described by `opts`. Panics, with the reason and the fix,
    /// when it cannot be started.
    pub async fn start_with(opts: TestClusterOptions) -> TestCluster {
        Self::start_inner(opts, false, None).await
    }

    /// A leader and one follower per entry of `lags`, and a private Redis
    /// Cluster of `spec`'s shape (`ryw cluster up --redis-cluster N
    /// --redis-replicas R`): [`TestCluster::redis_url`] is its
    /// `redis+cluster://` URL.
    pub async fn start_with_redis_cluster(
        lags: &[Duration],
        spec: RedisClusterSpec,
    ) -> TestCluster {
        Self::start_inner(
            TestClusterOptions {
                lags: lags.to_vec(),
                redis: false,
            },
            false,
            Some(spec),
        )
        .await
    }

    async fn start_inner(
        opts: TestClusterOptions,
        sync: bool,
        redis_cluster: Option<RedisClusterSpec>,
    ) -> TestCluster {
        assert!(
            !opts.lags.is_empty(),
            "a test cluster needs at least one follower"
        );
        let mut last_err = None;
        for _attempt in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("ryw-test-")
                .tempdir()
                .expect("creating a temporary folder");
            // The servers may run as another OS user (`postgres`, when tests
            // run as root): let it through the temporary folder.
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod of the temporary folder");
            let port = rand::rng().random_range(20_000..31_000u16);
            let up_opts = UpOptions {
                dir: dir.path().join("cluster"),
                replicas: opts.lags.len(),
                lags: opts.lags.clone(),
                port,
                redis: opts.redis,
                redis_cluster,
                shared_buffers: "64MB".into(),
                sync,
                ..UpOptions::default()
            };
            match up(&up_opts).await {
                Ok(info) => {
                    return TestCluster {
                        info: Mutex::new(info),
                        dir: Some(dir),
                    };
                }
                // Another test took one of our ports between the check and
                // the start: try another block.
                Err(e @ (ClusterError::PortInUse { .. } | ClusterError::NotAnswering { .. })) => {
                    let _ = ops::down(&up_opts.dir, true);
                    last_err = Some(e);
                }
                Err(e) => {
                    let _ = ops::down(&up_opts.dir, true);
                    panic!("could not start a test cluster: {e}");
                }
            }
        }
        panic!(
            "could not start a test cluster after 5 attempts: {}",
            last_err.map(|e| e.to_string()).unwrap_or_default()
        );
    }

    /// A copy of the cluster's description.
    pub fn info(&self) -> ClusterInfo {
        self.info.lock().unwrap().clone()
    }

    /// The cluster folder (holds `cluster.json`).
    pub fn dir(&self) -> std::path::PathBuf {
        self.info().dir
    }

    /// URL of the application database on the leader (whichever node leads
    /// now).
    pub fn leader_url(&self) -> String {
        self.info().leader().url.clone()
    }

    /// Name of the node that leads now (`leader` until a failover).
    pub fn leader_name(&self) -> String {
        self.info().leader().name.clone()
    }

    /// `(name, url)` of every node, whatever its role, in `up`'s order: the
    /// candidates a router given several leader URLs tries.
    pub fn node_urls(&self) -> Vec<(String, String)> {
        self.info()
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.url.clone()))
            .collect()
    }

    /// URL of one node by name.
    pub fn url_of(&self, name: &str) -> String {
        self.info().node(name).expect("node").url.clone()
    }

    /// The role a node has now.
    pub fn role_of(&self, name: &str) -> NodeRole {
        self.info().node(name).expect("node").role
    }

    /// `(name, url)` of every follower, in order.
    pub fn follower_urls(&self) -> Vec<(String, String)> {
        self.info()
            .followers()
            .map(|n| (n.name.clone(), n.url.clone()))
            .collect()
    }

    /// URL of the private Redis (or Redis Cluster), when started with one.
    pub fn redis_url(&self) -> Option<String> {
        self.info().redis_url()
    }

    /// The private Redis Cluster's masters now: each one's port and the
    /// slot ranges it serves. Panics without a Redis Cluster.
    pub fn redis_masters(&self) -> Vec<RedisMaster> {
        let rc = self
            .info()
            .redis_cluster
            .expect("this test cluster has no Redis Cluster");
        crate::redis_cluster::masters(&rc).expect("CLUSTER SLOTS")
    }

    /// SIGKILLs the Redis Cluster node on `port`, as a crash would.
    pub fn kill_redis_node(&self, port: u16) {
        let rc = self
            .info()
            .redis_cluster
            .expect("this test cluster has no Redis Cluster");
        let node = rc
            .nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no Redis Cluster node on {port}"));
        crate::proc::kill_tree(node.pid);
    }

    /// Changes follower `replica`'s (1-based) replay delay live.
    pub async fn set_lag(&self, replica: usize, delay: Duration) {
        let info = ops::set_lag(&self.dir(), &replica.to_string(), delay)
            .await
            .expect("cluster lag");
        let mut guard = self.info.lock().unwrap();
        if let Some(n) = guard.nodes.iter_mut().find(|n| n.name == info.name) {
            n.delay_ms = info.delay_ms;
        }
    }

    /// SIGKILLs a node (`leader`, `follower1`, …) and its children.
    pub fn kill(&self, name: &str) {
        ops::kill_node(&self.info(), name).expect("kill node");
    }

    /// Freezes a node (SIGSTOP): open sockets, no answers.
    pub fn pause(&self, name: &str) {
        ops::pause_node(&self.info(), name).expect("pause node");
    }

    /// Lets a paused node run again (SIGCONT).
    pub fn resume(&self, name: &str) {
        ops::resume_node(&self.info(), name).expect("resume node");
    }

    /// Stops a node cleanly.
    pub fn stop(&self, name: &str) {
        ops::stop_node(&self.info(), name).expect("stop node");
    }

    /// Starts a stopped or killed node again.
    pub async fn start_node(&self, name: &str) {
        ops::start_node(&self.info(), name)
            .await
            .expect("start node");
    }

    /// Points a follower's `primary_conninfo` at a dead port.
    pub async fn cut_replication(&self, name: &str) {
        ops::cut_replication(&self.info(), name)
            .await
            .expect("cut replication");
    }

    /// Restores a follower's `primary_conninfo`.
    pub async fn repair_replication(&self, name: &str) {
        ops::repair_replication(&self.info(), name)
            .await
            .expect("repair replication");
    }

    /// Fails over (see [`crate::failover()`]); panics on error.
    pub async fn failover(&self, opts: FailoverOptions) -> FailoverReport {
        self.try_failover(opts).await.expect("cluster failover")
    }

    /// Fails over, returning the error (for tests of the error cases).
    pub async fn try_failover(
        &self,
        opts: FailoverOptions,
    ) -> Result<FailoverReport, ClusterError> {
        let res = crate::failover::failover(&self.dir(), &opts).await;
        self.reload();
        res
    }

    /// Rewinds a stopped node and brings it back as a follower (see
    /// [`crate::rejoin()`]); panics on error.
    pub async fn rejoin(&self, name: &str, opts: RejoinOptions) -> RejoinReport {
        self.try_rejoin(name, opts).await.expect("cluster rejoin")
    }

    /// Rejoins, returning the error.
    pub async fn try_rejoin(
        &self,
        name: &str,
        opts: RejoinOptions,
    ) -> Result<RejoinReport, ClusterError> {
        let res = crate::failover::rejoin(&self.dir(), name, &opts).await;
        self.reload();
        res
    }

    /// Re-reads `cluster.json` (roles, pids) into the harness's copy,
    /// keeping the Redis pid it knows.
    fn reload(&self) {
        let mut guard = self.info.lock().unwrap();
        if let Ok(mut fresh) = ClusterInfo::load(&guard.dir) {
            fresh.redis = guard.redis.clone();
            fresh.redis_cluster = guard.redis_cluster.clone();
            *guard = fresh;
        }
    }

    /// Stops the private Redis.
    pub fn stop_redis(&self) {
        let info = self.info();
        let r = info.redis.expect("this test cluster has no Redis");
        redis::stop(r.pid);
    }

    /// Starts the private Redis again on the same port.
    pub async fn start_redis(&self) {
        let info = self.info();
        let r = info.redis.clone().expect("this test cluster has no Redis");
        let bin = redis::find().expect("redis-server");
        let (pid, _) = redis::start(&bin, &info.dir, r.port)
            .await
            .expect("restart redis");
        self.info.lock().unwrap().redis.as_mut().expect("redis").pid = pid;
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let info = self
            .info
            .get_mut()
            .map(|i| i.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        // Persist pid changes (e.g. a restarted Redis) so `down` finds them.
        let _ = info.save();
        // A node a failed test left paused would never stop.
        for node in &info.nodes {
            let _ = ops::resume_node(&info, &node.name);
        }
        if let Err(e) = ops::down(&info.dir, true) {
            eprintln!(
                "warning: tearing down test cluster {}: {e}",
                info.dir.display()
            );
        }
        drop(self.dir.take());
    }
}
