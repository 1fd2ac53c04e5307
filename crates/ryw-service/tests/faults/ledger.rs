//! The ledger invariant, checked in the leader's own tables after a fault:
//! for every account, opening − sum(payments) = balance and version =
//! count(payments); at most one payment per idempotency key; and every
//! payment a client was acknowledged is there (nothing acknowledged is lost).

use crate::load::Report;

/// What the check found (all of it must be zero but the sizes).
#[derive(Debug)]
pub struct Ledger {
    pub accounts: i64,
    pub payments: i64,
}

impl std::fmt::Display for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ledger: {} accounts, {} payments, every one adds up, no key charged twice, \
             every acknowledged payment present",
            self.accounts, self.payments
        )
    }
}

/// Connects to the leader and checks the invariant for the report's users.
pub async fn check(leader_url: &str, report: &Report) -> Ledger {
    let (client, conn) = tokio_postgres::connect(leader_url, tokio_postgres::NoTls)
        .await
        .expect("connect to the leader");
    tokio::spawn(conn);
    let rows = client
        .query(
            "SELECT a.user_id, a.opening_cents, a.balance_cents, a.version, \
                    coalesce(sum(p.amount_cents), 0)::bigint, count(p.payment_id) \
             FROM accounts a LEFT JOIN payments p ON p.user_id = a.user_id \
             WHERE a.user_id = ANY($1) GROUP BY a.user_id",
            &[&report.users],
        )
        .await
        .expect("ledger query");
    assert_eq!(rows.len(), report.users.len(), "an account is missing");
    let mut payments = 0;
    for r in &rows {
        let (user, opening, balance, version, paid, count): (uuid::Uuid, i64, i64, i64, i64, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
        assert_eq!(opening - paid, balance, "ledger of {user} does not add up");
        assert_eq!(version, count, "version of {user} is not its payment count");
        payments += count;
    }
    let dup: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT 1 FROM payments WHERE user_id = ANY($1) \
             AND idempotency_key IS NOT NULL GROUP BY user_id, idempotency_key HAVING count(*) > 1) d",
            &[&report.users],
        )
        .await
        .expect("duplicate query")
        .get(0);
    assert_eq!(dup, 0, "an idempotency key was charged twice");
    let ids: Vec<uuid::Uuid> = report.acked.iter().map(|(_, id)| *id).collect();
    let found: i64 = client
        .query_one(
            "SELECT count(*) FROM payments WHERE payment_id = ANY($1)",
            &[&ids],
        )
        .await
        .expect("acknowledged query")
        .get(0);
    // A replay acknowledges the same payment twice: compare distinct ids.
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        found,
        distinct.len() as i64,
        "acknowledged payments are missing from the leader"
    );
    Ledger {
        accounts: rows.len() as i64,
        payments,
    }
}
