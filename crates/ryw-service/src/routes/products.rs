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
#[utoipa::path(get, path = "/api/products", tag = "products", responses((status = 200, body = ProductList)))]
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
