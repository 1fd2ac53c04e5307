//! The SQL front: the bench speaking the PostgreSQL protocol to a proxy
//! (`ryw proxy`, Pgpool-II, or any server) instead of HTTP to `ryw serve`.
//!
//! A group of virtual users ([`SqlGroup`]) pays and reads the service's own
//! tables (`accounts`, `payments`, created by the service's migrations: the
//! proxy creates no table), so its history is judged by the same checker,
//! from the same `version`, as the HTTP rows:
//!
//! - **account**: one autocommit `INSERT` ([`ACCOUNT_SQL`]) on the paying
//!   connection, the opening balance of the service ([`OPENING_CENTS`]);
//! - **pay**: one transaction on the paying connection: `BEGIN`, the
//!   service's debit ([`PAY_SQL`]: balance checked, `version` bumped), the
//!   payment's row ([`PAYMENT_SQL`]), `COMMIT`;
//! - **balance**: one statement ([`BALANCE_SQL`]) outside any transaction,
//!   on the paying connection ([`ReadOn::Same`]) or on a second connection
//!   of the same user ([`ReadOn::Other`]). It also selects the port of the
//!   server that ran it and whether that server was read-only (a hot
//!   standby), so `served_by` is the database's own word, the same for
//!   every front, and never a proxy's.
//!
//! Every statement is sent as one unnamed Parse/Bind/Execute/Sync batch
//! (tokio-postgres' `query_typed`: one round trip, no named prepared
//! statement), as drivers without a statement cache do, so a front that
//! decides per statement (Pgpool-II's `statement_level_load_balance`)
//! decides for each read.
//!
//! What an operation's `status` says, in the history's HTTP terms: `201`
//! a committed account or payment, `200` a read that found the row, `404`
//! with problem `no-account` a read that found no row, `422` with problem
//! `insufficient-funds` a payment whose debit matched no row (rolled back),
//! `500` with the SQLSTATE as `problem` an error the server sent, `0` no
//! answer (connection lost, or the request timeout).

use crate::BenchError;
use crate::config::StrategySpec;
use std::fmt;
use std::str::FromStr;

/// The service's opening balance (`ryw serve --opening-balance` default),
/// so a SQL user runs as long on one account as an HTTP user.
pub const OPENING_CENTS: i64 = 100_000;

/// Creates the user's account (version 0), as `POST /api/account` does.
pub const ACCOUNT_SQL: &str = "INSERT INTO accounts (user_id, opening_cents, balance_cents) \
     VALUES ($1, $2, $2) ON CONFLICT (user_id) DO NOTHING RETURNING version";

/// The debit of `POST /api/payments`, word for word: one row when the
/// balance covers the amount, none otherwise.
pub const PAY_SQL: &str = "UPDATE accounts SET balance_cents = balance_cents - $2, version = version + 1 \
     WHERE user_id = $1 AND balance_cents >= $2 RETURNING balance_cents, version";

/// The payment's row, in the same transaction as the debit.
pub const PAYMENT_SQL: &str = "INSERT INTO payments (payment_id, user_id, request_hash, amount_cents, \
     description, balance_after, version) VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// The balance read: the service's columns, plus the port of the server
/// that ran it and its `transaction_read_only` (`on` on a hot standby).
/// Both functions are stable, so a front that sends volatile functions to
/// the primary (Pgpool-II) balances this read like a plain `SELECT`. The
/// join keeps one row when the account is missing, so a read that finds
/// nothing still says where it ran.
pub const BALANCE_SQL: &str = "SELECT a.balance_cents, a.version, inet_server_port(), \
     current_setting('transaction_read_only') \
     FROM (SELECT $1::uuid AS id) k LEFT JOIN accounts a ON a.user_id = k.id";

/// What the preflight reads through every front: the table exists, with
/// the columns the bench reads.
pub const CHECK_SQL: &str = "SELECT balance_cents, version FROM accounts LIMIT 0";

/// Where a user reads its balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadOn {
    /// On the connection that paid: the session a pooler can see.
    Same,
    /// On a second connection of the same user (another process, another
    /// app instance); for ryw, bound to the first one's `ryw.session`.
    Other,
}

impl ReadOn {
    /// `same`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadOn::Same => "same",
            ReadOn::Other => "other",
        }
    }

    /// `same`, `other` or `both` (same, then other).
    pub fn parse_list(s: &str) -> Result<Vec<ReadOn>, BenchError> {
        match s.trim() {
            "both" => Ok(vec![ReadOn::Same, ReadOn::Other]),
            t => Ok(vec![t.parse()?]),
        }
    }
}

impl FromStr for ReadOn {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "same" => Ok(ReadOn::Same),
            "other" => Ok(ReadOn::Other),
            t => Err(BenchError::config(
                "read-on",
                format!("{t:?}: expected `same`, `other` or `both`"),
            )),
        }
    }
}

impl fmt::Display for ReadOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of front a group talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlFront {
    /// `ryw proxy`: `SET ryw.strategy` on every connection when a strategy
    /// is given (else the proxy's default), and with [`ReadOn::Other`] both
    /// connections bound to one named session (`SET ryw.session`), the
    /// user's own. The preflight checks that it answers `SHOW
    /// ryw.served_by`.
    Ryw {
        /// The strategy of the group's reads; `None`: the proxy's default.
        strategy: Option<StrategySpec>,
    },
    /// Any other front (Pgpool-II, PgBouncer, PostgreSQL itself): plain
    /// SQL, nothing ryw-specific is sent.
    Plain,
}

/// One group of virtual users on a SQL front: a row of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlGroup {
    /// The row's name in the report and the history's `strategy` field
    /// (`proxy/causal`, `pgpool/other`); unique in a run.
    pub label: String,
    /// libpq URL of the front (`postgres://postgres@127.0.0.1:6432/ryw`).
    pub url: String,
    /// Where the balance is read.
    pub read_on: ReadOn,
    /// ryw proxy or a plain front.
    pub front: SqlFront,
}

