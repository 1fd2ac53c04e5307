//! Schema migrations, applied on start under an advisory lock so that
//! several instances starting together do not race.

use anyhow::Context;

/// Ordered migrations; never edit one that shipped, add a new one.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE accounts (
         user_id       uuid PRIMARY KEY,
         opening_cents bigint NOT NULL CHECK (opening_cents >= 0),
         balance_cents bigint NOT NULL CHECK (balance_cents >= 0),
         version       bigint NOT NULL DEFAULT 0,
         created_at    timestamptz NOT NULL DEFAULT now()
     );
     CREATE TABLE payments (
         payment_id      uuid PRIMARY KEY,
         user_id         uuid NOT NULL REFERENCES accounts (user_id),
         idempotency_key text,
         request_hash    bytea NOT NULL,
         amount_cents    bigint NOT NULL CHECK (amount_cents > 0),
         description     text,
         balance_after   bigint NOT NULL,
         version         bigint NOT NULL,
         created_at      timestamptz NOT NULL DEFAULT now(),
         UNIQUE (user_id, idempotency_key)
     );
     CREATE INDEX payments_by_user ON payments (user_id, version DESC);
     CREATE TABLE users (
         id         uuid PRIMARY KEY,
         email      text NOT NULL,
         name       text NOT NULL,
         avatar_url text,
         version    bigint NOT NULL DEFAULT 1,
         created_at timestamptz NOT NULL DEFAULT now(),
         updated_at timestamptz NOT NULL DEFAULT now()
     );
     CREATE TABLE products (
         id          serial PRIMARY KEY,
         name        text NOT NULL UNIQUE,
         price_cents bigint NOT NULL CHECK (price_cents >= 0)
     );
     INSERT INTO products (name, price_cents) VALUES
         ('Pro Subscription', 1999), ('Enterprise Plan', 9900), ('One-time Add-on', 999)
     ON CONFLICT (name) DO NOTHING;",
)];

/// Applies the missing migrations on the leader, in one transaction, and
/// returns the leader's position after it committed: what every follower
/// must have replayed before it can serve the service's reads.
pub async fn migrate(router: &ryw_router::Router) -> anyhow::Result<ryw_router::Lsn> {
    let session = ryw_router::SessionKey::new("ryw:migrations")?;
    let tx = router
        .begin(&session)
        .await
        .context("connecting to the leader")?;
    // One instance migrates at a time; the others wait, then find it done.
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(7277119); \
         CREATE TABLE IF NOT EXISTS ryw_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .context("locking the migrations")?;
    let done: Vec<i32> = tx
        .query("SELECT version FROM ryw_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (version, sql) in MIGRATIONS {
        if !done.contains(version) {
            tx.batch_execute(sql)
                .await
                .with_context(|| format!("migration {version}"))?;
            tx.execute(
                "INSERT INTO ryw_migrations (version) VALUES ($1)",
                &[version],
            )
            .await?;
            tracing::info!(version, "applied migration");
        }
    }
    let lsn = tx
        .commit()
        .await
        .context("committing the migrations")?
        .token
        .lsn;
    // Optional: lets the bench prewarm caches on every node (contrib).
    if let Err(e) = router
        .write_query(&session, "CREATE EXTENSION IF NOT EXISTS pg_prewarm", &[])
        .await
    {
        tracing::debug!(error = %e, "pg_prewarm not available");
    }
    Ok(lsn)
}
