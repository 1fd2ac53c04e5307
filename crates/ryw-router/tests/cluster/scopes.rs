//! Scopes through the library (`ReadRequest::scope`): a session the caller
//! keeps (a proxy connection without a named session) that never wrote
//! reads another session's row right after its write. `session` knows
//! nothing of that write (stale on a lagging follower); `global` starts
//! from the fleet-wide mark every write raised in Redis before it was
//! acknowledged (0 stale). With Redis down, the mark cannot be read, and
//! `global` reads go to the leader (rule 5), never a silent stale read.

use ryw_router::{LocalSession, ReadRequest, RouterConfig, Scope};

use crate::support::{Ctx, SELECT, StoreKind, ms, secs, session, write};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_reads_start_from_every_write_and_go_to_the_leader_while_the_mark_cannot_be_read() {
    let cfg = RouterConfig {
        store_recovery_grace: secs(2),
        ..RouterConfig::default()
    };
    let ctx = Ctx::start(&[ms(100)], cfg, StoreKind::Redis).await;
    let writer = session("scope-writer");
    let read = |scope: Scope| {
        let router = ctx.router.clone();
        let row = writer.as_str().to_owned();
        async move {
            let req = ReadRequest::fresh_local(LocalSession::default()).scope(scope);
            router.query_one(&req, SELECT, &[&row]).await
        }
    };
    let mut stale = [0, 0];
    let mut global_on_followers = 0;
    for (i, scope) in [Scope::Session, Scope::Global].into_iter().enumerate() {
        for n in 1..=30 {
            let v = 100 * i as i64 + n;
            write(&ctx.router, &writer, v).await;
            let r = read(scope).await.expect("read");
            let got: i64 = r.value.get(0);
            stale[i] += usize::from(got < v);
            if scope == Scope::Global {
                let node = ctx.nodes.name(r.value.get(1));
                global_on_followers += usize::from(node.starts_with("follower"));
            }
        }
        // Let the follower catch up between the phases.
        tokio::time::sleep(ms(300)).await;
    }
    eprintln!(
        "stale of 30: session {}, global {} ({global_on_followers} on the follower)",
        stale[0], stale[1]
    );
    assert!(stale[0] > 0, "the control: session scope misses the write");
    assert_eq!(stale[1], 0, "global reads see every acknowledged write");

    ctx.cluster.stop_redis();
    for n in 1..=10 {
        let v = 1000 + n;
        write(&ctx.router, &writer, v).await;
        tokio::time::sleep(ms(150)).await;
        let r = read(Scope::Global).await.expect("a read with Redis down");
        let got: i64 = r.value.get(0);
        assert!(got >= v, "stale with Redis down: wrote {v}, read {got}");
        assert_eq!(
            ctx.nodes.name(r.value.get(1)),
            "leader",
            "the mark cannot be read: the leader, even with the follower caught up"
        );
    }
    let m = ctx.router.metrics();
    let global = m.scopes.iter().find(|s| s.scope == Scope::Global).unwrap();
    assert!(
        global.fetches >= 1 && global.fetched_reads >= 40,
        "{global:?}"
    );
}
