//! The OpenAPI document (`/openapi.json`, `/docs`) and what its operations
//! share: the request headers with their formats (a UUID, the strategy
//! names, the token's shape, the idempotency key's limits) and the problem
//! schema of every error answer.
//!
//! The document must tell the truth, so that a client generated from it,
//! or a conformance tool (schemathesis, in `tests/conformance.rs`), finds
//! the server answering as written: every limit the server enforces is in
//! it, and every status it answers, with its content type. Two facts depend
//! on how the server was started, so [`document`] fills them in per server:
//! `X-Read-Strategy` exists only with `--allow-strategy-header`, and the lag
//! control names this cluster's followers.

use crate::config::ServiceConfig;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{Object, Schema};
use utoipa::openapi::{RefOr, ResponseBuilder};
use utoipa::{IntoParams, OpenApi, ToSchema};

/// A consistency token as this build reads it: `v2.<24 hex>.<43 base64url>`
/// (timeline and position; what it writes), or `v1.<16 hex>.<43
/// base64url>` (before timelines).
pub const TOKEN_PATTERN: &str = r"^(v2\.[0-9a-f]{24}|v1\.[0-9a-f]{16})\.[A-Za-z0-9_-]{43}$";

/// The routes the document describes, and their schemas.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "ryw demo service", description = "Read-your-writes consistency on PostgreSQL streaming replication. \
        Identity: X-Demo-UserId (UUID). Every /api response carries X-Served-By and X-Consistency-Token. \
        Errors are RFC 9457 application/problem+json. Request bodies: at most 64 KiB (413 beyond), \
        Content-Type application/json (415 otherwise), valid JSON (400 otherwise)."),
    paths(
        crate::routes::account::create,
        crate::routes::payments::pay,
        crate::routes::payments::balance,
        crate::routes::payments::list,
        crate::routes::profile::upsert,
        crate::routes::profile::me,
        crate::routes::products::list,
        crate::routes::cluster::show,
        crate::routes::cluster::set_lag,
        crate::routes::ops::healthz,
        crate::routes::ops::readyz,
        crate::routes::ops::metrics,
    ),
    components(schemas(crate::error::Problem, StrategyName, ScopeName)),
    tags((name = "payments", description = "pay, then read the balance"),
         (name = "profile", description = "profile write, then /api/me"),
         (name = "products", description = "stale-ok catalogue"),
         (name = "ops", description = "cluster, health, metrics"))
)]
pub struct ApiDoc;

/// The read strategies `X-Read-Strategy` names (with
/// `--allow-strategy-header`; a `:<duration>` suffix such as `sticky:2s`
/// or `causal:0ms` sets the window or budget, at most 60 s).
#[derive(Debug, ToSchema)]
#[schema(rename_all = "kebab-case")]
pub enum StrategyName {
    /// Always the leader.
    Leader,
    /// A random follower: shows the stale-read problem.
    Legacy,
    /// The leader within the sticky window after a write.
    Sticky,
    /// A follower that has replayed the session's token, after a bounded wait.
    Causal,
    /// The server's default: causal, with waits only when worth it.
    Hybrid,
    /// Asks the chosen follower for its position first.
    PerReadCheck,
}

/// The read scopes `X-Ryw-Scope` names: whose writes a fresh read must
/// see.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "kebab-case")]
pub enum ScopeName {
    /// The request's own token (`X-Consistency-Token`) only.
    Connection,
    /// The caller's session (`X-Demo-UserId`), from any instance: the default.
    Session,
    /// Every write any instance sharing the session store acknowledged
    /// before the read began.
    Global,
    /// Every transaction the leader committed before the read began.
    Cluster,
}

/// `X-Ryw-Scope`: the scope of one request's fresh reads.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct ScopeHeader {
    /// Whose writes the request's fresh reads must see (default: the
    /// server's `--scope`, `session`). Unknown: 400 `unknown-scope`.
    #[param(rename = "X-Ryw-Scope", required = false, inline)]
    pub scope: ScopeName,
}

/// `X-Demo-UserId`: who calls (the demo's identity).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdentityHeader {
    /// The caller, a UUID (`8-4-4-4-12` hex); absent: the demo user
    /// `00000000-0000-4000-8000-000000000001`; anything else: 400
    /// `bad-user-id`.
    #[param(rename = "X-Demo-UserId", required = false)]
    pub user: uuid::Uuid,
}

