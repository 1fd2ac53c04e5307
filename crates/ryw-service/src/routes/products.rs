//! `GET /api/products`: the catalogue, a stale-ok read (any follower in
//! rotation, under every strategy).

use crate::error::ApiError;
use crate::extract::Caller;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use ryw_axum::Served;
use serde::Serialize;
use utoipa::ToSchema;

/// One product.
#[derive(Debug, Serialize, ToSchema)]
pub struct Product {
    /// Id.
    pub id: i32,
    /// Name.
    pub name: String,
    /// Price in cents.
    pub price_cents: i64,
}

/// `GET /api/products`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProductList {
    /// The catalogue.
    pub products: Vec<Product>,
    /// `leader` or a follower's name.
    pub served_by: String,
}

/// The catalogue, from a follower.
#[utoipa::path(get, path = "/api/products", tag = "products", operation_id = "list_products",
    params(crate::openapi::IdentityHeader, crate::openapi::TokenHeader),
    responses(
        (status = 200, description = "the catalogue, from a follower in rotation", body = ProductList),
        (status = 400, description = "bad X-Demo-UserId (bad-user-id) or X-Consistency-Token (bad-token)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "a node or the session store is unreachable, or the request took too long: retry (Retry-After: 1)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<(Served, Json<ProductList>), ApiError> {
    let read = state
        .router
        .query(
            &caller.session.stale_ok(),
            "SELECT id, name, price_cents FROM products ORDER BY id",
            &[],
        )
        .await?;
    let products = read
        .value
        .iter()
        .map(|r| Product {
            id: r.get(0),
            name: r.get(1),
            price_cents: r.get(2),
        })
        .collect();
    let body = ProductList {
        products,
        served_by: read.decision.node.to_string(),
    };
    Ok((Served::from(&read.decision), Json(body)))
}
