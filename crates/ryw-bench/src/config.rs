//! What a bench run does: [`BenchConfig`] and the small parsed types it is
//! made of ([`Think`], [`StrategySpec`], [`Load`]). The binary parses flags
//! into these; every type that comes from a flag has a `FromStr`.

use crate::BenchError;
use crate::sql::SqlGroup;
use rand::Rng;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Everything one bench run needs. `Default` is a sensible small run against
/// `http://127.0.0.1:8080` with every strategy.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Base URLs of the service instances (`http://127.0.0.1:8080`). Each
    /// user's requests rotate over them, so with several instances a user
    /// writes through one and reads through another.
    pub targets: Vec<String>,
    /// Strategies to compare; the users are split into one group per strategy
    /// and all groups run at the same time, under the same cluster conditions.
    /// May be empty when `sql` has groups.
    pub strategies: Vec<StrategySpec>,
    /// Groups on SQL fronts (`ryw proxy`, Pgpool-II; see [`crate::sql`]),
    /// run at the same time as the HTTP groups, their users taken from the
    /// same `users`; empty for an HTTP-only run.
    pub sql: Vec<SqlGroup>,
    /// Virtual users in total (split over the strategies, at least one each).
    pub users: usize,
    /// How long the workload runs (after account creation).
    pub duration: Duration,
    /// Pause between a write and the fresh read that follows it.
    pub think: Think,
    /// Closed loop (each user starts its next iteration when the last one
    /// ends) or open loop (iterations arrive at a fixed rate).
    pub load: Load,
    /// Echo the latest `X-Consistency-Token` received, as a browser would.
    /// `false` is `--no-token`: shows what the server can do without it.
    pub send_token: bool,
    /// Timeout of every single request (a timed-out request is recorded with
    /// status 0 and never counts as acknowledged).
    pub request_timeout: Duration,
    /// Update the profile (and read `/api/me`) every N-th iteration; 0 = never.
    pub profile_every: u32,
    /// Read the product catalogue (stale-ok) every N-th iteration; 0 = never.
    pub products_every: u32,
    /// Period of the `GET /api/cluster` samples (replication lag meanwhile).
    pub cluster_sample_every: Duration,
    /// A `ryw cluster` folder: its `cluster.json` gives the followers'
    /// configured apply delays (`delay_ms`), used by the oracle line in
    /// preference to the delay estimated from `/api/cluster` samples.
    pub cluster_dir: Option<PathBuf>,
    /// Show the progress bar (it is hidden anyway when stderr is not a TTY).
    pub progress: bool,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            targets: vec!["http://127.0.0.1:8080".to_string()],
            strategies: StrategySpec::all(),
            sql: Vec::new(),
            users: 32,
            duration: Duration::from_secs(20),
            think: Think::Uniform {
                lo: Duration::ZERO,
                hi: Duration::from_secs(1),
            },
            load: Load::Closed,
            send_token: true,
            request_timeout: Duration::from_secs(5),
            profile_every: 5,
            products_every: 2,
            cluster_sample_every: Duration::from_millis(250),
            cluster_dir: None,
            progress: true,
        }
    }
}

