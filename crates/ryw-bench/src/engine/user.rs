//! One virtual user (one browser): its account, its token and what it has
//! seen, the requests of one iteration, and the live check of its own reads.

use super::{H_IDEMPOTENCY, H_SERVED_BY, H_STRATEGY, H_TOKEN, H_USER, H_WAITED, RunState};
use crate::config::StrategySpec;
use crate::history::{Op, OpKind, Seen};
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use uuid::Uuid;

/// The largest payment (cents). A user whose balance falls below it moves to
/// a new account (a new user id and client) instead of running out of money.
const MAX_AMOUNT: i64 = 100;

/// Pause after an iteration whose write got no answer or a 5xx, so a dead
/// service does not turn the bench into a busy loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// The useful parts of one response.
#[derive(Debug, Default)]
struct Reply {
    status: u16,
    balance: Option<i64>,
}

/// One virtual user (one browser): its account, its token and what it has
/// seen so far.
#[derive(Debug)]
pub(super) struct User {
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
    pub(super) fn new(index: usize, strategy: &StrategySpec) -> User {
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
        sh: &RunState,
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

    async fn think(&self, sh: &RunState) {
        let pause = sh.config.think.sample(&mut rand::rng());
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }

    /// One iteration: pay, think, read the balance; now and then update the
    /// profile, think, read `/api/me`; now and then read the catalogue.
    pub(super) async fn iteration(&mut self, sh: &RunState) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
