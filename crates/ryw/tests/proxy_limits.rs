//! `ryw proxy` as a process of its own, against clients that try to make
//! it hold memory or lock others out: its resident memory is read from
//! `/proc` while they try, so nothing else of the test's counts.
//!
//! - 48 `Parse` messages of 8 MiB without a `Sync`: refused (54000) once
//!   the client's limit is reached, the connection closed;
//! - three clients asking for a 200 MiB row and not reading it: the row is
//!   relayed in pieces as the clients read, so nothing piles up; a fourth
//!   that reads gets all of it;
//! - 1,000 sockets that connect and send nothing: a real client still logs
//!   in, and they are closed at the login timeout.

use rand::Rng;
use ryw_cluster::harness::TestCluster;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `ryw proxy` child process, killed on drop.
struct ProxyProcess {
    child: Child,
    port: u16,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ProxyProcess {
    fn start(dir: &std::path::Path, args: &[&str]) -> ProxyProcess {
        for _ in 0..5 {
            let port = rand::rng().random_range(20_000..31_000u16);
            let child = Command::new(env!("CARGO_BIN_EXE_ryw"))
                .arg("proxy")
                .arg("--cluster")
                .arg(dir)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(args)
                .env_remove("RYW_REDIS_URL")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("running ryw proxy");
            let mut proxy = ProxyProcess { child, port };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if proxy.child.try_wait().unwrap().is_some() {
                    break; // the port was taken: another one
                }
                if let Ok(mut c) = login(port, "postgres")
                    && query(&mut c, "SELECT 1").is_some()
                {
                    return proxy;
                }
                assert!(Instant::now() < deadline, "ryw proxy never answered");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("no free port for ryw proxy after 5 tries");
    }

    /// Resident memory now, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the proxy's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// Reads one message: (tag, body); `None` at end of stream.
fn next(c: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    c.read_exact(&mut head).ok()?;
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize - 4;
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).ok()?;
    Some((head[0], body))
}

/// Logs in (trust) and reads up to the first ReadyForQuery.
fn login(port: u16, user: &str) -> std::io::Result<TcpStream> {
    let mut c = TcpStream::connect(("127.0.0.1", port))?;
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut body = 196_608i32.to_be_bytes().to_vec();
    for (k, v) in [("user", user), ("database", ryw_cluster::DATABASE)] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = (body.len() as i32 + 4).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    c.write_all(&packet)?;
    loop {
        match next(&mut c) {
            Some((b'Z', _)) => return Ok(c),
            Some((b'E', _)) | None => {
                return Err(std::io::Error::other("login refused"));
            }
            Some(_) => {}
        }
    }
}

/// A simple query: the messages up to ReadyForQuery, `None` if the
/// connection closed first.
fn query(c: &mut TcpStream, sql: &str) -> Option<Vec<(u8, Vec<u8>)>> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    c.write_all(&message(b'Q', &body)).ok()?;
    let mut out = Vec::new();
    loop {
        let m = next(c)?;
        let done = m.0 == b'Z';
        out.push(m);
        if done {
            return Some(out);
        }
    }
}

/// The SQLSTATE of an ErrorResponse body.
fn sqlstate(body: &[u8]) -> String {
    let mut rest = body;
    while let Some((&k, tail)) = rest.split_first() {
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        if k == b'C' {
            return String::from_utf8_lossy(&tail[..end]).into_owned();
        }
        if k == 0 {
            break;
        }
        rest = &tail[(end + 1).min(tail.len())..];
    }
    String::new()
}

/// The highest RSS seen while `during` runs on another thread.
fn peak_rss_during(proxy: &ProxyProcess, during: impl FnOnce() + Send + 'static) -> u64 {
    let worker = std::thread::spawn(during);
    let mut peak = proxy.rss();
    while !worker.is_finished() {
        peak = peak.max(proxy.rss());
        std::thread::sleep(Duration::from_millis(20));
    }
    worker.join().expect("the scenario thread");
    peak.max(proxy.rss())
}

const MB: u64 = 1 << 20;

#[test]
fn a_client_cannot_make_the_proxy_hold_its_batches_or_big_rows() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = rt.block_on(TestCluster::start(&[Duration::ZERO]));
    let proxy = ProxyProcess::start(&cluster.dir(), &[]);
    let port = proxy.port;
    let mut warm = login(port, "postgres").unwrap();
    query(&mut warm, "SELECT count(*) FROM pg_class").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let idle = proxy.rss();

