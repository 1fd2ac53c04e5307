//! [`Scope`]: whose writes a fresh read must see (`DESIGN.md`, "Scopes").
//! A strategy says *how* a fresh read is routed; a scope says *what* it
//! must see: the read's target is the highest of the scope's position and
//! the tokens the read already honours, and the strategy routes to that
//! target.
//!
//! | scope | a fresh read sees | its position |
//! | --- | --- | --- |
//! | `connection` | the caller's own writes | the client's (or the local session's) token only; the store is not read |
//! | `session` | the session's writes, from any instance | the session store's token (today's behaviour, the default) |
//! | `global` | every write any instance sharing the store acknowledged before the read began | the fleet-wide mark each write raises before it is acknowledged, fetched coalesced |
//! | `cluster` | every transaction the leader committed before the read began | the leader's position, fetched coalesced |
//!
//! `leader` ignores the scope (every read is on the leader), `legacy` too
//! (it exists to show stale reads), and `sticky` keeps its window on the
//! session's own last write: it has no position to compare. `causal`,
//! `hybrid` and `per-read-check` route to the scope's target (`hybrid`'s
//! prediction and budget apply to it).

use std::fmt;
use std::str::FromStr;

use crate::{Error, Strategy};

/// Whose writes a fresh read must see. Parses from (and shows as) its
/// contract name: `connection`, `session`, `global`, `cluster`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// The caller's own writes only: the client's token (a proxy's
    /// connection's own token), even when a named session is bound. The
    /// store is not read.
    Connection,
    /// The writes of the read's session from any connection, process or
    /// instance: the session store's token. The default.
    #[default]
    Session,
    /// Every write that any instance sharing the session store (or this
    /// process, with the memory store) acknowledged before the read began:
    /// each write raises a fleet-wide mark before it is acknowledged.
    Global,
    /// Every transaction the leader committed before the read began,
    /// through ryw or not: the leader's position, fetched once for all the
    /// reads that began before the fetch was sent.
    Cluster,
}

impl Scope {
    /// Every scope, narrowest first (the order of reports and counters).
    pub const ALL: [Scope; 4] = [
        Scope::Connection,
        Scope::Session,
        Scope::Global,
        Scope::Cluster,
    ];

    /// The contract name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Connection => "connection",
            Scope::Session => "session",
            Scope::Global => "global",
            Scope::Cluster => "cluster",
        }
    }

    /// Position in [`Scope::ALL`], for counters indexed by scope.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether a fresh read of a session kept in the store reads the store
    /// under this scope (every scope but `connection`).
    pub const fn reads_session_store(self) -> bool {
        !matches!(self, Scope::Connection)
    }

    /// Whether a read of this scope fetches a position of its own (the
    /// store's mark, the leader's position): `global` and `cluster`.
    pub const fn fetches(self) -> bool {
        matches!(self, Scope::Global | Scope::Cluster)
    }

    /// Whether `strategy` routes to this scope's position: only the
    /// strategies that route by a token. `leader` reads the leader anyway,
    /// `legacy` promises nothing, `sticky` decides by the session's last
    /// write time, which no position replaces; for them `global` and
    /// `cluster` fetch nothing.
    pub const fn applies_to(self, strategy: Strategy) -> bool {
        strategy.tracks_tokens()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = Error;

    /// Accepts the contract names, ignoring ASCII case and surrounding
    /// blanks; anything else is [`Error::UnknownScope`].
    fn from_str(s: &str) -> Result<Scope, Error> {
        let wanted = s.trim();
        Scope::ALL
            .into_iter()
            .find(|sc| sc.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| Error::UnknownScope(wanted.chars().take(40).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_parses_from_its_name_and_shows_as_it() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
            assert_eq!(scope.to_string(), scope.as_str());
            assert_eq!(Scope::ALL[scope.index()], scope);
        }
        assert_eq!(" GLOBAL ".parse::<Scope>().unwrap(), Scope::Global);
        assert_eq!(Scope::default(), Scope::Session);
    }

    #[test]
    fn an_unknown_scope_is_a_clear_error_naming_the_choices() {
        let err = "universe".parse::<Scope>().unwrap_err();
        assert!(matches!(&err, Error::UnknownScope(s) if s == "universe"));
        let text = err.to_string();
        assert!(text.contains("universe"), "{text}");
        assert!(
            text.contains("connection, session, global, cluster"),
            "{text}"
        );
        assert!("".parse::<Scope>().is_err());
        let long = "x".repeat(1000).parse::<Scope>().unwrap_err().to_string();
        assert!(long.len() < 200, "a long value is cut: {long}");
    }

    #[test]
    fn only_strategies_that_route_by_a_token_apply_a_scope() {
        let applied: Vec<Strategy> = Strategy::ALL
            .into_iter()
            .filter(|&s| Scope::Global.applies_to(s))
            .collect();
        assert_eq!(
            applied,
            [Strategy::Causal, Strategy::Hybrid, Strategy::PerReadCheck]
        );
        assert!(!Scope::Connection.reads_session_store());
        assert!(Scope::Global.fetches() && Scope::Cluster.fetches());
        assert!(!Scope::Session.fetches() && !Scope::Connection.fetches());
        assert!(Scope::Cluster.reads_session_store());
    }
}
