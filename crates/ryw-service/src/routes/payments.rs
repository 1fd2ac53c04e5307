//! `POST /api/payments` (pay, exactly once per `Idempotency-Key`) and
//! `GET /api/payments` and `GET /api/balance` (fresh reads).

use crate::domain::{self, AmountCents, IdempotencyKey};
use crate::error::ApiError;
use crate::extract::{Caller, JsonBody};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ryw_axum::Served;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

/// Body of `POST /api/payments`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PaymentRequest {
    /// Integer cents, 1..=100000000 (strings, fractions and other numbers
    /// are refused with 422 `invalid-amount`).
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub amount_cents: i64,
    /// Optional note, at most 200 characters, no control characters.
    #[schema(max_length = 200, pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$")]
    pub description: Option<String>,
}

/// A committed payment and the balance right after it (strategy 1 of
/// the payment story: the client shows this at once, with no second read).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PaymentBody {
    /// The payment's id.
    pub payment_id: uuid::Uuid,
    /// Amount debited.
    pub amount_cents: i64,
    /// Balance right after this payment.
    pub balance_cents: i64,
    /// Account version right after this payment.
    pub version: i64,
    /// Always `leader`.
    pub served_by: &'static str,
    /// A write of this session that a failover lost: the position (`X/Y`)
    /// the old leader acknowledged it at, also in `X-Ryw-Write-Lost`. Sent
    /// once; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_lost: Option<String>,
}

// Its strings are borrowed from the read's decision: the hottest answer of
// the service builds no `String` but its JSON.
/// `GET /api/balance`.
#[derive(Debug, Serialize, ToSchema)]
pub struct BalanceBody<'a> {
    /// Balance in cents.
    pub balance_cents: i64,
    /// Account version: compare with the last payment's to spot staleness.
    pub version: i64,
    /// `leader` or a follower's name.
    pub served_by: &'a str,
    /// Strategy that routed the read.
    pub strategy: &'a str,
    /// Time spent waiting for a follower to catch up.
    pub waited_ms: u64,
    /// A write of this session that a failover lost: the position (`X/Y`)
    /// the old leader acknowledged it at, also in `X-Ryw-Write-Lost`. Sent
    /// once; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_lost: Option<String>,
}

/// One row of `GET /api/payments`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentRow {
    /// The payment's id.
    pub payment_id: uuid::Uuid,
    /// Amount debited.
    pub amount_cents: i64,
    /// Optional note.
    pub description: Option<String>,
    /// Account version after this payment.
    pub version: i64,
    /// When it committed (RFC 3339, UTC).
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// `GET /api/payments`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentList {
    /// Newest first, at most 50.
    pub payments: Vec<PaymentRow>,
    /// `leader` or a follower's name.
    pub served_by: String,
    /// Strategy that routed the read.
    pub strategy: String,
    /// A write of this session that a failover lost: the position (`X/Y`)
    /// the old leader acknowledged it at, also in `X-Ryw-Write-Lost`. Sent
    /// once; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_lost: Option<String>,
}

fn request_hash(amount: AmountCents, description: &Option<String>) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(amount.get().to_be_bytes());
    match description {
        Some(d) => {
            h.update([1]);
            h.update(d.as_bytes());
        }
        None => h.update([0]),
    }
    h.finalize().to_vec()
}

