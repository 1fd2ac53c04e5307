//! The HTTP front against slow, idle and oversized clients, over real
//! sockets to a real listening service (`docs/reliability.md`, "Slow and
//! idle clients"): half-sent and trickled heads are closed after the header
//! timeout, silent connections after the idle timeout, the connection cap
//! refuses the excess with a 503 and keeps serving the others, and a 3 MB
//! payment body is answered 413 every time (the lingering close).

use crate::helpers::*;
use ryw_cluster::harness::TestCluster;
use ryw_service::{Service, ServiceConfig};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest any single socket step may take before the test fails: far above
/// every limit under test, so only a hang trips it.
const HANG: Duration = Duration::from_secs(20);

/// A service listening on a real port, stopped on `stop`.
struct Listening {
    _cluster: TestCluster,
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Listening {
    async fn start(tweak: impl FnOnce(&mut ServiceConfig)) -> Listening {
        init_logs();
        let cluster = TestCluster::start(&[Duration::ZERO]).await;
        let mut cfg = config(&cluster);
        tweak(&mut cfg);
        let service = Service::build(cfg).await.expect("service starts");
        wait_followers_in_rotation(&service.state()).await;
        let addr = service.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(service.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Listening {
            _cluster: cluster,
            addr,
            stop,
            task,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.expect("connect")
    }

    /// Stops the service; it must stop within the drain time.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(HANG, self.task)
            .await
            .expect("the service stops")
            .unwrap()
            .unwrap();
    }
}

/// One response: status, head (lowercase), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Reads one response with a `Content-Length` body.
async fn read_answer(s: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(HANG, s.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("reading the answer");
        assert!(
            n > 0,
            "closed before a complete answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status = head[9..12].parse().expect("a status code");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("a content-length");
    while buf.len() < head_end + len {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(HANG, s.read(&mut chunk))
            .await
            .expect("the body in time")
            .expect("reading the body");
        assert!(n > 0, "closed in the middle of the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    Answer {
        status,
        head,
        body: String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned(),
    }
}

/// Waits until the server closes `s` (EOF or reset) and returns when.
async fn closed(s: &mut TcpStream) -> Instant {
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(HANG, s.read(&mut chunk))
            .await
            .expect("the server closed the connection in time")
        {
            Ok(0) | Err(_) => return Instant::now(),
            Ok(_) => {}
        }
    }
}

async fn get_healthz(s: &mut TcpStream) -> Answer {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    read_answer(s).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_and_trickled_request_heads_are_closed_after_the_header_timeout() {
    let header = Duration::from_secs(1);
    let svc = Listening::start(|c| {
        c.front.header_read_timeout = header;
        c.front.idle_timeout = Duration::from_secs(60);
    })
    .await;

    // 40 connections send half a request head and then nothing.
    let mut half = Vec::new();
    for _ in 0..40 {
        let mut s = svc.connect().await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Half: ")
            .await
            .unwrap();
        half.push((s, Instant::now()));
    }
    // 3 more trickle their head, one byte every 200 ms, never finishing it:
    // bytes arriving do not reset the header timer.
    let trickles: Vec<_> = (0..3)
        .map(|_| {
            let addr = svc.addr;
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let first = Instant::now();
                s.write_all(b"G").await.unwrap();
                for b in b"ET /healthz HTTP/1.1\r\nX-Slow: ".iter().cycle() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if s.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    assert!(first.elapsed() < HANG, "a trickled head was never closed");
                }
                (first, closed(&mut s).await)
            })
        })
        .collect();

    // Meanwhile the server answers others.
    let mut other = svc.connect().await;
    assert_eq!(get_healthz(&mut other).await.status, 200);

    for (mut s, sent) in half {
        let at = closed(&mut s).await;
        assert!(
            at.duration_since(sent) >= header,
            "closed {:?} after the half head, before the header timeout",
            at.duration_since(sent)
        );
    }
    for t in trickles {
        let (first, at) = t.await.unwrap();
        assert!(at.duration_since(first) >= header, "{:?}", at - first);
    }
    eprintln!("43 slow heads closed after the {header:?} header timeout");

    // The well-behaved keep-alive connection is still served.
    assert_eq!(get_healthz(&mut other).await.status, 200);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_idle_timeout_and_active_ones_are_not() {
    let idle = Duration::from_secs(1);
    let svc = Listening::start(|c| {
        c.front.idle_timeout = idle;
        c.front.header_read_timeout = Duration::from_secs(30);
    })
    .await;

    // A connection that never sends a byte.
    let mut silent = svc.connect().await;
    let opened = Instant::now();
    // A keep-alive connection, silent after one answer.
    let mut kept = svc.connect().await;
    assert_eq!(get_healthz(&mut kept).await.status, 200);
    let answered = Instant::now();
    // A keep-alive connection that asks every 300 ms for 2.4 s: never idle
    // for a whole second, so never closed.
    let mut busy = svc.connect().await;
    for _ in 0..8 {
        assert_eq!(get_healthz(&mut busy).await.status, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let at = closed(&mut silent).await;
    assert!(at.duration_since(opened) >= idle, "{:?}", at - opened);
    let at = closed(&mut kept).await;
    assert!(at.duration_since(answered) >= idle, "{:?}", at - answered);
    assert_eq!(get_healthz(&mut busy).await.status, 200);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_refuses_the_excess_with_a_503_and_keeps_serving() {
    let cap = 8;
    let svc = Listening::start(|c| c.front.max_connections = cap).await;

    let mut held = Vec::new();
    for _ in 0..cap {
        let mut s = svc.connect().await;
        assert_eq!(get_healthz(&mut s).await.status, 200);
        held.push(s);
    }
    // Over the cap: a clean refusal, several times over.
    for _ in 0..5 {
        let mut extra = svc.connect().await;
        let a = get_healthz(&mut extra).await;
        assert_eq!(a.status, 503, "{a:?}");
        assert!(
            a.head.contains("content-type: application/problem+json"),
            "{a:?}"
        );
        assert!(a.head.contains("connection: close"), "{a:?}");
        assert!(a.head.contains("retry-after: 1"), "{a:?}");
        assert!(a.body.contains("/problems/too-many-connections"), "{a:?}");
        closed(&mut extra).await;
    }
    // The held connections are served as before.
    for s in &mut held {
        assert_eq!(get_healthz(s).await.status, 200);
    }
    // Closing some frees their slots: new connections are served again.
    held.truncate(cap - 2);
    let deadline = Instant::now() + HANG;
    loop {
        let mut s = svc.connect().await;
        let a = get_healthz(&mut s).await;
        if a.status == 200 {
            break;
        }
        assert_eq!(a.status, 503, "{a:?}");
        assert!(Instant::now() < deadline, "slots never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_mb_payment_body_is_answered_413_every_time_and_charges_nothing() {
    let svc = Listening::start(|_| {}).await;
    let u = user();
    let mut s = svc.connect().await;
    let create = format!("POST /api/account HTTP/1.1\r\nHost: t\r\nX-Demo-UserId: {u}\r\n\r\n");
    s.write_all(create.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut s).await.status, 201);

    let body = {
        let mut b = br#"{"amount_cents": 1, "description": ""#.to_vec();
        b.resize(3 * 1024 * 1024 - 2, b'x');
        b.extend_from_slice(br#""}"#);
        b
    };
    let head = format!(
        "POST /api/payments HTTP/1.1\r\nHost: t\r\nX-Demo-UserId: {u}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    for i in 0..20 {
        // As a plain client does: send the whole request, then read. A
        // small send buffer keeps most of the body in the client, as over a
        // real network: without the lingering close, the server's close
        // (with the body unread) resets the connection while the client is
        // still sending, and the client never reads its 413.
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_send_buffer_size(64 * 1024).unwrap();
        let mut c = sock.connect(svc.addr).await.expect("connect");
        tokio::time::timeout(HANG, async {
            c.write_all(head.as_bytes()).await?;
            c.write_all(&body).await
        })
        .await
        .expect("the body was taken in time")
        .unwrap_or_else(|e| panic!("try {i}: sending the body failed: {e}"));
        let a = read_answer(&mut c).await;
        assert_eq!(a.status, 413, "try {i}: {a:?}");
        assert!(
            a.body.contains("/problems/body-too-large"),
            "try {i}: {a:?}"
        );
    }
    eprintln!("20 of 20 bodies of 3 MiB answered 413");

    // Nothing was charged.
    let mut s = svc.connect().await;
    let read = format!(
        "GET /api/balance HTTP/1.1\r\nHost: t\r\nX-Demo-UserId: {u}\r\nX-Read-Strategy: leader\r\n\r\n"
    );
    s.write_all(read.as_bytes()).await.unwrap();
    let a = read_answer(&mut s).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.body.contains(r#""version":0"#), "{a:?}");
    svc.stop().await;
}
