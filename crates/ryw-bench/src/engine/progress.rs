//! The live counts the users keep as they go, and the progress bar that
//! shows them (hidden when stderr is not a terminal).

use crate::config::BenchConfig;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counts the users keep up to date for the progress bar.
#[derive(Debug, Default)]
pub(super) struct Live {
    pub(super) reads: AtomicU64,
    pub(super) ryw: AtomicU64,
    pub(super) monotonic: AtomicU64,
    pub(super) errors: AtomicU64,
}

pub(super) fn progress_bar(config: &BenchConfig) -> ProgressBar {
    if !config.progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(config.duration.as_millis() as u64);
    let style = ProgressStyle::with_template("{spinner} {elapsed:>4} [{bar:30}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}

pub(super) fn progress_message(live: &Live) -> String {
    format!(
        "reads {} · stale {} · non-monotonic {} · errors {}",
        live.reads.load(Relaxed),
        live.ryw.load(Relaxed),
        live.monotonic.load(Relaxed),
        live.errors.load(Relaxed)
    )
}
