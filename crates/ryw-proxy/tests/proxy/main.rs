//! `ryw proxy` against a real cluster: real PostgreSQL 15 primary and
//! streaming followers with real replay delay, the proxy in this process,
//! real clients (tokio-postgres, psql, pgbench, psycopg). Every test judges
//! by values it wrote itself and by the port of the server that answered.
//!
//! | module | shows |
//! | --- | --- |
//! | `admin` | `/metrics` counts clients, batches by node and route, the 25006 retry and the router's reads; `/readyz` follows the leader |
//! | `bad_input` | 17 kinds of malformed input, clients gone mid-message, mid-query and mid-COPY, 60 random message streams: 08P01 and a closed connection, a good client undisturbed |
//! | `clients` | psql (with COPY), pgbench `-M simple/extended/prepared`, `-S` and TPC-B-like (balances add up), psycopg 3 with server-side prepared statements |
//! | `faults` | a cancel request reaches the node running the statement; a follower killed or frozen mid-read: no failed or stale read; the leader down: writes fail at once, reads go on |
//! | `features` | session settings and prepared statements on every node, `SET`/`SHOW ryw.*`, a token carried to another connection, hints, the 25006 retry, transactions and temp tables on the leader, SCRAM logins |
//! | `machine` | 2,000 random client actions of 36 kinds through the proxy and straight to the leader: the same answers, no stale read |
//! | `pooling` | transaction pooling: 1,000 pgbench clients (`-S`, TPC-B extended and prepared) on 20 server connections per node, 0 failed, the sums agree, `pg_stat_activity` never over the pool; 2,000 write-then-read pairs (one connection, two in a named session) while 200 clients load the pool: 0 stale; psycopg 3 (`prepare_threshold=0`) and asyncpg clean across shared connections |
//! | `recipes` | the framework recipes (`recipes/`): Django, SQLAlchemy, node-postgres, JDBC (HikariCP) and ActiveRecord apps on their pools, a read on another pooled connection than the write: 0 stale with the recipe, stale without; RQ jobs carrying the enqueuer's token: 0 stale, stale without |
//! | `regress` | PostgreSQL's regression suite (`parallel_schedule`) straight to the leader and through the proxy: the same tests fail, the same way |
//! | `tls` | TLS both ways with the test's own CA: psql, psycopg 3, node-postgres and pgjdbc with `verify-full` (SCRAM over TLS), the clear refused under `require`, a wrong CA refused, "server does not support SSL" from a proxy without TLS; nodes with `ssl = on` reached with `verify-full` (`pg_stat_ssl`: every connection encrypted); 200 write-then-read pairs over TLS, 0 stale; a cancel request over TLS; `SSLRequest` twice, bytes in the clear after it, a stalled handshake: refused |
//! | `trust` | a client is untrusted: its session state cannot skew or poison positions, one role per login, sessions per role, notifications while idle, a Query after a Flush, `ryw.*` in transactions, pins that lift, busy followers, far tokens, readers without leader connections |
//! | `scopes` | the pooled pattern (write on one connection, read on another, no named session): `connection` scope stale (the control); `global` across two proxies sharing Redis, 0 stale of 1,000; `cluster` with writes straight to the leader, 0 stale of 1,000 (`session` stale), its fetches coalesced; `SET`/`SHOW`/`RESET ryw.scope`, `set_config`, the startup option, 22023 |
//! | `ryw` | write-then-read pairs on one connection and across connections (`ryw.session`), across two proxies sharing Redis: 0 stale; `legacy` stale; monotonic reads |
//!
//! "Rule N" in comments: the correctness rules, listed in
//! `docs/architecture.md#correctness-rules` with the code and tests of each.

mod admin;
mod bad_input;
mod clients;
mod faults;
mod features;
mod machine;
mod pooling;
mod raw;
mod recipes;
mod regress;
mod ryw;
mod scopes;
mod support;
mod tls;
mod trust;
