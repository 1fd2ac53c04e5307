//! The workload engine: virtual users paying, thinking and reading their
//! balance (and now and then their profile and the catalogue) against one or
//! more service instances, one group of users per strategy, all groups at the
//! same time. Every request is recorded in the history; each user also checks
//! its own reads as it goes, for the live counts on the progress bar (the
//! report's numbers come from [`crate::check_history`] over the whole history).

use crate::BenchError;
use crate::config::{BenchConfig, Load, StrategySpec};
use crate::history::{History, LagSample, Op, OpKind, Seen};
use crate::report::{BenchReport, ReportMeta, follower_delays};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::future::Future;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

const H_USER: &str = "x-demo-userid";
const H_STRATEGY: &str = "x-read-strategy";
const H_TOKEN: &str = "x-consistency-token";
const H_SERVED_BY: &str = "x-served-by";
const H_WAITED: &str = "x-waited-ms";
const H_IDEMPOTENCY: &str = "idempotency-key";

/// The largest payment (cents). A user whose balance falls below it moves to
/// a new account (a new user id and client) instead of running out of money.
const MAX_AMOUNT: i64 = 100;

/// Pause after an iteration whose write got no answer or a 5xx, so a dead
/// service does not turn the bench into a busy loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Counts the users keep up to date for the progress bar.
#[derive(Debug, Default)]
struct Live {
    reads: AtomicU64,
    ryw: AtomicU64,
    monotonic: AtomicU64,
    errors: AtomicU64,
}

/// What every task shares.
#[derive(Debug)]
struct Shared {
    config: BenchConfig,
    client: reqwest::Client,
    start: Instant,
    ops: Mutex<Vec<Op>>,
    live: Live,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

/// The useful parts of one response.
#[derive(Debug, Default)]
struct Reply {
    status: u16,
    balance: Option<i64>,
}

/// One virtual user (one browser): its account, its token and what it has
/// seen so far.
#[derive(Debug)]
struct User {
    index: usize,
    strategy: HeaderValue,
    strategy_label: String,
    user_id: Uuid,
    user_header: HeaderValue,
    client: String,
    generation: u32,
    needs_account: bool,
    token: Option<HeaderValue>,
    requests: usize,
    iteration: u64,
    profile_counter: u64,
    /// Highest acknowledged version per object (account, profile); `None`:
    /// no write acknowledged yet.
    acked: [Option<Seen>; 2],
    /// Highest version this client has read per object; `None`: no read yet.
    seen: [Option<Seen>; 2],
}

fn slot(kind: OpKind) -> usize {
    match kind.object() {
        Some(crate::history::Object::Profile) => 1,
        _ => 0,
    }
}

impl User {
    fn new(index: usize, strategy: &StrategySpec) -> User {
        let label = strategy.to_string();
        let mut u = User {
            index,
            strategy: HeaderValue::from_str(&label).expect("strategy names are ASCII"),
            strategy_label: label,
            user_id: Uuid::nil(),
            user_header: HeaderValue::from_static(""),
            client: String::new(),
            generation: 0,
            needs_account: true,
            token: None,
            requests: 0,
            iteration: 0,
            profile_counter: 0,
            acked: [None; 2],
            seen: [None; 2],
        };
        u.new_account();
        u
    }

    /// Moves to a fresh account: new user id, new client, nothing seen.
    fn new_account(&mut self) {
        self.user_id = Uuid::new_v4();
        self.user_header =
            HeaderValue::from_str(&self.user_id.to_string()).expect("a UUID is ASCII");
        self.generation += 1;
        self.client = format!("u{}.{}", self.index, self.generation);
        self.needs_account = true;
        self.token = None;
        self.acked = [None; 2];
        self.seen = [None; 2];
    }

    /// Sends one request (rotating over the targets), records it, keeps the
    /// token and checks a fresh read against what this user knows.
    async fn call(
        &mut self,
        sh: &Shared,
        kind: OpKind,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let targets = &sh.config.targets;
        let base = targets[(self.index + self.requests) % targets.len()].trim_end_matches('/');
        self.requests += 1;
        let mut req = sh
            .client
            .request(method, format!("{base}{path}"))
            .header(H_USER, self.user_header.clone())
            .header(H_STRATEGY, self.strategy.clone());
        if let (true, Some(t)) = (sh.config.send_token, &self.token) {
            req = req.header(H_TOKEN, t.clone());
        }
        if kind == OpKind::Pay {
            req = req.header(H_IDEMPOTENCY, Uuid::new_v4().to_string());
        }
        if let Some(b) = &body {
            req = req.json(b);
        }
        let sent_us = sh.now_us();
        let result = async {
            let resp = req.send().await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, bytes))
        }
        .await;
        let recv_us = sh.now_us();

