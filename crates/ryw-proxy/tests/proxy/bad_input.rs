//! Malformed, truncated and oversized protocol input: answered with an
//! `ErrorResponse` (08P01, or the code PostgreSQL itself uses) where one can
//! still be sent, the connection closed, and the proxy unaffected for a
//! well-behaved client that runs queries all along.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Ctx, Setup, direct};

fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608i32.to_be_bytes());
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

fn good_startup() -> Vec<u8> {
    startup(&[("user", "postgres"), ("database", ryw_cluster::DATABASE)])
}

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// What came back: the SQLSTATEs of the error messages, and whether the
/// proxy closed the connection (within 5 s).
#[derive(Debug, Default)]
struct Answer {
    codes: Vec<String>,
    closed: bool,
    ready: usize,
}

/// Sends `steps` (each written after the previous, a short pause between)
/// and reads everything back until the proxy closes.
async fn exchange(addr: std::net::SocketAddr, steps: &[Vec<u8>], then_close: bool) -> Answer {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    for step in steps {
        if s.write_all(step).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if then_close {
        let _ = s.shutdown().await;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break false,
        }
    };
    let mut answer = Answer {
        closed,
        ..Answer::default()
    };
    let mut at = 0;
    // An SSL refusal is one byte `N`.
    if buf.first() == Some(&b'N') && buf.len() == 1 {
        return answer;
    }
    while at + 5 <= buf.len() {
        let tag = buf[at];
        let len = i32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
        let end = (at + 1 + len).min(buf.len());
        if tag == b'E' {
            let body = &buf[at + 5..end];
            let mut i = 0;
            while i < body.len() && body[i] != 0 {
                let kind = body[i];
                let rest = &body[i + 1..];
                let n = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                if kind == b'C' {
                    answer
                        .codes
                        .push(String::from_utf8_lossy(&rest[..n]).into_owned());
                }
                i += 1 + n + 1;
            }
        }
        if tag == b'Z' {
            answer.ready += 1;
        }
        at += 1 + len;
    }
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_gets_08p01_and_a_closed_connection_and_disturbs_no_one_else() {
    let ctx = Ctx::start(Setup {
        lags: vec![Duration::ZERO],
        ..Setup::default()
    })
    .await;
    let addr = ctx.proxy.addr;

    // A well-behaved client, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let good = {
        let client = ctx.client().await;
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.query_one("SELECT 1", &[]).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let after = |msgs: &[Vec<u8>]| {
        let mut steps = vec![good_startup()];
        steps.extend(msgs.iter().cloned());
        steps
    };
    let mut len_4 = 4i32.to_be_bytes().to_vec();
    len_4.extend_from_slice(&[0, 3, 0, 0]);
    let mut huge_startup = 100_000i32.to_be_bytes().to_vec();
    huge_startup.extend_from_slice(&196_608i32.to_be_bytes());
    let mut v2 = 8i32.to_be_bytes().to_vec();
    v2.extend_from_slice(&131_072i32.to_be_bytes());
    let mut unterminated = good_startup();
    let n = unterminated.len();
    unterminated.truncate(n - 3);
    let fixed = (unterminated.len() as i32).to_be_bytes();
    unterminated[..4].copy_from_slice(&fixed);

    // (what, the bytes, the SQLSTATE that must come back)
    let cases: Vec<(&str, Vec<Vec<u8>>, &str)> = vec![
        ("startup length below 8", vec![len_4], "08P01"),
        (
            "startup packet of 100,000 bytes",
            vec![huge_startup],
            "08P01",
        ),
        ("protocol 2.0", vec![v2], "0A000"),
        (
            "startup parameters not terminated",
            vec![unterminated],
            "08P01",
        ),
        ("no user", vec![startup(&[("database", "ryw")])], "28000"),
        (
            "replication connection",
            vec![startup(&[("user", "postgres"), ("replication", "true")])],
            "0A000",
        ),
        (
            "negative message length",
            after(&[vec![b'Q', 0xff, 0xff, 0xff, 0x00]]),
            "08P01",
        ),
        (
            "message length below 4",
            after(&[vec![b'Q', 0, 0, 0, 2]]),
            "08P01",
        ),
        (
            "message over 64 MiB",
            after(&[vec![b'Q', 0x05, 0, 0, 0]]),
            "08P01",
        ),
        (
            "unknown message type",
            after(&[message(b'?', b"")]),
            "08P01",
        ),
        (
            "Query without its NUL",
            after(&[message(b'Q', b"SELECT 1")]),
            "08P01",
        ),
        (
            "Parse with a negative parameter count",
            after(&[message(b'P', b"\0SELECT 1\0\xff\xfe")]),
            "08P01",
        ),
        (
            "Describe of an unknown kind",
            after(&[message(b'D', b"Xname\0")]),
            "08P01",
        ),
        ("Sync with a body", after(&[message(b'S', b"x")]), "08P01"),
        (
            "password message after the startup",
            after(&[message(b'p', b"secret\0")]),
            "08P01",
        ),
        (
            "Execute cut short",
            after(&[message(b'E', b"\0\0")]),
            "08P01",
        ),
        (
            "Close without a name",
            after(&[message(b'C', b"S")]),
            "08P01",
        ),
    ];
    let mut kinds = 0;
    for (what, steps, code) in &cases {
        let a = exchange(addr, steps, false).await;
        eprintln!("{what}: {a:?}");
        assert!(
            a.codes.iter().any(|c| c == code),
            "{what}: expected {code}, got {a:?}"
        );
        assert!(
            a.closed,
            "{what}: the proxy must close the connection: {a:?}"
        );
        kinds += 1;
    }

    // Cut short: half a startup, half a message, a client gone mid-query
    // and mid-COPY. Nothing to answer; nothing may hang or leak.
    let mut half_startup = good_startup();
    half_startup.truncate(6);
    exchange(addr, &[half_startup], true).await;
    exchange(
        addr,
        &after(&[message(b'Q', b"SELECT 1\0")[..4].to_vec()]),
        true,
    )
    .await;
    exchange(
        addr,
        &after(&[message(b'Q', b"SELECT pg_sleep(30)\0")]),
        true,
    )
    .await;
    let leader = direct(&ctx.cluster.leader_url()).await;
    leader
        .batch_execute("CREATE TABLE copied (x int)")
        .await
        .unwrap();
    let mut copy_data = message(b'd', b"1\n");
    copy_data.extend(message(b'd', b"2\n"));
    exchange(
        addr,
        &after(&[message(b'Q', b"COPY copied FROM STDIN\0"), copy_data]),
        true,
    )
    .await;
    kinds += 4;

    // Random message streams after a valid startup (seeded, so a failure
    // repeats): every one is answered or closed, none hangs the proxy.
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261130);
    for _ in 0..60 {
        let mut stream = Vec::new();
        for _ in 0..rng.random_range(1..6) {
            let tag = *b"QPBDECSHXdcfF?pZ".get(rng.random_range(0..16)).unwrap();
            let len = rng.random_range(0..40);
            let body: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            stream.push(message(tag, &body));
        }
        let a = exchange(addr, &after(&stream), true).await;
        assert!(a.closed, "a random stream left the connection open: {a:?}");
    }
    kinds += 1;

    // The slow query's and the COPY's backends are gone, and the COPY left
    // nothing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let busy: i64 = leader
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%' \
                 OR query LIKE 'COPY copied%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if busy == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "backends of departed clients linger"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let copied: i64 = leader
        .query_one("SELECT count(*) FROM copied", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(copied, 0, "a COPY its client abandoned commits nothing");

    stop.store(true, Ordering::Relaxed);
    good.await.unwrap();
    eprintln!(
        "{kinds} kinds of bad input; the good client ran {} queries, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert!(kinds >= 15);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "the good client was disturbed"
    );
    assert!(ok.load(Ordering::Relaxed) > 50);
}
