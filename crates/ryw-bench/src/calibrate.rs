//! Throughput calibration, the HTTP side of `ryw bench calibrate`: a
//! closed-loop load generator (N keep-alive connections, each sending the
//! next request as soon as the last answer arrived, for a fixed time) and
//! the "A B A B" comparison table that sets its figures beside pgbench's.
//!
//! `wrk`, when installed, is the generator of choice (`--generator`, see
//! [`Generator`]); the built-in one drives hyper's HTTP/1 connection directly, one connection
//! per task and no pool, because it shares two cores with the service and
//! PostgreSQL: the less it spends per request, the more the figure is the
//! server's.

use crate::BenchError;
use crate::report::Latency;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HOST, HeaderName, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use std::fmt::Write as _;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// One calibration run: `GET url` with `headers` over `connections`
/// keep-alive connections for `duration`.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// `http://host:port/path?query` (plain HTTP only).
    pub url: String,
    /// Extra request headers (e.g. `X-Read-Strategy`, `X-Demo-UserId`).
    pub headers: Vec<(String, String)>,
    /// Concurrent connections, each with one request in flight.
    pub connections: usize,
    /// How long to send.
    pub duration: Duration,
    /// A request without an answer by then counts as an error and its
    /// connection is replaced.
    pub timeout: Duration,
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            url: "http://127.0.0.1:8080/api/products".into(),
            headers: Vec::new(),
            connections: 32,
            duration: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        }
    }
}

/// What a calibration run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    /// Answers received (any status).
    pub requests: u64,
    /// Answers that were not 2xx.
    pub non_2xx: u64,
    /// Connection failures and timeouts.
    pub errors: u64,
    /// Wall time of the run (s).
    pub elapsed_s: f64,
    /// `requests / elapsed_s`.
    pub requests_per_s: f64,
    /// Latency of the answered requests.
    pub latency_ms: Latency,
}

