//! What a client expects of a pooler, through the proxy: session settings
//! and prepared statements on whichever node serves, the proxy's own
//! `ryw.*` settings, hints, temp tables, transactions, SCRAM logins.

use std::time::Duration;

use tokio_postgres::NoTls;

use crate::support::{Ctx, Setup, direct, read, start_proxy, write};

/// The SQLSTATE of a failed statement.
fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_owned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_prepared_statements_ryw_commands_and_hints_work_on_every_node() {
    let ctx = Ctx::start(Setup {
        lags: vec![Duration::ZERO, Duration::from_millis(50)],
        ..Setup::default()
    })
    .await;
    let leader = direct(&ctx.cluster.leader_url()).await;
    leader
        .batch_execute(
            "CREATE SCHEMA app; CREATE TABLE app.things (id int PRIMARY KEY, name text); \
             INSERT INTO app.things VALUES (1, 'one'); \
             CREATE FUNCTION bump() RETURNS int LANGUAGE sql VOLATILE \
             AS 'INSERT INTO kv VALUES (''bumped'', 1) ON CONFLICT (k) DO UPDATE SET v = kv.v + 1 RETURNING v'",
        )
        .await
        .unwrap();
    let ports = ctx.node_names();
    let c = ctx.client().await;
    c.batch_execute("SET ryw.strategy = 'causal'")
        .await
        .unwrap();

    // A session setting made on the leader holds on the followers that
    // serve the reads after it (replayed there).
    c.batch_execute("SET search_path = app, public")
        .await
        .unwrap();
    c.batch_execute("SET application_name = 'ryw-proxy-test'")
        .await
        .unwrap();
    let mut served = std::collections::BTreeSet::new();
    // A table created a moment ago is read on the leader until the proxy's
    // catalog knows it (it reads the catalog again at once): read on until
    // a follower serves one, for at most a few seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for _ in 0..20 {
        if served.iter().any(|n: &String| n.starts_with("follower")) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = c
            .query_one(
                "SELECT name, current_setting('application_name'), inet_server_port() FROM things WHERE id = 1",
                &[],
            )
            .await
            .expect("search_path holds wherever the read goes");
        assert_eq!(r.get::<_, String>(0), "one");
        assert_eq!(r.get::<_, String>(1), "ryw-proxy-test");
        served.insert(ports.name(r.get(2)));
    }
    assert!(
        served.iter().any(|n| n.starts_with("follower")),
        "the reads reached a follower: {served:?}"
    );
    c.batch_execute("RESET search_path").await.unwrap();

    // A named prepared statement, prepared once, runs on every node: the
    // proxy prepares it where it is missing.
    let stmt = c
        .prepare("SELECT coalesce((SELECT v FROM kv WHERE k = $1), 0), inet_server_port()")
        .await
        .unwrap();
    write(&c, "prepared", 7).await;
    let mut nodes = std::collections::BTreeSet::new();
    for strategy in ["leader", "causal", "legacy", "causal", "leader", "legacy"] {
        c.batch_execute(&format!("SET ryw.strategy = '{strategy}'"))
            .await
            .unwrap();
        for _ in 0..5 {
            let r = c
                .query_one(&stmt, &[&"prepared"])
                .await
                .expect("the prepared statement");
            if strategy != "legacy" {
                assert_eq!(r.get::<_, i64>(0), 7);
            }
            nodes.insert(ports.name(r.get(1)));
        }
    }
    assert!(
        nodes.len() >= 2,
        "the statement ran on several nodes: {nodes:?}"
    );
    c.batch_execute("SET ryw.strategy = 'causal'")
        .await
        .unwrap();

    // The proxy's own settings, answered without a node.
    let row = c.query_one("SHOW ryw.strategy", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "causal");
    let (_, port) = read(&c, "prepared").await;
    let by_proxy = c.query_one("SHOW ryw.served_by", &[]).await.unwrap();
    assert_eq!(
        by_proxy.get::<_, String>(0),
        ports.name(port),
        "served_by names the node"
    );
    for bad in [
        "SET ryw.strategy = 'fastest'",
        "SET ryw.token = 'v1.forged.token'",
        "SET ryw.session = ''",
        "SHOW ryw.bogus",
    ] {
        let e = c.batch_execute(bad).await.expect_err(bad);
        assert_eq!(code(&e), "22023", "{bad}: {e:?}");
    }
    c.query_one("SELECT 1", &[])
        .await
        .expect("the connection stays usable");
    // SET LOCAL outside a transaction: PostgreSQL's warning, no effect.
    c.batch_execute("SET LOCAL ryw.session = 'x'")
        .await
        .expect("SET LOCAL outside a transaction only warns");
    let row = c.query_one("SHOW ryw.session", &[]).await.unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "",
        "no effect outside a transaction"
    );
    let e = c
        .batch_execute("SET ryw.session = 'a'; SELECT 1")
        .await
        .expect_err("ryw commands come alone");
    assert_eq!(code(&e), "0A000", "{e:?}");

    // A token carries a write to a connection that is a session of its own.
    let writer = ctx.client().await;
    write(&writer, "carried", 42).await;
    let token: String = writer
        .query_one("SHOW ryw.token", &[])
        .await
        .unwrap()
        .get(0);
    assert!(ctx.key.verify(&token).is_ok());
    let other = ctx.client().await;
    other
        .batch_execute("SET ryw.strategy = 'causal'")
        .await
        .unwrap();
    other
        .batch_execute(&format!("SET ryw.token = '{token}'"))
        .await
        .unwrap();
    assert_eq!(
        read(&other, "carried").await.0,
        42,
        "the token carried the write"
    );

    // Hints.
    let port: Option<i32> = c
        .query_one("/* ryw:leader */ SELECT inet_server_port()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ports.name(port), "leader");
    let port: Option<i32> = c
        .query_one("/* ryw:stale-ok */ SELECT inet_server_port()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        ports.name(port).starts_with("follower"),
        "{}",
        ports.name(port)
    );

    // A read that is a write in disguise: a follower refuses it (25006)
    // before anything reached the client, and it runs on the leader.
    let bumped: i32 = c
        .query_one("SELECT bump()", &[])
        .await
        .expect("retried on the leader")
        .get(0);
    assert_eq!(bumped, 1);
    assert_eq!(read(&c, "bumped").await.0, 1, "and is read back");

    // Transactions stay on the leader; a temp table pins reads there.
    c.batch_execute("BEGIN").await.unwrap();
    let port: Option<i32> = c
        .query_one("SELECT inet_server_port()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ports.name(port), "leader", "inside a transaction");
    c.batch_execute("COMMIT").await.unwrap();
    c.batch_execute("CREATE TEMP TABLE scratch (x int); INSERT INTO scratch VALUES (1)")
        .await
        .unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM scratch", &[])
        .await
        .expect("a temp table is read where it lives")
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_auth_file_clients_log_in_with_scram_and_wrong_passwords_are_refused() {
    let mut setup = Setup {
        lags: vec![Duration::ZERO],
        ..Setup::default()
    };
    let ctx = Ctx::start(setup.clone()).await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "\"postgres\" \"s3cret-pass\"\n").unwrap();
    setup.auth_file = Some(file.path().to_owned());
    let proxy = start_proxy(&ctx.cluster, &setup, ctx.key.clone()).await;
    let login = |password: &'static str| {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(proxy.addr.port())
            .user("postgres")
            .password(password)
            .dbname(ryw_cluster::DATABASE);
        async move { cfg.connect(NoTls).await }
    };
    let (client, conn) = login("s3cret-pass")
        .await
        .expect("the right password logs in");
    tokio::spawn(conn);
    client.query_one("SELECT 1", &[]).await.unwrap();
    let Err(e) = login("wrong").await else {
        panic!("a wrong password must be refused");
    };
    assert_eq!(code(&e), "28P01", "{e:?}");
    proxy.stop().await;
}
