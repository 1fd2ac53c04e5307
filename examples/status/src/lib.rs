//! The smallest service on ryw: `PUT /status` writes the caller's status on
//! the leader, `GET /status` reads it back from a follower that already has
//! it (or the leader), so a user never sees their old status.
use axum::{Json, Router as Http, extract::State, routing::get};
use ryw_axum::{Error, Ryw, Served, Session};
use ryw_router::{Router, TokenKey};
use serde::{Deserialize, Serialize};

/// The one table.
pub const SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS statuses (user_id text PRIMARY KEY, text text NOT NULL)";

/// What `GET /status` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    /// The caller's status, if any.
    pub text: Option<String>,
    /// `leader` or the follower that answered.
    pub served_by: String,
}

/// A write: on the leader; the router records its position after it
/// committed, for the session and in `X-Consistency-Token`.
async fn set_status(State(db): State<Router>, me: Session, text: String) -> Result<Served, Error> {
    let written = db
        .write_query(
            &me.key,
            "INSERT INTO statuses VALUES ($1, $2) ON CONFLICT (user_id) DO UPDATE SET text = excluded.text",
            &[&me.key.as_str(), &text],
        )
        .await?;
    Ok(Served::write(written.committed()))
}

/// A fresh read: a follower that has replayed the caller's writes, or the
/// leader.
async fn status(State(db): State<Router>, me: Session) -> Result<(Served, Json<Status>), Error> {
    let read = db
        .query_opt(
            &me.fresh(),
            "SELECT text FROM statuses WHERE user_id = $1",
            &[&me.key.as_str()],
        )
        .await?;
    let status = Status {
        text: read.value.map(|row| row.get(0)),
        served_by: read.decision.node.to_string(),
    };
    Ok((Served::from(&read.decision), Json(status)))
}

/// The service: sessions from `X-User`, tokens signed with `key`.
pub fn app(db: Router, key: TokenKey) -> Http {
    Http::new()
        .route("/status", get(status).put(set_status))
        .layer(Ryw::new(key).session_header("x-user").layer())
        .with_state(db)
}
