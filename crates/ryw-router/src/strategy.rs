//! [`Strategy`] (how a fresh read is routed), [`Freshness`] (whether a read
//! must reflect the caller's own writes) and [`FollowerChoice`] (which of the
//! followers that may serve a read gets it).

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// How a fresh read is routed. The names are a public contract
/// (lowercase, kebab-case), used on the command line, in the
/// `X-Read-Strategy` header and in reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Strategy {
    /// Every fresh read on the leader: read-your-writes, no offload. The baseline.
    Leader,
    /// A random follower, whatever the session wrote: no guarantee. Exists to
    /// show the stale-read problem.
    Legacy,
    /// The leader if the session wrote within the sticky window, else a random
    /// follower: correct only while replication lag stays under the window.
    Sticky,
    /// A follower whose replay LSN is at least the session's token, waiting a
    /// bounded time for one to catch up, else the leader: read-your-writes and
    /// monotonic reads on any device.
    Causal,
    /// The default: a follower whose replay LSN is at least the session's
    /// token; if none, a wait only when the tracker predicts a follower will
    /// reach the token within the hybrid budget (20 ms), else the leader at
    /// once ([`crate::predict`]). The sticky window decides only for a write
    /// whose position is unknown (the .NET + Redis demo's `user:{id}:last_write_utc`).
    /// Read-your-writes and monotonic reads, leader share near the oracle,
    /// almost no wasted waits.
    Hybrid,
    /// The peer strategy of GitLab and MaxScale: ask a follower for its replay
    /// LSN right before the read (one extra round trip), use it if it has
    /// caught up, else the leader. For comparison in the bench.
    PerReadCheck,
}

impl Strategy {
    /// Every strategy, in the order reports list them.
    pub const ALL: [Strategy; 6] = [
        Strategy::Leader,
        Strategy::Legacy,
        Strategy::Sticky,
        Strategy::Causal,
        Strategy::Hybrid,
        Strategy::PerReadCheck,
    ];

    /// The contract name (`"per-read-check"`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Strategy::Leader => "leader",
            Strategy::Legacy => "legacy",
            Strategy::Sticky => "sticky",
            Strategy::Causal => "causal",
            Strategy::Hybrid => "hybrid",
            Strategy::PerReadCheck => "per-read-check",
        }
    }

    /// Position in [`Strategy::ALL`], for counters indexed by strategy.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether routing a fresh read under this strategy needs the session's
    /// stored state (token or last write time). Those strategies go to the
    /// leader when the session store is down (rule 5).
    pub const fn uses_session(self) -> bool {
        matches!(
            self,
            Strategy::Sticky | Strategy::Causal | Strategy::Hybrid | Strategy::PerReadCheck
        )
    }

    /// Whether this strategy promises monotonic reads through the session
    /// token, so each read must record what it saw (rule 7).
    pub const fn tracks_tokens(self) -> bool {
        matches!(
            self,
            Strategy::Causal | Strategy::Hybrid | Strategy::PerReadCheck
        )
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = Error;

    /// Accepts the contract names, ignoring ASCII case and surrounding blanks.
    fn from_str(s: &str) -> Result<Strategy, Error> {
        let wanted = s.trim();
        Strategy::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| Error::UnknownStrategy(wanted.chars().take(40).collect()))
    }
}

/// Whether a read must reflect the caller's own writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Freshness {
    /// Must see the session's writes (balance, `/api/me`): routed by the
    /// strategy.
    Fresh,
    /// May lag (the product catalogue): any follower in rotation, under every
    /// strategy.
    StaleOk,
}

impl Freshness {
    /// `"fresh"` or `"stale-ok"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Freshness::Fresh => "fresh",
            Freshness::StaleOk => "stale-ok",
        }
    }
}

impl fmt::Display for Freshness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which follower serves a read when several may: every follower in
/// rotation for a stale-ok read, every one known to have replayed the
/// token for a fresh read under `causal` and `hybrid` (and the first to
/// reach it when the read waits). `legacy`, `sticky` and `per-read-check`
/// take a random follower whatever this says: that is their definition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FollowerChoice {
    /// The default: of two followers drawn at random among those that may
    /// serve the read, the one with fewer reads in flight (this router's
    /// count). Followers that all have the data share the work, and a
    /// slow or loaded one, whose reads stay in flight longer, gets less.
    #[default]
    Load,
    /// The follower with the highest replay position (ties at random);
    /// stale-ok reads at random. What ryw did before: under steady writes
    /// positions never tie, so the least lagged follower takes every such
    /// fresh read. Kept to measure the difference (`@least-lagged` in a
    /// strategy's text form, see [`ReadOptions`](crate::ReadOptions)).
    LeastLagged,
}

impl FollowerChoice {
    /// `"load"` or `"least-lagged"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            FollowerChoice::Load => "load",
            FollowerChoice::LeastLagged => "least-lagged",
        }
    }
}

impl fmt::Display for FollowerChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FollowerChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<FollowerChoice, Error> {
        match s.trim() {
            "load" => Ok(FollowerChoice::Load),
            "least-lagged" => Ok(FollowerChoice::LeastLagged),
            other => Err(Error::UnknownStrategy(other.chars().take(40).collect())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follower_choices_round_trip() {
        for c in [FollowerChoice::Load, FollowerChoice::LeastLagged] {
            assert_eq!(c.to_string().parse::<FollowerChoice>().unwrap(), c);
        }
        assert_eq!(FollowerChoice::default(), FollowerChoice::Load);
        assert!("lag".parse::<FollowerChoice>().is_err());
    }

    #[test]
    fn names_round_trip() {
        for s in Strategy::ALL {
            assert_eq!(s.to_string().parse::<Strategy>().unwrap(), s);
            assert_eq!(Strategy::ALL[s.index()], s);
        }
        assert_eq!(
            "per-read-check".parse::<Strategy>().unwrap(),
            Strategy::PerReadCheck
        );
        assert_eq!(" Hybrid ".parse::<Strategy>().unwrap(), Strategy::Hybrid);
    }

    #[test]
    fn unknown_names_are_an_error() {
        for bad in ["", "follower", "per_read_check", "causal2"] {
            assert!(matches!(
                bad.parse::<Strategy>(),
                Err(Error::UnknownStrategy(_))
            ));
        }
    }

    #[test]
    fn only_session_strategies_depend_on_the_store() {
        assert!(!Strategy::Leader.uses_session());
        assert!(!Strategy::Legacy.uses_session());
        assert!(Strategy::Sticky.uses_session());
        assert!(Strategy::Hybrid.tracks_tokens());
        assert!(!Strategy::Sticky.tracks_tokens());
    }
}
