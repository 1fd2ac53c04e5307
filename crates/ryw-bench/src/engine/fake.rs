//! A tiny in-process fake of the service (axum) for the engine's tests,
//! with one deliberately stale read and one deliberately stale 404. It checks
//! what the engine sends (strategy header, token echo, fresh idempotency
//! keys) and counts what it served, so the tests can hold the engine's
//! bookkeeping against it. The real bench against the real `ryw serve` on a
//! real cluster is `tests/real_cluster.rs`.

use super::{H_IDEMPOTENCY, H_SERVED_BY, H_STRATEGY, H_TOKEN, H_USER};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode as Code};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

#[derive(Default)]
pub(super) struct Account {
    version: u64,
    balance: i64,
    profile: Option<u64>,
    issued: u64,
    last_token: Option<String>,
}

#[derive(Default)]
pub(super) struct Fake {
    pub(super) accounts: Mutex<HashMap<String, Account>>,
    pub(super) strategies: Mutex<BTreeSet<String>>,
    pub(super) keys: Mutex<HashSet<String>>,
    pub(super) payments: AtomicU64,
    pub(super) balance_reads: AtomicU64,
    pub(super) token_mismatches: AtomicU64,
    pub(super) tokens_received: AtomicU64,
    pub(super) duplicate_keys: AtomicU64,
    pub(super) stale_served: AtomicBool,
    pub(super) nothing_served: AtomicBool,
    pub(super) refuse_strategy: Option<String>,
    pub(super) hits: [AtomicU64; 2],
}

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
pub(super) async fn spawn_instance(id: usize, fake: Arc<Fake>) -> String {
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