struct Target {
    host: String,
    port: u16,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

fn parse_target(spec: &LoadSpec) -> Result<Target, BenchError> {
    let uri: Uri = spec
        .url
        .parse()
        .map_err(|e| BenchError::config("url", format!("{:?}: {e}", spec.url)))?;
    if uri.scheme_str() != Some("http") {
        return Err(BenchError::config(
            "url",
            format!("{:?}: only http:// is supported", spec.url),
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| BenchError::config("url", format!("{:?} has no host", spec.url)))?
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let path = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    let mut headers = vec![(
        HOST,
        HeaderValue::from_str(&format!("{host}:{port}"))
            .map_err(|e| BenchError::config("url", e.to_string()))?,
    )];
    for (k, v) in &spec.headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| BenchError::config("header", format!("{k:?}: {e}")))?;
        let value = HeaderValue::from_str(v)
            .map_err(|e| BenchError::config("header", format!("{k}: {v:?}: {e}")))?;
        headers.push((name, value));
    }
    Ok(Target {
        host,
        port,
        path,
        headers,
    })
}

#[derive(Default)]
struct Tally {
    requests: u64,
    non_2xx: u64,
    errors: u64,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(t: &Target) -> Option<Sender> {
    let stream = TcpStream::connect((t.host.as_str(), t.port)).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// One connection's loop until `deadline`.
async fn worker(
    t: &Target,
    deadline: Instant,
    timeout: Duration,
    hist: &mut Histogram<u64>,
) -> Tally {
    let mut tally = Tally::default();
    let mut sender: Option<Sender> = None;
    while Instant::now() < deadline {
        if sender.is_none() {
            match tokio::time::timeout(timeout, connect(t)).await {
                Ok(Some(s)) => sender = Some(s),
                _ => {
                    tally.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let mut req = Request::get(t.path.as_str())
            .body(Empty::<Bytes>::new())
            .expect("a parsed path is a valid request");
        req.headers_mut().extend(t.headers.iter().cloned());
        let start = Instant::now();
        let answered = tokio::time::timeout(timeout, async {
            s.ready().await?;
            let resp = s.send_request(req).await?;
            let status = resp.status();
            resp.into_body().collect().await?;
            Ok::<_, hyper::Error>(status)
        })
        .await;
        match answered {
            Ok(Ok(status)) => {
                let us = start.elapsed().as_micros() as u64;
                hist.saturating_record(us.max(1));
                tally.requests += 1;
                tally.non_2xx += u64::from(!status.is_success());
            }
            _ => {
                tally.errors += 1;
                sender = None;
            }
        }
    }
    tally
}

/// Runs a closed-loop HTTP load: `connections` tasks, each with one
/// keep-alive connection and one request in flight, for `duration`.
pub async fn http_load(spec: &LoadSpec) -> Result<LoadResult, BenchError> {
    if spec.connections == 0 || spec.duration.is_zero() || spec.timeout.is_zero() {
        return Err(BenchError::config(
            "load",
            "connections, duration and timeout must be more than 0",
        ));
    }
    let target = std::sync::Arc::new(parse_target(spec)?);
    let start = Instant::now();
    let deadline = start + spec.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..spec.connections {
        let (t, timeout) = (target.clone(), spec.timeout);
        tasks.spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds");
            let tally = worker(&t, deadline, timeout, &mut h).await;
            (tally, h)
        });
    }
    let mut total = Tally::default();
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
    while let Some(joined) = tasks.join_next().await {
        if let Ok((t, h)) = joined {
            total.requests += t.requests;
            total.non_2xx += t.non_2xx;
            total.errors += t.errors;
            let _ = hist.add(&h);
        }
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    let ms = |us: u64| us as f64 / 1000.0;
    let latency_ms = if hist.is_empty() {
        Latency::default()
    } else {
        Latency {
            p50: ms(hist.value_at_quantile(0.5)),
            p95: ms(hist.value_at_quantile(0.95)),
            p99: ms(hist.value_at_quantile(0.99)),
            max: ms(hist.max()),
            mean: hist.mean() / 1000.0,
        }
    };
    Ok(LoadResult {
        requests: total.requests,
        non_2xx: total.non_2xx,
        errors: total.errors,
        elapsed_s,
        requests_per_s: if elapsed_s > 0.0 {
            total.requests as f64 / elapsed_s
        } else {
            0.0
        },
        latency_ms,
    })
}

/// The load generator of a calibration run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Generator {
    /// `wrk` when it is on `PATH`, else [`Generator::Builtin`].
    #[default]
    Auto,
    /// `wrk -t1` in a process of its own, as `FACTS.md` measured: it spends
    /// the least CPU per request, so the figure is most the server's.
    Wrk,
    /// [`http_load`] in this process (no install needed; it shares the
    /// process, and with an in-process service its runtime, with the
    /// server, which costs the server some of its throughput).
    Builtin,
}

impl std::str::FromStr for Generator {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<Generator, BenchError> {
        match s {
            "auto" => Ok(Generator::Auto),
            "wrk" => Ok(Generator::Wrk),
            "builtin" => Ok(Generator::Builtin),
            other => Err(BenchError::config(
                "generator",
                format!("{other:?}: expected auto, wrk or builtin"),
            )),
        }
    }
}

impl Generator {
    /// What `Auto` means on this machine.
    pub fn resolve(self) -> Generator {
        match self {
            Generator::Auto if wrk_available() => Generator::Wrk,
            Generator::Auto => Generator::Builtin,
            g => g,
        }
    }
}

fn wrk_available() -> bool {
    std::process::Command::new("wrk")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// Runs `spec` with the generator `generator` resolves to.
pub async fn load(generator: Generator, spec: &LoadSpec) -> Result<LoadResult, BenchError> {
    match generator.resolve() {
        Generator::Wrk => wrk_load(spec).await,
        _ => http_load(spec).await,
    }
}

/// Runs `spec` with `wrk -t1 -c<connections> --latency` (install: `apt-get
/// install wrk`).
pub async fn wrk_load(spec: &LoadSpec) -> Result<LoadResult, BenchError> {
    parse_target(spec)?;
    let secs = spec.duration.as_secs().max(1);
    let mut cmd = tokio::process::Command::new("wrk");
    cmd.args(["-t1", "--latency"])
        .arg(format!("-c{}", spec.connections))
        .arg(format!("-d{secs}s"))
        .arg(format!("--timeout={}s", spec.timeout.as_secs().max(1)));
    for (name, value) in &spec.headers {
        cmd.arg("-H").arg(format!("{name}: {value}"));
    }
    cmd.arg(&spec.url);
    let out = cmd.output().await.map_err(|e| {
        BenchError::config(
            "generator",
            format!("cannot run wrk ({e}); install it with `apt-get install wrk` or use --generator builtin"),
        )
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(BenchError::config(
            "generator",
            format!(
                "wrk failed: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    parse_wrk(&text)
        .ok_or_else(|| BenchError::config("generator", format!("unexpected wrk output:\n{text}")))
}

/// The figures of `wrk --latency` output (it gives no p95: left at 0).
fn parse_wrk(text: &str) -> Option<LoadResult> {
    let mut r = LoadResult {
        requests: 0,
        non_2xx: 0,
        errors: 0,
        elapsed_s: 0.0,
        requests_per_s: 0.0,
        latency_ms: Latency::default(),
    };
    let mut in_distribution = false;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Latency", "Distribution"] => in_distribution = true,
            ["Latency", avg, _, max, ..] if !in_distribution => {
                r.latency_ms.mean = wrk_ms(avg)?;
                r.latency_ms.max = wrk_ms(max)?;
            }
            [q, v] if in_distribution && q.ends_with('%') => match *q {
                "50%" => r.latency_ms.p50 = wrk_ms(v)?,
                "99%" => r.latency_ms.p99 = wrk_ms(v)?,
                _ => {}
            },
            [n, "requests", "in", t, ..] => {
                in_distribution = false;
                r.requests = n.parse().ok()?;
                r.elapsed_s = t.trim_end_matches(',').trim_end_matches('s').parse().ok()?;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.non_2xx = n.parse().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                r.errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            ["Requests/sec:", v] => r.requests_per_s = v.parse().ok()?,
            _ => {}
        }
    }
    (r.requests > 0 || r.requests_per_s > 0.0).then_some(r)
}

/// `870.00us`, `1.10ms`, `2.00s` in milliseconds.
fn wrk_ms(v: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    num.parse::<f64>().ok().map(|x| x * scale)
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Formats an "A B A B" comparison: one row per round (A's figure, B's
/// figure, B/A), then the medians, the ratio of the medians and the median
/// of the per-round ratios (the figure to quote: it cancels the drift
/// between rounds on a noisy machine).
pub fn ab_table(a_label: &str, a: &[f64], b_label: &str, b: &[f64]) -> String {
    let rounds = a.len().max(b.len());
    let cell = |x: Option<&f64>| x.map_or("-".to_string(), |v| format!("{v:.0}"));
    let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if x != 0.0 => Some(y / x),
        _ => None,
    };
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut ratios = Vec::new();
    for i in 0..rounds {
        let r = ratio(a.get(i).copied(), b.get(i).copied());
        ratios.extend(r);
        rows.push([
            format!("{}", i + 1),
            cell(a.get(i)),
            cell(b.get(i)),
            r.map_or("-".into(), |r| format!("{r:.2}")),
        ]);
    }
    let (ma, mb) = (median(a), median(b));
    rows.push([
        "median".into(),
        cell(ma.as_ref()),
        cell(mb.as_ref()),
        ratio(ma, mb).map_or("-".into(), |r| format!("{r:.2}")),
    ]);
    let header = [
        "round".to_string(),
        a_label.to_string(),
        b_label.to_string(),
        format!("{b_label} / {a_label}"),
    ];
    let mut width = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        for (i, c) in row.iter().enumerate() {
            let pad = " ".repeat(width[i] - c.chars().count());
            if i == 0 {
                let _ = write!(s, "{c}{pad}");
            } else {
                let _ = write!(s, "  {pad}{c}");
            }
        }
        s.push('\n');
    }
    if let Some(m) = median(&ratios) {
        let _ = writeln!(
            s,
            "median of the per-round ratios: {m:.2} ({} rounds)",
            ratios.len()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUTPUT: &str = "Running 10s test @ http://127.0.0.1:8089/api/balance
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.91ms  310.12us   12.40ms   88.10%
    Req/Sec    35.61k     1.02k   37.20k    71.00%
  Latency Distribution
     50%  870.00us
     75%    1.01ms
     90%    1.20ms
     99%    2.10ms
  354321 requests in 10.00s, 92.43MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:  35407.80
Transfer/sec:      9.24MB
";

    #[test]
    fn wrk_output_is_read_into_a_load_result() {
        let r = parse_wrk(WRK_OUTPUT).unwrap();
        assert_eq!(r.requests, 354_321);
        assert_eq!((r.non_2xx, r.errors), (3, 3));
        assert!((r.requests_per_s - 35_407.80).abs() < 1e-6);
        assert!((r.elapsed_s - 10.0).abs() < 1e-9);
        assert!((r.latency_ms.p50 - 0.87).abs() < 1e-9);
        assert!((r.latency_ms.p99 - 2.10).abs() < 1e-9);
        assert!((r.latency_ms.mean - 0.91).abs() < 1e-9);
        assert!((r.latency_ms.max - 12.40).abs() < 1e-9);
        assert!(parse_wrk("wrk: connection refused").is_none());
        assert_eq!(wrk_ms("2.00s"), Some(2000.0));
        assert_eq!("wrk".parse::<Generator>().unwrap(), Generator::Wrk);
        assert!("ab".parse::<Generator>().is_err());
    }

    #[test]
    fn the_ab_table_lines_up_rounds_medians_and_ratios() {
        let t = ab_table(
            "pgbench TPS",
            &[40000.0, 44000.0, 42000.0],
            "ryw req/s",
            &[20000.0, 23100.0, 21000.0],
        );
        let lines: Vec<&str> = t.lines().collect();
        let fields = |i: usize| lines[i].split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(
            fields(0),
            "round pgbench TPS ryw req/s ryw req/s / pgbench TPS"
        );
        assert_eq!(fields(1), "1 40000 20000 0.50");
        assert_eq!(fields(2), "2 44000 23100 0.53");
        assert_eq!(fields(3), "3 42000 21000 0.50");
        assert_eq!(fields(4), "median 42000 21000 0.50");
        assert!(
            lines[..5]
                .iter()
                .all(|l| l.chars().count() == lines[0].chars().count()),
            "columns line up:\n{t}"
        );
        assert!(
            lines[1].ends_with(" 0.50") && lines[1].starts_with("1 "),
            "numbers are right-aligned:\n{t}"
        );
        assert_eq!(lines[5], "median of the per-round ratios: 0.50 (3 rounds)");
    }

    #[test]
    fn the_ab_table_copes_with_uneven_series() {
        let t = ab_table("A", &[10.0, 20.0], "B", &[5.0]);
        assert!(t.lines().nth(2).unwrap().ends_with('-'), "{t}");
        assert!(t.contains("(1 rounds)"), "{t}");
        let empty = ab_table("A", &[], "B", &[]);
        assert_eq!(empty.lines().count(), 2, "{empty}");
    }

    #[test]
    fn only_plain_http_urls_are_accepted() {
        let spec = |url: &str| LoadSpec {
            url: url.into(),
            ..LoadSpec::default()
        };
        assert!(parse_target(&spec("https://x/")).is_err());
        assert!(parse_target(&spec("not a url")).is_err());
        let t = parse_target(&LoadSpec {
            headers: vec![("X-Read-Strategy".into(), "causal".into())],
            ..spec("http://127.0.0.1:9/api/balance?x=1")
        })
        .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str(), t.headers.len()),
            ("127.0.0.1", 9, "/api/balance?x=1", 2)
        );
        assert!(
            parse_target(&LoadSpec {
                headers: vec![("bad header".into(), "v".into())],
                ..spec("http://h/")
            })
            .is_err()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_load_generator_counts_answers_statuses_and_sends_the_headers() {
        use axum::http::HeaderMap;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let with_header = Arc::new(AtomicU64::new(0));
        let seen = with_header.clone();
        let app = axum::Router::new().route(
            "/ok",
            axum::routing::get(move |h: HeaderMap| async move {
                if h.get("x-read-strategy").is_some_and(|v| v == "causal") {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
                "ok"
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let spec = LoadSpec {
            url: format!("{base}/ok"),
            headers: vec![("X-Read-Strategy".into(), "causal".into())],
            connections: 4,
            duration: Duration::from_millis(300),
            timeout: Duration::from_secs(2),
        };
        let r = http_load(&spec).await.unwrap();
        assert!(r.requests > 20, "{r:?}");
        assert_eq!((r.errors, r.non_2xx), (0, 0), "{r:?}");
        assert_eq!(
            with_header.load(Ordering::Relaxed),
            r.requests,
            "every request carried the header"
        );
        assert!(
            r.requests_per_s > 0.0
                && r.latency_ms.p50 > 0.0
                && r.latency_ms.p99 >= r.latency_ms.p50
        );
        assert!(r.elapsed_s < 1.5);

        let missing = http_load(&LoadSpec {
            url: format!("{base}/nope"),
            ..spec.clone()
        })
        .await
        .unwrap();
        assert!(
            missing.requests > 0 && missing.non_2xx == missing.requests,
            "{missing:?}"
        );
        let refused = http_load(&LoadSpec {
            url: "http://127.0.0.1:9/".into(),
            duration: Duration::from_millis(100),
            ..spec
        })
        .await
        .unwrap();
        assert_eq!(refused.requests, 0);
        assert!(refused.errors > 0);
    }
}
