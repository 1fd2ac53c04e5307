//! Scopes (`SET ryw.scope`): the pooled-app pattern, a write on one
//! connection and the read at once on another, with no named session.
//! Judged by the values written, never by the proxy's word.
//!
//! - `connection` (the control): the reading connection has no token of
//!   the write, so a lagging follower serves it stale.
//! - `global`: two proxies sharing Redis; the write through one, the read
//!   through the other: every write raised the fleet-wide mark before it
//!   was acknowledged, and the read starts from the mark.
//! - `cluster`: the write goes straight to the leader, not through ryw;
//!   the read starts from the leader's position, fetched coalesced.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio_postgres::Client;

use crate::support::{Ctx, Nodes, Setup, connect_to, direct, read, start_proxy, write};

/// One follower replays at once, one 300 ms late: a read with nothing to
/// honour lands on the late one about half the time (stale for certain),
/// and a fresh read has a follower that catches up within hybrid's budget.
fn lags() -> Vec<Duration> {
    vec![Duration::ZERO, Duration::from_millis(300)]
}

/// `tasks` writer/reader connection pairs, `pairs` each: write `i` with
/// `writer(t)`, read at once with `reader(t)`. Returns (stale reads,
/// reads on followers).
async fn pooled_pairs(
    label: &str,
    conns: Vec<(Client, Client)>,
    pairs: i64,
    nodes: &Nodes,
) -> (Vec<String>, usize) {
    let mut set = JoinSet::new();
    for (t, (w, r)) in conns.into_iter().enumerate() {
        let row = format!("{label}-{t}");
        let nodes = nodes.clone();
        set.spawn(async move {
            let (mut stale, mut on_followers) = (Vec::new(), 0);
            for i in 1..=pairs {
                write(&w, &row, i).await;
                let (v, port) = read(&r, &row).await;
                let node = nodes.name(port);
                if v < i {
                    stale.push(format!("{row}: wrote {i}, read {v} on {node}"));
                }
                on_followers += usize::from(node.starts_with("follower"));
            }
            (stale, on_followers)
        });
    }
    let (mut stale, mut on_followers) = (Vec::new(), 0);
    while let Some(r) = set.join_next().await {
        let (s, f) = r.expect("a pair task panicked");
        stale.extend(s);
        on_followers += f;
    }
    (stale, on_followers)
}

