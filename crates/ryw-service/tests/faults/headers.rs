//! Random header values (proptest) for `X-Demo-UserId`, `X-Read-Strategy`,
//! `X-Consistency-Token`, `Idempotency-Key` and `Content-Type` on the main
//! endpoints, through the in-process app: garbage bytes (any byte a header
//! value may hold), long strings, non-ASCII text, and near misses of valid
//! values (UUID variants, `v2.` tokens truncated, tampered or signed with
//! another key, `causal:99999999999h`, `sticky:`, negative durations,
//! reused idempotency keys, JSON-ish content types).
//!
//! Every answer must be a 2xx or a 4xx `application/problem+json` whose
//! `type` is under the problem base, never a 5xx, and come within 1 s; a
//! refused request (and any read) must leave the leader's tables exactly as
//! they were (a fingerprint of every account, payment and profile row).

use crate::helpers::*;
use axum::body::Body;
use axum::http::{HeaderValue, Request};
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use ryw_router::{Lsn, TokenKey};
use ryw_service::error::PROBLEM_BASE;
use std::cell::RefCell;
use std::fmt;
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// Cases with one header fuzzed, per header.
const CASES_EACH: u32 = 192;
/// Cases with all five headers fuzzed at once.
const CASES_ALL: u32 = 384;
/// Longest an answer may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// (method, path, body): the main endpoints. Bodies are valid, so only the
/// headers decide the outcome.
const ENDPOINTS: [(&str, &str, Option<&str>); 7] = [
    ("GET", "/api/balance", None),
    ("GET", "/api/me", None),
    ("GET", "/api/payments", None),
    ("GET", "/api/products", None),
    ("POST", "/api/payments", Some(r#"{"amount_cents": 1}"#)),
    (
        "POST",
        "/api/me/profile",
        Some(r#"{"email": "fuzz@example.com", "name": "Fuzz"}"#),
    ),
    ("POST", "/api/account", None),
];

/// Bytes a header value may hold (`HeaderValue::from_bytes`): visible ASCII,
/// space, tab and obs-text (0x80–0xFF); no other control byte.
fn header_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max).prop_map(|v| {
        v.into_iter()
            .filter(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
            .collect()
    })
}

/// Text of any printable characters, long strings and raw bytes.
fn garbage() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        header_bytes(64),
        "\\PC{0,40}".prop_map(String::into_bytes),
        (1usize..9000, "[ -~]").prop_map(|(n, c)| c.repeat(n).into_bytes()),
    ]
    .boxed()
}

/// The header absent one time in five, else a value from `s`.
fn absent_or(s: impl Strategy<Value = Vec<u8>> + 'static) -> BoxedStrategy<Option<Vec<u8>>> {
    prop_oneof![1 => Just(None), 4 => s.prop_map(Some)].boxed()
}

/// `s` with one character changed, cut short, or with text appended.
fn mangle(s: String) -> BoxedStrategy<String> {
    let len = s.len().max(1);
    let (a, b, c) = (s.clone(), s.clone(), s);
    prop_oneof![
        (0..len, "[ -~]").prop_map(move |(i, ch)| {
            let mut out = a.clone();
            if i < out.len() && out.is_char_boundary(i) && out.is_char_boundary(i + 1) {
                out.replace_range(i..i + 1, &ch);
            }
            out
        }),
        (0..len).prop_map(move |i| b.get(..i).unwrap_or(&b).to_owned()),
        "\\PC{1,8}".prop_map(move |tail| format!("{c}{tail}")),
    ]
    .boxed()
}

fn user_id(known: String) -> BoxedStrategy<Option<Vec<u8>>> {
    let near = mangle(known.clone());
    let text = prop_oneof![
        // The account that exists, spelled in every way a UUID parses.
        4 => prop::sample::select(vec![
            known.clone(),
            known.to_uppercase(),
            format!("{{{known}}}"),
            format!("urn:uuid:{known}"),
            known.replace('-', ""),
            format!("  {known}\t"),
        ])
        .boxed(),
        // Other well-formed ids: unknown users, nil, max.
        1 => any::<u128>()
            .prop_map(|n| uuid::Uuid::from_u128(n).to_string())
            .boxed(),
        1 => prop::sample::select(vec![
            uuid::Uuid::nil().to_string(),
            uuid::Uuid::max().to_string(),
        ])
        .boxed(),
        // Near misses.
        2 => near,
        1 => "[0-9a-fA-F-]{0,40}".boxed(),
    ];
    absent_or(prop_oneof![
        4 => text.prop_map(String::into_bytes).boxed(),
        1 => garbage(),
    ])
}

