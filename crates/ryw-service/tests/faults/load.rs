//! The load: `CLIENTS` clients, each with its own account, in a loop of pay
//! → fresh read (`causal` and `hybrid`, alternating by client) → stale-ok
//! read, through the in-process app. Each client judges its own fresh reads:
//! stale if `version` is below the highest version its acknowledged payments
//! returned (the bench's checker definition), or below a version it already saw
//! (monotonic reads). Counts are kept per phase (before, during, after the
//! fault), by the phase in force when the request was sent.

use crate::helpers::call;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Clients running at once (half `causal`, half `hybrid`).
pub const CLIENTS: usize = 6;
/// Pause between iterations of one client.
const THINK: Duration = Duration::from_millis(5);
/// A request not answered in this long counts as hung (the service's own
/// limit is lower: it must answer 503 before this).
const HUNG: Duration = Duration::from_secs(8);

/// Phases of a fault test.
pub const BEFORE: usize = 0;
pub const DURING: usize = 1;
pub const AFTER: usize = 2;
const PHASES: [&str; 3] = ["before", "during", "after"];

/// What one kind of request did in one phase.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub sent: u64,
    pub ok: u64,
    /// 503 problem+json (allowed only where a test says so).
    pub unavailable: u64,
    /// Any other non-2xx (never allowed).
    pub failed: u64,
    /// Not answered within `HUNG`.
    pub hung: u64,
    /// Slowest answer.
    pub max_ms: u64,
    /// Successful answers by `X-Served-By`.
    pub by_node: BTreeMap<String, u64>,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.unavailable += other.unavailable;
        self.failed += other.failed;
        self.hung += other.hung;
        self.max_ms = self.max_ms.max(other.max_ms);
        for (k, v) in &other.by_node {
            *self.by_node.entry(k.clone()).or_default() += v;
        }
    }

    /// Successful answers not served by the leader.
    pub fn served_by_followers(&self) -> u64 {
        self.by_node
            .iter()
            .filter(|(k, _)| k.as_str() != "leader")
            .map(|(_, v)| v)
            .sum()
    }
}

/// One phase: payments, fresh reads, stale-ok reads, and the verdicts.
#[derive(Debug, Default, Clone)]
pub struct Phase {
    pub pay: Counts,
    pub fresh: Counts,
    pub stale_ok: Counts,
    /// Fresh reads below the client's last acknowledged version.
    pub stale: u64,
    /// Fresh reads below a version the client had already read.
    pub non_monotonic: u64,
    /// Examples of failures, for the assertion message.
    pub examples: Vec<String>,
}

impl Phase {
    fn add(&mut self, o: &Phase) {
        self.pay.add(&o.pay);
        self.fresh.add(&o.fresh);
        self.stale_ok.add(&o.stale_ok);
        self.stale += o.stale;
        self.non_monotonic += o.non_monotonic;
        for e in &o.examples {
            if self.examples.len() < 5 {
                self.examples.push(e.clone());
            }
        }
    }

    /// Whether `node` answered any read of this phase.
    pub fn read_from(&self, node: &str) -> bool {
        self.stale_ok.by_node.contains_key(node) || self.fresh.by_node.contains_key(node)
    }

    pub fn requests(&self) -> u64 {
        self.pay.sent + self.fresh.sent + self.stale_ok.sent
    }

    pub fn unavailable(&self) -> u64 {
        self.pay.unavailable + self.fresh.unavailable + self.stale_ok.unavailable
    }

    /// Non-2xx other than 503, and hangs: never allowed.
    pub fn hard_failures(&self) -> u64 {
        self.pay.failed
            + self.fresh.failed
            + self.stale_ok.failed
            + self.pay.hung
            + self.fresh.hung
            + self.stale_ok.hung
    }
}

/// Everything the clients did, per phase, and what they were acknowledged.
#[derive(Debug, Default)]
pub struct Report {
    pub phases: [Phase; 3],
    /// `(user, payment_id)` of every acknowledged payment.
    pub acked: Vec<(uuid::Uuid, uuid::Uuid)>,
    /// Every client's user.
    pub users: Vec<uuid::Uuid>,
}