impl SqlGroup {
    /// Groups on one `ryw proxy`: one per strategy and read mode, labelled
    /// `{prefix}{strategy}`, with `/same` or `/other` appended when
    /// `read_on` has both (`causal/other`, `proxy/causal`).
    pub fn ryw(
        url: &str,
        prefix: &str,
        strategies: &[StrategySpec],
        read_on: &[ReadOn],
    ) -> Vec<SqlGroup> {
        let mut out = Vec::new();
        for s in strategies {
            for &mode in read_on {
                let suffix = match read_on.len() {
                    1 => String::new(),
                    _ => format!("/{mode}"),
                };
                out.push(SqlGroup {
                    label: format!("{prefix}{s}{suffix}"),
                    url: url.to_string(),
                    read_on: mode,
                    front: SqlFront::Ryw { strategy: Some(*s) },
                });
            }
        }
        out
    }

    /// Groups on a plain front (`pgpool`), one per read mode, labelled
    /// `{name}/same`, `{name}/other`.
    pub fn plain(url: &str, name: &str, read_on: &[ReadOn]) -> Vec<SqlGroup> {
        read_on
            .iter()
            .map(|&mode| SqlGroup {
                label: format!("{name}/{mode}"),
                url: url.to_string(),
                read_on: mode,
                front: SqlFront::Plain,
            })
            .collect()
    }

    /// Checks what can be checked before connecting.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.label.trim().is_empty() {
            return Err(BenchError::config("sql group", "a group needs a label"));
        }
        self.url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| BenchError::config("sql front", format!("{:?}: {e}", self.url)))?;
        Ok(())
    }
}

/// The session key a user's connections share on ryw proxy (1–128 visible
/// characters): one per account, so a new account starts a new session.
pub fn session_key(user: &uuid::Uuid) -> String {
    format!("bench-{}", user.simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_on_parses_same_other_and_both() {
        assert_eq!(ReadOn::parse_list("same").unwrap(), [ReadOn::Same]);
        assert_eq!(ReadOn::parse_list(" other").unwrap(), [ReadOn::Other]);
        assert_eq!(
            ReadOn::parse_list("both").unwrap(),
            [ReadOn::Same, ReadOn::Other]
        );
        assert!(ReadOn::parse_list("either").is_err());
    }

    #[test]
    fn ryw_groups_are_labelled_by_strategy_and_by_mode_only_when_both_run() {
        let specs = StrategySpec::parse_list("legacy,causal:0ms").unwrap();
        let url = "postgres://postgres@127.0.0.1:6432/ryw";
        let one: Vec<String> = SqlGroup::ryw(url, "proxy/", &specs, &[ReadOn::Other])
            .into_iter()
            .map(|g| g.label)
            .collect();
        assert_eq!(one, ["proxy/legacy", "proxy/causal:0ms"]);
        let both = SqlGroup::ryw(url, "", &specs, &[ReadOn::Same, ReadOn::Other]);
        let labels: Vec<&str> = both.iter().map(|g| g.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "legacy/same",
                "legacy/other",
                "causal:0ms/same",
                "causal:0ms/other"
            ]
        );
        assert_eq!(
            both[3].front,
            SqlFront::Ryw {
                strategy: Some(specs[1])
            }
        );
        let pgpool = SqlGroup::plain(url, "pgpool", &[ReadOn::Same, ReadOn::Other]);
        assert_eq!(pgpool[1].label, "pgpool/other");
        assert_eq!(pgpool[1].front, SqlFront::Plain);
    }

    #[test]
    fn a_group_without_label_or_with_a_bad_url_is_refused() {
        let mut g = SqlGroup::plain("postgres://u@h:1/db", "x", &[ReadOn::Same]).remove(0);
        assert!(g.validate().is_ok());
        g.url = "postgres://u@h:notaport/db".into();
        assert!(g.validate().is_err());
        g.url = "postgres://u@h:1/db".into();
        g.label = " ".into();
        assert!(g.validate().is_err());
    }

    #[test]
    fn a_run_of_sql_groups_only_is_valid_and_its_users_are_split_over_every_group() {
        use crate::config::BenchConfig;
        let url = "postgres://postgres@127.0.0.1:6432/ryw";
        let mut c = BenchConfig {
            targets: Vec::new(),
            strategies: Vec::new(),
            sql: SqlGroup::plain(url, "pgpool", &[ReadOn::Same, ReadOn::Other]),
            users: 5,
            ..BenchConfig::default()
        };
        assert!(c.validate().is_ok());
        assert_eq!(c.group_sizes(), [3, 2]);
        // HTTP and SQL groups together: HTTP first.
        c.targets = vec!["http://127.0.0.1:8080".into()];
        c.strategies = StrategySpec::parse_list("leader").unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.group_sizes(), [2, 2, 1]);
        // HTTP strategies need a target; a label may not be used twice.
        c.targets.clear();
        assert!(c.validate().is_err());
        c.targets = vec!["http://127.0.0.1:8080".into()];
        c.sql = SqlGroup::ryw(url, "", &c.strategies.clone(), &[ReadOn::Other]);
        assert!(c.validate().is_err(), "`leader` twice");
        c.strategies.clear();
        c.sql.clear();
        assert!(c.validate().is_err(), "no group at all");
    }

    #[test]
    fn session_keys_are_visible_characters_and_differ_per_account() {
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let k = session_key(&a);
        assert!(k.len() <= 128 && k.chars().all(|c| c.is_ascii_graphic()));
        assert_ne!(k, session_key(&b));
    }
}
