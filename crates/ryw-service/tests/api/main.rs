//! HTTP tests of the service on a real cluster (one binary, several modules).
//!
//! "Rule N" in comments: the correctness rules, listed in
//! `docs/architecture.md#correctness-rules` with the code and tests of each.

mod conformance;
mod errors;
mod failover;
mod feed;
mod front;
mod helpers;
mod instances;
mod metrics;
mod ops;
mod payments;
mod strategies;