impl BenchConfig {
    /// Checks what can be checked before any request is sent.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.strategies.is_empty() && self.sql.is_empty() {
            return Err(BenchError::config(
                "strategies",
                "at least one strategy is needed",
            ));
        }
        if !self.strategies.is_empty() && self.targets.is_empty() {
            return Err(BenchError::config(
                "targets",
                "at least one base URL is needed",
            ));
        }
        for t in &self.targets {
            if !(t.starts_with("http://") || t.starts_with("https://")) {
                return Err(BenchError::config(
                    "target",
                    format!("{t:?} is not an http(s) URL"),
                ));
            }
        }
        for (i, g) in self.sql.iter().enumerate() {
            g.validate()?;
            let taken = self.strategies.iter().any(|s| s.to_string() == g.label)
                || self.sql[..i].iter().any(|o| o.label == g.label);
            if taken {
                return Err(BenchError::config(
                    "sql group",
                    format!("the label {:?} is used twice", g.label),
                ));
            }
        }
        if self.duration.is_zero() {
            return Err(BenchError::config("duration", "must be more than 0"));
        }
        if self.request_timeout.is_zero() {
            return Err(BenchError::config("request timeout", "must be more than 0"));
        }
        if self.cluster_sample_every.is_zero() {
            return Err(BenchError::config(
                "cluster sample period",
                "must be more than 0",
            ));
        }
        if let Load::Open { iterations_per_s } = self.load
            && !(iterations_per_s.is_finite() && iterations_per_s > 0.0)
        {
            return Err(BenchError::config(
                "arrival rate",
                "must be a positive number",
            ));
        }
        Ok(())
    }

    /// Number of users of each group, HTTP strategies first, then the SQL
    /// groups: `users` split evenly, the remainder to the first groups, at
    /// least one per group.
    pub fn group_sizes(&self) -> Vec<usize> {
        let k = (self.strategies.len() + self.sql.len()).max(1);
        let total = self.users.max(k);
        (0..k)
            .map(|i| total / k + usize::from(i < total % k))
            .collect()
    }
}

/// How the iterations are started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Each user starts its next iteration as soon as the last one ended
    /// (throughput follows the service's speed).
    Closed,
    /// Iterations arrive at this rate (per second, over all strategies, split
    /// evenly between them), each taken by an idle user of the group. An
    /// arrival that finds no idle user is missed, not queued; so is one due
    /// while the bench's own clock ran late (missed = rate × elapsed −
    /// iterations started).
    Open {
        /// Arrivals per second, in total.
        iterations_per_s: f64,
    },
}

impl FromStr for Load {
    type Err = BenchError;
    /// `closed`, or `open:200` (200 iterations per second in total).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t == "closed" {
            return Ok(Load::Closed);
        }
        if let Some(rate) = t.strip_prefix("open:") {
            let r: f64 = rate
                .trim_end_matches("/s")
                .parse()
                .map_err(|_| BenchError::config("load", format!("{t:?}: rate is not a number")))?;
            if r.is_finite() && r > 0.0 {
                return Ok(Load::Open {
                    iterations_per_s: r,
                });
            }
        }
        Err(BenchError::config(
            "load",
            format!("{t:?}: expected `closed` or `open:RATE` (iterations per second)"),
        ))
    }
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Load::Closed => f.write_str("closed"),
            Load::Open { iterations_per_s } => write!(f, "open:{iterations_per_s}"),
        }
    }
}

/// The pause ("think time") between a user's write and its next read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Think {
    /// Always the same (`200ms`; `0ms` reads right after the write).
    Fixed(Duration),
    /// Uniform in `lo..hi` (`0ms..1s`).
    Uniform {
        /// Shortest pause.
        lo: Duration,
        /// Longest pause (exclusive).
        hi: Duration,
    },
    /// Exponential with this mean (`exp:300ms`), capped at 20× the mean so a
    /// run stays bounded.
    Exponential {
        /// Mean pause.
        mean: Duration,
    },
}

impl Think {
    /// Draws one pause.
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        match *self {
            Think::Fixed(d) => d,
            Think::Uniform { lo, hi } if hi > lo => {
                Duration::from_secs_f64(rng.random_range(lo.as_secs_f64()..hi.as_secs_f64()))
            }
            Think::Uniform { lo, .. } => lo,
            Think::Exponential { mean } => {
                let u: f64 = rng.random_range(0.0..1.0);
                let x = -(1.0 - u).ln() * mean.as_secs_f64();
                Duration::from_secs_f64(x.min(20.0 * mean.as_secs_f64()))
            }
        }
    }
}

impl FromStr for Think {
    type Err = BenchError;
    /// `200ms` (fixed), `0ms..1s` (uniform), `exp:300ms` (exponential mean).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let bad = |detail: String| {
            BenchError::config(
                "think time",
                format!("{t:?}: {detail} (expected `200ms`, `0ms..1s` or `exp:300ms`)"),
            )
        };
        if let Some(mean) = t.strip_prefix("exp:") {
            let mean = parse_duration(mean).map_err(bad)?;
            if mean.is_zero() {
                return Err(bad("the mean must be more than 0".into()));
            }
            return Ok(Think::Exponential { mean });
        }
        if let Some((lo, hi)) = t.split_once("..") {
            let lo = parse_duration(lo).map_err(bad)?;
            let hi = parse_duration(hi).map_err(bad)?;
            if hi < lo {
                return Err(bad("the range is reversed".into()));
            }
            return Ok(Think::Uniform { lo, hi });
        }
        Ok(Think::Fixed(parse_duration(t).map_err(bad)?))
    }
}