fn strategy_header() -> BoxedStrategy<Option<Vec<u8>>> {
    let name = prop::sample::select(vec![
        "leader",
        "legacy",
        "sticky",
        "causal",
        "hybrid",
        "per-read-check",
        "CAUSAL",
        "eventual",
        "",
    ]);
    let duration = prop_oneof![
        "-?[0-9]{1,14}(\\.[0-9]{1,3})?(ns|us|ms|s|m|h|d|w|y|min|sec|parsecs)?",
        prop::sample::select(vec![
            "",
            "0",
            "0ms",
            "59s",
            "60s",
            "61s",
            "99999999999h",
            "18446744073709551615s",
            "1e9s",
            "NaN",
            "-1s",
            "1s 2ms",
            "∞",
        ])
        .prop_map(String::from),
    ];
    let text = prop_oneof![
        3 => name.clone().prop_map(String::from),
        4 => (name, duration, prop::sample::select(vec![":", ": ", "::", " :"]))
            .prop_map(|(n, d, sep)| format!("{n}{sep}{d}")),
    ];
    absent_or(prop_oneof![
        4 => text.prop_map(String::into_bytes).boxed(),
        1 => garbage(),
    ])
}

fn token(real: String) -> BoxedStrategy<Option<Vec<u8>>> {
    let key = TokenKey::from_secret(KEY).unwrap();
    let other = TokenKey::from_secret("another key, also sixteen bytes+").unwrap();
    let text = prop_oneof![
        // A token this service issued, as is or with spaces around.
        2 => prop::sample::select(vec![real.clone(), format!(" {real} ")]).boxed(),
        // Truncated, tampered, extended.
        4 => mangle(real.clone()),
        1 => Just(real.to_uppercase()).boxed(),
        1 => Just(real.replacen("v2.", "v3.", 1)).boxed(),
        // Shaped like v1 but not ours.
        2 => "v1\\.[0-9a-f]{16}\\.[A-Za-z0-9_-]{43}".boxed(),
        1 => "v[0-9]{0,3}\\.[0-9a-fA-F]{0,20}\\.[A-Za-z0-9_=+/-]{0,50}".boxed(),
        2 => any::<u64>()
            .prop_map(move |v| other.sign(Lsn::from_u64(v)))
            .boxed(),
        // Ours, at a position behind the leader or absurdly beyond it
        // (rule 4: the read goes to the leader at once). A position less
        // than 1 GiB ahead may wait, but only the wait budget, which an
        // `X-Read-Strategy: causal:59s` raises to 59 s by design; the
        // router's own tests bound that wait, so it is left out here.
        2 => prop_oneof![0u64..(1 << 24), (1u64 << 40)..=u64::MAX]
            .prop_map(move |v| key.sign(Lsn::from_u64(v)))
            .boxed(),
        1 => (1usize..100).prop_map(|n| "v1.".repeat(n)).boxed(),
    ];
    absent_or(prop_oneof![
        4 => text.prop_map(String::into_bytes).boxed(),
        1 => garbage(),
    ])
}

fn idempotency_key() -> BoxedStrategy<Option<Vec<u8>>> {
    let text = prop_oneof![
        2 => any::<u128>()
            .prop_map(|n| uuid::Uuid::from_u128(n).to_string())
            .boxed(),
        // Reused: the first use pays, the next ones replay it.
        2 => Just("fuzz-reused-key".to_owned()).boxed(),
        1 => prop::sample::select(vec![
            String::new(),
            " ".into(),
            "has space".into(),
            "tab\tinside".into(),
            "k".repeat(128),
            "k".repeat(129),
            "ключ".into(),
        ])
        .boxed(),
        1 => "[!-~]{1,140}".boxed(),
    ];
    absent_or(prop_oneof![
        4 => text.prop_map(String::into_bytes).boxed(),
        1 => garbage(),
    ])
}

