//! ryw-bench: the workload, the consistency checker and the report behind
//! `ryw bench`. It measures, against a running `ryw serve` (over HTTP) or
//! through a SQL front (`ryw proxy`, Pgpool-II; the PostgreSQL protocol),
//! how each read strategy trades stale reads against leader load and
//! latency: every strategy runs at the same time on its own group of
//! virtual users, so they all see the same replication lag.
//!
//! # Layout
//!
//! - [`config`]: [`BenchConfig`] and what it is made of ([`Think`],
//!   [`StrategySpec`], [`Load`]), each with a `FromStr` for the binary.
//! - [`engine`]: [`run()`] (`engine/mod.rs`) orchestrates a run; the
//!   virtual user (pay, think, read the balance, now and then the profile
//!   and the catalogue; `X-Read-Strategy` per request, token echo) is in
//!   `user.rs`, its SQL twin (pay in a transaction on one connection, read
//!   on it or on another) in `sql_user.rs`, closed/open-loop scheduling in
//!   `schedule.rs`, `/api/cluster` lag sampling in `sampler.rs` (from the
//!   nodes themselves in `node_sampler.rs` when there is no HTTP target),
//!   the progress bar in `progress.rs`, the check before a run in
//!   `preflight.rs`, the tests' fake service in `fake.rs`.
//! - [`sql`]: the SQL front's groups ([`SqlGroup`], [`ReadOn`],
//!   [`SqlFront`]) and the statements its users send.
//! - [`history`]: [`RunHistory`], [`Op`], [`LagSample`] and the JSON-lines
//!   file format of a recorded run (documented there).
//! - [`checker`]: [`check_history`] — read-your-writes and monotonic-read
//!   violations from versions and the client's clock, never `served_by`.
//! - [`report`]: [`BenchReport`] and the types it holds (`types.rs`), built
//!   from a history per strategy (`build.rs`), the followers' lag summary
//!   (`lag.rs`), the oracle (`oracle.rs`), the terminal table (`table.rs`;
//!   JSON is serde), [`check_file`] for offline checks (`offline.rs`),
//!   [`plain_words`] (`words.rs`).
//! - [`html`]: the `--report DIR` page with SVG charts (plotters).
//! - [`calibrate`](mod@calibrate): what `ryw bench calibrate` measures with: [`http_load`],
//!   a lean closed-loop HTTP load generator, and [`CompareTarget`]
//!   (`http.rs`); `wrk` when installed (`wrk.rs`); [`MinimalServer`], the
//!   no-routing server doing the same query, the benchmark's ceiling
//!   (`minimal.rs`); [`Rounds`], the interleaved table with its medians and
//!   ratios (`rounds.rs`); [`calibrate()`], the whole of `ryw bench
//!   calibrate` (`run.rs`).
//! - [`fronts`]: what the bench measures, run in its own process on a
//!   cluster folder: [`fronts::ServiceInProcess`] (`ryw serve`),
//!   [`fronts::ProxyInProcess`] (`ryw proxy`), the service's tables for a
//!   SQL front, and [`fronts::bench_sql_front`] (`ryw bench --proxy`).
//! - [`pgbench`]: `pgbench -S` on a port of the cluster and the one parser
//!   of its report ([`pgbench::PgbenchReport`]).
//! - [`overhead`]: [`overhead::overhead()`], the whole of `ryw bench
//!   overhead` (pgbench straight, through PgBouncer and through ryw proxy,
//!   interleaved; each relay's CPU time from `/proc`).
//! - [`peers`]: the peers ryw is measured against, started on a `ryw
//!   cluster` in the foreground as its OS user: [`peers::Pgpool`]
//!   (Pgpool-II) and [`peers::PgBouncer`]; [`peers::peer_groups`], the
//!   side-by-side comparison's groups; [`peers::side_by_side()`], the whole
//!   of `ryw bench peers`.
//! - [`scopes`]: [`scopes::scopes()`], the whole of `ryw bench scopes`
//!   (the pooled pattern through `ryw proxy` with each read scope, beside
//!   Pgpool-II; reads/s, follower share, stale reads, p50/p99).
//! - [`model`]: the scaling model of `docs/scaling.md` (`ryw bench
//!   model`): leader share and per-node query rates predicted from the
//!   think time, the mix, the followers' catch-up times and the strategy.
//! - [`error`]: [`BenchError`], the one error enum of this crate.

pub mod calibrate;
pub mod checker;
pub mod config;
pub mod engine;
pub mod error;
pub mod fronts;
pub mod history;
pub mod html;
pub mod model;
pub mod overhead;
pub mod peers;
pub mod pgbench;
pub mod report;
pub mod scopes;
pub mod spread;
pub mod sql;

pub use calibrate::{
    BALANCE_SQL, Balance, CalibrateOptions, Calibration, CompareTarget, Generator, LoadResult,
    LoadSpec, MinimalServer, Ratio, Rounds, Series, ab_table, calibrate, http_load, load, wrk_load,
};
pub use checker::{Check, ReadCheck, Violation, ViolationKind, check_history};
pub use config::{BenchConfig, Load, StrategyName, StrategySpec, Think};
pub use engine::run;
pub use error::BenchError;
pub use history::{LagSample, Object, Op, OpKind, RunHistory, Seen};
pub use html::write_report_dir;
pub use report::{
    BenchReport, FollowerLag, Latency, Oracle, ReportMeta, StrategyReport, check_file,
    follower_delays, plain_words, read_report,
};
pub use sql::{ReadOn, SqlFront, SqlGroup};
