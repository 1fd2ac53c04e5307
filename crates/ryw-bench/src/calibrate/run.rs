//! `ryw bench calibrate` from start to end: ryw (in this process, on the
//! leader and one follower), the minimal no-routing server and pgbench on
//! that follower, each `--compare` service, measured in interleaved rounds.

use super::http::{CompareTarget, LoadSpec};
use super::minimal::MinimalServer;
use super::rounds::{Rounds, Series};
use super::wrk::{Generator, load};
use crate::BenchError;
use crate::fronts::{ServiceInProcess, local_service_config};
use crate::pgbench;
use ryw_cluster::{ClusterInfo, NodeInfo};
use serde_json::Value;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What to calibrate with.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// The `ryw cluster` folder; its first follower is measured.
    pub cluster: PathBuf,
    /// Rounds; each measures every contender once, in the same order.
    pub rounds: usize,
    /// Length of each measurement (whole seconds, at least 1).
    pub duration: Duration,
    /// Concurrent HTTP connections (pgbench uses -c8 -j2).
    pub connections: usize,
    /// The HTTP load generator.
    pub generator: Generator,
    /// Already-running services measured beside ryw.
    pub compare: Vec<CompareTarget>,
}

/// What a calibration measured.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// The follower every contender read from.
    pub follower: String,
    /// The generator used (`wrk` or `builtin`).
    pub generator: String,
    /// Concurrent HTTP connections.
    pub connections: usize,
    /// Seconds per measurement.
    pub duration_s: u64,
    /// Every contender's figure per round, the medians and the ratios
    /// `ryw/minimal`, `minimal/pgbench`, `ryw/pgbench` and `NAME/ryw` per
    /// compared service.
    pub rounds: Rounds,
}

impl Calibration {
    /// The JSON of `ryw bench calibrate --json`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "follower": self.follower,
            "generator": self.generator,
            "connections": self.connections,
            "duration_s": self.duration_s,
            "rounds": self.rounds.len(),
            "series": self.rounds.series,
            "ratios": self.rounds.ratios,
        })
    }

    /// What each contender is, the load, and the table.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for c in &self.rounds.series {
            let _ = writeln!(s, "{}: {}", c.name, c.what);
        }
        let _ = writeln!(
            s,
            "HTTP load: {}, {} connections, {} s per measurement\n",
            self.generator, self.connections, self.duration_s
        );
        let _ = writeln!(s, "{}", self.rounds.table());
        s
    }
}

/// The request every HTTP contender gets: the same user and the same
/// strategy header (a `--compare` service picks `causal` by it too).
fn balance_headers(user: &str) -> Vec<(String, String)> {
    vec![
        ("X-Demo-UserId".into(), user.to_string()),
        ("X-Read-Strategy".into(), "causal".into()),
    ]
}

/// Interleaved rounds on one follower (measure interleaved and quote
/// medians and ratios, not single figures), each round in this order:
/// `pgbench -n -S -M prepared -c8 -j2`; `GET /api/balance` (causal) through
/// the whole ryw stack; the same request on the minimal no-routing server
/// (same follower, same query), the benchmark's ceiling; then each
/// compared service. ryw and the minimal server run in this process, on
/// this runtime, side by side, so the comparison is fair. Progress goes to
/// stderr, a line per measurement.
pub async fn calibrate(opts: &CalibrateOptions) -> Result<Calibration, BenchError> {
    let info = ClusterInfo::load(&opts.cluster)?;
    let follower = pgbench::first_follower(&info)?;
    let generator = opts.generator.resolve();
    for (i, c) in opts.compare.iter().enumerate() {
        if opts.compare[..i].iter().any(|o| o.name == c.name) {
            return Err(BenchError::config(
                "--compare",
                format!("{}: the name is given twice", c.name),
            ));
        }
    }

    // ryw on the leader and this one follower only, causal by default.
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut cfg = local_service_config(&opts.cluster, None, any_port)?;
    cfg.nodes
        .followers
        .retain(|(name, _)| *name == follower.name);
    cfg.router.default_strategy = ryw_router::Strategy::Causal;
    let service = ServiceInProcess::start(cfg).await?;
    let measured = with_ryw(opts, &info, &follower, generator, &service.url()).await;
    service.stop().await?;
    let mut rounds = measured?;
    rounds.add_ratio("ryw", "minimal");
    rounds.add_ratio("minimal", "pgbench");
    rounds.add_ratio("ryw", "pgbench");
    for c in &opts.compare {
        rounds.add_ratio(&c.name, "ryw");
    }
    Ok(Calibration {
        follower: follower.name,
        generator: format!("{generator:?}").to_lowercase(),
        connections: opts.connections,
        duration_s: opts.duration.as_secs().max(1),
        rounds,
    })
}

