//! `ryw proxy --auth-file F` as a process of its own: `SIGHUP` reloads the
//! file without dropping anyone. A client logged in with the old password
//! keeps working; the new password logs in, the old one is refused; a
//! file that does not parse leaves the last good one in force; the proxy
//! is still up after every signal.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ryw_cluster::harness::TestCluster;
use tokio_postgres::NoTls;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn login(port: u16, password: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user("postgres")
        .password(password)
        .dbname(ryw_cluster::DATABASE)
        .connect_timeout(Duration::from_secs(5));
    let (client, conn) = cfg.connect(NoTls).await?;
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
async fn sighup_reloads_the_auth_file_without_dropping_clients() {
    let cluster = TestCluster::start(&[Duration::ZERO]).await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "\"postgres\" \"first-password\"\n").unwrap();
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
            .arg("--auth-file")
            .arg(file.path())
            .env_remove("RYW_REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running ryw proxy"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let old = loop {
        if let Ok(c) = login(port, "first-password").await {
            break c;
        }
        assert!(proxy.0.try_wait().unwrap().is_none(), "ryw proxy exited");
        assert!(Instant::now() < deadline, "ryw proxy never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    std::fs::write(file.path(), "\"postgres\" \"second-password\"\n").unwrap();
    hup(&proxy.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let new = loop {
        if let Ok(c) = login(port, "second-password").await {
            break c;
        }
        assert!(
            proxy.0.try_wait().unwrap().is_none(),
            "ryw proxy exited on SIGHUP"
        );
        assert!(
            Instant::now() < deadline,
            "the new password never logged in"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let e = login(port, "first-password")
        .await
        .expect_err("the old password is refused after the reload");
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("28P01"),
        "{e:?}"
    );
    for c in [&old, &new] {
        let one: i32 = c
            .query_one("SELECT 1", &[])
            .await
            .expect("still served")
            .get(0);
        assert_eq!(one, 1);
    }

    // A file that does not parse: the last good one stays in force.
    std::fs::write(file.path(), "postgres second-password without quotes\n").unwrap();
    hup(&proxy.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(proxy.0.try_wait().unwrap().is_none(), "ryw proxy exited");
    login(port, "second-password")
        .await
        .expect("the last good file is still in force");
    old.query_one("SELECT 1", &[]).await.expect("still served");
}