impl Report {
    pub fn total(&self) -> Phase {
        let mut t = Phase::default();
        for p in &self.phases {
            t.add(p);
        }
        t
    }

    /// Zero stale and zero non-monotonic fresh reads, zero hangs and zero
    /// non-503 failures, in every phase.
    pub fn assert_consistent(&self) {
        let t = self.total();
        assert_eq!(t.stale, 0, "stale fresh reads: {self}");
        assert_eq!(t.non_monotonic, 0, "non-monotonic reads: {self}");
        assert_eq!(t.hard_failures(), 0, "failed or hung requests: {self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, p) in PHASES.iter().zip(&self.phases) {
            writeln!(
                f,
                "  {name:>6}: {} requests; pay {} ok / {} 503 / {} failed / {} hung (max {} ms); \
                 fresh {} ok {:?} / {} 503 / {} failed / {} hung (max {} ms); \
                 stale-ok {} ok {:?} / {} 503 / {} failed (max {} ms); stale {} non-monotonic {}",
                p.requests(),
                p.pay.ok,
                p.pay.unavailable,
                p.pay.failed,
                p.pay.hung,
                p.pay.max_ms,
                p.fresh.ok,
                p.fresh.by_node,
                p.fresh.unavailable,
                p.fresh.failed,
                p.fresh.hung,
                p.fresh.max_ms,
                p.stale_ok.ok,
                p.stale_ok.by_node,
                p.stale_ok.unavailable,
                p.stale_ok.failed,
                p.stale_ok.max_ms,
                p.stale,
                p.non_monotonic,
            )?;
            for e in &p.examples {
                writeln!(f, "          e.g. {e}")?;
            }
        }
        write!(f, "  acknowledged payments: {}", self.acked.len())
    }
}

/// Running clients; [`Load::stop`] collects their report.
pub struct Load {
    stop: Arc<AtomicBool>,
    phase: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<Client>>,
}

impl Load {
    /// Creates one account per client and starts them.
    pub async fn start(app: &axum::Router) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(AtomicUsize::new(BEFORE));
        let mut tasks = Vec::new();
        for i in 0..CLIENTS {
            let user = uuid::Uuid::new_v4();
            let r = call(
                app,
                "POST",
                "/api/account",
                Some(&user.to_string()),
                &[],
                None,
            )
            .await;
            assert!(r.status.is_success(), "account: {r:?}");
            let client = Client {
                app: app.clone(),
                user,
                strategy: if i % 2 == 0 { "causal" } else { "hybrid" },
                token: None,
                acked_version: 0,
                seen_version: 0,
                pending_key: None,
                phases: Default::default(),
                acked: Vec::new(),
            };
            tasks.push(tokio::spawn(client.run(stop.clone(), phase.clone())));
        }
        Load { stop, phase, tasks }
    }

    /// Requests sent from now on count in `phase`.
    pub fn phase(&self, phase: usize) {
        self.phase.store(phase, Ordering::SeqCst);
    }

    /// Stops the clients (each finishes its request) and merges their counts.
    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        let mut report = Report::default();
        for t in self.tasks {
            let c = t.await.expect("client task");
            for (mine, theirs) in report.phases.iter_mut().zip(&c.phases) {
                mine.add(theirs);
            }
            report.users.push(c.user);
            report.acked.extend(c.acked.iter().map(|&id| (c.user, id)));
        }
        report
    }
}

struct Client {
    app: axum::Router,
    user: uuid::Uuid,
    strategy: &'static str,
    /// The last `X-Consistency-Token` received, sent back as a real client would.
    token: Option<String>,
    /// Highest version an acknowledged payment returned.
    acked_version: i64,
    /// Highest version a fresh read returned.
    seen_version: i64,
    /// The key of a payment that got a 503: retried with the same key, so it
    /// is charged exactly once whether or not it had committed.
    pending_key: Option<String>,
    phases: [Phase; 3],
    acked: Vec<uuid::Uuid>,
}

