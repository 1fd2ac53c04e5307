//! Throughput calibration, the measuring side of `ryw bench calibrate`: a
//! closed-loop load generator (N keep-alive connections, each sending the
//! next request as soon as the last answer arrived, for a fixed time) and
//! the interleaved comparison table that sets its figures beside pgbench's.
//!
//! `wrk`, when installed, is the generator of choice (`--generator`, see
//! [`Generator`]); the built-in one drives hyper's HTTP/1 connection directly, one connection
//! per task and no pool, because it shares two cores with the service and
//! PostgreSQL: the less it spends per request, the more the figure is the
//! server's.
//!
//! - `http`: [`LoadSpec`], [`LoadResult`] and [`http_load`], the built-in
//!   generator; [`CompareTarget`], a running service measured beside ryw.
//! - `wrk`: [`Generator`] (which one to use), [`wrk_load`] and [`load`].
//! - `rounds`: [`Rounds`], interleaved rounds of any number of contenders
//!   (A B C A B C …) with their medians and ratios; [`ab_table`] for two.
//! - `minimal`: [`MinimalServer`], the no-routing server that does the same
//!   query as ryw's balance read: the benchmark's ceiling in the same run.
//! - `run`: [`calibrate()`], the whole of `ryw bench calibrate` (ryw in this
//!   process, the minimal server, pgbench, the compared services, the
//!   rounds), giving a [`Calibration`].

mod http;
mod minimal;
mod rounds;
pub(crate) mod run;
mod wrk;

pub use http::{CONTENDER_NAMES, CompareTarget, LoadResult, LoadSpec, http_load};
pub use minimal::{APPLICATION_NAME, BALANCE_SQL, Balance, MinimalServer};
pub use rounds::{Ratio, Rounds, Series, ab_table};
pub use run::{CalibrateOptions, Calibration, calibrate};
pub use wrk::{Generator, load, wrk_load};