impl fmt::Display for Think {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Think::Fixed(d) => write!(f, "{}", DurationText(*d)),
            Think::Uniform { lo, hi } => write!(f, "{}..{}", DurationText(*lo), DurationText(*hi)),
            Think::Exponential { mean } => write!(f, "exp:{}", DurationText(*mean)),
        }
    }
}

/// The strategies of the router (plus `per-read-check`), by their header name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StrategyName {
    /// Every fresh read on the leader (baseline: RYW, no offload).
    Leader,
    /// A random follower (shows the stale-read problem).
    Legacy,
    /// Leader within the window after the user's write, else a follower.
    Sticky,
    /// A follower that has replayed the token, waiting up to a budget.
    Causal,
    /// The default: a follower that has the token; a wait only when one is
    /// predicted to catch up within the hybrid budget; else the leader.
    Hybrid,
    /// Checks one follower's replay LSN before each read (a causal variant).
    PerReadCheck,
}

impl StrategyName {
    /// Every name, in the order of the default set.
    pub const ALL: [StrategyName; 6] = [
        StrategyName::Leader,
        StrategyName::Legacy,
        StrategyName::Sticky,
        StrategyName::Causal,
        StrategyName::Hybrid,
        StrategyName::PerReadCheck,
    ];

    /// The name used in `X-Read-Strategy`.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyName::Leader => "leader",
            StrategyName::Legacy => "legacy",
            StrategyName::Sticky => "sticky",
            StrategyName::Causal => "causal",
            StrategyName::Hybrid => "hybrid",
            StrategyName::PerReadCheck => "per-read-check",
        }
    }
}

/// Which follower the server gives a read that several followers could
/// serve (the router's `FollowerChoice`, by its text name): asked per
/// strategy group, so both run at once on the same lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FollowerChoice {
    /// The fewer reads in flight of two random candidates (the default).
    Load,
    /// The follower with the highest replay position (ryw before issue 22).
    LeastLagged,
}

impl FollowerChoice {
    /// The name after `@` in `X-Read-Strategy`.
    pub fn as_str(self) -> &'static str {
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
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        [FollowerChoice::Load, FollowerChoice::LeastLagged]
            .into_iter()
            .find(|c| c.as_str() == s.trim())
            .ok_or(())
    }
}

/// One strategy as the bench asks for it: `X-Read-Strategy:
/// <name>[:<duration>][@<choice>]` (the duration is the sticky window or the
/// wait budget; the choice, `load` or `least-lagged`, which follower serves
/// a read several could: `causal@least-lagged` beside `causal` measures the
/// old least-lagged choice against the spread by load in one run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StrategySpec {
    /// Which strategy.
    pub name: StrategyName,
    /// The sticky window (`sticky`) or the wait budget (`causal`, `hybrid`,
    /// `per-read-check`); `None` = the server's default.
    pub param: Option<Duration>,
    /// Which follower serves a read several could; `None` = the server's
    /// default.
    pub choice: Option<FollowerChoice>,
}

impl StrategySpec {
    /// The default set `all`: `leader`, `legacy`, `sticky:2s` (Rails'
    /// default), `sticky:5s` (the .NET demo's window), `causal` (the server's wait budget),
    /// `causal:0ms` (never waits: the one to hold against the oracle line),
    /// `hybrid`, `per-read-check`.
    pub fn all() -> Vec<StrategySpec> {
        use StrategyName::*;
        let s = |name, ms: Option<u64>| StrategySpec {
            name,
            param: ms.map(Duration::from_millis),
            choice: None,
        };
        vec![
            s(Leader, None),
            s(Legacy, None),
            s(Sticky, Some(2000)),
            s(Sticky, Some(5000)),
            s(Causal, None),
            s(Causal, Some(0)),
            s(Hybrid, None),
            s(PerReadCheck, None),
        ]
    }