enum Kind {
    Pay,
    Fresh,
    StaleOk,
}

impl Client {
    async fn run(mut self, stop: Arc<AtomicBool>, phase: Arc<AtomicUsize>) -> Client {
        while !stop.load(Ordering::SeqCst) {
            let key = self
                .pending_key
                .take()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let body = r#"{"amount_cents": 1}"#;
            if let Some(r) = self
                .request(
                    &phase,
                    Kind::Pay,
                    "POST",
                    "/api/payments",
                    Some(&key),
                    Some(body),
                )
                .await
            {
                if r.status.is_success() {
                    self.acked_version = self.acked_version.max(r.i64("version"));
                    let id = r.body["payment_id"].as_str().unwrap_or_default();
                    self.acked.push(id.parse().expect("payment_id is a UUID"));
                } else if r.status == 503 {
                    self.pending_key = Some(key);
                }
            }
            if let Some(r) = self
                .request(&phase, Kind::Fresh, "GET", "/api/balance", None, None)
                .await
                && r.status == 200
            {
                let v = r.i64("version");
                let p = &mut self.phases[phase.load(Ordering::SeqCst)];
                if v < self.acked_version {
                    p.stale += 1;
                    note(
                        p,
                        format!(
                            "stale: version {v} < acknowledged {} from {}",
                            self.acked_version,
                            r.header("x-served-by")
                        ),
                    );
                }
                if v < self.seen_version {
                    p.non_monotonic += 1;
                    note(
                        p,
                        format!("non-monotonic: version {v} after {}", self.seen_version),
                    );
                }
                self.seen_version = self.seen_version.max(v);
            }
            self.request(&phase, Kind::StaleOk, "GET", "/api/products", None, None)
                .await;
            tokio::time::sleep(THINK).await;
        }
        self
    }

    /// Sends one request, counts it in the phase in force when it was sent,
    /// keeps the token it returns. `None` when it hung.
    async fn request(
        &mut self,
        phase: &AtomicUsize,
        kind: Kind,
        method: &str,
        path: &str,
        idempotency_key: Option<&str>,
        body: Option<&str>,
    ) -> Option<crate::helpers::Resp> {
        let at = phase.load(Ordering::SeqCst);
        let user = self.user.to_string();
        let mut headers = vec![("x-read-strategy", self.strategy)];
        if let Some(t) = &self.token {
            headers.push(("x-consistency-token", t.as_str()));
        }
        if let Some(k) = idempotency_key {
            headers.push(("idempotency-key", k));
        }
        let started = Instant::now();
        let res = tokio::time::timeout(
            HUNG,
            call(&self.app, method, path, Some(&user), &headers, body),
        )
        .await;
        let ms = started.elapsed().as_millis() as u64;
        let p = &mut self.phases[at];
        let c = match kind {
            Kind::Pay => &mut p.pay,
            Kind::Fresh => &mut p.fresh,
            Kind::StaleOk => &mut p.stale_ok,
        };
        c.sent += 1;
        c.max_ms = c.max_ms.max(ms);
        let Ok(r) = res else {
            c.hung += 1;
            note(p, format!("{method} {path} hung"));
            return None;
        };
        if r.status.is_success() {
            c.ok += 1;
            *c.by_node
                .entry(r.header("x-served-by").to_owned())
                .or_default() += 1;
        } else if r.status == 503 {
            c.unavailable += 1;
            assert_eq!(
                r.header("content-type"),
                "application/problem+json",
                "a 503 must be problem+json: {r:?}"
            );
        } else {
            c.failed += 1;
            note(p, format!("{method} {path} -> {} {}", r.status, r.body));
        }
        let t = r.header("x-consistency-token");
        if !t.is_empty() {
            self.token = Some(t.to_owned());
        }
        Some(r)
    }
}

fn note(p: &mut Phase, what: String) {
    if p.examples.len() < 5 {
        p.examples.push(what);
    }
}