/// Everything calibrate does while ryw runs at `base`: the user and its
/// row, the compared services checked, pgbench's tables, the minimal
/// server, the rounds.
async fn with_ryw(
    opts: &CalibrateOptions,
    info: &ClusterInfo,
    follower: &NodeInfo,
    generator: Generator,
    base: &str,
) -> Result<Rounds, BenchError> {
    let user = uuid::Uuid::new_v4().to_string();
    let headers = balance_headers(&user);
    let measure = |what: &str| {
        let what = what.to_string();
        move |detail| BenchError::Measure { what, detail }
    };
    prepare_user(base, &user)
        .await
        .map_err(measure("ryw's account"))?;
    let expected = balance(base, &headers)
        .await
        .map_err(measure("ryw's own GET /api/balance"))?;
    for c in &opts.compare {
        prepare_compared(c, &user, &headers, &expected)
            .await
            .map_err(|detail| BenchError::Compare {
                name: c.name.clone(),
                url: c.base_url.clone(),
                detail,
            })?;
    }

    // pgbench's tables, then wait until the follower has them.
    ryw_cluster::ops::pgbench_init(info).await?;
    prewarm(&follower.url).await;
    let minimal =
        MinimalServer::start(&follower.url, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut http: Vec<(Series, String)> = vec![
        (
            Series::new(
                "ryw",
                "ryw req/s",
                format!(
                    "GET /api/balance (causal) through ryw in this process, on the leader and {}",
                    follower.name
                ),
            ),
            base.to_string(),
        ),
        (
            Series::new(
                "minimal",
                "minimal req/s",
                format!(
                    "GET /api/balance on a minimal no-routing server in this process: one axum \
                     handler, one shared tokio-postgres client to {}, the same query",
                    follower.name
                ),
            ),
            minimal.url(),
        ),
    ];
    http.extend(opts.compare.iter().map(|c| {
        (
            Series::new(
                c.name.clone(),
                format!("{} req/s", c.name),
                format!("GET /api/balance (causal) at {}", c.base_url),
            ),
            c.base_url.clone(),
        )
    }));
    let measured = async {
        wait_for_answer(&minimal.url(), &headers, &expected)
            .await
            .map_err(measure(&format!("the minimal server on {}", follower.name)))?;
        let pgbench = Series::new(
            "pgbench",
            "pgbench TPS",
            format!("pgbench -n -S -M prepared -c8 -j2 on {}", follower.name),
        );
        let spec = LoadSpec {
            headers: headers.clone(),
            connections: opts.connections,
            duration: Duration::from_secs(opts.duration.as_secs().max(1)),
            ..LoadSpec::default()
        };
        let contenders = (pgbench, http);
        rounds(
            info,
            follower.port,
            opts.rounds,
            contenders,
            generator,
            &spec,
        )
        .await
    }
    .await;
    minimal.stop().await?;
    measured
}

/// `rounds` rounds of pgbench on `port` for `spec.duration`, then every HTTP
/// contender (`(series, base URL)`): `GET {base}/api/balance` as `spec`
/// says, by `generator`. Any non-2xx answer or error stops the run.
async fn rounds(
    info: &ClusterInfo,
    port: u16,
    rounds: usize,
    (mut pgbench, mut http): (Series, Vec<(Series, String)>),
    generator: Generator,
    spec: &LoadSpec,
) -> Result<Rounds, BenchError> {
    for round in 1..=rounds {
        let tps = pgbench::select_only(info, port, "prepared", spec.duration)
            .await?
            .tps;
        eprintln!("round {round}: pgbench -S: {tps:.0} TPS");
        pgbench.rounds.push(tps);
        for (series, url) in &mut http {
            let spec = LoadSpec {
                url: format!("{url}/api/balance"),
                ..spec.clone()
            };
            let r = load(generator, &spec).await?;
            eprintln!(
                "round {round}: {}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, non-2xx {}",
                series.name, r.requests_per_s, r.latency_ms.p50, r.latency_ms.p99, r.non_2xx
            );
            if r.non_2xx > 0 || r.errors > 0 {
                return Err(BenchError::Measure {
                    what: series.name.clone(),
                    detail: format!(
                        "{} non-2xx answers and {} errors during calibration",
                        r.non_2xx, r.errors
                    ),
                });
            }
            series.rounds.push(r.requests_per_s);
            series.latency_ms.push(r.latency_ms);
        }
    }
    Ok(Rounds::new(
        std::iter::once(pgbench)
            .chain(http.into_iter().map(|(s, _)| s))
            .collect(),
    ))
}

/// An error and its causes, `: `-separated.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let _ = write!(s, ": {c}");
        cause = c.source();
    }
    s
}

