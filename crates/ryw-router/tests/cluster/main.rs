//! The router against a real cluster: real PostgreSQL 15 primary and
//! streaming followers with real replay delay, real Redis, no mocks
//! (`ryw_cluster::harness`). Every test checks values it wrote itself and the
//! port of the server that answered, never the router's word for where a read
//! went. Each test starts its own small cluster on its own ports, so they run
//! in parallel; every wait has a deadline.
//!
//! | module | shows |
//! | --- | --- |
//! | `pairs` | write-then-read pairs: `legacy` stale, every other strategy never (rules 1, 2) |
//! | `commit_lsn` | a follower at the write's token shows the write; at an LSN read inside the transaction it does not (rules 1, 2; run by `pairs`) |
//! | `restart` | a follower restarted behind is not trusted at its old position (rule 3) |
//! | `tokens` | forged tokens are refused, far-future tokens wait at most the budget (rule 4) |
//! | `scopes` | `global` through the library: every write's mark in Redis, 0 stale where `session` is stale; Redis down: `global` reads on the leader (rule 5) |
//! | `store_outage` | Redis down: fresh reads on the leader, health degraded; back after the grace (rule 5) |
//! | `monotonic` | a session never reads an older version, across followers and instances; a control group that does not raise its token does (rule 7) |
//! | `lost` | a terminated read forgets its follower and runs elsewhere; a cancelled one is the caller's error (rules 3, 8) |
//! | `protocol` | the read and write calls: position column stripped, order kept, `SHOW` served, zero rows raise the token; a dropped or failed transaction leaves nothing (rules 6, 7) |
//! | `cut` | a follower whose WAL receiver stopped leaves rotation and returns (rule 8) |
//! | `kill` | a SIGKILLed follower: reads keep working, it leaves rotation and returns (rule 8) |
//! | `hybrid` | the default strategy: 1,000 pay-then-read pairs (think 0–1 s) never stale or non-monotonic, mostly on followers; a follower whose replay stops costs at most the budget, then no more waits (rules 2, 4, 7) |
//! | `spread` | fresh reads every follower could serve are spread over all of them by load (25–42% each), a slowed or loaded follower gets fewer, never stale (issue 22) |
//! | `redis_cluster` | sessions in a Redis Cluster (3 masters + replicas) shared by two routers; a SIGKILLed master: its sessions on the leader until its replica serves (and the grace), the others on followers, never stale (issue 22) |
//! | `seed` | a session of the .NET + Redis demo (only `user:{id}:last_write_utc` in Redis): the window decides, strict with the lag limit under it; then the position (issue 14) |
//!
//! "Rule N" in comments: the correctness rules, listed in
//! `docs/architecture.md#correctness-rules` with the code and tests of each.

mod commit_lsn;
mod cut;
mod hybrid;
mod kill;
mod lost;
mod monotonic;
mod pairs;
mod protocol;
mod redis_cluster;
mod restart;
mod scopes;
mod seed;
mod spread;
mod store_outage;
mod support;
mod tokens;