/// `X-Consistency-Token`: what the session must see (rule 4: signed).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct TokenHeader {
    /// A token from an earlier response's `X-Consistency-Token`. Only tokens
    /// this deployment signed are accepted: malformed, tampered or foreign
    /// ones get 400 `bad-token`.
    #[param(
        rename = "X-Consistency-Token",
        required = false,
        pattern = r"^(v2\.[0-9a-f]{24}|v1\.[0-9a-f]{16})\.[A-Za-z0-9_-]{43}$"
    )]
    pub token: String,
}

/// `X-Read-Strategy`: the strategy of one fresh read.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct StrategyHeader {
    /// The strategy of this read (only on a server started with
    /// `--allow-strategy-header`; elsewhere the header is refused with 400).
    /// Unknown: 400 `unknown-strategy`.
    #[param(rename = "X-Read-Strategy", required = false, inline)]
    pub strategy: StrategyName,
}

/// `Idempotency-Key`: makes a payment safe to repeat (rule 6).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyHeader {
    /// 1–128 visible ASCII characters; a repeat with the same key returns the
    /// first payment (200, `Idempotent-Replay: true`) and charges nothing;
    /// the same key with another body is 422 `idempotency-key-reused`.
    #[param(
        rename = "Idempotency-Key",
        required = false,
        min_length = 1,
        max_length = 128,
        pattern = r"^[!-~]+$"
    )]
    pub key: String,
}

/// The document of a server started with `cfg`.
pub fn document(cfg: &ServiceConfig) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let followers: Vec<String> = cfg.nodes.followers.iter().map(|(n, _)| n.clone()).collect();
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            item.get.as_mut(),
            item.post.as_mut(),
            item.put.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
        ];
        for op in operations.into_iter().flatten() {
            if !cfg.allow_strategy_header
                && let Some(params) = op.parameters.as_mut()
            {
                params.retain(|p| {
                    !matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Header && p.name == "X-Read-Strategy")
                });
            }
            if path.starts_with("/api") {
                add_consistency_headers(op);
            }
        }
    }
    if cfg.cluster_dir.is_some()
        && !followers.is_empty()
        && let Some(components) = doc.components.as_mut()
        && let Some(RefOr::T(Schema::Object(lag))) = components.schemas.get_mut("LagRequest")
        && let Some(RefOr::T(Schema::Object(follower))) = lag.properties.get_mut("follower")
    {
        // The followers this server can change: any other name is a 422.
        follower.enum_values = Some(followers.into_iter().map(Into::into).collect());
    }
    doc
}

/// Every `/api` answer, errors included, names the node that served it and
/// carries the session's token (`docs/http-contract.md`).
fn add_consistency_headers(op: &mut Operation) {
    for response in op.responses.responses.values_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let mut served_by = utoipa::openapi::header::Header::new(string());
        served_by.description =
            Some("`leader`, a follower's name, or `none` when no node was involved".into());
        let mut token = utoipa::openapi::header::Header::new(Schema::Object(
            utoipa::openapi::schema::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .pattern(Some(TOKEN_PATTERN))
                .build(),
        ));
        token.description =
            Some("the session's signed token after this request; send it back to keep read-your-writes on another device or instance".into());
        let rebuilt = ResponseBuilder::from(response.clone())
            .header("X-Served-By", served_by)
            .header("X-Consistency-Token", token)
            .build();
        *response = rebuilt;
    }
}

fn string() -> Schema {
    Schema::Object(Object::with_type(utoipa::openapi::schema::Type::String))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strategy_enum_names_every_strategy_of_the_router() {
        let schema =
            serde_json::to_value(<StrategyName as utoipa::PartialSchema>::schema()).unwrap();
        let names: Vec<String> = ryw_router::Strategy::ALL
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(schema["enum"], serde_json::json!(names), "{schema}");
    }

    #[test]
    fn requests_and_answers_document_the_same_token_pattern() {
        let doc = serde_json::to_value(<TokenHeader as IntoParams>::into_params(|| None)).unwrap();
        assert_eq!(doc[0]["schema"]["pattern"], TOKEN_PATTERN, "{doc}");
    }

    #[test]
    fn a_signed_token_matches_the_documented_pattern() {
        let key = ryw_router::TokenKey::from_secret("a key of at least sixteen bytes").unwrap();
        for lsn in [0, 1, u64::MAX] {
            let token = key.sign(ryw_router::Lsn::from_u64(lsn));
            let shape = token.len() == 71
                && token.starts_with("v2.")
                && token[3..27]
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                && &token[27..28] == "."
                && token[28..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            assert!(shape, "{token} does not match {TOKEN_PATTERN}");
        }
    }
}
