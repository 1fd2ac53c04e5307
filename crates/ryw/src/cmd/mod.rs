//! One module per command; each takes parsed arguments and calls library code.

mod bench;
mod cluster;
mod demo;
mod peers;
mod proxy;
mod serve;
mod shared;

use crate::cli::Command;

/// ryw's own crates: what `-v` makes talkative.
const RYW_CRATES: &[&str] = &[
    "ryw",
    "ryw_router",
    "ryw_proxy",
    "ryw_service",
    "ryw_axum",
    "ryw_bench",
    "ryw_cluster",
    "ryw_metrics",
];

/// The log filter of `-v` (`verbose`) and `--log-statements`: `-v` turns on
/// ryw's own debug output only; the SQL parser's and the PostgreSQL client's
/// debug output (statement texts with their literals, query parameters)
/// only with `--log-statements`.
pub fn log_filter(verbose: u8, statements: bool, quiet: bool) -> String {
    let base = match verbose {
        // The bench and the demo tell their own story on stdout (the
        // cluster, the table, the plain words) while they drive thousands
        // of requests a second through an in-process service: its per-request
        // lines and the tracker's start-up lines would interleave with that
        // story, so only warnings show.
        0 if quiet => "warn",
        _ => "info",
    };
    let ours = match verbose {
        0 => None,
        1 => Some("debug"),
        _ => Some("trace"),
    };
    let mut filter = base.to_owned();
    if let Some(level) = ours {
        for c in RYW_CRATES {
            filter.push_str(&format!(",{c}={level}"));
        }
    }
    if statements {
        filter.push_str(",sqlparser=debug,tokio_postgres=debug");
    }
    filter
}

/// Logs go to stderr, coloured only on a terminal (and without `NO_COLOR`);
/// `RUST_LOG` wins over `-v`.
pub fn init_logging(verbose: u8, statements: bool, quiet: bool) {
    let default = log_filter(verbose, statements, quiet);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .try_init();
}

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Demo(args) => demo::run(args).await,
        Command::Cluster(c) => cluster::run(c).await,
        Command::Serve(args) => serve::run(*args).await,
        Command::Proxy(args) => proxy::run(*args).await,
        Command::Bench(args) => bench::run(*args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_logs_ryw_but_statements_only_when_asked() {
        let f = log_filter(1, false, false);
        assert!(f.contains("ryw_proxy=debug") && f.starts_with("info"));
        assert!(!f.contains("sqlparser") && !f.contains("tokio_postgres"));
        let f = log_filter(2, true, false);
        assert!(f.contains("ryw_router=trace") && f.contains("sqlparser=debug"));
        assert_eq!(log_filter(0, false, true), "warn");
    }
}