async fn set_scope(clients: &[&Client], scope: &str) {
    for c in clients {
        c.batch_execute(&format!("SET ryw.scope = '{scope}'"))
            .await
            .expect("SET ryw.scope");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_scope_reads_every_write_of_another_proxy_on_another_connection_and_connection_scope_does_not()
 {
    let setup = Setup {
        lags: lags(),
        redis: true,
        ..Setup::default()
    };
    let ctx = Ctx::start(setup.clone()).await;
    let second = start_proxy(&ctx.cluster, &setup, ctx.key.clone()).await;
    let nodes = ctx.node_names();

    // The control: connection scope, write on one connection, read on
    // another of the same proxy. Stale: the gap the scopes close.
    let mut conns = Vec::new();
    for _ in 0..2 {
        let (w, r) = (ctx.client().await, ctx.client().await);
        set_scope(&[&w, &r], "connection").await;
        conns.push((w, r));
    }
    let (stale, _) = pooled_pairs("connection", conns, 100, &nodes).await;
    eprintln!("connection scope: 200 pairs, {} stale", stale.len());
    assert!(
        !stale.is_empty(),
        "the control must go stale: a read on another connection has no token"
    );

    // Global: the write through proxy 1, the read through proxy 2, no
    // named session; the reader chose its scope at startup.
    let mut conns = Vec::new();
    for _ in 0..4 {
        let w = ctx.client().await;
        let r = connect_to(second.addr, "-c ryw.scope=global").await;
        conns.push((w, r));
    }
    let (stale, on_followers) = pooled_pairs("global", conns, 250, &nodes).await;
    eprintln!(
        "global scope across two proxies: 1000 pairs, {} stale, {on_followers} on followers",
        stale.len()
    );
    assert!(stale.is_empty(), "{}", stale.join("\n"));
    assert!(
        on_followers > 0,
        "global reads still reach followers that caught up"
    );
    let m = second.router.metrics();
    let global = m
        .scopes
        .iter()
        .find(|s| s.scope == ryw_router::Scope::Global)
        .copied()
        .expect("global reads counted");
    eprintln!("proxy 2: {global:?}");
    assert!(global.reads >= 1000 && global.fetched_reads >= 1000);
    assert!(global.fetches >= 1 && global.fetches <= global.fetched_reads);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_scope_reads_every_write_made_straight_to_the_leader_with_coalesced_fetches_and_is_a_setting()
 {
    let ctx = Ctx::start(Setup {
        lags: lags(),
        ..Setup::default()
    })
    .await;
    ryw_scope_is_set_shown_refused_and_rolled_back_like_a_setting(&ctx).await;
    let nodes = ctx.node_names();
    let leader = ctx.cluster.leader_url();

    // The control: session scope knows nothing of writes made outside ryw.
    let mut conns = Vec::new();
    for _ in 0..2 {
        let r = ctx.client().await;
        set_scope(&[&r], "session").await;
        conns.push((direct(&leader).await, r));
    }
    let (stale, _) = pooled_pairs("session", conns, 100, &nodes).await;
    eprintln!(
        "session scope, writes straight to the leader: 200 pairs, {} stale",
        stale.len()
    );
    assert!(!stale.is_empty(), "the control must go stale");

    // Cluster: the same, but the read starts from the leader's position.
    let mut conns = Vec::new();
    for _ in 0..4 {
        let r = ctx.client().await;
        r.batch_execute("SELECT set_config('ryw.scope', 'cluster', false)")
            .await
            .expect("set_config ryw.scope");
        conns.push((direct(&leader).await, r));
    }
    let (stale, on_followers) = pooled_pairs("cluster", conns, 250, &nodes).await;
    eprintln!(
        "cluster scope, writes straight to the leader: 1000 pairs, {} stale, {on_followers} on followers",
        stale.len()
    );
    assert!(stale.is_empty(), "{}", stale.join("\n"));

    // Coalescing: many concurrent cluster-scope reads share the fetches of
    // the leader's position.
    let router = ctx.proxy_router();
    let before = cluster_counts(router);
    let mut set = JoinSet::new();
    for _ in 0..32 {
        let r = ctx.client().await;
        set_scope(&[&r], "cluster").await;
        set.spawn(async move {
            for _ in 0..25 {
                read(&r, "cluster-0").await;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("a reader panicked");
    }
    let after = cluster_counts(router);
    let (fetches, reads) = (after.0 - before.0, after.1 - before.1);
    eprintln!(
        "800 concurrent cluster-scope reads: {fetches} fetches of the leader's position for {reads} reads"
    );
    assert!(reads >= 800, "{reads}");
    // Without coalescing every read takes a fetch of its own. How many
    // share one depends on how many overlap: 231 fetches for 1,600 reads
    // alone, 814 while the whole suite loaded the machine.
    assert!(
        fetches * 4 < reads * 3,
        "coalesced: {fetches} fetches for {reads} reads"
    );
}

/// (fetches, reads that took one) of the cluster scope so far.
fn cluster_counts(router: &ryw_router::Router) -> (u64, u64) {
    router
        .metrics()
        .scopes
        .iter()
        .find(|s| s.scope == ryw_router::Scope::Cluster)
        .map_or((0, 0), |s| (s.fetches, s.fetched_reads))
}

/// `SHOW ryw.scope`.
async fn show(c: &Client) -> String {
    let rows = c.simple_query("SHOW ryw.scope").await.expect("SHOW");
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a row")
}

/// `ryw.scope` is set, shown, refused and rolled back like a setting (on
/// the cluster test's proxy, to spare a cluster).
async fn ryw_scope_is_set_shown_refused_and_rolled_back_like_a_setting(ctx: &Ctx) {
    let c = ctx.client().await;
    let default = ctx.proxy_router().config().default_scope.to_string();
    assert_eq!(show(&c).await, default);
    c.batch_execute("SET ryw.scope = 'global'").await.unwrap();
    assert_eq!(show(&c).await, "global");
    let err = c
        .batch_execute("SET ryw.scope = 'universe'")
        .await
        .expect_err("a bad scope is refused");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "22023");
    assert!(
        db.message()
            .contains("connection, session, global, cluster"),
        "{}",
        db.message()
    );
    assert_eq!(
        show(&c).await,
        "global",
        "unchanged, and the connection usable"
    );
    // In a transaction: a rollback undoes it, SET LOCAL ends with it.
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("SET ryw.scope = 'cluster'").await.unwrap();
    assert_eq!(show(&c).await, "cluster");
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(show(&c).await, "global");
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute("SET LOCAL ryw.scope = 'connection'")
        .await
        .unwrap();
    assert_eq!(show(&c).await, "connection");
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(show(&c).await, "global");
    c.batch_execute("RESET ryw.scope").await.unwrap();
    assert_eq!(show(&c).await, default);
    // The startup option, and set_config.
    let s = connect_to(ctx.proxy.addr, "-c ryw.scope=cluster").await;
    assert_eq!(show(&s).await, "cluster");
    s.batch_execute("SELECT set_config('ryw.scope', 'session', false)")
        .await
        .unwrap();
    assert_eq!(show(&s).await, "session");
}
