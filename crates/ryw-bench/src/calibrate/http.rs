//! The built-in load generator: hyper's HTTP/1 client connection driven
//! directly, one keep-alive connection per task, one request in flight each.

use crate::BenchError;
use crate::report::Latency;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HOST, HeaderName, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
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
    /// A header whose value changes from request to request, in turn over
    /// the values (e.g. `X-Demo-UserId` over many users, so each session
    /// reads now and then rather than all the time); empty values: none.
    pub rotate: (String, Vec<String>),
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            url: "http://127.0.0.1:8080/api/products".into(),
            headers: Vec::new(),
            connections: 32,
            duration: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            rotate: (String::new(), Vec::new()),
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

pub(super) struct Target {
    host: String,
    port: u16,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The rotating header and its values (none when the list is empty).
    rotate: Option<(HeaderName, Vec<HeaderValue>)>,
}

pub(super) fn parse_target(spec: &LoadSpec) -> Result<Target, BenchError> {
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
    let (name, values) = &spec.rotate;
    let rotate = if values.is_empty() {
        None
    } else {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| BenchError::config("header", format!("{name:?}: {e}")))?;
        let values = values
            .iter()
            .map(|v| {
                HeaderValue::from_str(v)
                    .map_err(|e| BenchError::config("header", format!("{name}: {v:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Some((header, values))
    };
    Ok(Target {
        host,
        port,
        path,
        headers,
        rotate,
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
    mut turn: usize,
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
        if let Some((name, values)) = &t.rotate {
            req.headers_mut()
                .insert(name.clone(), values[turn % values.len()].clone());
            turn += 1;
        }
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
    let stride = spec.rotate.1.len() / spec.connections.max(1);
    for c in 0..spec.connections {
        let (t, timeout) = (target.clone(), spec.timeout);
        tasks.spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds");
            // Each connection starts at its own place in the rotation.
            let tally = worker(&t, deadline, timeout, &mut h, c * stride).await;
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

/// Names the calibration gives its own contenders; a `--compare` name must
/// differ from them.
pub const CONTENDER_NAMES: [&str; 3] = ["pgbench", "ryw", "minimal"];

/// An already-running HTTP service measured beside ryw (`--compare
/// NAME=URL`), e.g. an older build of `ryw serve` on the same cluster: the
/// same request, in the same rounds, so that before and after a change are
/// measured on the same machine at the same moments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareTarget {
    /// Its column in the table (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Its base URL (`http://127.0.0.1:8081`), without a trailing `/`.
    pub base_url: String,
}

impl std::str::FromStr for CompareTarget {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<CompareTarget, BenchError> {
        let bad = |why: String| BenchError::config("compare", format!("{s:?}: {why}"));
        let (name, url) = s
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=URL".into()))?;
        let valid = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if name.is_empty() || !name.chars().all(valid) {
            return Err(bad("NAME must be letters, digits, '-', '_' or '.'".into()));
        }
        if CONTENDER_NAMES.contains(&name) {
            return Err(bad(format!(
                "{name} is taken by calibrate's own contenders ({})",
                CONTENDER_NAMES.join(", ")
            )));
        }
        let base_url = url.trim_end_matches('/').to_string();
        parse_target(&LoadSpec {
            url: format!("{base_url}/"),
            ..LoadSpec::default()
        })?;
        Ok(CompareTarget {
            name: name.to_string(),
            base_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compared_service_is_a_name_and_a_plain_http_url() {
        let t: CompareTarget = "before=http://127.0.0.1:8081/".parse().unwrap();
        assert_eq!(
            (t.name.as_str(), t.base_url.as_str()),
            ("before", "http://127.0.0.1:8081")
        );
        for (arg, why) in [
            ("http://127.0.0.1:8081", "expected NAME=URL"),
            ("=http://127.0.0.1:8081", "NAME must be"),
            ("a b=http://127.0.0.1:8081", "NAME must be"),
            (
                "ryw=http://127.0.0.1:8081",
                "taken by calibrate's own contenders",
            ),
            ("old=https://127.0.0.1:8081", "only http:// is supported"),
        ] {
            let err = arg.parse::<CompareTarget>().unwrap_err().to_string();
            assert!(err.contains(why), "{arg}: {err}");
        }
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
            ..LoadSpec::default()
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rotating_header_takes_each_value_in_turn() {
        use axum::http::HeaderMap;
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex};
        let counts = Arc::new(Mutex::new(HashMap::<String, u64>::new()));
        let seen = counts.clone();
        let app = axum::Router::new().route(
            "/ok",
            axum::routing::get(move |h: HeaderMap| async move {
                let user = h
                    .get("x-demo-userid")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_owned();
                *seen.lock().unwrap().entry(user).or_default() += 1;
                "ok"
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let users: Vec<String> = (0..8).map(|i| format!("u{i}")).collect();
        let r = http_load(&LoadSpec {
            url: format!("{base}/ok"),
            connections: 2,
            duration: Duration::from_millis(300),
            rotate: ("X-Demo-UserId".into(), users.clone()),
            ..LoadSpec::default()
        })
        .await
        .unwrap();
        let counts = counts.lock().unwrap();
        assert!(r.requests > 40, "{r:?}");
        assert_eq!(counts.values().sum::<u64>(), r.requests);
        for u in &users {
            let n = counts.get(u).copied().unwrap_or(0);
            assert!(
                n * 16 >= r.requests,
                "{u}: {n} of {}: {counts:?}",
                r.requests
            );
        }
    }
}
