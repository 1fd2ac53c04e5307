//! `ryw`: one binary for the cluster manager, the service, the bench and the
//! demo. This file only parses arguments and hands over to `cmd/`.

mod cli;
mod cmd;

/// An allocator with per-thread caches: a request allocates and frees a few
/// dozen small objects (hyper, axum, tokio-postgres, the JSON), and the
/// system's allocator spent 13% of `ryw serve`'s time on them (perf,
/// docs/results.md).
#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let quiet = matches!(args.command, cli::Command::Bench(_) | cli::Command::Demo(_));
    cmd::init_logging(args.verbose, args.log_statements, quiet);
    let rt = match runtime(&args.command).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(cmd::run(args.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The async runtime: tokio's work-stealing one with a worker per core,
/// except for `ryw proxy --threads N` (N ≥ 1): a single-threaded runtime,
/// and the proxy starts N - 1 more threads of the same kind itself.
fn runtime(command: &cli::Command) -> tokio::runtime::Builder {
    match command {
        cli::Command::Proxy(p) if p.threads >= 1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
}