    /// The budget sweep `sweep`: `causal` at 0, 5, 20, 50 and 200 ms (a
    /// blind wait of growing budget) against `hybrid` (a wait only when a
    /// follower is predicted within its budget): the points of the report's
    /// trade-off chart, leader share against fresh-read p99.
    pub fn sweep() -> Vec<StrategySpec> {
        let causal = |ms| StrategySpec {
            name: StrategyName::Causal,
            param: Some(Duration::from_millis(ms)),
            choice: None,
        };
        vec![
            causal(0),
            causal(5),
            causal(20),
            causal(50),
            causal(200),
            StrategySpec {
                name: StrategyName::Hybrid,
                param: None,
                choice: None,
            },
        ]
    }

    /// Parses a comma-separated list (`all`, `sweep`, `leader,causal:0ms`,
    /// `all,sticky:1s`); duplicates are dropped, order kept.
    pub fn parse_list(s: &str) -> Result<Vec<StrategySpec>, BenchError> {
        let mut out: Vec<StrategySpec> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let specs = match part {
                "all" => StrategySpec::all(),
                "sweep" => StrategySpec::sweep(),
                _ => vec![part.parse()?],
            };
            for spec in specs {
                if !out.contains(&spec) {
                    out.push(spec);
                }
            }
        }
        if out.is_empty() {
            return Err(BenchError::config(
                "strategies",
                format!("{s:?}: no strategy named"),
            ));
        }
        Ok(out)
    }
}

impl FromStr for StrategySpec {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let whole = s.trim();
        let (t, choice) = match whole.split_once('@') {
            Some((t, c)) => (
                t,
                Some(c.parse::<FollowerChoice>().map_err(|_| {
                    BenchError::config(
                        "strategy",
                        format!("{whole:?}: the choice after @ is `load` or `least-lagged`"),
                    )
                })?),
            ),
            None => (whole, None),
        };
        let (name, param) = match t.split_once(':') {
            Some((n, p)) => (
                n,
                Some(
                    parse_duration(p)
                        .map_err(|e| BenchError::config("strategy", format!("{t:?}: {e}")))?,
                ),
            ),
            None => (t, None),
        };
        let name = StrategyName::ALL
            .into_iter()
            .find(|n| n.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<_> = StrategyName::ALL.iter().map(|n| n.as_str()).collect();
                BenchError::config(
                    "strategy",
                    format!(
                        "{name:?} is unknown (known: {}, or `all`)",
                        known.join(", ")
                    ),
                )
            })?;
        if param.is_some() && matches!(name, StrategyName::Leader | StrategyName::Legacy) {
            return Err(BenchError::config(
                "strategy",
                format!("{t:?}: `{}` takes no duration", name.as_str()),
            ));
        }
        Ok(StrategySpec {
            name,
            param,
            choice,
        })
    }
}

impl fmt::Display for StrategySpec {
    /// Exactly the `X-Read-Strategy` header value (`sticky:2s`,
    /// `causal@least-lagged`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.name.as_str().to_owned();
        if let Some(d) = self.param {
            text = format!("{text}:{}", DurationText(d));
        }
        if let Some(c) = self.choice {
            text = format!("{text}@{c}");
        }
        f.pad(&text)
    }
}

/// Formats a duration the way the service parses it: `2s`, `500ms`, `250us`.
#[derive(Debug, Clone, Copy)]
pub struct DurationText(pub Duration);

impl fmt::Display for DurationText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0.as_micros();
        if us == 0 {
            f.write_str("0ms")
        } else if us.is_multiple_of(1_000_000) {
            write!(f, "{}s", us / 1_000_000)
        } else if us.is_multiple_of(1000) {
            write!(f, "{}ms", us / 1000)
        } else {
            write!(f, "{us}us")
        }
    }
}

