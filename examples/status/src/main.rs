//! `LEADER_URL=postgres://… FOLLOWER_URLS=f1=postgres://…,f2=postgres://… cargo run -p ryw-example-status`
use std::sync::Arc;

use ryw_router::{MemoryStore, NodeUrls, Router, RouterConfig, SessionKey, TokenKey};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("set {name}"));
    let followers = var("FOLLOWER_URLS")?
        .split(',')
        .filter_map(|f| f.split_once('='))
        .map(|(name, url)| (name.to_owned(), url.to_owned()))
        .collect();
    let urls = NodeUrls {
        leader: var("LEADER_URL")?,
        followers,
    };
    let db = Router::connect(
        RouterConfig::default(),
        urls,
        Arc::new(MemoryStore::default()),
    )
    .await?;
    let setup = SessionKey::new("setup")?;
    let schema = db
        .write_query(&setup, ryw_example_status::SCHEMA, &[])
        .await?;
    // A follower without the table yet would answer "relation does not exist".
    db.wait_replayed(schema.token.lsn, std::time::Duration::from_secs(10))
        .await;
    let key = match std::env::var("TOKEN_KEY") {
        Ok(secret) => TokenKey::from_secret(&secret)?,
        Err(_) => TokenKey::generate(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}/status", listener.local_addr()?);
    axum::serve(listener, ryw_example_status::app(db, key)).await?;
    Ok(())
}
