//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can stop a bench, a check or a report from being made.
///
/// Failed requests during a run are *not* errors: they are recorded in the
/// history (status `0` for a transport failure or timeout) and counted in the
/// report. Only what makes the whole job impossible ends up here.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A configuration value that cannot be used (bad duration, no target…).
    #[error("invalid {what}: {detail}")]
    Config {
        /// Which setting.
        what: &'static str,
        /// Why it was refused.
        detail: String,
    },
    /// The service refused the bench before it started (preflight), e.g. a
    /// server that does not run with `--allow-strategy-header`.
    #[error("target {url} refused the bench: {detail}")]
    Target {
        /// Base URL of the service instance.
        url: String,
        /// What it said, or why it could not be reached.
        detail: String,
    },
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
    /// Reading or writing a file.
    #[error("{what} {path}: {source}")]
    Io {
        /// `reading`, `writing`, `creating`.
        what: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A history file line that is not a valid record.
    #[error("{path}:{line}: {detail}")]
    HistoryLine {
        /// The history file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        detail: String,
    },
    /// A cluster folder's `cluster.json` that cannot be read (the configured
    /// follower delays come from it).
    #[error("cluster: {0}")]
    Cluster(#[from] ryw_cluster::ClusterError),
    /// The database behind calibration's minimal server (connect, prepare).
    #[error("postgres, {what}: {source}")]
    Postgres {
        /// The step that failed.
        what: &'static str,
        /// The cause.
        source: tokio_postgres::Error,
    },
    /// Binding or serving the listener of calibration's minimal server.
    #[error("listener {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A peer ryw is compared with (Pgpool-II, PgBouncer) that cannot be
    /// set up, started or stopped.
    #[error("{peer}: {detail}")]
    Peer {
        /// `pgpool`, `pgbouncer`.
        peer: &'static str,
        /// What went wrong, and what to do about it.
        detail: String,
    },
    /// A front the bench runs in its own process (`ryw serve`, `ryw
    /// proxy`) that cannot be started or stopped.
    #[error("{front}: {detail}")]
    Front {
        /// Which, or the step that failed.
        front: &'static str,
        /// What went wrong (with its causes).
        detail: String,
    },
    /// A measurement that cannot go on (pgbench said no `tps`, a contender
    /// answered an error, a proxy variant did not start).
    #[error("{what}: {detail}")]
    Measure {
        /// What was being measured.
        what: String,
        /// What went wrong.
        detail: String,
    },
    /// A `--compare` service of calibrate that cannot take the same
    /// request as ryw.
    #[error("--compare {name}={url}: {detail}")]
    Compare {
        /// Its name.
        name: String,
        /// Its base URL.
        url: String,
        /// Why.
        detail: String,
    },
    /// Serialising or parsing JSON outside a history file.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Drawing a chart of the HTML report.
    #[error("chart {chart}: {detail}")]
    Chart {
        /// Which chart.
        chart: &'static str,
        /// The plotting error.
        detail: String,
    },
}

impl BenchError {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> BenchError {
        let path = path.into();
        move |source| BenchError::Io { what, path, source }
    }

    pub(crate) fn peer(peer: &'static str, detail: impl Into<String>) -> BenchError {
        BenchError::Peer {
            peer,
            detail: detail.into(),
        }
    }

    pub(crate) fn config(what: &'static str, detail: impl Into<String>) -> BenchError {
        BenchError::Config {
            what,
            detail: detail.into(),
        }
    }
}