    // 48 Parse messages of 8 MiB, no Sync.
    let peak = peak_rss_during(&proxy, move || {
        let mut c = login(port, "postgres").unwrap();
        let text = format!("SELECT '{}'", "x".repeat(8 << 20));
        let mut body = b"big\0".to_vec();
        body.extend_from_slice(text.as_bytes());
        body.extend_from_slice(&[0, 0, 0]);
        let parse = message(b'P', &body);
        let mut sent = 0;
        for _ in 0..48 {
            if c.write_all(&parse).is_err() {
                break;
            }
            sent += 1;
        }
        let refusal = next(&mut c).expect("an answer before the close");
        assert_eq!(refusal.0, b'E', "refused");
        assert_eq!(sqlstate(&refusal.1), "54000");
        assert!(sent < 48, "the proxy read all 384 MiB");
        assert!(next(&mut c).is_none(), "and closed");
    });
    eprintln!(
        "Parse flood: idle {} MiB, peak {} MiB",
        idle / MB,
        peak / MB
    );
    assert!(
        peak < idle + 100 * MB,
        "RSS {} MiB over idle {} MiB",
        peak / MB,
        idle / MB
    );
    let mut after = login(port, "postgres").expect("others are served");
    assert!(query(&mut after, "SELECT 1").is_some());

    // Three clients ask for a 200 MiB row and do not read it.
    let row = 200 << 20;
    let sql = format!("SELECT repeat('x', {row})");
    let slow: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut c = login(port, "postgres").unwrap();
            let mut body = sql.as_bytes().to_vec();
            body.push(0);
            c.write_all(&message(b'Q', &body)).unwrap();
            c
        })
        .collect();
    let peak = peak_rss_during(&proxy, || std::thread::sleep(Duration::from_secs(4)));
    eprintln!(
        "200 MiB rows unread: idle {} MiB, peak {} MiB",
        idle / MB,
        peak / MB
    );
    assert!(
        peak < idle + 100 * MB,
        "RSS {} MiB over idle {} MiB",
        peak / MB,
        idle / MB
    );
    drop(slow);
    // One that reads gets the whole row, byte for byte.
    let mut reader = login(port, "postgres").unwrap();
    let answer = query(&mut reader, &sql).expect("the row");
    let data = answer.iter().find(|(t, _)| *t == b'D').expect("a DataRow");
    assert_eq!(data.1.len(), 2 + 4 + row);
    assert!(data.1[6..].iter().all(|&b| b == b'x'));
}

#[test]
fn sockets_that_never_log_in_do_not_lock_clients_out() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = rt.block_on(TestCluster::start(&[Duration::ZERO]));
    let proxy = ProxyProcess::start(
        &cluster.dir(),
        &["--max-clients", "50", "--login-timeout", "3s"],
    );
    let idle: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(("127.0.0.1", proxy.port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let mut c = login(proxy.port, "postgres").expect("a real client logs in");
    assert!(query(&mut c, "SELECT 1").is_some());
    eprintln!(
        "logged in beside 1,000 idle sockets in {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // They are closed: evicted by newer ones, or at the login timeout.
    std::thread::sleep(Duration::from_secs(4));
    let mut closed = 0;
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => {
                    closed += 1;
                    break;
                }
                Ok(_) => continue, // the FATAL before the close
                Err(_) => break,
            }
        }
    }
    assert_eq!(closed, 1000, "idle sockets closed at the login timeout");
}
