//! `ryw proxy --tls-cert C --tls-key K --tls-mode require` as a process of
//! its own: clients log in over TLS only; `SIGHUP` reads a new certificate
//! and key (from another CA) without dropping anyone: new clients are
//! checked against the new CA, a client that trusts only the old one is
//! refused, the client logged in before keeps working. `--tls-mode
//! require` without a certificate stops at start with the reason.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use ryw_cluster::harness::TestCluster;
use ryw_router::tls::{NodeTls, SslMode};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CA (`<name>-ca.pem`) and a certificate from it for `127.0.0.1`
/// (`<name>.crt`, `<name>.key`) in `dir`.
fn issue(dir: &Path, name: &str) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} CA"));
    std::fs::write(
        dir.join(format!("{name}-ca.pem")),
        ca.self_signed(&ca_key).unwrap().pem(),
    )
    .unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

/// A client over TLS that trusts only `ca`.
async fn login(port: u16, ca: &Path) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname(ryw_cluster::DATABASE)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(5));
    let tls = NodeTls::new(SslMode::VerifyFull, Some(ca)).unwrap();
    let (client, conn) = cfg.connect(tls.make_connect()).await?;
    tokio::spawn(conn);
    Ok(client)
}

fn hup(child: &Child) {
    let ok = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -HUP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_tls_certificate_without_dropping_clients() {
    let cluster = TestCluster::start(&[Duration::ZERO]).await;
    let dir = tempfile::tempdir().unwrap();
    issue(dir.path(), "first");
    issue(dir.path(), "second");
    let (cert, key) = (dir.path().join("proxy.crt"), dir.path().join("proxy.key"));
    std::fs::copy(dir.path().join("first.crt"), &cert).unwrap();
    std::fs::copy(dir.path().join("first.key"), &key).unwrap();

    // Without a certificate, require is refused at start, with the reason.
    let refused = Command::new(env!("CARGO_BIN_EXE_ryw"))
        .arg("proxy")
        .arg("--cluster")
        .arg(cluster.dir())
        .args(["--listen", "127.0.0.1:0", "--tls-mode", "require"])
        .env_remove("RYW_REDIS_URL")
        .output()
        .expect("running ryw proxy");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("--tls-mode require needs --tls-cert and --tls-key"),
        "{err}"
    );

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut proxy = Killed(
        Command::new(env!("CARGO_BIN_EXE_ryw"))
            .arg("proxy")
            .arg("--cluster")
            .arg(cluster.dir())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .args(["--tls-mode", "require"])
            .env_remove("RYW_REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running ryw proxy"),
    );
    let first_ca = dir.path().join("first-ca.pem");
    let second_ca = dir.path().join("second-ca.pem");
    let deadline = Instant::now() + Duration::from_secs(30);
    let old = loop {
        if let Ok(c) = login(port, &first_ca).await {
            break c;
        }
        assert!(proxy.0.try_wait().unwrap().is_none(), "ryw proxy exited");
        assert!(Instant::now() < deadline, "ryw proxy never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    login(port, &second_ca)
        .await
        .expect_err("the second CA did not sign the first certificate");

    std::fs::copy(dir.path().join("second.crt"), &cert).unwrap();
    std::fs::copy(dir.path().join("second.key"), &key).unwrap();
    hup(&proxy.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let new = loop {
        if let Ok(c) = login(port, &second_ca).await {
            break c;
        }
        assert!(
            proxy.0.try_wait().unwrap().is_none(),
            "ryw proxy exited on SIGHUP"
        );
        assert!(
            Instant::now() < deadline,
            "the new certificate was never used"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let e = login(port, &first_ca)
        .await
        .expect_err("the old CA no longer fits after the reload");
    assert!(format!("{e:?}").contains("UnknownIssuer"), "{e:?}");
    for c in [&old, &new] {
        let one: i32 = c
            .query_one("SELECT 1", &[])
            .await
            .expect("still served")
            .get(0);
        assert_eq!(one, 1);
    }

    // A key that does not load: the last good pair stays in force.
    std::fs::write(&key, "not a key\n").unwrap();
    hup(&proxy.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(proxy.0.try_wait().unwrap().is_none(), "ryw proxy exited");
    login(port, &second_ca)
        .await
        .expect("the last good pair is still in force");
}
