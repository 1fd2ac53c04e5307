//! Faults under load (issue 6): a follower killed, a follower's replication
//! cut, Redis stopped, the leader stopped — each while several clients pay
//! and read through `causal` and `hybrid`. Every test ends with zero stale
//! fresh reads (judged by the `version` the client's own acknowledged
//! payments returned, never by `X-Served-By`), the failures it allows and no
//! others, and the ledger checked in the leader's own tables.
//!
//! "Rule N" in comments: the correctness rules, listed in
//! `docs/architecture.md#correctness-rules` with the code and tests of each.
//!
//! `bodies` adds random request bodies and `headers` random header values
//! (proptest): never a 5xx, every refusal a quick 4xx problem+json.
//!
//! Figures of the last run are in `docs/reliability.md`; run with
//! `--nocapture` to see each test's report.

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

mod bodies;
mod follower;
mod headers;
mod leader;
mod ledger;
mod load;
mod rotation;
mod store;