/// `GET {base}/api/balance` with `headers`: the answer's balance and version,
/// or what came back.
async fn balance(base: &str, headers: &[(String, String)]) -> Result<(Value, Value), String> {
    let mut req = reqwest::Client::new().get(format!("{base}/api/balance"));
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("cannot reach {base}: {}", with_causes(&e)))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if status == reqwest::StatusCode::BAD_REQUEST {
        return Err(format!(
            "GET /api/balance answered 400 ({body}); a ryw serve must run with --allow-strategy-header"
        ));
    }
    if !status.is_success() {
        return Err(format!("GET /api/balance answered {status}: {body}"));
    }
    let v: Value = serde_json::from_str(&body)
        .map_err(|e| format!("GET /api/balance answered {body:?}: {e}"))?;
    Ok((v["balance_cents"].clone(), v["version"].clone()))
}

/// A compared service must answer the same request with the same row:
/// the account exists in the shared database (`POST /api/account` answers
/// 200 and gives the service its own session), and its balance read must
/// show what ryw's showed, or the two do not read the same cluster.
async fn prepare_compared(
    c: &CompareTarget,
    user: &str,
    headers: &[(String, String)],
    expected: &(Value, Value),
) -> Result<(), String> {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/account", c.base_url))
        .header("X-Demo-UserId", user)
        .send()
        .await
        .map_err(|e| format!("cannot reach {}: {}", c.base_url, with_causes(&e)))?;
    if !resp.status().is_success() {
        let status = resp.status();
        return Err(format!(
            "POST /api/account answered {status}: {}",
            resp.text().await.unwrap_or_default()
        ));
    }
    let got = balance(&c.base_url, headers).await?;
    if &got != expected {
        return Err(format!(
            "it answered balance {} version {}, ryw {} version {}: is it on the same cluster?",
            got.0, got.1, expected.0, expected.1
        ));
    }
    Ok(())
}

/// Waits (at most 10 s, for a follower with a replay delay) until the
/// minimal server reads the row ryw read.
async fn wait_for_answer(
    base: &str,
    headers: &[(String, String)],
    expected: &(Value, Value),
) -> Result<(), String> {
    let started = std::time::Instant::now();
    loop {
        let got = balance(base, headers).await?;
        if &got == expected {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "after 10 s it still answers balance {} version {}, ryw {} version {}",
                got.0, got.1, expected.0, expected.1
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates the calibration user's account and one payment.
pub(crate) async fn prepare_user(base: &str, user: &str) -> Result<(), String> {
    let client = reqwest::Client::new();
    for (path, body) in [
        ("/api/account", ""),
        ("/api/payments", r#"{"amount_cents": 1}"#),
    ] {
        let resp = client
            .post(format!("{base}{path}"))
            .header("X-Demo-UserId", user)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {path}: {}", with_causes(&e)))?;
        if !resp.status().is_success() {
            return Err(format!("POST {path} answered {}", resp.status()));
        }
    }
    Ok(())
}

/// Loads the tables both servers and pgbench read into the follower's
/// buffers (`pg_prewarm`), so no contender pays for the page cache.
pub(crate) async fn prewarm(url: &str) {
    if let Ok(c) = ryw_cluster::ops::connect(url, "prewarm").await {
        for rel in [
            "accounts",
            "accounts_pkey",
            "pgbench_accounts",
            "pgbench_accounts_pkey",
        ] {
            let _ = c.execute("SELECT pg_prewarm($1::regclass)", &[&rel]).await;
        }
    }
}
