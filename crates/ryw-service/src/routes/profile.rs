//! Seed 003's profile: `POST /api/me/profile` (write) and `GET /api/me`
//! (fresh read).

use crate::domain::Profile;
use crate::error::ApiError;
use crate::extract::{Caller, JsonBody};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use ryw_axum::Served;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Body of `POST /api/me/profile`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ProfileRequest {
    /// A plausible address, at most 254 characters.
    pub email: String,
    /// 1–200 characters.
    pub name: String,
    /// http(s), at most 2048 characters.
    #[serde(rename = "avatarUrl")]
    pub avatar_url: Option<String>,
}

/// A profile as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileBody {
    /// The user id.
    pub user_id: uuid::Uuid,
    /// Email address.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Avatar URL.
    #[serde(rename = "avatarUrl")]
    pub avatar_url: Option<String>,
    /// Rises by one per update: a client can tell a stale profile by it.
    pub version: i64,
    /// `leader` or a follower's name.
    pub served_by: String,
    /// Strategy that routed the read (reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Time spent waiting for a follower (reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<u64>,
}

/// Creates or updates the caller's profile on the leader.
#[utoipa::path(post, path = "/api/me/profile", tag = "profile", request_body = ProfileRequest,
    params(("X-Demo-UserId" = Option<String>, Header, description = "caller (UUID)")),
    responses((status = 200, body = ProfileBody), (status = 422, description = "invalid field")))]
pub async fn upsert(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> Result<(Served, Json<ProfileBody>), ApiError> {
    let p = Profile::parse(&body)?;
    // One statement, committed on its own; the router records its position
    // after it returned (rule 1).
    let written = state
        .router
        .write_query(
            &caller.session.key,
            "INSERT INTO users (id, email, name, avatar_url) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET email = excluded.email, name = excluded.name, \
             avatar_url = excluded.avatar_url, version = users.version + 1, updated_at = now() \
             RETURNING version",
            &[&caller.user.0, &p.email, &p.name, &p.avatar_url],
        )
        .await?;
    let version = written.value.first().map(|r| r.get(0)).unwrap_or_default();
    let body = ProfileBody {
        user_id: caller.user.0,
        email: p.email,
        name: p.name,
        avatar_url: p.avatar_url,
        version,
        served_by: "leader".into(),
        strategy: None,
        waited_ms: None,
    };
    Ok((Served::write(written.token), Json(body)))
}

/// The caller's profile: a fresh read.
#[utoipa::path(get, path = "/api/me", tag = "profile",
    params(("X-Demo-UserId" = Option<String>, Header, description = "caller (UUID)")),
    responses((status = 200, body = ProfileBody), (status = 404, description = "no profile")))]
pub async fn me(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let read = state
        .router
        .query_opt(
            &caller.session.fresh(),
            "SELECT email, name, avatar_url, version FROM users WHERE id = $1",
            &[&caller.user.0],
        )
        .await?;
    let d = &read.decision;
    let served = Served::from(d);
    // "No profile" was seen on that node too: it names the node and keeps
    // the session's token, as a 200 would.
    let Some(row) = read.value else {
        return Ok((served, ApiError::NoProfile).into_response());
    };
    let body = ProfileBody {
        user_id: caller.user.0,
        email: row.get(0),
        name: row.get(1),
        avatar_url: row.get(2),
        version: row.get(3),
        served_by: d.node.to_string(),
        strategy: Some(d.strategy.to_string()),
        waited_ms: Some(d.waited.as_millis() as u64),
    };
    Ok((served, Json(body)).into_response())
}
