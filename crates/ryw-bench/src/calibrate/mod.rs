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
//!   generator.
//! - `wrk`: [`Generator`] (which one to use), [`wrk_load`] and [`load`].
//! - `rounds`: [`ab_table`], the "A B A B" table with medians and ratios.

mod http;
mod rounds;
mod wrk;

pub use http::{LoadResult, LoadSpec, http_load};
pub use rounds::ab_table;
pub use wrk::{Generator, load, wrk_load};
