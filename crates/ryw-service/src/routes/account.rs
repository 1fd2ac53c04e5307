//! `POST /api/account`: create the caller's account.

use crate::error::ApiError;
use crate::extract::Caller;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use ryw_axum::Served;
use serde::Serialize;
use utoipa::ToSchema;

/// The caller's account.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountBody {
    /// The user id.
    pub user_id: uuid::Uuid,
    /// Current balance in cents.
    pub balance_cents: i64,
    /// Rises by one per payment: a client can tell a stale balance by it.
    pub version: i64,
}

/// Creates the caller's account with the opening balance (201), or returns
/// the existing one (200).
#[utoipa::path(post, path = "/api/account", tag = "payments", operation_id = "create_account",
    params(crate::openapi::IdentityHeader),
    responses(
        (status = 201, description = "created with the opening balance", body = AccountBody),
        (status = 200, description = "it existed: the account as it is", body = AccountBody),
        (status = 400, description = "bad X-Demo-UserId (bad-user-id)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "a node or the session store is unreachable, or the request took too long: retry (Retry-After: 1)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<(StatusCode, Served, Json<AccountBody>), ApiError> {
    let uid = caller.user.0;
    let tx = state.router.begin(&caller.session.key).await?;
    let inserted = tx
        .query_opt(
            "INSERT INTO accounts (user_id, opening_cents, balance_cents) VALUES ($1, $2, $2) \
             ON CONFLICT (user_id) DO NOTHING RETURNING balance_cents, version",
            &[&uid, &state.cfg.opening_balance_cents],
        )
        .await
        .map_err(ApiError::from_db)?;
    let (status, row) = match inserted {
        Some(row) => (StatusCode::CREATED, row),
        // Created before (or by a concurrent request, whose row this
        // statement's own snapshot sees once the insert waited for it).
        None => (
            StatusCode::OK,
            tx.query_one(
                "SELECT balance_cents, version FROM accounts WHERE user_id = $1",
                &[&uid],
            )
            .await
            .map_err(ApiError::from_db)?,
        ),
    };
    // Rule 1: the token is read after COMMIT returned, by the router.
    let token = tx.commit().await?;
    let body = AccountBody {
        user_id: uid,
        balance_cents: row.get(0),
        version: row.get(1),
    };
    Ok((status, Served::write(token), Json(body)))
}
