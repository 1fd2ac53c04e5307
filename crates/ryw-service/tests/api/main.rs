//! HTTP tests of the service on a real cluster (one binary, several modules).

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