        let mut op = Op {
            user: self.user_id.to_string(),
            client: self.client.clone(),
            strategy: self.strategy_label.clone(),
            kind,
            sent_us,
            recv_us,
            status: 0,
            version: None,
            served_by: None,
            waited_ms: None,
            problem: None,
        };
        let mut reply = Reply::default();
        if let Ok((status, headers, bytes)) = result {
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
            if let Some(t) = headers.get(H_TOKEN) {
                self.token = Some(t.clone());
            }
            op.status = status.as_u16();
            op.version = body.get("version").and_then(Value::as_u64);
            op.served_by = header(H_SERVED_BY).map(String::from).or_else(|| {
                body.get("served_by")
                    .and_then(Value::as_str)
                    .map(String::from)
            });
            op.waited_ms = body
                .get("waited_ms")
                .and_then(Value::as_f64)
                .or_else(|| header(H_WAITED).and_then(|w| w.parse().ok()));
            if !status.is_success() {
                // problem+json: keep the slug, so a 404 `no-account` is told
                // from any other 404 (it is a read that found nothing).
                op.problem = body
                    .get("type")
                    .and_then(Value::as_str)
                    .and_then(|t| t.rsplit('/').next())
                    .filter(|slug| !slug.is_empty())
                    .map(String::from);
            }
            reply = Reply {
                status: op.status,
                balance: body.get("balance_cents").and_then(Value::as_i64),
            };
        }

        let live = &sh.live;
        let s = slot(kind);
        if op.is_error() {
            live.errors.fetch_add(1, Relaxed);
        } else if let (true, Some(v)) = (kind.is_write(), op.version) {
            self.acked[s] = self.acked[s].max(Some(Seen::Version(v)));
        } else if let Some(got) = op.seen() {
            // `None` (nothing acknowledged or read yet) is below any `Some`,
            // so a 404 before the first acknowledged write is no violation.
            live.reads.fetch_add(1, Relaxed);
            if Some(got) < self.acked[s] {
                live.ryw.fetch_add(1, Relaxed);
            }
            if Some(got) < self.seen[s] {
                live.monotonic.fetch_add(1, Relaxed);
            }
            self.seen[s] = self.seen[s].max(Some(got));
        }
        sh.ops.lock().expect("history lock").push(op);
        reply
    }

    async fn think(&self, sh: &Shared) {
        let pause = sh.config.think.sample(&mut rand::rng());
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }

    /// One iteration: pay, think, read the balance; now and then update the
    /// profile, think, read `/api/me`; now and then read the catalogue.
    async fn iteration(&mut self, sh: &Shared) {
        if self.needs_account {
            let r = self
                .call(sh, OpKind::Account, Method::POST, "/api/account", None)
                .await;
            if !(200..300).contains(&r.status) {
                tokio::time::sleep(ERROR_BACKOFF).await;
                return;
            }
            self.needs_account = false;
        }
        self.iteration += 1;
        let amount: i64 = rand::random_range(1..=MAX_AMOUNT);
        let paid = self
            .call(
                sh,
                OpKind::Pay,
                Method::POST,
                "/api/payments",
                Some(json!({"amount_cents": amount, "description": "ryw bench"})),
            )
            .await;
        if paid.status == StatusCode::UNPROCESSABLE_ENTITY.as_u16()
            || paid.balance.is_some_and(|b| b < MAX_AMOUNT)
        {
            // Out of money (or about to be): carry on as a new user.
            self.new_account();
        } else if paid.status == 0 || paid.status >= 500 {
            tokio::time::sleep(ERROR_BACKOFF).await;
        }
        self.think(sh).await;
        self.call(sh, OpKind::Balance, Method::GET, "/api/balance", None)
            .await;

        let every = |n: u32| n > 0 && self.iteration.is_multiple_of(u64::from(n));
        let (profile, products) = (
            every(sh.config.profile_every),
            every(sh.config.products_every),
        );
        if profile && !self.needs_account {
            self.profile_counter += 1;
            let body = json!({
                "email": format!("bench-{}@example.com", self.user_id.simple()),
                "name": format!("bench user {} #{}", self.index, self.profile_counter),
            });
            self.call(
                sh,
                OpKind::Profile,
                Method::POST,
                "/api/me/profile",
                Some(body),
            )
            .await;
            self.think(sh).await;
            self.call(sh, OpKind::Me, Method::GET, "/api/me", None)
                .await;
        }
        if products {
            self.call(sh, OpKind::Products, Method::GET, "/api/products", None)
                .await;
        }
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means stop.
    let _ = stop.wait_for(|s| *s).await;
}