/// Parses `250us`, `200ms`, `1.5s`, `2m` or a bare `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{t:?} has no unit (us, ms, s, m)"))?;
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{t:?} is not a duration"))?;
    let secs = match unit {
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("{t:?}: unknown unit {unit:?} (us, ms, s, m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{t:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_parses_the_three_forms_and_prints_them_back() {
        for (text, want) in [
            ("200ms", Think::Fixed(Duration::from_millis(200))),
            (
                "0ms..1s",
                Think::Uniform {
                    lo: Duration::ZERO,
                    hi: Duration::from_secs(1),
                },
            ),
            (
                "exp:300ms",
                Think::Exponential {
                    mean: Duration::from_millis(300),
                },
            ),
            ("0", Think::Fixed(Duration::ZERO)),
        ] {
            assert_eq!(text.parse::<Think>().unwrap(), want, "{text}");
        }
        assert_eq!(
            Think::Uniform {
                lo: Duration::ZERO,
                hi: Duration::from_secs(1)
            }
            .to_string(),
            "0ms..1s"
        );
        assert_eq!(
            "exp:1.5s".parse::<Think>().unwrap().to_string(),
            "exp:1500ms"
        );
    }

    #[test]
    fn think_refuses_nonsense() {
        for bad in ["", "fast", "1s..0ms", "exp:0ms", "10", "5 parsecs", "1h"] {
            assert!(bad.parse::<Think>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn think_samples_stay_in_their_range() {
        let mut rng = rand::rng();
        let u = Think::Uniform {
            lo: Duration::from_millis(10),
            hi: Duration::from_millis(20),
        };
        let e = Think::Exponential {
            mean: Duration::from_millis(10),
        };
        for _ in 0..1000 {
            let d = u.sample(&mut rng);
            assert!(d >= Duration::from_millis(10) && d < Duration::from_millis(20));
            assert!(e.sample(&mut rng) <= Duration::from_millis(200));
        }
    }

    #[test]
    fn strategy_list_all_is_the_eight_default_strategies() {
        let names: Vec<String> = StrategySpec::parse_list("all")
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "leader",
                "legacy",
                "sticky:2s",
                "sticky:5s",
                "causal",
                "causal:0ms",
                "hybrid",
                "per-read-check"
            ]
        );
        let two = StrategySpec::parse_list("causal:0ms, leader,causal:0ms").unwrap();
        assert_eq!(
            two.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            ["causal:0ms", "leader"]
        );
        assert!(StrategySpec::parse_list("eventual").is_err());
        assert!(StrategySpec::parse_list("leader:2s").is_err());
        assert!(StrategySpec::parse_list(" , ").is_err());
    }

    #[test]
    fn a_follower_choice_after_the_at_sign_round_trips_and_a_bad_one_is_refused() {
        let list = StrategySpec::parse_list("causal,causal@least-lagged,hybrid:20ms@load").unwrap();
        let texts: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        assert_eq!(texts, ["causal", "causal@least-lagged", "hybrid:20ms@load"]);
        assert_eq!(list[1].choice, Some(FollowerChoice::LeastLagged));
        assert!("causal@lag".parse::<StrategySpec>().is_err());
    }

    #[test]
    fn strategy_list_sweep_is_causal_budgets_against_hybrid() {
        let names: Vec<String> = StrategySpec::parse_list("leader,sweep,causal:20ms")
            .unwrap()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "leader",
                "causal:0ms",
                "causal:5ms",
                "causal:20ms",
                "causal:50ms",
                "causal:200ms",
                "hybrid"
            ]
        );
    }

    #[test]
    fn users_are_split_evenly_with_at_least_one_per_strategy() {
        let mut c = BenchConfig {
            users: 10,
            ..BenchConfig::default()
        };
        assert_eq!(c.group_sizes(), [2, 2, 1, 1, 1, 1, 1, 1]);
        c.users = 0;
        assert_eq!(c.group_sizes(), [1; 8]);
    }

    #[test]
    fn load_parses_closed_and_open() {
        assert_eq!("closed".parse::<Load>().unwrap(), Load::Closed);
        assert_eq!(
            "open:50".parse::<Load>().unwrap(),
            Load::Open {
                iterations_per_s: 50.0
            }
        );
        assert!("open:-1".parse::<Load>().is_err());
        assert!("open".parse::<Load>().is_err());
    }
}
