//! [`ReadOptions`]: per-read overrides of the router's configuration, with
//! the `name[:duration]` text form that the `X-Read-Strategy` header, the
//! bench's `--strategies` and the proxy's `SET ryw.strategy` share; and
//! [`parse_duration`], the one duration syntax of ryw's flags.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::{Error, FollowerChoice, Result, Strategy};

/// The longest duration a [`ReadOptions`] text may give: a per-read wait
/// or window longer than this is a mistake (or an attempt to hold a request).
pub const MAX_READ_OPTION: Duration = Duration::from_secs(60);

/// Per-read overrides of the router's configuration; `Default` changes
/// nothing.
///
/// Parses from `name[:duration][@choice]`: `causal`, `causal:0ms`,
/// `sticky:2s`, `hybrid:20ms`, `causal@least-lagged`. The duration is the
/// sticky window for `sticky` and the wait budget for `causal`, `hybrid` and
/// `per-read-check`; `leader` and `legacy` take none. The choice
/// ([`FollowerChoice`]: `load` or `least-lagged`) says which follower
/// serves the read when several may; the bench gives it to measure the
/// old least-lagged choice beside the default in one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Strategy for this read (else the configured default).
    pub strategy: Option<Strategy>,
    /// Sticky window for this read (`sticky`; `hybrid` for sessions known
    /// only by their last write time).
    pub sticky_window: Option<Duration>,
    /// Wait budget for this read (`causal`, `hybrid`, `per-read-check`).
    pub wait_budget: Option<Duration>,
    /// Which follower serves this read when several may (else
    /// [`RouterConfig::follower_choice`](crate::RouterConfig::follower_choice)).
    pub follower_choice: Option<FollowerChoice>,
}

impl ReadOptions {
    /// Only the strategy, nothing else overridden.
    pub const fn strategy(strategy: Strategy) -> ReadOptions {
        ReadOptions {
            strategy: Some(strategy),
            sticky_window: None,
            wait_budget: None,
            follower_choice: None,
        }
    }

    /// Whether these options change nothing.
    pub fn is_default(&self) -> bool {
        *self == ReadOptions::default()
    }
}

impl FromStr for ReadOptions {
    type Err = Error;

    fn from_str(text: &str) -> Result<ReadOptions> {
        let shown = || text.chars().take(64).collect::<String>();
        let (text_without_choice, choice) = match text.trim().split_once('@') {
            Some((t, c)) => (
                t,
                Some(
                    c.parse::<FollowerChoice>()
                        .map_err(|_| Error::UnknownStrategy(shown()))?,
                ),
            ),
            None => (text.trim(), None),
        };
        let (name, param) = match text_without_choice.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (text_without_choice, None),
        };
        let strategy: Strategy = name.parse()?;
        let mut options = ReadOptions {
            follower_choice: choice,
            ..ReadOptions::strategy(strategy)
        };
        let Some(param) = param else {
            return Ok(options);
        };
        let d = parse_duration(param).map_err(|_| Error::UnknownStrategy(shown()))?;
        if d > MAX_READ_OPTION {
            return Err(Error::UnknownStrategy(shown()));
        }
        match strategy {
            Strategy::Sticky => options.sticky_window = Some(d),
            Strategy::Causal | Strategy::Hybrid | Strategy::PerReadCheck => {
                options.wait_budget = Some(d)
            }
            Strategy::Leader | Strategy::Legacy => return Err(Error::UnknownStrategy(shown())),
        }
        Ok(options)
    }
}

impl fmt::Display for ReadOptions {
    /// The text form, e.g. `causal:200ms`; `default` for no override.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(strategy) = self.strategy else {
            return f.write_str("default");
        };
        f.write_str(strategy.as_str())?;
        let param = match strategy {
            Strategy::Sticky => self.sticky_window,
            _ => self.wait_budget,
        };
        if let Some(d) = param {
            write!(f, ":{}ms", d.as_millis())?;
        }
        match self.follower_choice {
            Some(c) => write!(f, "@{c}"),
            None => Ok(()),
        }
    }
}

/// Parses a duration as ryw's flags write them: `100ms`, `2s`, `1m30s`
/// (humantime syntax), or a bare `0`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t).map_err(|e| Error::Duration(format!("{t:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_duration_is_a_window_for_sticky_and_a_budget_for_the_waiting_strategies() {
        let sticky: ReadOptions = "sticky:2s".parse().unwrap();
        assert_eq!(sticky.strategy, Some(Strategy::Sticky));
        assert_eq!(sticky.sticky_window, Some(Duration::from_secs(2)));
        assert_eq!(sticky.wait_budget, None);
        for name in ["causal", "hybrid", "per-read-check"] {
            let o: ReadOptions = format!("{name}:0ms").parse().unwrap();
            assert_eq!(o.wait_budget, Some(Duration::ZERO), "{name}");
            assert_eq!(o.sticky_window, None);
        }
        assert_eq!(
            "leader".parse::<ReadOptions>().unwrap(),
            ReadOptions::strategy(Strategy::Leader)
        );
    }

    #[test]
    fn bad_texts_are_refused() {
        for bad in [
            "bogus",
            "sticky:forever",
            "legacy:1s",
            "leader:0ms",
            "causal:10m",
            "",
            "CAUSAL:",
            "causal:-1s",
            "causal@lag",
            "causal@",
            "bogus@load",
        ] {
            assert!(bad.parse::<ReadOptions>().is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_text_form_round_trips() {
        for text in [
            "causal:200ms",
            "sticky:2000ms",
            "hybrid",
            "per-read-check:5ms",
            "causal@least-lagged",
            "hybrid:20ms@load",
        ] {
            let o: ReadOptions = text.parse().unwrap();
            assert_eq!(o.to_string(), text);
            assert_eq!(o.to_string().parse::<ReadOptions>().unwrap(), o);
        }
        assert_eq!(ReadOptions::default().to_string(), "default");
    }

    #[test]
    fn a_choice_after_the_at_sign_overrides_the_configured_one() {
        let o: ReadOptions = "hybrid:20ms@least-lagged".parse().unwrap();
        assert_eq!(o.strategy, Some(Strategy::Hybrid));
        assert_eq!(o.wait_budget, Some(Duration::from_millis(20)));
        assert_eq!(o.follower_choice, Some(FollowerChoice::LeastLagged));
        assert_eq!(
            "causal".parse::<ReadOptions>().unwrap().follower_choice,
            None
        );
    }

    #[test]
    fn durations_take_units_or_a_bare_zero() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(
            parse_duration(" 150ms ").unwrap(),
            Duration::from_millis(150)
        );
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("10").is_err(), "a unit is required");
        assert!(parse_duration("soon").is_err());
    }
}