/// Closed loop: the next iteration starts when the last one ended.
async fn closed_loop(mut user: User, sh: Arc<Shared>, stop: watch::Receiver<bool>) {
    tokio::select! {
        _ = async { loop { user.iteration(&sh).await } } => {}
        _ = stopped(stop) => {}
    }
}

/// How one open-loop group's arrivals went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Arrivals {
    /// Arrivals due over the run: rate × elapsed, rounded down (so the tick
    /// due at the very moment the run stops is not held against it).
    offered: u64,
    /// Arrivals that started an iteration.
    started: u64,
    /// Arrivals whose tick came but found every user busy.
    no_idle_user: u64,
}

impl Arrivals {
    /// Offered arrivals that never started, whatever the cause: no idle
    /// user, or the arrival clock's own task running late (a busy machine),
    /// whose skipped ticks never come at all.
    fn missed(&self) -> u64 {
        self.offered.saturating_sub(self.started)
    }
}

/// The open-loop clock: arrivals at `rate` per second until stopped, each
/// handing an idle user to `work` (which gives it back when done); an
/// arrival with no idle user is not queued. A late tick is not made up for
/// with a burst (that would bend the load), so the count of what was offered
/// comes from the elapsed time, not from the ticks that fired.
async fn arrivals<U, F, Fut>(
    users: Vec<U>,
    rate: f64,
    stop: watch::Receiver<bool>,
    work: F,
) -> Arrivals
where
    U: Send + 'static,
    F: Fn(U) -> Fut,
    Fut: Future<Output = U> + Send + 'static,
{
    let (idle_tx, mut idle_rx) = mpsc::unbounded_channel();
    for u in users {
        let _ = idle_tx.send(u);
    }
    let began = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut running = JoinSet::new();
    let (mut started, mut no_idle_user) = (0, 0);
    let arriving = async {
        loop {
            tick.tick().await;
            while running.try_join_next().is_some() {}
            match idle_rx.try_recv() {
                Ok(user) => {
                    started += 1;
                    let (job, idle_tx) = (work(user), idle_tx.clone());
                    running.spawn(async move {
                        let _ = idle_tx.send(job.await);
                    });
                }
                Err(_) => no_idle_user += 1,
            }
        }
    };
    tokio::select! {
        // Ticks already due start before the stop is noticed.
        biased;
        _ = arriving => {}
        _ = stopped(stop) => {}
    }
    let offered = (began.elapsed().as_secs_f64() * rate).floor() as u64;
    running.shutdown().await;
    Arrivals {
        offered,
        started,
        no_idle_user,
    }
}

/// Open loop for one strategy group: iterations arrive at `rate` per second,
/// each taken by an idle user; adds the group's missed arrivals (all, and
/// those that found no idle user) to the run's counts.
async fn open_loop(
    users: Vec<User>,
    rate: f64,
    sh: Arc<Shared>,
    stop: watch::Receiver<bool>,
    missed: Arc<[AtomicU64; 2]>,
) {
    let a = arrivals(users, rate, stop, |mut user| {
        let sh = sh.clone();
        async move {
            user.iteration(&sh).await;
            user
        }
    })
    .await;
    missed[0].fetch_add(a.missed(), Relaxed);
    missed[1].fetch_add(a.no_idle_user, Relaxed);
}

