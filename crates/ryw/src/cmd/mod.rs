//! One module per command; each takes parsed arguments and calls library code.

mod bench;
mod cluster;
mod demo;
mod serve;

use crate::cli::Command;

/// Logs go to stderr; `RUST_LOG` wins over `-v`.
pub fn init_logging(verbose: u8, quiet_requests: bool) {
    let default = match verbose {
        // The bench and the demo drive thousands of requests a second through
        // an in-process service: keep its per-request lines out of the way.
        0 if quiet_requests => "info,ryw::request=warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Demo(args) => demo::run(args).await,
        Command::Cluster(c) => cluster::run(c).await,
        Command::Serve(args) => serve::run(*args).await,
        Command::Bench(args) => bench::run(*args).await,
    }
}