/// Pays: one leader transaction that locks the account row, replays an
/// earlier payment with the same `Idempotency-Key`, checks the balance,
/// debits it, bumps `version` and records the payment (rule 6).
#[utoipa::path(post, path = "/api/payments", tag = "payments", operation_id = "pay",
    params(crate::openapi::IdentityHeader, crate::openapi::IdempotencyHeader),
    request_body(content = PaymentRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "paid", body = PaymentBody),
        (status = 200, description = "a replay of the same Idempotency-Key and body: the first payment, charged once", body = PaymentBody, headers(("Idempotent-Replay" = String, description = "`true`"))),
        (status = 400, description = "bad X-Demo-UserId (bad-user-id) or Idempotency-Key (bad-idempotency-key), or the body is not valid JSON (malformed-json)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no account: POST /api/account first (no-account)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "the body is larger than 64 KiB (body-too-large)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "the body is not application/json (unsupported-media-type)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "amount_cents not an integer in 1..=100000000 (invalid-amount), a bad description (invalid-field), not enough money (insufficient-funds, with balance_cents), or the Idempotency-Key was used for another payment (idempotency-key-reused)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "a node or the session store is unreachable, or the request took too long: retry (Retry-After: 1)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn pay(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let amount = AmountCents::parse(body.get("amount_cents").unwrap_or(&serde_json::Value::Null))?;
    let description = domain::description(body.get("description"))?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(IdempotencyKey::parse(
            v.to_str().map_err(|_| ApiError::BadIdempotencyKey)?,
        )?),
    };
    let hash = request_hash(amount, &description);
    let uid = caller.user.0;

    // One leader transaction; dropped on an early return, it rolls back and
    // leaves nothing (rule 6).
    let tx = state.router.begin(&caller.session.key).await?;
    let (status, body) = {
        // The account row lock serialises this user's payments: a second
        // click waits here, then sees the first one's committed row below.
        let Some(acct) = tx
            .query_opt(
                "SELECT balance_cents FROM accounts WHERE user_id = $1 FOR UPDATE",
                &[&uid],
            )
            .await
            .map_err(ApiError::from_db)?
        else {
            return Err(ApiError::NoAccount);
        };
        let replay = match &key {
            Some(k) => tx
                .query_opt(
                    "SELECT payment_id, amount_cents, balance_after, version, request_hash \
                     FROM payments WHERE user_id = $1 AND idempotency_key = $2",
                    &[&uid, &k.as_str()],
                )
                .await
                .map_err(ApiError::from_db)?,
            None => None,
        };
        if let Some(prev) = replay {
            let prev_hash: Vec<u8> = prev.get(4);
            if prev_hash != hash {
                return Err(ApiError::IdempotencyKeyReused);
            }
            (
                StatusCode::OK,
                PaymentBody {
                    payment_id: prev.get(0),
                    amount_cents: prev.get(1),
                    balance_cents: prev.get(2),
                    version: prev.get(3),
                    served_by: "leader",
                    write_lost: None,
                },
            )
        } else {
            let balance: i64 = acct.get(0);
            if balance < amount.get() {
                return Err(ApiError::InsufficientFunds {
                    balance_cents: balance,
                    amount_cents: amount.get(),
                });
            }
            let row = tx
                .query_opt(
                    "UPDATE accounts SET balance_cents = balance_cents - $2, version = version + 1 \
                     WHERE user_id = $1 AND balance_cents >= $2 RETURNING balance_cents, version",
                    &[&uid, &amount.get()],
                )
                .await
                .map_err(ApiError::from_db)?
                .ok_or(ApiError::InsufficientFunds {
                    balance_cents: balance,
                    amount_cents: amount.get(),
                })?;
            let payment_id = uuid::Uuid::new_v4();
            let (balance_after, version): (i64, i64) = (row.get(0), row.get(1));
            tx.execute(
                "INSERT INTO payments (payment_id, user_id, idempotency_key, request_hash, amount_cents, \
                 description, balance_after, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[&payment_id, &uid, &key.as_ref().map(|k| k.as_str()), &hash, &amount.get(), &description, &balance_after, &version],
            )
            .await
            .map_err(ApiError::from_db)?;
            (
                StatusCode::CREATED,
                PaymentBody {
                    payment_id,
                    amount_cents: amount.get(),
                    balance_cents: balance_after,
                    version,
                    served_by: "leader",
                    write_lost: None,
                },
            )
        }
    };
    // Rule 1: the router reads the token after COMMIT returned, in its own
    // statement. A replay commits too, so its token covers the first
    // payment. If the leader went away in between, the outcome is unknown:
    // a 503 saying so, and a retry with the same Idempotency-Key tells.
    let committed = tx.commit().await?;
    let body = PaymentBody {
        write_lost: lost_text(committed.lost),
        ..body
    };
    let mut resp = (status, Served::write(committed), Json(body)).into_response();
    if status == StatusCode::OK {
        resp.headers_mut()
            .insert("idempotent-replay", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// The caller's balance: a fresh read, routed by the strategy.
#[utoipa::path(get, path = "/api/balance", tag = "payments", operation_id = "balance",
    params(crate::openapi::IdentityHeader, crate::openapi::TokenHeader, crate::openapi::StrategyHeader, crate::openapi::ScopeHeader),
    responses(
        (status = 200, description = "the balance, read-your-writes", body = BalanceBody, headers(("X-Waited-Ms" = u64, description = "time this read waited for a follower to catch up, in ms rounded up (0: no wait)"), ("X-Waited-For" = String, description = "the follower a hybrid read waited for (the one predicted to catch up), when it waited"))),
        (status = 400, description = "bad X-Demo-UserId (bad-user-id), X-Consistency-Token (bad-token) or X-Read-Strategy (unknown-strategy, strategy-header-not-allowed)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no account (no-account); under legacy also a follower that has not replayed its creation yet", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "a node or the session store is unreachable, or the request took too long: retry (Retry-After: 1)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn balance(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let read = state
        .router
        .query_opt(
            &caller.session.fresh(),
            "SELECT balance_cents, version FROM accounts WHERE user_id = $1",
            &[&caller.user.0],
        )
        .await?;
    let d = &read.decision;
    let served = Served::from(d);
    // "No account" was seen on that node too: it names the node and keeps
    // the session's token, as a 200 would.
    let Some(row) = read.value else {
        return Ok((served, ApiError::NoAccount).into_response());
    };
    let body = BalanceBody {
        balance_cents: row.get(0),
        version: row.get(1),
        served_by: &d.node,
        strategy: d.strategy.as_str(),
        waited_ms: d.waited_ms(),
        write_lost: lost_text(d.lost),
    };
    Ok((served, Json(body)).into_response())
}

/// The caller's recent payments, newest first: a fresh read.
#[utoipa::path(get, path = "/api/payments", tag = "payments", operation_id = "list_payments",
    params(crate::openapi::IdentityHeader, crate::openapi::TokenHeader, crate::openapi::StrategyHeader, crate::openapi::ScopeHeader),
    responses(
        (status = 200, description = "the caller's recent payments, newest first (empty without an account)", body = PaymentList, headers(("X-Waited-Ms" = u64, description = "time this read waited for a follower to catch up, in ms rounded up (0: no wait)"), ("X-Waited-For" = String, description = "the follower a hybrid read waited for (the one predicted to catch up), when it waited"))),
        (status = 400, description = "bad X-Demo-UserId (bad-user-id), X-Consistency-Token (bad-token) or X-Read-Strategy (unknown-strategy, strategy-header-not-allowed)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "a node or the session store is unreachable, or the request took too long: retry (Retry-After: 1)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<(Served, Json<PaymentList>), ApiError> {
    let read = state
        .router
        .query(
            &caller.session.fresh(),
            "SELECT payment_id, amount_cents, description, version, \
             to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') \
             FROM payments WHERE user_id = $1 ORDER BY version DESC LIMIT 50",
            &[&caller.user.0],
        )
        .await?;
    let payments = read
        .value
        .iter()
        .map(|r| PaymentRow {
            payment_id: r.get(0),
            amount_cents: r.get(1),
            description: r.get(2),
            version: r.get(3),
            created_at: r.get(4),
        })
        .collect();
    let d = &read.decision;
    let body = PaymentList {
        payments,
        served_by: d.node.to_string(),
        strategy: d.strategy.to_string(),
        write_lost: lost_text(d.lost),
    };
    Ok((Served::from(d), Json(body)))
}

/// `write_lost` in a body: the lost write's position, as `X-Ryw-Write-Lost`
/// says it.
pub(crate) fn lost_text(lost: Option<ryw_router::Position>) -> Option<String> {
    lost.map(|p| p.lsn.to_string())
}
