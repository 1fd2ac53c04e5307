//! The .NET + Redis demo's profile: `POST /api/me/profile` (write) and `GET /api/me`
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
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// 1–200 characters, not all blank, no control characters (stored
    /// without surrounding blanks).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\s\\x00-\\x1F\\x7F-\\x9F][^\\x00-\\x1F\\x7F-\\x9F]*$"
    )]
    pub name: String,
    /// An http(s) URL of at most 2048 visible ASCII characters (anything
    /// else percent-encoded): a host name (letters, digits, dots, dashes),
    /// an optional port, then an optional path, query or fragment.
    #[serde(rename = "avatarUrl")]
    #[schema(
        max_length = 2048,
        pattern = "^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?([/?#][!-~]*)?$"
    )]
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
    /// A write of this session that a failover lost: the position (`X/Y`)
    /// the old leader acknowledged it at, also in `X-Ryw-Write-Lost`. Sent
    /// once; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_lost: Option<String>,
}

/// Creates or updates the caller's profile on the leader.
#[utoipa::path(post, path = "/api/me/profile", tag = "profile", operation_id = "save_profile",
    params(crate::openapi::IdentityHeader),
    request_body(content = ProfileRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "saved", body = ProfileBody),
        (status = 400, description = "bad X-Demo-UserId (bad-user-id), or the body is not valid JSON (malformed-json)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "the body is larger than 64 KiB (body-too-large)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "the body is not application/json (unsupported-media-type)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "a field is invalid (invalid-field)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "a node or the session store is unreachable, or the request took too long: retry (Retry-After: 1)", body = crate::error::Problem, content_type = "application/problem+json")))]
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
        write_lost: super::payments::lost_text(written.lost),
    };
    Ok((Served::write(written.committed()), Json(body)))
}

/// The caller's profile: a fresh read.
#[utoipa::path(get, path = "/api/me", tag = "profile", operation_id = "me",
    params(crate::openapi::IdentityHeader, crate::openapi::TokenHeader, crate::openapi::StrategyHeader, crate::openapi::ScopeHeader),
    responses(
        (status = 200, description = "the caller's profile, read-your-writes", body = ProfileBody, headers(("X-Waited-Ms" = u64, description = "time this read waited for a follower to catch up, in ms rounded up (0: no wait)"), ("X-Waited-For" = String, description = "the follower a hybrid read waited for (the one predicted to catch up), when it waited"))),
        (status = 400, description = "bad X-Demo-UserId (bad-user-id), X-Consistency-Token (bad-token) or X-Read-Strategy (unknown-strategy, strategy-header-not-allowed)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "no profile (no-profile)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "a node or the session store is unreachable, or the request took too long: retry (Retry-After: 1)", body = crate::error::Problem, content_type = "application/problem+json")))]
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
        waited_ms: Some(d.waited_ms()),
        write_lost: super::payments::lost_text(d.lost),
    };
    Ok((served, Json(body)).into_response())
}
