//! One module per command; each takes parsed arguments and calls library code.

mod bench;
mod cluster;
mod demo;
mod peers;
mod proxied;
mod proxy;
mod serve;
mod shared;
mod spread;

use crate::cli::Command;

/// Logs go to stderr, coloured only on a terminal (and without `NO_COLOR`);
/// `RUST_LOG` wins over `-v`.
pub fn init_logging(verbose: u8, quiet: bool) {
    let default = match verbose {
        // The bench and the demo tell their own story on stdout (the
        // cluster, the table, the plain words) while they drive thousands
        // of requests a second through an in-process service: its per-request
        // lines and the tracker's start-up lines would interleave with that
        // story, so only warnings show.
        0 if quiet => "warn",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
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