/// Samples `GET /api/cluster` on the first target until stopped.
async fn sample_cluster(sh: Arc<Shared>, stop: watch::Receiver<bool>) -> Vec<LagSample> {
    let mut samples = Vec::new();
    let url = format!("{}/api/cluster", sh.config.targets[0].trim_end_matches('/'));
    let mut tick = tokio::time::interval(sh.config.cluster_sample_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let sampling = async {
        loop {
            tick.tick().await;
            let t_us = sh.now_us();
            let Ok(resp) = sh.client.get(&url).send().await else {
                continue;
            };
            let Ok(body) = resp.json::<Value>().await else {
                continue;
            };
            let nodes = body
                .get("nodes")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for n in nodes
                .iter()
                .filter(|n| n.get("role").and_then(Value::as_str) == Some("follower"))
            {
                samples.push(LagSample {
                    t_us,
                    node: n
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string(),
                    lag_ms: n.get("lag_ms").and_then(Value::as_f64),
                    lag_bytes: n.get("lag_bytes").and_then(Value::as_u64),
                    in_rotation: n.get("in_rotation").and_then(Value::as_bool),
                });
            }
        }
    };
    tokio::select! {
        _ = sampling => {}
        _ = stopped(stop) => {}
    }
    samples
}

fn progress_bar(config: &BenchConfig) -> ProgressBar {
    if !config.progress || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(config.duration.as_millis() as u64);
    let style = ProgressStyle::with_template("{spinner} {elapsed:>4} [{bar:30}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}

fn progress_message(live: &Live) -> String {
    format!(
        "reads {} · stale {} · non-monotonic {} · errors {}",
        live.reads.load(Relaxed),
        live.ryw.load(Relaxed),
        live.monotonic.load(Relaxed),
        live.errors.load(Relaxed)
    )
}

/// Refuses to start when a target is unreachable or refuses a strategy
/// header (e.g. a server without `--allow-strategy-header`), so a
/// misconfigured run fails in a second with the server's own words.
async fn preflight(client: &reqwest::Client, config: &BenchConfig) -> Result<(), BenchError> {
    for target in &config.targets {
        for spec in &config.strategies {
            let url = format!("{}/api/balance", target.trim_end_matches('/'));
            let resp = client
                .get(&url)
                .header(H_USER, Uuid::new_v4().to_string())
                .header(H_STRATEGY, spec.to_string())
                .send()
                .await
                .map_err(|e| BenchError::Target {
                    url: target.clone(),
                    detail: format!("cannot reach it: {e}"),
                })?;
            if resp.status() == StatusCode::BAD_REQUEST {
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                let said = |k: &str| {
                    body.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                return Err(BenchError::Target {
                    url: target.clone(),
                    detail: format!(
                        "X-Read-Strategy: {spec} got 400 {} {} {} (does it run with --allow-strategy-header?)",
                        said("type"),
                        said("title"),
                        said("detail")
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Runs the bench: every strategy of `config` at once, one group of users
/// each, until `config.duration` has passed or `shutdown` completes (the
/// binary wires it to Ctrl-C), then checks the history and reports.
///
/// Fails only before the workload starts (bad config, unreachable target,
/// refused strategy header); failed requests during the run are recorded and
/// counted, and an early stop still gives a report (`interrupted`).
pub async fn run(
    config: BenchConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<BenchReport, BenchError> {
    config.validate()?;
    let follower_delays_ms = match &config.cluster_dir {
        Some(dir) => follower_delays(dir)?,
        None => Vec::new(),
    };
    let groups = config.group_sizes();
    let total_users: usize = groups.iter().sum();
    let client = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .connect_timeout(config.request_timeout)
        .pool_max_idle_per_host(total_users + 2)
        .tcp_nodelay(true)
        .no_proxy()
        .build()?;
    preflight(&client, &config).await?;

    let sh = Arc::new(Shared {
        config: config.clone(),
        client,
        start: Instant::now(),
        ops: Mutex::new(Vec::new()),
        live: Live::default(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    // Open loop: missed arrivals, and of those, arrivals with no idle user.
    let missed = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let mut tasks = JoinSet::new();
    let mut index = 0;
    for (spec, &size) in config.strategies.iter().zip(&groups) {
        let users: Vec<User> = (0..size)
            .map(|_| {
                index += 1;
                User::new(index, spec)
            })
            .collect();
        match config.load {
            Load::Closed => {
                for u in users {
                    tasks.spawn(closed_loop(u, sh.clone(), stop_rx.clone()));
                }
            }
            Load::Open { iterations_per_s } => {
                let rate = iterations_per_s / config.strategies.len() as f64;
                tasks.spawn(open_loop(
                    users,
                    rate,
                    sh.clone(),
                    stop_rx.clone(),
                    missed.clone(),
                ));
            }
        }
    }
    let sampler = tokio::spawn(sample_cluster(sh.clone(), stop_rx.clone()));

    let bar = progress_bar(&config);
    let ticker = {
        let (sh, bar, stop) = (sh.clone(), bar.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let ticking = async {
                loop {
                    bar.set_position(sh.start.elapsed().as_millis() as u64);
                    bar.set_message(progress_message(&sh.live));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            };
            tokio::select! {
                _ = ticking => {}
                _ = stopped(stop) => {}
            }
        })
    };

    let interrupted = tokio::select! {
        _ = tokio::time::sleep(config.duration) => false,
        _ = shutdown => true,
    };
    let elapsed_s = sh.start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    // Every loop watches the stop signal and drops its request in flight; the
    // guard only covers a task that would not come back.
    let joined = tokio::time::timeout(config.request_timeout + Duration::from_secs(1), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if joined.is_err() {
        tasks.shutdown().await;
    }
    let lag = sampler.await.unwrap_or_default();
    let _ = ticker.await;
    bar.finish_and_clear();

    let ops = std::mem::take(&mut *sh.ops.lock().expect("history lock"));
    let meta = ReportMeta {
        targets: config.targets.clone(),
        think: Some(config.think.to_string()),
        load: Some(config.load.to_string()),
        send_token: Some(config.send_token),
        elapsed_s: Some(elapsed_s),
        interrupted,
        missed_arrivals: missed[0].load(Relaxed),
        missed_no_idle_user: missed[1].load(Relaxed),
        strategy_order: config.strategies.iter().map(|s| s.to_string()).collect(),
        follower_delays_ms,
    };
    Ok(BenchReport::from_history(History { ops, lag }, meta))
}

/// The engine's bookkeeping against a tiny in-process fake of the service
/// (axum), with one deliberately stale read and one deliberately stale 404. This is not the real bench: the
/// real-cluster test runs against `ryw serve` once it exists.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Think;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode as Code};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use std::collections::{BTreeSet, HashMap};
    use std::sync::atomic::AtomicBool;

    #[derive(Default)]
    struct Account {
        version: u64,
        balance: i64,
        profile: Option<u64>,
        issued: u64,
        last_token: Option<String>,
    }

    #[derive(Default)]
    struct Fake {
        accounts: Mutex<HashMap<String, Account>>,
        strategies: Mutex<BTreeSet<String>>,
        keys: Mutex<HashSet<String>>,
        payments: AtomicU64,
        balance_reads: AtomicU64,
        token_mismatches: AtomicU64,
        tokens_received: AtomicU64,
        duplicate_keys: AtomicU64,
        stale_served: AtomicBool,
        nothing_served: AtomicBool,
        refuse_strategy: Option<String>,
        hits: [AtomicU64; 2],
    }
    use std::collections::HashSet;

    struct Instance {
        id: usize,
        fake: Arc<Fake>,
    }

    type St = State<Arc<Instance>>;

    fn problem(status: Code, slug: &str) -> Response {
        (status, Json(json!({"type": format!("https://ryw.dev/problems/{slug}"), "title": slug, "status": status.as_u16(), "detail": slug}))).into_response()
    }

    /// Common part of every handler: identity, strategy, token check, the
    /// account (created only by `POST /api/account`, else 404 `no-account`);
    /// then `f` on it; then the response headers (served-by, new token).
    fn handle(
        inst: &Instance,
        h: &HeaderMap,
        write: bool,
        create: bool,
        f: impl FnOnce(&mut Account, &str) -> Result<(Code, Value), (Code, &'static str)>,
    ) -> Response {
        let fake = &inst.fake;
        fake.hits[inst.id].fetch_add(1, Relaxed);
        let user = h
            .get(H_USER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if Uuid::parse_str(&user).is_err() {
            return problem(Code::BAD_REQUEST, "bad-user-id");
        }
        let strategy = h
            .get(H_STRATEGY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("hybrid")
            .to_string();
        if fake.refuse_strategy.as_deref() == Some(strategy.as_str()) {
            return problem(Code::BAD_REQUEST, "unknown-strategy");
        }
        fake.strategies.lock().unwrap().insert(strategy.clone());
        let mut accounts = fake.accounts.lock().unwrap();
        let acc = match accounts.get_mut(&user) {
            Some(acc) => acc,
            None if create => accounts.entry(user.clone()).or_default(),
            None => return problem(Code::NOT_FOUND, "no-account"),
        };
        let sent_token = h
            .get(H_TOKEN)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        if sent_token.is_some() {
            fake.tokens_received.fetch_add(1, Relaxed);
        }
        if sent_token.is_some() && sent_token != acc.last_token {
            fake.token_mismatches.fetch_add(1, Relaxed);
        }
        acc.issued += 1;
        let token = format!("{user}.{}", acc.issued);
        acc.last_token = Some(token.clone());
        let served_by = if write || strategy == "leader" {
            "leader"
        } else {
            "follower1"
        };
        let mut resp = match f(acc, &strategy) {
            Ok((code, mut body)) => {
                body["served_by"] = json!(served_by);
                (code, Json(body)).into_response()
            }
            Err((code, slug)) => problem(code, slug),
        };
        resp.headers_mut()
            .insert(H_SERVED_BY, HeaderValue::from_static(served_by));
        resp.headers_mut()
            .insert(H_TOKEN, HeaderValue::from_str(&token).unwrap());
        resp
    }

    async fn account(State(i): St, h: HeaderMap) -> Response {
        handle(&i, &h, true, true, |a, _| {
            if a.version == 0 && a.balance == 0 {
                a.balance = 100_000;
            }
            Ok((
                Code::CREATED,
                json!({"user_id": "x", "balance_cents": a.balance, "version": a.version}),
            ))
        })
    }

    async fn pay(State(i): St, h: HeaderMap, Json(body): Json<Value>) -> Response {
        let key = h
            .get(H_IDEMPOTENCY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !i.fake.keys.lock().unwrap().insert(key) {
            i.fake.duplicate_keys.fetch_add(1, Relaxed);
        }
        let fake = i.fake.clone();
        handle(&i, &h, true, false, move |a, _| {
            let amount = body["amount_cents"].as_i64().unwrap_or(0);
            if !(1..=100).contains(&amount) {
                return Err((Code::UNPROCESSABLE_ENTITY, "bad-amount"));
            }
            a.version += 1;
            a.balance -= amount;
            fake.payments.fetch_add(1, Relaxed);
            Ok((
                Code::CREATED,
                json!({"payment_id": Uuid::new_v4(), "amount_cents": amount, "balance_cents": a.balance, "version": a.version}),
            ))
        })
    }

    async fn balance(State(i): St, h: HeaderMap) -> Response {
        let fake = i.fake.clone();
        handle(&i, &h, false, false, move |a, strategy| {
            fake.balance_reads.fetch_add(1, Relaxed);
            let mut version = a.version;
            // The one deliberately stale read: a legacy read right after a payment.
            if strategy == "legacy" && version >= 2 && !fake.stale_served.swap(true, Relaxed) {
                version -= 1;
            }
            let waited = if strategy == "causal" { 3 } else { 0 };
            Ok((
                Code::OK,
                json!({"balance_cents": a.balance, "version": version, "strategy": strategy, "waited_ms": waited}),
            ))
        })
    }

    async fn profile(State(i): St, h: HeaderMap, Json(body): Json<Value>) -> Response {
        handle(&i, &h, true, false, move |a, _| {
            let v = a.profile.unwrap_or(0) + 1;
            a.profile = Some(v);
            Ok((
                Code::OK,
                json!({"user_id": "x", "email": body["email"], "name": body["name"], "avatarUrl": null, "version": v}),
            ))
        })
    }

    async fn me(State(i): St, h: HeaderMap) -> Response {
        let fake = i.fake.clone();
        handle(&i, &h, false, false, move |a, strategy| match a.profile {
            // The one deliberately stale 404: a legacy read from a follower
            // that has not replayed the profile's creation.
            Some(_) if strategy == "legacy" && !fake.nothing_served.swap(true, Relaxed) => {
                Err((Code::NOT_FOUND, "no-profile"))
            }
            Some(v) => {
                let waited = if strategy == "causal" { 3 } else { 0 };
                Ok((
                    Code::OK,
                    json!({"user_id": "x", "email": "e", "name": "n", "version": v, "strategy": strategy, "waited_ms": waited}),
                ))
            }
            None => Err((Code::NOT_FOUND, "no-profile")),
        })
    }

    async fn products(State(i): St, h: HeaderMap) -> Response {
        handle(&i, &h, false, false, |_, _| {
            Ok((
                Code::OK,
                json!({"products": [{"id": 1, "name": "p", "price_cents": 100}]}),
            ))
        })
    }

    async fn cluster() -> Json<Value> {
        Json(json!({"strategy": "hybrid", "nodes": [
            {"name": "leader", "role": "leader", "lsn": "0/1", "lag_bytes": 0, "lag_ms": 0, "healthy": true, "in_rotation": true},
            {"name": "follower1", "role": "follower", "lsn": "0/1", "lag_bytes": 0, "lag_ms": 100, "healthy": true, "in_rotation": true},
        ], "session_store": {"kind": "memory", "healthy": true}}))
    }

    /// Starts one instance of the fake service on a free port.
    async fn spawn_instance(id: usize, fake: Arc<Fake>) -> String {
        let app = Router::new()
            .route("/api/account", post(account))
            .route("/api/payments", post(pay))
            .route("/api/balance", get(balance))
            .route("/api/me/profile", post(profile))
            .route("/api/me", get(me))
            .route("/api/products", get(products))
            .route("/api/cluster", get(cluster))
            .with_state(Arc::new(Instance { id, fake }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    fn config(targets: Vec<String>) -> BenchConfig {
        BenchConfig {
            targets,
            strategies: StrategySpec::parse_list("leader,legacy,causal").unwrap(),
            users: 6,
            duration: Duration::from_millis(1500),
            think: Think::Fixed(Duration::from_millis(5)),
            profile_every: 2,
            products_every: 1,
            progress: false,
            ..BenchConfig::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_engine_records_every_answered_request_and_the_checker_finds_the_two_stale_reads() {
        let fake = Arc::new(Fake::default());
        let targets = vec![
            spawn_instance(0, fake.clone()).await,
            spawn_instance(1, fake.clone()).await,
        ];
        let report = run(config(targets), std::future::pending()).await.unwrap();
        let ops = &report.history.ops;

        // The stale balance and the stale 404 of /api/me, attributed to
        // legacy, neither an error; nothing else.
        assert!(
            fake.stale_served.load(Relaxed) && fake.nothing_served.load(Relaxed),
            "the fake served its stale read and its stale 404"
        );
        assert_eq!(
            (report.ryw_violations, report.monotonic_violations),
            (2, 0),
            "{}",
            report.table()
        );
        let mut found: Vec<_> = report.violations.iter().collect();
        found.sort_by_key(|v| v.read);
        let [balance, me] = &found[..] else {
            panic!("{}", report.table())
        };
        assert_eq!(
            (balance.strategy.as_str(), balance.read, balance.version),
            ("legacy", OpKind::Balance, Some(balance.expected - 1)),
            "one version behind"
        );
        assert_eq!(
            (me.strategy.as_str(), me.read, me.version),
            ("legacy", OpKind::Me, None),
            "found nothing"
        );
        let nothing = ops
            .iter()
            .find(|o| o.found_nothing())
            .expect("the 404 is in the history");
        assert_eq!(
            (
                nothing.kind,
                nothing.problem.as_deref(),
                nothing.served_by.as_deref()
            ),
            (OpKind::Me, Some("no-profile"), Some("follower1"))
        );

        // Every strategy ran at once, on both instances, through the header.
        let names: Vec<&str> = report
            .strategies
            .iter()
            .map(|s| s.strategy.as_str())
            .collect();
        assert_eq!(names, ["leader", "legacy", "causal"]);
        assert_eq!(
            *fake.strategies.lock().unwrap(),
            BTreeSet::from(["causal".to_string(), "leader".into(), "legacy".into()])
        );
        assert!(
            fake.hits.iter().all(|h| h.load(Relaxed) > 10),
            "both instances served"
        );
        for s in &report.strategies {
            assert_eq!(s.users, 2, "{}", s.strategy);
            assert!(
                s.reads > 10 && s.writes > 10 && s.stale_ok_reads > 5,
                "{s:?}"
            );
            assert_eq!(s.errors, 0, "{s:?}");
        }
        let [leader, legacy, causal] = &report.strategies[..] else {
            panic!()
        };
        assert_eq!((leader.leader_share, legacy.leader_share), (1.0, 0.0));
        assert_eq!((causal.waits, causal.mean_wait_ms), (causal.reads, 3.0));
        assert_eq!((legacy.ryw_violations, legacy.stale_not_found), (2, 1));

        // The browser behaviour: the latest token echoed every time, fresh idempotency keys.
        assert_eq!(fake.token_mismatches.load(Relaxed), 0);
        assert!(fake.tokens_received.load(Relaxed) > 0);
        assert_eq!(fake.duplicate_keys.load(Relaxed), 0);

        // Bookkeeping: every answered request is in the history (a request
        // cut off at the deadline may have reached the server: at most one
        // per user), and each user's payments carry 1, 2, 3, …
        let pays = ops.iter().filter(|o| o.kind == OpKind::Pay).count() as u64;
        let server_pays = fake.payments.load(Relaxed);
        assert!(
            pays <= server_pays && server_pays <= pays + 6,
            "{pays} recorded, {server_pays} served"
        );
        let balances = ops.iter().filter(|o| o.kind == OpKind::Balance).count() as u64;
        let server_balances = fake.balance_reads.load(Relaxed);
        assert!(balances <= server_balances && server_balances <= balances + 6);
        let mut by_user: HashMap<&str, Vec<u64>> = HashMap::new();
        for o in ops.iter().filter(|o| o.kind == OpKind::Pay) {
            by_user.entry(&o.user).or_default().push(o.version.unwrap());
        }
        for versions in by_user.values() {
            assert_eq!(*versions, (1..=versions.len() as u64).collect::<Vec<_>>());
        }
        assert!(
            ops.iter()
                .all(|o| o.recv_us >= o.sent_us
                    && o.recv_us <= (report.elapsed_s * 1e6) as u64 + 1000)
        );
        assert!(
            ops.iter()
                .any(|o| o.kind == OpKind::Me && o.version.is_some())
        );

        // Lag samples from /api/cluster, and the oracle from them.
        let f = &report.followers[0];
        assert_eq!((f.node.as_str(), f.median_ms), ("follower1", 100.0));
        assert!(f.samples >= 3, "{f:?}");
        assert_eq!(report.oracle.as_ref().unwrap().delay_ms, 100.0);
        assert!(!report.interrupted && (1.4..3.0).contains(&report.elapsed_s));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_early_stop_still_reports_and_no_token_sends_none() {
        let fake = Arc::new(Fake::default());
        let target = spawn_instance(0, fake.clone()).await;
        let cfg = BenchConfig {
            duration: Duration::from_secs(60),
            send_token: false,
            ..config(vec![target])
        };
        let started = Instant::now();
        let report = run(cfg, tokio::time::sleep(Duration::from_millis(400)))
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "stopped promptly"
        );
        assert!(report.interrupted);
        assert!(report.strategies.iter().all(|s| s.reads > 0));
        assert_eq!(fake.tokens_received.load(Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_strategy_header_stops_the_bench_before_it_starts() {
        let fake = Arc::new(Fake {
            refuse_strategy: Some("causal".into()),
            ..Fake::default()
        });
        let target = spawn_instance(0, fake.clone()).await;
        let err = run(config(vec![target]), std::future::pending())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, BenchError::Target { detail, .. } if detail.contains("X-Read-Strategy: causal") && detail.contains("unknown-strategy")),
            "{err}"
        );
        assert_eq!(fake.payments.load(Relaxed), 0);
        let unreachable = run(
            config(vec!["http://127.0.0.1:9".into()]),
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert!(
            unreachable.to_string().contains("cannot reach"),
            "{unreachable}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_open_loop_keeps_to_its_arrival_rate() {
        let fake = Arc::new(Fake::default());
        let target = spawn_instance(0, fake.clone()).await;
        let cfg = BenchConfig {
            load: Load::Open {
                iterations_per_s: 60.0,
            },
            duration: Duration::from_secs(1),
            ..config(vec![target])
        };
        let report = run(cfg, std::future::pending()).await.unwrap();
        let pays = report
            .history
            .ops
            .iter()
            .filter(|o| o.kind == OpKind::Pay)
            .count();
        // 60/s over 1 s, split over 3 groups; the first tick of each group fires at once.
        assert!((20..=66).contains(&pays), "{pays} iterations");
        assert_eq!(report.load.as_deref(), Some("open:60"));
        assert_eq!((report.ryw_violations, report.monotonic_violations), (2, 0));
    }

    /// Runs the arrival clock at 100/s with `users` users whose iterations
    /// take `work`; after `on_time`, the clock's task is held up for `late`
    /// (time jumps past its ticks, as on a busy machine), then runs on for
    /// `after` before the stop.
    async fn arrivals_with(
        users: usize,
        work: Duration,
        on_time: Duration,
        late: Duration,
        after: Duration,
    ) -> Arrivals {
        let (stop_tx, stop_rx) = watch::channel(false);
        let clock = tokio::spawn(arrivals(
            vec![(); users],
            100.0,
            stop_rx,
            move |u| async move {
                tokio::time::sleep(work).await;
                u
            },
        ));
        tokio::time::sleep(on_time).await;
        tokio::time::advance(late).await;
        tokio::time::sleep(after).await;
        stop_tx.send(true).unwrap();
        clock.await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_loop_on_time_with_idle_users_misses_nothing() {
        let ms = Duration::from_millis;
        let a = arrivals_with(5, ms(15), ms(1995), ms(0), ms(0)).await;
        // Ticks at 0, 10, …, 1990 ms: 200; rate × elapsed = 199.5, rounded down.
        assert_eq!(
            a,
            Arrivals {
                offered: 199,
                started: 200,
                no_idle_user: 0
            }
        );
        assert_eq!(a.missed(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_skipped_while_the_clock_ran_late_are_missed_arrivals() {
        let ms = Duration::from_millis;
        // On time for 1 s (ticks 0..=990: 100 started), then 500 ms late: the
        // ticks due at 1000..=1490 ms come as one late tick; then on time to
        // 1995 ms (ticks 1500..=1990: 50 started). 49 ticks never came.
        let a = arrivals_with(5, ms(1), ms(995), ms(500), ms(500)).await;
        assert_eq!(
            a,
            Arrivals {
                offered: 199,
                started: 151,
                no_idle_user: 0
            }
        );
        assert_eq!(
            a.missed(),
            48,
            "49 skipped, less the tick the stop races with"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn arrivals_that_find_every_user_busy_are_missed_too() {
        let ms = Duration::from_millis;
        // One user busy for 25 ms per iteration: every third tick finds it idle.
        let a = arrivals_with(1, ms(25), ms(995), ms(0), ms(0)).await;
        assert_eq!((a.offered, a.started + a.no_idle_user), (99, 100));
        assert_eq!((a.started, a.missed()), (34, 65));
    }

    #[tokio::test]
    async fn a_user_low_on_money_moves_to_a_new_account() {
        let mut u = User::new(3, &StrategySpec::parse_list("leader").unwrap()[0]);
        let (first, client) = (u.user_id, u.client.clone());
        u.acked = [Some(Seen::Version(5)), Some(Seen::Version(1))];
        u.needs_account = false;
        u.new_account();
        assert_ne!(u.user_id, first);
        assert_ne!(u.client, client);
        assert_eq!(
            (u.acked, u.seen, u.needs_account, u.token.is_none()),
            ([None; 2], [None; 2], true, true)
        );
    }
}