fn content_type() -> BoxedStrategy<Option<Vec<u8>>> {
    let known = prop::sample::select(vec![
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/problem+json",
        "application/vnd.api+json",
        "application/json;;;",
        "application/json; charset=latin-1; x=\"",
        "application/jsonx",
        "application/",
        "json",
        "text/plain",
        "multipart/form-data; boundary=x",
        "",
        "*/*",
    ]);
    absent_or(prop_oneof![
        4 => known.prop_map(|s| s.as_bytes().to_vec()).boxed(),
        1 => garbage(),
    ])
}

/// The headers, in the order of [`Case::headers`].
const NAMES: [&str; 5] = [
    "x-demo-userid",
    "x-read-strategy",
    "x-consistency-token",
    "idempotency-key",
    "content-type",
];

/// One request: an endpoint and the five headers (absent or a value).
#[derive(Clone)]
struct Case {
    endpoint: usize,
    headers: [Option<Vec<u8>>; 5],
}

impl fmt::Debug for Case {
    /// The header values as text (lossy), not as byte lists.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (name, value) in NAMES.iter().zip(&self.headers) {
            if let Some(v) = value {
                m.entry(name, &String::from_utf8_lossy(v));
            }
        }
        m.finish()
    }
}

/// Random values for every header (valid ones, near misses and garbage).
fn fuzzed(known_user: &str, real_token: &str) -> [BoxedStrategy<Option<Vec<u8>>>; 5] {
    [
        user_id(known_user.to_owned()),
        strategy_header(),
        token(real_token.to_owned()),
        idempotency_key(),
        content_type(),
    ]
}

/// Valid values only, so that the one fuzzed header decides the outcome.
/// (No `causal` here: its waits for the 100 ms follower would only slow
/// the run; the fuzzed strategy header has it.)
fn valid(known_user: &str, real_token: &str) -> [BoxedStrategy<Option<Vec<u8>>>; 5] {
    let some = |v: Vec<&str>| {
        prop::sample::select(
            v.into_iter()
                .map(|s| Some(s.as_bytes().to_vec()))
                .collect::<Vec<_>>(),
        )
        .boxed()
    };
    [
        some(vec![known_user]),
        prop_oneof![Just(None), some(vec!["leader", "hybrid", "sticky:1s"])].boxed(),
        prop_oneof![Just(None), some(vec![real_token])].boxed(),
        prop_oneof![
            Just(None),
            any::<u128>().prop_map(|n| Some(uuid::Uuid::from_u128(n).to_string().into_bytes())),
        ]
        .boxed(),
        some(vec!["application/json"]),
    ]
}

fn case(
    endpoints: Vec<usize>,
    headers: [BoxedStrategy<Option<Vec<u8>>>; 5],
) -> impl Strategy<Value = Case> {
    let [u, s, t, k, c] = headers;
    (prop::sample::select(endpoints), u, s, t, k, c).prop_map(|(endpoint, u, s, t, k, c)| Case {
        endpoint,
        headers: [u, s, t, k, c],
    })
}

/// A fingerprint of every row a request could write.
async fn fingerprint(db: &tokio_postgres::Client) -> String {
    db.query_one(
        "SELECT md5(concat_ws('#', \
            (SELECT string_agg(a::text, '|' ORDER BY user_id) FROM accounts a), \
            (SELECT string_agg(p::text, '|' ORDER BY payment_id) FROM payments p), \
            (SELECT string_agg(u::text, '|' ORDER BY id) FROM users u)))",
        &[],
    )
    .await
    .expect("fingerprint query")
    .get(0)
}

/// What one run of cases answered: count by status, and the slowest answer.
#[derive(Debug, Default)]
struct Seen {
    statuses: std::collections::BTreeMap<u16, u32>,
    slowest: Duration,
}

