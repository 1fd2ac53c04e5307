//! A client is untrusted: nothing it sends breaks its own guarantee,
//! another client's, or the positions everyone shares. Each test here was
//! a defect on 2026-12-06 (issue 19), reproduced with a raw protocol client
//! or a real driver's habits, and is judged by the values it wrote.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use ryw_router::{Lsn, Position, SessionKey, SessionStore};

use crate::raw::{Raw, put_bind, put_describe, put_execute, put_flush, put_parse, put_sync};
use crate::support::{Ctx, Setup, direct, read, write};

/// Write-then-read pairs on one connection: the stale reads, as text.
async fn own_pairs(c: &tokio_postgres::Client, row: &str, n: i64, from: i64) -> Vec<String> {
    let mut stale = Vec::new();
    for i in from..from + n {
        write(c, row, i).await;
        let (v, _) = read(c, row).await;
        if v < i {
            stale.push(format!("{row}: wrote {i}, read {v}"));
        }
    }
    stale
}

/// Reads of `row` by `c`: how many a follower served.
async fn follower_reads(ctx: &Ctx, c: &tokio_postgres::Client, row: &str, n: usize) -> usize {
    let nodes = ctx.node_names();
    let mut on_followers = 0;
    for _ in 0..n {
        let (_, port) = read(c, row).await;
        if nodes.name(port).starts_with("follower") {
            on_followers += 1;
        }
    }
    on_followers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_client_does_in_its_session_skews_its_positions_or_poisons_others() {
    let ctx = Ctx::start(Setup::default()).await;
    let leader = direct(&ctx.cluster.leader_url()).await;
    leader
        .batch_execute(
            "CREATE SCHEMA evil;
             CREATE FUNCTION evil.pg_current_wal_lsn() RETURNS pg_lsn LANGUAGE sql
                 AS $$SELECT 'FFFFFFFF/FFFFFF00'::pg_lsn$$;
             CREATE FUNCTION evil.pg_last_wal_replay_lsn() RETURNS pg_lsn LANGUAGE sql
                 AS $$SELECT 'FFFFFFFF/FFFFFF00'::pg_lsn$$;
             CREATE FUNCTION evil.pg_is_in_recovery() RETURNS bool LANGUAGE sql AS $$SELECT false$$;
             CREATE ROLE other_role;
             GRANT ALL ON kv TO other_role;
             GRANT USAGE ON SCHEMA evil TO other_role;
             INSERT INTO kv VALUES ('old', 7);",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;

    let c = ctx.client().await;
    c.batch_execute("SET ryw.strategy = 'causal'")
        .await
        .unwrap();
    let mut stale = Vec::new();
    let mut from = 1;
    for attack in [
        "DISCARD ALL",
        "DEALLOCATE ALL",
        "PREPARE ryw_position AS SELECT 'FFFFFFFF/FFFFFF00'::text",
        "DEALLOCATE ryw_position",
        "SET search_path = evil, pg_catalog, public",
        "SET ROLE other_role",
        "RESET ALL",
    ] {
        c.batch_execute(attack)
            .await
            .unwrap_or_else(|e| panic!("{attack}: {e}"));
        stale.extend(own_pairs(&c, "attacker", 40, from).await);
        from += 40;
    }
    assert!(stale.is_empty(), "stale reads after attacks: {stale:?}");

    // The same through a named session, whose positions others read.
    let named = ctx.client_in("victim").await;
    named
        .batch_execute("SET ryw.strategy = 'causal'")
        .await
        .unwrap();
    named
        .batch_execute("SET search_path = evil, pg_catalog, public")
        .await
        .unwrap();
    named
        .batch_execute("PREPARE ryw_position AS SELECT 'FFFFFFFF/FFFFFF00'::text")
        .await
        .unwrap();
    let stale = own_pairs(&named, "victim", 40, 1).await;
    assert!(stale.is_empty(), "{stale:?}");

    // Nothing shared was poisoned: every follower is in rotation, the
    // leader's known position is a real one, and a bystander's fresh reads
    // (and the named session's, through another connection) still go to
    // followers.
    let view = ctx.proxy_router().cluster_view();
    assert!(
        view.followers().all(|f| f.in_rotation),
        "a follower left rotation: {view:?}"
    );
    let leader_lsn = view.leader_lsn().expect("the leader's position");
    assert!(leader_lsn < "1/0".parse::<Lsn>().unwrap(), "{leader_lsn}");
    let bystander = ctx.client().await;
    bystander
        .batch_execute("SET ryw.strategy = 'causal'")
        .await
        .unwrap();
    let on_followers = follower_reads(&ctx, &bystander, "old", 30).await;
    assert!(
        on_followers >= 25,
        "bystander: {on_followers} of 30 on followers"
    );
    let victim = ctx.client_in("victim").await;
    victim
        .batch_execute("SET ryw.strategy = 'causal'")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let on_followers = follower_reads(&ctx, &victim, "victim", 30).await;
    assert!(
        on_followers >= 25,
        "victim: {on_followers} of 30 on followers"
    );
    let token: String = victim
        .query_one("SHOW ryw.token", &[])
        .await
        .unwrap()
        .get(0);
    let pos = ctx.key.verify(&token).unwrap();
    assert!(pos.lsn <= leader_lsn.saturating_add(64 << 20), "{pos:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_is_one_role_and_looks_the_same_for_roles_that_do_not_exist() {
    // The follower replays a second late: the role made below is not there
    // yet when `app` first reads, and the read goes to the leader.
    let mut setup = Setup {
        lags: vec![Duration::from_secs(1)],
        ..Setup::default()
    };
    let ctx = Ctx::start(setup.clone()).await;
    let leader = direct(&ctx.cluster.leader_url()).await;
    leader
        .batch_execute("CREATE ROLE app LOGIN; GRANT SELECT ON kv TO app")
        .await
        .unwrap();

    // A startup packet that names `user` twice: refused, whichever comes
    // first (PostgreSQL would take the last).
    for params in [
        [("user", "app"), ("database", "ryw"), ("user", "postgres")],
        [
            ("user", "postgres"),
            ("database", "ryw"),
            ("database", "postgres"),
        ],
    ] {
        let mut raw = Raw::start(ctx.proxy.addr, &params).await;
        let first = raw.next().await.expect("an answer");
        assert_eq!(first.tag, b'E', "refused, not logged in");
        assert_eq!(first.field(b'C').as_deref(), Some("08P01"));
        assert!(raw.next().await.is_none(), "and closed");
    }
    // Logged in as `app`, the nodes see `app`.
    let mut raw = Raw::connect(ctx.proxy.addr, "app", "").await;
    for sql in [
        "SELECT current_user",
        "/* ryw:leader */ SELECT current_user",
    ] {
        assert_eq!(
            raw.query(sql).await.value().as_deref(),
            Some("app"),
            "{sql}"
        );
    }

    // With an auth file, an unknown role gets the same SCRAM exchange as a
    // known one, and the same refusal; a long name is not echoed whole.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "\"postgres\" \"s3cret-pass\"\n").unwrap();
    setup.auth_file = Some(file.path().to_owned());
    let proxy = crate::support::start_proxy(&ctx.cluster, &setup, ctx.key.clone()).await;
    let login = |user: String, password: &'static str| {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(proxy.addr.port())
            .user(&user)
            .password(password)
            .dbname(ryw_cluster::DATABASE);
        async move { cfg.connect(tokio_postgres::NoTls).await.map(|_| ()) }
    };
    let known = login("postgres".into(), "wrong").await.unwrap_err();
    let unknown = login("ghost".into(), "wrong").await.unwrap_err();
    let message = |e: &tokio_postgres::Error| {
        e.as_db_error()
            .map(|d| (d.code().code().to_owned(), d.message().to_owned()))
    };
    assert_eq!(
        message(&known).map(|(c, m)| (c, m.replace("postgres", "X"))),
        message(&unknown).map(|(c, m)| (c, m.replace("ghost", "X"))),
        "the same refusal for a role that does not exist"
    );
    for user in ["ghost", "postgres"] {
        let mut raw = Raw::start(proxy.addr, &[("user", user), ("database", "ryw")]).await;
        let first = raw.next().await.expect("an answer");
        assert_eq!(
            (first.tag, &first.body[..4]),
            (b'R', &10i32.to_be_bytes()[..]),
            "{user}: a SCRAM challenge"
        );
    }
    let long = "x".repeat(9000);
    let e = login(long, "wrong").await.unwrap_err();
    let (_, m) = message(&e).expect("a server error");
    assert!(m.len() < 200, "the refusal echoes {} bytes", m.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_session_belongs_to_the_role_that_named_it() {
    let ctx = Ctx::start(Setup {
        lags: vec![Duration::ZERO],
        redis: true,
        ..Setup::default()
    })
    .await;
    let leader = direct(&ctx.cluster.leader_url()).await;
    leader
        .batch_execute(
            "CREATE ROLE alice_r LOGIN; CREATE ROLE bob_r LOGIN; \
             GRANT ALL ON kv TO alice_r, bob_r",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let as_role = |role: &'static str| {
        let addr = ctx.proxy.addr;
        async move {
            let mut cfg = tokio_postgres::Config::new();
            cfg.host("127.0.0.1")
                .port(addr.port())
                .user(role)
                .dbname(ryw_cluster::DATABASE)
                .options("-c ryw.session=shared");
            let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client
        }
    };
    let alice = as_role("alice_r").await;
    write(&alice, "alice", 1).await;
    let store = ryw_router::RedisStore::connect(ryw_router::RedisStoreConfig::new(
        ctx.cluster.redis_url().unwrap(),
    ))
    .await
    .unwrap();
    let load = |k: &str| {
        let key = SessionKey::new(k).unwrap();
        let store = &store;
        async move { store.load(&key).await.unwrap().token }
    };
    assert!(
        load("alice_r/shared").await.is_some(),
        "alice's write is in her session"
    );
    assert_eq!(
        load("shared").await,
        None,
        "not in a session any role can name"
    );
    assert_eq!(load("bob_r/shared").await, None, "nor in bob's");
    let bob = as_role("bob_r").await;
    write(&bob, "bob", 1).await;
    assert!(load("bob_r/shared").await.is_some());
    let shown: String = bob.query_one("SHOW ryw.session", &[]).await.unwrap().get(0);
    assert_eq!(shown, "shared", "the client sees the name it gave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_real_drivers_do_between_statements_works_as_on_postgresql() {
    let ctx = Ctx::start(Setup::default()).await;
    let leader = direct(&ctx.cluster.leader_url()).await;
    leader
        .batch_execute("INSERT INTO kv VALUES ('old', 7)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;

    // Notifications reach a client that waits idle, at once.
    let mut listener = Raw::connect(ctx.proxy.addr, "postgres", "").await;
    assert!(listener.query("LISTEN ch").await.errors().is_empty());
    for i in 0..5 {
        let sent = Instant::now();
        leader
            .batch_execute(&format!("NOTIFY ch, 'n{i}'"))
            .await
            .unwrap();
        let m = listener
            .next_within(Duration::from_secs(2))
            .await
            .expect("a notification while idle");
        assert_eq!(m.tag, b'A', "{m:?}");
        let took = sent.elapsed();
        assert!(
            took < Duration::from_millis(100),
            "notification {i} took {took:?}"
        );
    }

    // asyncpg: prepare() is Parse, Describe, Flush; then a simple Query.
    let mut raw = Raw::connect(ctx.proxy.addr, "postgres", "").await;
    let mut out = BytesMut::new();
    put_parse(&mut out, "s1", "SELECT $1::int + 1");
    put_describe(&mut out, b'S', "s1");
    put_flush(&mut out);
    raw.send(&out).await;
    let mut tags = String::new();
    while tags.len() < 3 {
        let m = raw
            .next_within(Duration::from_secs(5))
            .await
            .expect("the replies to a flushed Parse/Describe");
        tags.push(m.tag as char);
    }
    assert_eq!(tags, "1tT");
    let r = raw.query("SELECT 41 + 1").await;
    assert_eq!(
        (r.value().as_deref(), r.errors().len()),
        (Some("42"), 0),
        "{}",
        r.tags()
    );
    // psycopg's pipeline: Sync then Flush, then the prepared statement again.
    let mut out = BytesMut::new();
    put_bind(&mut out, "", "s1", &[Some("1")]);
    put_execute(&mut out, "");
    put_sync(&mut out);
    put_flush(&mut out);
    raw.send(&out).await;
    let r = raw.reply().await;
    assert_eq!(r.value().as_deref(), Some("2"), "{}", r.tags());
    let r = raw.extended("SELECT 5", &[]).await;
    assert!(r.errors().is_empty(), "{}", r.tags());
    // A flushed read on a follower, then a write: both answered.
    let mut out = BytesMut::new();
    put_parse(&mut out, "r1", "SELECT v FROM kv WHERE k = 'old'");
    put_flush(&mut out);
    raw.send(&out).await;
    assert_eq!(
        raw.next_within(Duration::from_secs(5)).await.map(|m| m.tag),
        Some(b'1')
    );
    let r = raw
        .query("INSERT INTO kv VALUES ('after-flush', 1) ON CONFLICT (k) DO UPDATE SET v = 1")
        .await;
    assert!(r.errors().is_empty(), "{}", r.tags());
    assert_eq!(r.status(), Some(b'I'));
    let mut out = BytesMut::new();
    put_bind(&mut out, "", "r1", &[]);
    put_execute(&mut out, "");
    put_sync(&mut out);
    raw.send(&out).await;
    assert_eq!(raw.reply().await.value().as_deref(), Some("7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ryw_settings_follow_transactions_and_binding_carries_the_connections_writes() {
    let ctx = Ctx::start(Setup::default()).await;
    let mut c = ctx.client().await;
    async fn session(c: &tokio_postgres::Client) -> String {
        c.query_one("SHOW ryw.session", &[]).await.unwrap().get(0)
    }
    let tx = c.transaction().await.unwrap();
    tx.batch_execute("SET ryw.session = 'k'").await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(session(&c).await, "k");
    let tx = c.transaction().await.unwrap();
    tx.batch_execute("SET ryw.session = 'j'").await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(session(&c).await, "k", "a rollback undoes SET");
    let tx = c.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL ryw.session = 'j'")
        .await
        .unwrap();
    let inside: String = tx.query_one("SHOW ryw.session", &[]).await.unwrap().get(0);
    assert_eq!(inside, "j");
    tx.commit().await.unwrap();
    assert_eq!(
        session(&c).await,
        "k",
        "SET LOCAL ends with its transaction"
    );
    let v: String = c
        .query_one("SELECT set_config('ryw.session', $1, false)", &[&"m"])
        .await
        .expect("set_config with a bound value")
        .get(0);
    assert_eq!((v, session(&c).await), ("m".to_owned(), "m".to_owned()));
    // In a failed transaction, as PostgreSQL: ignored until its end.
    c.batch_execute("BEGIN").await.unwrap();
    assert!(c.batch_execute("SELECT 1/0").await.is_err());
    let e = c.batch_execute("SET ryw.session = 'z'").await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("25P02"));
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(session(&c).await, "m");

    // SQLAlchemy/psycopg's way: a transaction opened implicitly, the
    // session bound inside it, the write, the commit; read elsewhere.
    let mut stale = Vec::new();
    for i in 1..=40i64 {
        let mut w = ctx.client().await;
        let tx = w.transaction().await.unwrap();
        tx.query_one("SELECT set_config('ryw.session', $1, false)", &[&"in-tx"])
            .await
            .unwrap();
        tx.execute(crate::support::UPSERT, &[&"in-tx", &i])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let r = ctx.client_in("in-tx").await;
        let (v, _) = read(&r, "in-tx").await;
        if v < i {
            stale.push(format!("bound in a transaction: wrote {i}, read {v}"));
        }
    }
    // A write made before the session is bound is carried into it.
    for i in 1..=30i64 {
        let w = ctx.client().await;
        write(&w, "carried", i).await;
        w.batch_execute(&format!("SET ryw.session = 'carry-{i}'"))
            .await
            .unwrap();
        let r = ctx.client_in(&format!("carry-{i}")).await;
        let (v, _) = read(&r, "carried").await;
        if v < i {
            stale.push(format!("carried: wrote {i}, read {v}"));
        }
    }
    assert!(stale.is_empty(), "{stale:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_lift_when_their_cause_is_gone_and_resets_pin_nothing() {
    let ctx = Ctx::start(Setup {
        lags: vec![Duration::from_millis(50)],
        ..Setup::default()
    })
    .await;
    let leader = direct(&ctx.cluster.leader_url()).await;
    leader
        .batch_execute("INSERT INTO kv VALUES ('old', 7)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (pin, unpin) in [
        ("CREATE TEMP TABLE t1 (a int)", "DROP TABLE t1"),
        ("CREATE TEMP TABLE t2 (a int)", "DISCARD ALL"),
        ("LISTEN ch", "UNLISTEN *"),
        ("PREPARE p AS SELECT 1", "DEALLOCATE ALL"),
        (
            "SELECT pg_advisory_lock(42)",
            "SELECT pg_advisory_unlock_all()",
        ),
        (
            "BEGIN; DECLARE cur CURSOR WITH HOLD FOR SELECT 1; COMMIT",
            "CLOSE ALL",
        ),
    ] {
        let c = ctx.client().await;
        c.batch_execute(pin).await.unwrap();
        assert_eq!(
            follower_reads(&ctx, &c, "old", 10).await,
            0,
            "reads stay on the leader after {pin}"
        );
        c.batch_execute(unpin).await.unwrap();
        // What the pinned reads saw on the leader (the pin's own WAL
        // included) must reach a follower first (rule 7).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let n = follower_reads(&ctx, &c, "old", 20).await;
        assert!(n >= 15, "after {unpin}: {n} of 20 reads on followers");
    }
    // Resets that only undo state pin nothing: asyncpg's pool reset,
    // Django's time zone.
    for reset in [
        "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;",
        "SELECT set_config('TimeZone', 'UTC', false)",
        "DISCARD ALL",
        "DEALLOCATE ALL",
    ] {
        let c = ctx.client().await;
        c.batch_execute(reset).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let n = follower_reads(&ctx, &c, "old", 20).await;
        assert!(n >= 15, "after {reset}: {n} of 20 reads on followers");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_followers_far_tokens_and_readers_cost_no_errors_and_no_leader_connections() {
    let ctx = Ctx::start(Setup {
        lags: vec![Duration::ZERO, Duration::ZERO],
        ..Setup::default()
    })
    .await;
    let leader = direct(&ctx.cluster.leader_url()).await;
    leader
        .batch_execute(
            "CREATE ROLE limited LOGIN CONNECTION LIMIT 1; GRANT SELECT ON kv TO limited; \
             INSERT INTO kv VALUES ('old', 7)",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A follower at its connection limit (53300): the read goes elsewhere.
    let mut hold = Vec::new();
    for (_, url) in ctx.cluster.follower_urls() {
        let url = url.replacen("postgres@", "limited@", 1);
        hold.push(direct(&url).await);
    }
    let mut raw = Raw::connect(ctx.proxy.addr, "limited", "").await;
    for _ in 0..5 {
        let r = raw
            .query("SELECT v, inet_server_port() FROM kv WHERE k = 'old'")
            .await;
        assert!(r.errors().is_empty(), "{:?}", r.msgs);
        assert_eq!(r.value().as_deref(), Some("7"));
    }
    drop(hold);

    // A token from far in the future is clamped, not waited for.
    let now = ctx.proxy_router().cluster_view().leader_lsn().unwrap();
    let far = ctx
        .key
        .sign(Position::new(1, now.saturating_add(8u64 << 30)));
    let c = ctx.client().await;
    c.batch_execute("SET ryw.strategy = 'causal'")
        .await
        .unwrap();
    c.batch_execute(&format!("SET ryw.token = '{far}'"))
        .await
        .unwrap();
    let token: String = c.query_one("SHOW ryw.token", &[]).await.unwrap().get(0);
    let kept = ctx.key.verify(&token).unwrap();
    assert!(kept.lsn < now.saturating_add(1 << 30), "kept {kept:?}");
    let started = Instant::now();
    let n = follower_reads(&ctx, &c, "old", 10).await;
    assert!(n >= 8, "{n} of 10 on followers");
    assert!(started.elapsed() < Duration::from_secs(2), "no waits");

    // Clients that only read open no connection to the leader.
    let mut readers = Vec::new();
    for _ in 0..40 {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(ctx.proxy.addr.port())
            .user("postgres")
            .dbname(ryw_cluster::DATABASE)
            .application_name("reader-test");
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        read(&client, "old").await;
        readers.push(client);
    }
    let n: i64 = leader
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'reader-test'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(n <= 1, "{n} leader connections for 40 readers");
}
