//! `ryw serve` and `ryw bench` through the real binary, as a user runs them:
//! `--cluster` uses the cluster's Redis unless `--redis-url` says otherwise,
//! a leader that cannot be reached is reported once with its address, and
//! captured output carries no colour codes nor the service's start-up lines
//! in the middle of the bench's own story; an unknown `--scope` is refused
//! with the choices.

use rand::Rng;
use ryw_cluster::harness::{TestCluster, TestClusterOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A `ryw serve` child process, killed on drop (also when the test panics).
struct Serve {
    child: Child,
    port: u16,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Starts `ryw serve ARGS --listen 127.0.0.1:<random port below 32768>`
    /// and waits until it answers `/readyz`.
    fn start(args: &[&str]) -> Serve {
        for _ in 0..5 {
            let port = rand::rng().random_range(20_000..31_000u16);
            let child = Command::new(env!("CARGO_BIN_EXE_ryw"))
                .arg("serve")
                .args(args)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .env_remove("RYW_REDIS_URL")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("running ryw serve");
            let mut serve = Serve { child, port };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = serve.child.try_wait().unwrap() {
                    let mut err = String::new();
                    let _ = serve.child.stderr.take().unwrap().read_to_string(&mut err);
                    // Another process took the port: try another one.
                    assert!(
                        err.contains("binding"),
                        "ryw serve exited ({status}): {err}"
                    );
                    break;
                }
                if get(port, "/readyz", None).is_some_and(|(status, _)| status == 200) {
                    return serve;
                }
                assert!(Instant::now() < deadline, "ryw serve never became ready");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("no free port for ryw serve after 5 tries");
    }
}

/// A plain HTTP/1.1 request; `(status, body)`, or `None` when nothing answers.
fn get(port: u16, path: &str, post_as: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = match post_as {
        Some(user) => format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nX-Demo-UserId: {user}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        None => format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    };
    s.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let status = answer.get(9..12)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// Whether `key` exists in Redis database `db` (RESP over a plain socket).
fn redis_has(port: u16, db: u32, key: &str) -> bool {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("redis answers");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let cmd = |parts: &[&str]| {
        let mut out = format!("*{}\r\n", parts.len());
        for p in parts {
            out += &format!("${}\r\n{p}\r\n", p.len());
        }
        out
    };
    w.write_all(cmd(&["SELECT", &db.to_string()]).as_bytes())
        .unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "+OK\r\n");
    w.write_all(cmd(&["EXISTS", key]).as_bytes()).unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    line == ":1\r\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_cluster_with_redis_keeps_sessions_there_unless_given_another_url() {
    let cluster = TestCluster::start_with(TestClusterOptions {
        lags: vec![Duration::ZERO],
        redis: true,
    })
    .await;
    let dir = cluster.dir();
    let dir = dir.to_str().unwrap();
    let redis_port = cluster.info().redis.expect("the cluster's redis").port;

    // No --redis-url: the cluster's Redis, database 0.
    let alice = "11111111-1111-4111-8111-111111111111";
    {
        let serve = Serve::start(&["--cluster", dir]);
        let (status, body) = get(serve.port, "/api/cluster", None).unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["session_store"]["kind"], "redis", "{body}");
        assert_eq!(v["session_store"]["healthy"], true, "{body}");
        let (status, body) = get(serve.port, "/api/account", Some(alice)).unwrap();
        assert_eq!(status, 201, "{body}");
        assert!(redis_has(redis_port, 0, &format!("ryw:user:{alice}:lsn")));
    }

    // An explicit --redis-url wins: the same server, database 5.
    let bob = "22222222-2222-4222-8222-222222222222";
    let url = format!("redis://127.0.0.1:{redis_port}/5");
    let serve = Serve::start(&["--cluster", dir, "--redis-url", &url]);
    let (status, body) = get(serve.port, "/api/account", Some(bob)).unwrap();
    assert_eq!(status, 201, "{body}");
    assert!(redis_has(redis_port, 5, &format!("ryw:user:{bob}:lsn")));
    assert!(!redis_has(redis_port, 0, &format!("ryw:user:{bob}:lsn")));
}

#[test]
fn an_unreachable_leader_is_reported_once_with_its_address_and_without_colour() {
    // Nothing listens on these ports (below 32768, never handed out to
    // clients, and no test cluster uses the 19xxx block).
    let o = Command::new(env!("CARGO_BIN_EXE_ryw"))
        .args([
            "serve",
            "--leader-url",
            "postgres://postgres@127.0.0.1:19991/ryw",
            "--follower-url",
            "postgres://postgres@127.0.0.1:19992/ryw",
            "--listen",
            "127.0.0.1:19993",
        ])
        .env_remove("RYW_REDIS_URL")
        .output()
        .expect("running ryw serve");
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("error: cannot connect to the leader at 127.0.0.1:19991: "),
        "{out}"
    );
    assert_eq!(
        out.matches("onnection refused").count(),
        1,
        "said more than once: {out}"
    );
    assert!(
        !out.contains("Error occurred while creating a new object"),
        "{out}"
    );
    // Its warning about the random token key, captured: no ANSI escapes.
    assert!(out.contains("WARN"), "{out}");
    assert!(
        !out.contains('\u{1b}'),
        "colour codes in captured output: {out:?}"
    );
}

#[test]
fn an_unknown_scope_on_serve_or_proxy_is_refused_before_anything_starts() {
    for command in ["serve", "proxy"] {
        let o = Command::new(env!("CARGO_BIN_EXE_ryw"))
            .args([
                command,
                "--scope",
                "universe",
                "--leader-url",
                "postgres://postgres@127.0.0.1:19991/ryw",
            ])
            .env_remove("RYW_SCOPE")
            .output()
            .expect("running ryw");
        let out = text(&o);
        assert!(!o.status.success(), "{out}");
        assert!(out.contains("--scope"), "{out}");
        assert!(
            out.contains("use one of connection, session, global, cluster"),
            "{command}: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_prints_its_own_story_without_the_services_start_up_lines() {
    let cluster = TestCluster::start(&[Duration::ZERO]).await;
    let dir = cluster.dir();
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_ryw"))
        .args(["bench", "--cluster", dir.to_str().unwrap()])
        .args(["--strategies", "causal", "--users", "2", "--duration", "1s"])
        .args(["--think", "0ms", "--quiet"])
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("running ryw bench");
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("strategy") && out.contains("causal"), "{out}");
    for line in [
        "follower in rotation",
        "leader reachable",
        "applied migration",
        " INFO ",
    ] {
        assert!(
            !out.contains(line),
            "{line:?} in the bench's output:\n{out}"
        );
    }
    assert!(
        !out.contains('\u{1b}'),
        "colour codes in captured output: {out:?}"
    );
}