/// Sends one case and checks the answer; notes its status and time.
fn check(
    rt: &tokio::runtime::Runtime,
    t: &TestApp,
    db: &tokio_postgres::Client,
    c: &Case,
    seen: &RefCell<Seen>,
) -> Result<(), TestCaseError> {
    let (method, path, body) = ENDPOINTS[c.endpoint];
    let mut req = Request::builder().method(method).uri(path);
    for (name, value) in NAMES.iter().zip(&c.headers) {
        if let Some(v) = value {
            let v = HeaderValue::from_bytes(v).expect("only valid header bytes");
            req = req.header(*name, v);
        }
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap();
    let (status, headers, bytes, took, written) = rt.block_on(async {
        let before = fingerprint(db).await;
        let sent = Instant::now();
        let resp = t.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let took = sent.elapsed();
        (
            status,
            headers,
            bytes,
            took,
            fingerprint(db).await != before,
        )
    });
    {
        let mut seen = seen.borrow_mut();
        *seen.statuses.entry(status.as_u16()).or_default() += 1;
        seen.slowest = seen.slowest.max(took);
    }
    let text = String::from_utf8_lossy(&bytes);
    prop_assert!(
        !status.is_server_error(),
        "{method} {path} {c:?} -> {status} {text}"
    );
    prop_assert!(
        took < ANSWER_WITHIN,
        "{method} {path} {c:?} took {took:?} ({status})"
    );
    if status.is_client_error() {
        let ctype = headers.get("content-type").and_then(|v| v.to_str().ok());
        prop_assert_eq!(
            ctype,
            Some("application/problem+json"),
            "{} {} {:?} -> {} {}",
            method,
            path,
            c,
            status,
            text
        );
        let problem: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let kind = problem["type"].as_str().unwrap_or("");
        prop_assert!(
            kind.starts_with(PROBLEM_BASE),
            "{method} {path} {c:?} -> {status} {text}"
        );
    }
    prop_assert!(
        !(written && (status.is_client_error() || method == "GET")),
        "{method} {path} {c:?} -> {status} {text}, yet the leader's tables changed"
    );
    Ok(())
}

#[test]
fn random_header_values_get_a_2xx_or_a_quick_4xx_problem_and_refusals_write_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let t = rt.block_on(TestApp::start());
    let u = user();
    let created = rt.block_on(t.call("POST", "/api/account", Some(&u), &[], None));
    assert_eq!(created.status, 201, "{created:?}");
    let real = created.header("x-consistency-token").to_owned();
    assert!(real.starts_with("v2."), "{created:?}");
    let db = rt.block_on(async {
        let (client, conn) =
            tokio_postgres::connect(&t.cluster.leader_url(), tokio_postgres::NoTls)
                .await
                .expect("connect to the leader");
        tokio::spawn(conn);
        client
    });

    // One header fuzzed at a time (the others valid, so its value is what
    // gets judged), then all five at once.
    // `Idempotency-Key` only matters to payments and `Content-Type` to
    // requests with a body: those runs aim there.
    let all: Vec<usize> = (0..ENDPOINTS.len()).collect();
    let at = |method: &str, path: &str| {
        ENDPOINTS
            .iter()
            .position(|e| e.0 == method && e.1 == path)
            .unwrap()
    };
    let (pay, profile) = (at("POST", "/api/payments"), at("POST", "/api/me/profile"));
    let mut runs = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let mut headers = valid(&u, &real);
        headers[i] = fuzzed(&u, &real)[i].clone();
        let endpoints = match *name {
            "idempotency-key" => vec![pay],
            "content-type" => vec![pay, profile],
            _ => all.clone(),
        };
        runs.push((name.to_string(), CASES_EACH, endpoints, headers));
    }
    runs.push(("all five".into(), CASES_ALL, all, fuzzed(&u, &real)));
    for (label, cases, endpoints, headers) in runs {
        let seen = RefCell::new(Seen::default());
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let started = Instant::now();
        runner
            .run(&case(endpoints, headers), |c| {
                check(&rt, &t, &db, &c, &seen)
            })
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        eprintln!(
            "headers: {label}: {cases} cases in {:.1} s, statuses {:?}, slowest {:.1} ms",
            started.elapsed().as_secs_f64(),
            seen.borrow().statuses,
            seen.borrow().slowest.as_secs_f64() * 1000.0
        );
    }
}
