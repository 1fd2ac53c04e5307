//! TLS both ways, with a CA of the test's own (rcgen): the nodes run with
//! `ssl = on` and a certificate from it, the proxy gets one too.
//!
//! - Clients under `--tls-mode require`: psql (`sslmode=require` with
//!   `channel_binding=require`, and `verify-full` with the CA and
//!   `channel_binding=disable`), psycopg 3, node-postgres and pgjdbc with
//!   `verify-full`, each logging in with SCRAM over TLS (bound to the
//!   proxy's certificate where the driver binds); the client side says its connection is encrypted
//!   (psql's `\conninfo`, libpq's `PQsslInUse`, node's `encrypted`); a
//!   `NOTIFY` reaches a psycopg listener waiting idle. The
//!   clear is refused with the reason; a wrong CA fails `verify-full`; a
//!   proxy without TLS gets libpq's "server does not support SSL".
//! - Nodes: the proxy's URLs say `sslmode=verify-full` and the CA;
//!   `pg_stat_ssl` on every node shows each of its client connections (the
//!   router's, the tracker's, the relay's) encrypted; 200 write-then-read
//!   pairs over TLS both ways: 0 stale, reads served by followers.
//! - The startup's edges: a cancel request over TLS, `SSLRequest` twice,
//!   bytes in the clear after `SSLRequest`, a handshake that stalls.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use ryw_cluster::harness::TestCluster;
use ryw_proxy::TlsMode;
use ryw_router::tls::{NodeTls, SslMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::Client;

use crate::clients::{program, venv};
use crate::support::{Ctx, SELECT, Setup, UPSERT, start_proxy};

/// A CA, a second CA nobody trusts, and two certificates from the first
/// (the nodes', the proxy's), each for `localhost` and `127.0.0.1`.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("ryw-tls-")
            .tempdir()
            .unwrap();
        // The servers (the `postgres` OS user when tests run as root)
        // read nothing here: their files are copied into the data folders.
        let ca = |name: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = params.self_signed(&key).unwrap();
            (cert.pem(), Issuer::new(params, key))
        };
        let (ca_pem, issuer) = ca("ryw test CA");
        let (other_pem, _) = ca("a CA nobody trusts");
        std::fs::write(dir.path().join("ca.pem"), ca_pem).unwrap();
        std::fs::write(dir.path().join("other-ca.pem"), other_pem).unwrap();
        for name in ["node", "proxy"] {
            let key = KeyPair::generate().unwrap();
            let mut params =
                CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                    .unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, format!("ryw test {name}"));
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let cert = params.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.path().join(format!("{name}.crt")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        Pki { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn ca(&self) -> String {
        self.path("ca.pem").display().to_string()
    }

    /// What a client checks the proxy with (`verify-full`).
    fn client_tls(&self) -> NodeTls {
        NodeTls::new(SslMode::VerifyFull, Some(&self.path("ca.pem"))).unwrap()
    }
}

/// Turns on `ssl` on every node, with the nodes' certificate in its data
/// folder (owned by the server's OS user, mode 0600, as PostgreSQL
/// insists), and waits until each says so.
async fn enable_ssl(cluster: &TestCluster, pki: &Pki) {
    for node in cluster.info().nodes {
        let data = &node.data_dir;
        let owner = std::fs::metadata(data).unwrap();
        for (from, to) in [("node.crt", "server.crt"), ("node.key", "server.key")] {
            let dest = data.join(to);
            std::fs::copy(pki.path(from), &dest).unwrap();
            std::os::unix::fs::chown(&dest, Some(owner.uid()), Some(owner.gid())).unwrap();
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(
            &mut conf,
            b"\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )
        .unwrap();
        let admin = observer(&node.url).await;
        admin.simple_query("SELECT pg_reload_conf()").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let on: String = admin.query_one("SHOW ssl", &[]).await.unwrap().get(0);
            if on == "on" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: ssl never came on (see {})",
                node.name,
                node.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A connection straight to a node in the clear, named so the checks of
/// `pg_stat_ssl` leave it out.
async fn observer(url: &str) -> Client {
    let mut cfg: tokio_postgres::Config = url.parse().unwrap();
    cfg.application_name("ryw-tls-test-observer");
    cfg.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let (client, conn) = cfg
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(conn);
    client
}

/// A tokio-postgres client of the proxy over TLS (`verify-full`).
async fn tls_client(addr: std::net::SocketAddr, pki: &Pki, password: &str) -> Client {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(addr.port())
        .user("postgres")
        .password(password)
        .dbname(ryw_cluster::DATABASE)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(5));
    let (client, conn) = cfg
        .connect(pki.client_tls().make_connect())
        .await
        .unwrap_or_else(|e| panic!("TLS connect through the proxy at {addr}: {e}"));
    tokio::spawn(conn);
    client
}

/// Runs psql against the proxy with `conninfo`; (success, stdout, stderr).
async fn psql(ctx: &Ctx, port: u16, conninfo: &str) -> (bool, String, String) {
    let dsn = format!(
        "host=127.0.0.1 port={port} user=postgres dbname={} connect_timeout=5 {conninfo}",
        ryw_cluster::DATABASE
    );
    let out = tokio::process::Command::new(program(ctx, "psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-d",
            &dsn,
            "-c",
            "\\conninfo",
            "-c",
            "SELECT 40 + 2",
        ])
        .env("PGPASSWORD", PASSWORD)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("psql finished in 30 s")
        .expect("psql runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const PASSWORD: &str = "tls-s3cret";

/// Runs a driver program; its last stdout line as JSON.
async fn driver(label: &str, mut cmd: tokio::process::Command) -> serde_json::Value {
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{label} did not finish in 60 s"))
        .unwrap_or_else(|e| panic!("{label} did not start: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{label} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{label} printed no JSON line ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_log_in_over_tls_with_verify_full_and_the_proxy_reaches_nodes_over_verify_full() {
    let started = Instant::now();
    let pki = Pki::new();
    // Java and node-postgres first: a missing runtime fails before the
    // cluster starts.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/proxy/tls");
    let classpath = crate::recipes::java_classpath();
    let source = dir.join("TlsJdbc.java");
    let stamp = std::fs::read_to_string(&source).unwrap();
    let cp = std::env::join_paths(&classpath).unwrap();
    let classes = crate::recipes::cached(&crate::recipes::cache("tls-java"), &stamp, |out| {
        crate::recipes::must(
            std::process::Command::new("javac")
                .arg("-d")
                .arg(out)
                .arg("-cp")
                .arg(&cp)
                .arg(&source),
            "install a JDK: apt-get install -y default-jdk-headless (scripts/test does it when missing)",
        );
    });
    let modules = tokio::task::spawn_blocking(crate::recipes::node_modules)
        .await
        .unwrap();
    let venv = tokio::task::spawn_blocking(venv).await.unwrap();

    let cluster = TestCluster::start(&[Duration::ZERO, Duration::ZERO]).await;
    enable_ssl(&cluster, &pki).await;
    let auth = pki.path("users.txt");
    std::fs::write(&auth, format!("\"postgres\" \"{PASSWORD}\"\n")).unwrap();
    let setup = Setup {
        lags: vec![Duration::ZERO, Duration::ZERO],
        auth_file: Some(auth),
        tls: Some((
            TlsMode::Require,
            pki.path("proxy.crt"),
            pki.path("proxy.key"),
        )),
        node_params: Some(format!("sslmode=verify-full&sslrootcert={}", pki.ca())),
        ..Setup::default()
    };
    let ctx = Ctx::start_on(cluster, setup.clone()).await;
    let port = ctx.proxy.addr.port();
    eprintln!("cluster with ssl and proxy up in {:?}", started.elapsed());

    // psql: require with channel_binding=require (SCRAM-SHA-256-PLUS bound
    // to the proxy's certificate: libpq's hash must be the proxy's), and
    // verify-full without channel binding ("n,," while binding is offered).
    for conninfo in [
        "sslmode=require channel_binding=require".to_owned(),
        format!(
            "sslmode=verify-full sslrootcert={} channel_binding=disable",
            pki.ca()
        ),
    ] {
        let (ok, out, err) = psql(&ctx, port, &conninfo).await;
        assert!(ok, "psql {conninfo}: {err}");
        assert!(
            out.contains("SSL connection (protocol: TLSv1."),
            "psql {conninfo} says it is encrypted: {out}"
        );
        assert!(out.lines().any(|l| l.trim() == "42"), "{out}");
    }
    // The clear is refused before any authentication, with the reason.
    let (ok, _, err) = psql(&ctx, port, "sslmode=disable").await;
    assert!(!ok);
    assert!(
        err.contains("ryw proxy requires TLS (--tls-mode require)"),
        "{err}"
    );
    // A CA that did not sign the proxy's certificate fails verify-full.
    let other = pki.path("other-ca.pem");
    let (ok, _, err) = psql(
        &ctx,
        port,
        &format!("sslmode=verify-full sslrootcert={}", other.display()),
    )
    .await;
    assert!(!ok);
    assert!(err.contains("certificate verify failed"), "{err}");
    // A proxy without TLS: libpq's own refusal.
    let plain = start_proxy(
        &ctx.cluster,
        &Setup {
            tls: None,
            ..setup.clone()
        },
        ctx.key.clone(),
    )
    .await;
    let (ok, _, err) = psql(&ctx, plain.addr.port(), "sslmode=require").await;
    assert!(!ok);
    assert!(err.contains("server does not support SSL"), "{err}");
    plain.stop().await;
    eprintln!("psql done at {:?}", started.elapsed());

    // psycopg 3 (libpq): verify-full, PQsslInUse; a notification reaches
    // a listener waiting idle (the relay watching its TLS connection to the
    // leader between batches).
    let script = format!(
        "import json, psycopg\n\
         def conn():\n\
         \x20   return psycopg.connect(host='127.0.0.1', port={port}, user='postgres', \
         password='{PASSWORD}', dbname='{db}', sslmode='verify-full', sslrootcert='{ca}', \
         autocommit=True)\n\
         c, n = conn(), conn()\n\
         v = c.execute('SELECT 40 + 2').fetchone()[0]\n\
         c.execute('LISTEN ryw_tls')\n\
         n.execute(\"NOTIFY ryw_tls, 'over tls'\")\n\
         got = [x.payload for x in c.notifies(timeout=5, stop_after=1)]\n\
         print(json.dumps({{'answer': v, 'ssl_in_use': c.info.pgconn.ssl_in_use, 'notified': got}}))\n",
        db = ryw_cluster::DATABASE,
        ca = pki.ca(),
    );
    let mut py = tokio::process::Command::new(venv.join("bin/python"));
    py.args(["-c", &script]);
    let r = driver("psycopg", py).await;
    assert_eq!(r["answer"], 42, "{r}");
    assert_eq!(r["ssl_in_use"], true, "{r}");
    assert_eq!(r["notified"], serde_json::json!(["over tls"]), "{r}");

    // node-postgres: its own TLS (Node's), the CA and the name to check.
    let script = format!(
        "const {{ Client }} = require('pg'); const fs = require('fs');\n\
         const c = new Client({{ host: '127.0.0.1', port: {port}, user: 'postgres', \
         password: '{PASSWORD}', database: '{db}', \
         ssl: {{ ca: fs.readFileSync('{ca}'), servername: 'localhost' }} }});\n\
         (async () => {{ await c.connect(); const r = await c.query('SELECT 40 + 2 AS answer');\n\
         console.log(JSON.stringify({{ answer: r.rows[0].answer, encrypted: c.connection.stream.encrypted === true }}));\n\
         await c.end(); }})().catch((e) => {{ console.error(e); process.exit(1); }});\n",
        db = ryw_cluster::DATABASE,
        ca = pki.ca(),
    );
    let mut node = tokio::process::Command::new("node");
    node.args(["-e", &script]).env("NODE_PATH", &modules);
    let r = driver("node-postgres", node).await;
    assert_eq!(r["answer"], 42, "{r}");
    assert_eq!(r["encrypted"], true, "{r}");

    // pgjdbc: sslmode=verify-full with the CA (the proxy refuses the clear,
    // so an answer is an answer over TLS).
    let mut java_cp = classpath.clone();
    java_cp.push(classes);
    let mut java = tokio::process::Command::new("java");
    java.arg("-cp")
        .arg(std::env::join_paths(java_cp).unwrap())
        .arg("TlsJdbc")
        .args([
            &port.to_string(),
            ryw_cluster::DATABASE,
            PASSWORD,
            &pki.ca(),
        ]);
    let r = driver("pgjdbc", java).await;
    assert_eq!(r["answer"], 42, "{r}");
    eprintln!("drivers done at {:?}", started.elapsed());

    // Read-your-writes over TLS both ways: judged by the values written
    // and the port of the server that answered.
    let client = tls_client(ctx.proxy.addr, &pki, PASSWORD).await;
    let names = ctx.node_names();
    let mut served: HashMap<String, usize> = HashMap::new();
    let mut stale = Vec::new();
    for v in 1..=200i64 {
        client.execute(UPSERT, &[&"tls-pairs", &v]).await.unwrap();
        let row = client.query_one(SELECT, &[&"tls-pairs"]).await.unwrap();
        let (seen, port): (i64, Option<i32>) = (row.get(0), row.get(1));
        if seen != v {
            stale.push((v, seen));
        }
        *served.entry(names.name(port)).or_default() += 1;
    }
    eprintln!("200 pairs over TLS, reads served by {served:?}");
    assert!(stale.is_empty(), "stale reads over TLS: {stale:?}");
    let on_followers: usize = served
        .iter()
        .filter(|(n, _)| n.starts_with("follower"))
        .map(|(_, c)| c)
        .sum();
    assert!(
        on_followers > 0,
        "reads went to followers as well: {served:?}"
    );

    // Every node: each client connection (the router's, the tracker's,
    // the relay's for the client above) is encrypted.
    for node in ctx.cluster.info().nodes {
        let observer = observer(&node.url).await;
        let rows = observer
            .query(
                "SELECT a.application_name, s.ssl FROM pg_stat_activity a \
                 JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid() \
                 AND a.application_name <> 'ryw-tls-test-observer'",
                &[],
            )
            .await
            .unwrap();
        let conns: Vec<(String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        eprintln!("{}: {conns:?}", node.name);
        assert!(
            conns.iter().any(|(app, _)| app == "ryw-tracker"),
            "{}: the tracker's connection is there: {conns:?}",
            node.name
        );
        assert!(
            conns.iter().all(|(_, ssl)| *ssl),
            "{}: every connection from ryw is encrypted: {conns:?}",
            node.name
        );
        if node.name == ctx.cluster.leader_name() {
            assert!(
                conns.len() >= 2,
                "the leader has the router's and the relay's connections: {conns:?}"
            );
        }
    }
    eprintln!("done in {:?}", started.elapsed());
}

/// PostgreSQL's `SSLRequest`.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Reads until the proxy closes (or 5 s pass): what it sent.
async fn read_to_end<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_requests_work_over_tls_and_repeated_injected_or_stalled_handshakes_are_refused() {
    let pki = Pki::new();
    let ctx = Ctx::start(Setup {
        lags: vec![Duration::ZERO],
        tls: Some((TlsMode::Allow, pki.path("proxy.crt"), pki.path("proxy.key"))),
        login_timeout: Some(Duration::from_secs(1)),
        ..Setup::default()
    })
    .await;
    let addr = ctx.proxy.addr;

    // `allow`: the clear still works.
    let plain = ctx.client().await;
    plain.simple_query("SELECT 1").await.unwrap();

    // A cancel request over TLS (tokio-postgres sends it after an
    // SSLRequest and a handshake when its connection had TLS).
    let client = tls_client(addr, &pki, "").await;
    let token = client.cancel_token();
    let sleeping =
        tokio::spawn(async move { client.simple_query("SELECT pg_sleep(20)").await.err() });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = Instant::now();
    token
        .cancel_query(pki.client_tls().make_connect())
        .await
        .expect("the cancel request is delivered over TLS");
    let err = tokio::time::timeout(Duration::from_secs(5), sleeping)
        .await
        .expect("the statement ended within 5 s of the cancel")
        .unwrap()
        .expect("the statement failed");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{err}"
    );
    eprintln!("cancelled over TLS in {:?}", sent.elapsed());

    // SSLRequest, the handshake, then SSLRequest again inside TLS: refused.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&SSL_REQUEST).await.unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'S');
    let mut tls = pki
        .client_tls()
        .connector()
        .connect(ryw_router::tls::server_name("localhost").unwrap(), tcp)
        .await
        .expect("handshake with the proxy");
    tls.write_all(&SSL_REQUEST).await.unwrap();
    tls.flush().await.unwrap();
    let got = read_to_end(&mut tls).await;
    let text = String::from_utf8_lossy(&got);
    assert_eq!(got.first(), Some(&b'E'), "{text}");
    assert!(text.contains("08P01"), "{text}");
    assert!(
        text.contains("an encryption request was already answered"),
        "{text}"
    );

    // A startup packet sent in the clear right behind the SSLRequest (an
    // injection in front of the handshake, CVE-2021-23214): refused, no
    // `S`, no authentication.
    let mut startup = bytes::BytesMut::new();
    postgres_protocol::message::frontend::startup_message(
        [("user", "postgres"), ("database", ryw_cluster::DATABASE)],
        &mut startup,
    )
    .unwrap();
    let mut both = SSL_REQUEST.to_vec();
    both.extend_from_slice(&startup);
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&both).await.unwrap();
    let got = read_to_end(&mut tcp).await;
    let text = String::from_utf8_lossy(&got);
    assert_eq!(got.first(), Some(&b'E'), "{text}");
    assert!(
        text.contains("received unencrypted data after SSL request"),
        "{text}"
    );
    assert!(
        !got.starts_with(b"S") && !text.contains("R\0\0\0\x08"),
        "{text}"
    );

    // A client that gets `S` and never starts the handshake is dropped at
    // the login timeout (1 s here), its place among pending logins freed.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&SSL_REQUEST).await.unwrap();
    assert_eq!(tcp.read_u8().await.unwrap(), b'S');
    let waited = Instant::now();
    let got = read_to_end(&mut tcp).await;
    let took = waited.elapsed();
    assert!(got.is_empty(), "nothing but the close: {got:?}");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "closed at the login timeout, after {took:?}"
    );
    // And the proxy still serves.
    plain.simple_query("SELECT 1").await.unwrap();
}
