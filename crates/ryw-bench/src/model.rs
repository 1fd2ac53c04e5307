//! The scaling model of `docs/scaling.md` (`ryw bench model`): from a
//! workload (think time between a write and the next fresh read, the
//! request mix, the iteration rate), the followers' catch-up times, the
//! tracker's poll interval and a strategy, predict where fresh reads go
//! (the leader's share, waits, stale reads) and the query rate on every
//! node. Pure functions only: no I/O, no clock, no randomness.
//!
//! # The model
//!
//! A fresh read is sent `T` after the session's last write (`T` drawn from
//! the think-time distribution). Follower `f` shows the write `L_f` after
//! the leader committed it (its catch-up time: on a `ryw cluster` its apply
//! delay + about 1 ms). The router learns it only at the tracker's next
//! poll: it *sees* follower `f` at the token at `S_f = L_f + U_f`, with
//! `U_f` uniform in `0..P` (`P` = poll interval), and at
//! `S = min_f S_f` some follower is known to have it. Then, per strategy:
//!
//! | strategy | a fresh read goes to the leader iff |
//! | --- | --- |
//! | `leader` | always |
//! | `legacy` | never (stale iff its random follower has `L_f > T`) |
//! | `sticky:W` | `T < W` (stale iff `W ≤ T < L_f` of its random follower) |
//! | `causal:B` | `T + B < S` (it waits iff `T < S`; a wait is wasted iff it ends on the leader) |
//! | `hybrid:B` | `T < S` and either `T < pace − B` (no wait foreseen) or `T + B < S` (a wasted wait), with `pace = min_f L_f + 8P/9` (the longest of the last 8 catch-ups the tracker saw) |
//! | `per-read-check` | its random follower has `L_f > T` (the check is live: no poll delay) |
//! | oracle | `T < min_f L_f` (no follower could have it) |
//!
//! Followers: `legacy`, `sticky` and stale-ok reads spread evenly;
//! `per-read-check` adds one check query per fresh read on its random
//! follower. `causal` and `hybrid` (the router's default choice by load,
//! issue 22) give a read that finds followers already seen at its token to
//! any of them, evenly: follower `f`'s share of those read at `T` is
//! `E[1{f seen} / (number seen)]`, each seen independently with `p_f(T) =
//! P(S_f ≤ T)` (two random candidates and the fewer reads in flight is, at
//! the loads one plans for, an even split that shifts reads off a slow
//! follower; the model takes it even). A read that waits is served by the
//! first follower seen at its token: the least lagged, shared with those
//! within a poll of it. With `@least-lagged` (the choice before issue 22)
//! every follower read goes that way: under steady writes the positions
//! never tie, so the least-lagged follower takes them all.
//!
//! Query rates (requests per second; a write is one transaction):
//! leader = writes + fresh reads × leader share + tracker polls; follower
//! `f` = its fresh reads + its checks + stale-ok reads / followers +
//! tracker polls. Tracker polls per node = instances / `P` without the
//! shared position feed, 1 / `P` with it (one poller).

use crate::config::{FollowerChoice, StrategyName, StrategySpec, Think};
use std::time::Duration;

/// Defaults of the router, for strategies given without a duration.
pub const DEFAULT_STICKY_WINDOW: Duration = Duration::from_secs(5);
/// `causal` without a duration: the server's wait budget.
pub const DEFAULT_CAUSAL_WAIT: Duration = Duration::from_millis(200);
/// `hybrid` without a duration: the server's hybrid budget.
pub const DEFAULT_HYBRID_WAIT: Duration = Duration::from_millis(20);
/// How many recent catch-ups `hybrid`'s pace is the longest of.
pub const PACE_WINDOW: u32 = 8;

/// What one iteration of the workload sends (per iteration, on average).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    /// Writes (each followed by a think time and a fresh read).
    pub writes: f64,
    /// Fresh reads (one after each write).
    pub fresh_reads: f64,
    /// Stale-ok reads (the catalogue).
    pub stale_ok_reads: f64,
}

impl Mix {
    /// `ryw bench`'s mix: pay, think, read the balance; every
    /// `profile_every`-th iteration also update the profile, think, read
    /// `/api/me`; every `products_every`-th read the catalogue (0 = never).
    pub fn bench(profile_every: u32, products_every: u32) -> Mix {
        let every = |n: u32| if n == 0 { 0.0 } else { 1.0 / f64::from(n) };
        let pairs = 1.0 + every(profile_every);
        Mix {
            writes: pairs,
            fresh_reads: pairs,
            stale_ok_reads: every(products_every),
        }
    }

    /// Requests per iteration.
    pub fn requests(&self) -> f64 {
        self.writes + self.fresh_reads + self.stale_ok_reads
    }
}

impl Default for Mix {
    /// `ryw bench`'s defaults (profile every 5th, catalogue every 2nd).
    fn default() -> Mix {
        Mix::bench(5, 2)
    }
}

/// How fast iterations come.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// `users` closed-loop users: each starts its next iteration when the
    /// last ended, which takes its think times plus `request` per request.
    Closed {
        /// Users.
        users: f64,
        /// Mean time of one request, as the client sees it.
        request: Duration,
    },
    /// Iterations per second, whatever the number of users.
    Open {
        /// Iterations per second.
        iterations_per_s: f64,
    },
}

/// Everything the model is fed.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// Pause between a write and the fresh read after it.
    pub think: Think,
    /// The request mix of one iteration.
    pub mix: Mix,
    /// How fast iterations come.
    pub rate: Rate,
    /// Each follower's catch-up time: how long after a commit it shows it.
    pub followers: Vec<Duration>,
    /// The tracker's poll interval.
    pub poll_interval: Duration,
    /// Service instances (each runs a tracker unless `feed`).
    pub instances: u32,
    /// The shared position feed is on: one instance polls for all.
    pub feed: bool,
    /// Gaps between a write and the fresh read after it as a run measured
    /// them (seconds): when given, where reads go is predicted from these
    /// instead of `think` (which still sets the rate).
    pub measured_gaps: Option<Vec<f64>>,
}

impl Input {
    /// `ryw bench`'s workload with `users` users on followers whose
    /// catch-up times are `followers`, one instance, the router's default
    /// poll interval (10 ms), 1 ms per request.
    pub fn bench(think: Think, users: f64, followers: Vec<Duration>) -> Input {
        Input {
            think,
            mix: Mix::default(),
            rate: Rate::Closed {
                users,
                request: Duration::from_millis(1),
            },
            followers,
            poll_interval: Duration::from_millis(10),
            instances: 1,
            feed: false,
            measured_gaps: None,
        }
    }

    /// `E[g(gap)]`: over the measured gaps when given, else the think time.
    fn expect(&self, g: impl Fn(f64) -> f64) -> f64 {
        match &self.measured_gaps {
            Some(v) if !v.is_empty() => v.iter().map(|&x| g(x)).sum::<f64>() / v.len() as f64,
            _ => expect(&self.think, g),
        }
    }

    /// `P(gap < x)`.
    fn cdf(&self, x: f64) -> f64 {
        match &self.measured_gaps {
            Some(v) if !v.is_empty() => self.expect(|g| f64::from(u8::from(g < x))),
            _ => cdf(&self.think, x),
        }
    }

    /// Iterations per second.
    pub fn iterations_per_s(&self) -> f64 {
        match self.rate {
            Rate::Open { iterations_per_s } => iterations_per_s,
            Rate::Closed { users, request } => {
                let period = self.mix.fresh_reads * mean(&self.think)
                    + self.mix.requests() * request.as_secs_f64();
                if period > 0.0 { users / period } else { 0.0 }
            }
        }
    }

    /// Tracker polls per second on each node.
    pub fn polls_per_node(&self) -> f64 {
        let p = self.poll_interval.as_secs_f64();
        if p <= 0.0 {
            return 0.0;
        }
        let pollers = if self.feed { 1 } else { self.instances.max(1) };
        f64::from(pollers) / p
    }
}

/// Where the fresh reads of one strategy go, as shares of its fresh reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Shares {
    /// Served by the leader.
    pub leader: f64,
    /// Served by each follower (same order as [`Input::followers`]).
    pub followers: Vec<f64>,
    /// Stale (older than the session's own write): `legacy` and `sticky`
    /// with a window shorter than the lag; 0 for the others.
    pub stale: f64,
    /// Reads that waited for a follower.
    pub waits: f64,
    /// Of those, reads that ended on the leader anyway.
    pub wasted_waits: f64,
    /// `per-read-check`: check queries per fresh read, on each follower.
    pub checks: Vec<f64>,
}

/// Query rates per second on each node, for one strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    /// Writes per second (all on the leader).
    pub writes: f64,
    /// Fresh reads per second, all nodes.
    pub fresh_reads: f64,
    /// Fresh reads on the leader per second.
    pub leader_reads: f64,
    /// Requests the leader serves: writes + its fresh reads.
    pub leader_requests: f64,
    /// Everything on the leader: its requests + tracker polls.
    pub leader_total: f64,
    /// Requests each follower serves: its fresh reads + stale-ok reads.
    pub follower_requests: Vec<f64>,
    /// Per follower: fresh reads + checks + stale-ok reads + tracker polls.
    pub follower_total: Vec<f64>,
    /// Tracker polls per second on each node (included above).
    pub polls_per_node: f64,
}

/// One strategy's prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The strategy (`None`: the oracle line).
    pub strategy: Option<StrategySpec>,
    /// Where its fresh reads go.
    pub shares: Shares,
    /// What that puts on each node.
    pub rates: Rates,
}

/// Mean of the think-time distribution, in seconds.
pub fn mean(think: &Think) -> f64 {
    match *think {
        Think::Fixed(d) => d.as_secs_f64(),
        Think::Uniform { lo, hi } => (lo.as_secs_f64() + hi.as_secs_f64()) / 2.0,
        // Capped at 20× the mean (as the bench draws it): the cap takes
        // e^-20 of the mass, which changes the mean by about 2e-8.
        Think::Exponential { mean } => mean.as_secs_f64() * (1.0 - (-20.0f64).exp()),
    }
}

/// `E[g(T)]` over the think-time distribution (seconds), by the midpoint
/// rule on a fine grid (exact for `Fixed`).
pub fn expect(think: &Think, g: impl Fn(f64) -> f64) -> f64 {
    const N: usize = 20_000;
    match *think {
        Think::Fixed(d) => g(d.as_secs_f64()),
        Think::Uniform { lo, hi } => {
            let (a, b) = (lo.as_secs_f64(), hi.as_secs_f64());
            if b <= a {
                return g(a);
            }
            let h = (b - a) / N as f64;
            (0..N).map(|i| g(a + (i as f64 + 0.5) * h)).sum::<f64>() / N as f64
        }
        Think::Exponential { mean } => {
            let m = mean.as_secs_f64();
            let cap = 20.0 * m;
            let h = cap / N as f64;
            let body: f64 = (0..N)
                .map(|i| {
                    let x = (i as f64 + 0.5) * h;
                    g(x) * (-x / m).exp() / m * h
                })
                .sum();
            body + (-20.0f64).exp() * g(cap)
        }
    }
}

/// `P(T < x)`.
pub fn cdf(think: &Think, x: f64) -> f64 {
    match *think {
        Think::Fixed(d) => f64::from(u8::from(d.as_secs_f64() < x)),
        Think::Uniform { lo, hi } => {
            let (a, b) = (lo.as_secs_f64(), hi.as_secs_f64());
            if b <= a {
                return f64::from(u8::from(a < x));
            }
            ((x - a) / (b - a)).clamp(0.0, 1.0)
        }
        Think::Exponential { mean } => {
            let m = mean.as_secs_f64();
            if x <= 0.0 {
                0.0
            } else if x > 20.0 * m {
                1.0
            } else {
                1.0 - (-x / m).exp()
            }
        }
    }
}

/// `P(S > x)`: no follower is seen at a token `x` seconds after its commit
/// (each seen at its catch-up time plus a uniform wait for the next poll).
fn unseen(lags: &[f64], poll: f64, x: f64) -> f64 {
    lags.iter()
        .map(|&l| {
            if poll <= 0.0 {
                f64::from(u8::from(l > x))
            } else {
                ((l + poll - x) / poll).clamp(0.0, 1.0)
            }
        })
        .product()
}

/// Each follower's expected share of a read `x` seconds after its write,
/// spread evenly over the followers seen at the token by then: `E[1{f seen}
/// / (number seen)]`, with each seen independently (`P(S_f ≤ x)`). The
/// shares add up to the probability that some follower is seen.
fn spread_at(lags: &[f64], poll: f64, x: f64) -> Vec<f64> {
    let seen: Vec<f64> = lags
        .iter()
        .map(|&l| {
            if poll <= 0.0 {
                f64::from(u8::from(l <= x))
            } else {
                ((x - l) / poll).clamp(0.0, 1.0)
            }
        })
        .collect();
    (0..lags.len())
        .map(|f| {
            // The number of the others seen: a Poisson binomial, by DP.
            let mut count = vec![1.0];
            for (g, &p) in seen.iter().enumerate() {
                if g == f {
                    continue;
                }
                let mut next = vec![0.0; count.len() + 1];
                for (k, &c) in count.iter().enumerate() {
                    next[k] += c * (1.0 - p);
                    next[k + 1] += c * p;
                }
                count = next;
            }
            let mean_inverse: f64 = count
                .iter()
                .enumerate()
                .map(|(k, &c)| c / (k as f64 + 1.0))
                .sum();
            seen[f] * mean_inverse
        })
        .collect()
}

/// Index of the follower with the smallest catch-up time (the first of equals).
fn least_lagged(lags: &[f64]) -> Option<usize> {
    (0..lags.len()).min_by(|&a, &b| lags[a].total_cmp(&lags[b]))
}

/// Where one strategy's fresh reads go (`None`: the oracle line).
pub fn shares(input: &Input, strategy: Option<StrategySpec>) -> Shares {
    let lags: Vec<f64> = input.followers.iter().map(Duration::as_secs_f64).collect();
    let n = lags.len();
    let poll = input.poll_interval.as_secs_f64();
    let mut s = Shares {
        leader: 1.0,
        followers: vec![0.0; n],
        stale: 0.0,
        waits: 0.0,
        wasted_waits: 0.0,
        checks: vec![0.0; n],
    };
    if n == 0 {
        return s;
    }
    let even = |s: &mut Shares, on_followers: f64| {
        s.leader = 1.0 - on_followers;
        s.followers = vec![on_followers / n as f64; n];
    };
    // `causal` and `hybrid` read on the follower with the highest replay
    // position: the least lagged, shared with those within a poll of it
    // (their order changes from poll to poll).
    let to_least = |s: &mut Shares, leader: f64| {
        s.leader = leader;
        if let Some(i) = least_lagged(&lags) {
            let near: Vec<usize> = (0..n).filter(|&j| lags[j] <= lags[i] + poll).collect();
            for &j in &near {
                s.followers[j] = (1.0 - leader) / near.len() as f64;
            }
        }
    };
    // With the default choice by load, the reads that find followers
    // already seen at their token (`T` after the write) spread over them;
    // the reads that waited go to the first seen (`to_least`'s split).
    let spread = strategy.is_some_and(|st| st.choice != Some(FollowerChoice::LeastLagged));
    let spread_over_seen = |s: &mut Shares| {
        let caught: Vec<f64> = (0..n)
            .map(|f| input.expect(|t| spread_at(&lags, poll, t)[f]))
            .collect();
        let caught_total: f64 = caught.iter().sum();
        let waited_total = (1.0 - s.leader - caught_total).max(0.0);
        let first: Vec<f64> = s
            .followers
            .iter()
            .map(|&x| x / (1.0 - s.leader).max(1e-12))
            .collect();
        for f in 0..n {
            s.followers[f] = caught[f] + waited_total * first[f];
        }
    };
    let param = |d: Duration| strategy.and_then(|st| st.param).unwrap_or(d).as_secs_f64();
    let Some(spec) = strategy else {
        let min = lags.iter().copied().fold(f64::INFINITY, f64::min);
        to_least(&mut s, input.cdf(min));
        return s;
    };
    match spec.name {
        StrategyName::Leader => {}
        StrategyName::Legacy => {
            even(&mut s, 1.0);
            s.stale = lags.iter().map(|&l| input.cdf(l)).sum::<f64>() / n as f64;
        }
        StrategyName::Sticky => {
            let w = param(DEFAULT_STICKY_WINDOW);
            even(&mut s, 1.0 - input.cdf(w));
            s.stale = lags
                .iter()
                .map(|&l| (input.cdf(l) - input.cdf(w)).max(0.0))
                .sum::<f64>()
                / n as f64;
        }
        StrategyName::Causal => {
            let b = param(DEFAULT_CAUSAL_WAIT);
            let leader = input.expect(|t| unseen(&lags, poll, t + b));
            to_least(&mut s, leader);
            if spread && leader < 1.0 {
                spread_over_seen(&mut s);
            }
            if b > 0.0 {
                s.waits = input.expect(|t| unseen(&lags, poll, t));
                s.wasted_waits = leader;
            }
        }
        StrategyName::Hybrid => {
            let b = param(DEFAULT_HYBRID_WAIT);
            let min = lags.iter().copied().fold(f64::INFINITY, f64::min);
            let pace = min + poll * f64::from(PACE_WINDOW) / f64::from(PACE_WINDOW + 1);
            // Not seen at the token when the read comes: wait only when the
            // pace says a follower will be seen within the budget.
            let foreseen = |t: f64| b > 0.0 && t >= pace - b;
            let leader = input.expect(|t| {
                if foreseen(t) {
                    unseen(&lags, poll, t + b)
                } else {
                    unseen(&lags, poll, t)
                }
            });
            to_least(&mut s, leader);
            if spread && leader < 1.0 {
                spread_over_seen(&mut s);
            }
            s.waits = input.expect(|t| {
                if foreseen(t) {
                    unseen(&lags, poll, t)
                } else {
                    0.0
                }
            });
            s.wasted_waits = input.expect(|t| {
                if foreseen(t) {
                    unseen(&lags, poll, t + b)
                } else {
                    0.0
                }
            });
        }
        StrategyName::PerReadCheck => {
            // A random follower, asked live: it serves iff it has the write.
            s.leader = lags.iter().map(|&l| input.cdf(l)).sum::<f64>() / n as f64;
            s.followers = lags
                .iter()
                .map(|&l| (1.0 - input.cdf(l)) / n as f64)
                .collect();
            s.checks = vec![1.0 / n as f64; n];
        }
    }
    s
}

/// The query rates that `shares` puts on each node.
pub fn rates(input: &Input, shares: &Shares) -> Rates {
    let it = input.iterations_per_s();
    let writes = it * input.mix.writes;
    let fresh = it * input.mix.fresh_reads;
    let stale_ok = it * input.mix.stale_ok_reads;
    let polls = input.polls_per_node();
    let n = input.followers.len();
    let leader_reads = fresh * shares.leader;
    // With no follower, stale-ok reads go to the leader too.
    let leader_stale_ok = if n == 0 { stale_ok } else { 0.0 };
    let leader_requests = writes + leader_reads + leader_stale_ok;
    let follower_requests: Vec<f64> = (0..n)
        .map(|i| fresh * shares.followers[i] + stale_ok / n as f64)
        .collect();
    Rates {
        writes,
        fresh_reads: fresh,
        leader_reads,
        leader_requests,
        leader_total: leader_requests + polls,
        follower_total: (0..n)
            .map(|i| follower_requests[i] + fresh * shares.checks[i] + polls)
            .collect(),
        follower_requests,
        polls_per_node: polls,
    }
}

/// The prediction for each strategy, then the oracle line.
pub fn predict(input: &Input, strategies: &[StrategySpec]) -> Vec<Prediction> {
    strategies
        .iter()
        .map(|s| Some(*s))
        .chain(std::iter::once(None))
        .map(|strategy| {
            let shares = shares(input, strategy);
            let rates = rates(input, &shares);
            Prediction {
                strategy,
                shares,
                rates,
            }
        })
        .collect()
}

/// The prediction as a plain-text table.
pub fn table(input: &Input, predictions: &[Prediction]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model: think {}, {:.1} iterations/s ({:.1} writes/s, {:.1} fresh reads/s), followers' catch-up {}, poll {} ms, {} instance(s){}",
        input.think,
        input.iterations_per_s(),
        input.iterations_per_s() * input.mix.writes,
        input.iterations_per_s() * input.mix.fresh_reads,
        input
            .followers
            .iter()
            .map(|d| format!("{} ms", d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(", "),
        input.poll_interval.as_secs_f64() * 1e3,
        input.instances,
        if input.feed { ", shared feed" } else { "" },
    );
    let _ = write!(
        out,
        "{:<20} {:>8} {:>7} {:>7} {:>7} {:>10} {:>10}",
        "strategy", "leader%", "stale%", "waits%", "wasted%", "leader r/s", "leader q/s"
    );
    for i in 0..input.followers.len() {
        let _ = write!(out, " {:>9}", format!("f{} q/s", i + 1));
    }
    out.push('\n');
    for p in predictions {
        let name = p
            .strategy
            .map_or_else(|| "oracle".to_string(), |s| s.to_string());
        let _ = write!(
            out,
            "{:<20} {:>8.1} {:>7.1} {:>7.1} {:>7.1} {:>10.1} {:>10.1}",
            name,
            p.shares.leader * 100.0,
            p.shares.stale * 100.0,
            p.shares.waits * 100.0,
            p.shares.wasted_waits * 100.0,
            p.rates.leader_reads,
            p.rates.leader_total,
        );
        for f in &p.rates.follower_total {
            let _ = write!(out, " {f:>9.1}");
        }
        out.push('\n');
    }
    out
}

/// One strategy of a bench report beside its prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Compared {
    /// The strategy as the report names it.
    pub strategy: String,
    /// The model's prediction for that strategy's own users, from the
    /// configured think time.
    pub predicted: Prediction,
    /// The same from the gaps the run measured between each write's
    /// answer and the next fresh read's request (when the history is known).
    pub from_gaps: Option<Prediction>,
    /// Measured: share of fresh reads on the leader.
    pub leader_share: f64,
    /// Measured: stale fresh reads (RYW violations) / fresh reads.
    pub stale: f64,
    /// Measured: reads that waited / fresh reads.
    pub waits: f64,
    /// Measured: waits that ended on the leader / fresh reads.
    pub wasted_waits: f64,
    /// Measured: acknowledged writes per second.
    pub writes_per_s: f64,
    /// Measured: fresh reads per second.
    pub fresh_reads_per_s: f64,
    /// Measured: fresh reads on the leader per second.
    pub leader_reads_per_s: f64,
    /// Measured: stale-ok reads per second.
    pub stale_ok_per_s: f64,
    /// Measured from the history (empty without one): requests per second
    /// each node served (`X-Served-By`), the leader first, then the
    /// followers in the report's order.
    pub node_requests_per_s: Vec<f64>,
}

/// The line above [`compare_table`]: what `report` (read from `name`)
/// measured under, and how to read the table.
pub fn compare_heading(report: &crate::BenchReport, name: &str) -> String {
    format!(
        "{name}: think {}, {:.1} s, followers' median lag {}; p = predicted, m = measured",
        report.think.as_deref().unwrap_or("?"),
        report.elapsed_s,
        report
            .followers
            .iter()
            .map(|f| format!("{} {:.0} ms", f.node, f.median_ms))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Predicts every strategy of a `ryw bench --json` report for the run's
/// own conditions: its think time, each strategy's users (closed loop),
/// the followers' median lag as their catch-up times; `base` gives the
/// rest (mix, request time, poll interval). Strategies the model does not
/// parse (SQL groups) are left out.
pub fn compare(report: &crate::BenchReport, base: &Input) -> Result<Vec<Compared>, String> {
    let think: Think = report
        .think
        .as_deref()
        .ok_or("the report does not say its think time")?
        .parse()
        .map_err(|e| format!("{e}"))?;
    // Catch-up: the configured apply delay + 1 ms (measured: median
    // 101 ms for 100 ms), else the median lag sampled.
    let followers: Vec<Duration> = report
        .followers
        .iter()
        .map(|f| match f.configured_delay_ms {
            Some(d) => Duration::from_millis(d + 1),
            None => Duration::from_secs_f64(f.median_ms.max(0.0) / 1e3),
        })
        .collect();
    let elapsed = report.elapsed_s.max(1e-9);
    let mut out = Vec::new();
    for s in &report.strategies {
        let Ok(spec) = s.strategy.parse::<StrategySpec>() else {
            continue;
        };
        let input = Input {
            think,
            followers: followers.clone(),
            // Closed loop at the request time this run measured (its mean
            // fresh-read latency), not the quiet machine's 1 ms.
            rate: match base.rate {
                Rate::Closed { .. } => Rate::Closed {
                    users: s.users as f64,
                    request: Duration::from_secs_f64(s.latency_ms.mean.max(0.0) / 1e3),
                },
                open => open,
            },
            ..base.clone()
        };
        let shares_ = shares(&input, Some(spec));
        let rates_ = rates(&input, &shares_);
        let gaps = measured_gaps(&report.history, &s.strategy);
        let from_gaps = (!gaps.is_empty()).then(|| {
            let i = Input {
                measured_gaps: Some(gaps),
                ..input.clone()
            };
            let sh = shares(&i, Some(spec));
            Prediction {
                strategy: Some(spec),
                rates: rates(&i, &sh),
                shares: sh,
            }
        });
        let served = |node: &str| {
            report
                .history
                .ops
                .iter()
                .filter(|o| o.strategy == s.strategy && !o.is_error())
                .filter(|o| o.served_by.as_deref() == Some(node))
                .count() as f64
                / elapsed
        };
        let node_requests_per_s = if report.history.ops.is_empty() {
            Vec::new()
        } else {
            std::iter::once("leader")
                .chain(report.followers.iter().map(|f| f.node.as_str()))
                .map(served)
                .collect()
        };
        let per_read = |n: u64| {
            if s.reads == 0 {
                0.0
            } else {
                n as f64 / s.reads as f64
            }
        };
        out.push(Compared {
            strategy: s.strategy.clone(),
            predicted: Prediction {
                strategy: Some(spec),
                shares: shares_,
                rates: rates_,
            },
            from_gaps,
            leader_share: s.leader_share,
            stale: s.stale_rate,
            waits: per_read(s.waits),
            wasted_waits: per_read(s.wasted_waits),
            writes_per_s: s.writes as f64 / elapsed,
            fresh_reads_per_s: s.reads_per_s,
            leader_reads_per_s: s.reads as f64 * s.leader_share / elapsed,
            stale_ok_per_s: s.stale_ok_reads as f64 / elapsed,
            node_requests_per_s,
        });
    }
    Ok(out)
}

/// For each fresh read of `strategy` that followed an acknowledged write
/// of the same client: seconds from that write's answer to the read's
/// request, as the client saw them.
pub fn measured_gaps(history: &crate::RunHistory, strategy: &str) -> Vec<f64> {
    let mut ops: Vec<&crate::Op> = history
        .ops
        .iter()
        .filter(|o| o.strategy == strategy)
        .collect();
    ops.sort_by_key(|o| o.sent_us);
    let mut last: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    let mut gaps = Vec::new();
    for o in ops {
        if o.kind.is_write() && !o.is_error() && o.version.is_some() {
            last.insert(o.client.as_str(), o.recv_us);
        } else if o.kind.is_fresh_read()
            && let Some(&w) = last.get(o.client.as_str())
        {
            gaps.push(o.sent_us.saturating_sub(w) as f64 / 1e6);
        }
    }
    gaps
}

/// [`compare`]'s result as a plain-text table. Shares: predicted from the
/// think time / predicted from the measured gaps / measured. Rates:
/// predicted / measured. Requests per node: the predicted routing (from
/// the gaps) applied to the measured writes and reads / measured.
pub fn compare_table(rows: &[Compared]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = write!(
        out,
        "{:<20} {:>16} {:>16} {:>11} {:>11} {:>13} {:>13}",
        "strategy",
        "leader% t/g/m",
        "stale% t/g/m",
        "waits% g/m",
        "wasted% g/m",
        "writes/s p/m",
        "fresh r/s p/m",
    );
    let nodes = rows.first().map_or(0, |r| r.node_requests_per_s.len());
    for i in 0..nodes {
        let name = if i == 0 {
            "leader".to_string()
        } else {
            format!("f{i}")
        };
        let _ = write!(out, " {:>13}", format!("{name} req/s"));
    }
    out.push('\n');
    let pct = |x: f64| format!("{:.1}", x * 100.0);
    for r in rows {
        let (s, q) = (&r.predicted.shares, &r.predicted.rates);
        let g = r.from_gaps.as_ref().map(|p| &p.shares);
        let gp = |f: &dyn Fn(&Shares) -> f64| g.map_or("-".to_string(), |g| pct(f(g)));
        let _ = write!(
            out,
            "{:<20} {:>16} {:>16} {:>11} {:>11} {:>13} {:>13}",
            r.strategy,
            format!(
                "{}/{}/{}",
                pct(s.leader),
                gp(&|g| g.leader),
                pct(r.leader_share)
            ),
            format!("{}/{}/{}", pct(s.stale), gp(&|g| g.stale), pct(r.stale)),
            format!("{}/{}", gp(&|g| g.waits), pct(r.waits)),
            format!("{}/{}", gp(&|g| g.wasted_waits), pct(r.wasted_waits)),
            format!("{:.1}/{:.1}", q.writes, r.writes_per_s),
            format!("{:.1}/{:.1}", q.fresh_reads, r.fresh_reads_per_s),
        );
        // Requests served per node (no tracker polls, no checks).
        let sh = g.unwrap_or(s);
        let n = sh.followers.len().max(1) as f64;
        let predicted = std::iter::once(r.writes_per_s + r.fresh_reads_per_s * sh.leader).chain(
            sh.followers
                .iter()
                .map(|f| r.fresh_reads_per_s * f + r.stale_ok_per_s / n),
        );
        for (p, m) in predicted.zip(&r.node_requests_per_s) {
            let _ = write!(out, " {:>13}", format!("{p:.1}/{m:.1}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn spec(s: &str) -> Option<StrategySpec> {
        Some(s.parse().unwrap())
    }

    /// The demo's workload: think uniform 0–1 s, catch-up 100 and 400 ms.
    fn demo() -> Input {
        Input::bench("0ms..1s".parse().unwrap(), 16.0, vec![ms(100), ms(400)])
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-3
    }

    #[test]
    fn think_distributions_integrate_to_their_cdf_and_mean() {
        for think in ["200ms", "0ms..1s", "100ms..300ms", "exp:300ms"] {
            let t: Think = think.parse().unwrap();
            assert!(close(expect(&t, |_| 1.0), 1.0), "{think}: total mass");
            assert!(close(expect(&t, |x| x), mean(&t)), "{think}: mean");
            let x = 0.25;
            let direct = expect(&t, |v| f64::from(u8::from(v < x)));
            assert!(close(direct, cdf(&t, x)), "{think}: cdf");
        }
        let e: Think = "exp:1s".parse().unwrap();
        assert!(close(cdf(&e, 1.0), 1.0 - (-1.0f64).exp()));
    }

    #[test]
    fn fixed_strategies_follow_from_the_think_time_alone() {
        let i = demo();
        assert_eq!(shares(&i, spec("leader")).leader, 1.0);
        let legacy = shares(&i, spec("legacy"));
        assert_eq!(
            (legacy.leader, legacy.followers.clone()),
            (0.0, vec![0.5, 0.5])
        );
        // Stale iff its random follower lacks the write: (10% + 40%) / 2.
        assert!(close(legacy.stale, 0.25));
        // Every read comes within 1 s of the write: a 2 s window keeps all.
        let sticky = shares(&i, spec("sticky:2s"));
        assert_eq!((sticky.leader, sticky.stale), (1.0, 0.0));
        // A 250 ms window: 25% on the leader; stale: follower2 reads in
        // 250..400 ms (15% of reads, half of them on follower2).
        let short = shares(&i, spec("sticky:250ms"));
        assert!(close(short.leader, 0.25) && close(short.stale, 0.075));
        let check = shares(&i, spec("per-read-check"));
        assert!(close(check.leader, 0.25));
        assert!(close(check.followers[0], 0.45) && close(check.followers[1], 0.30));
        assert_eq!(check.checks, vec![0.5, 0.5]);
        assert!(close(shares(&i, None).leader, 0.1));
    }

    #[test]
    fn causal_pays_half_a_poll_and_gains_its_budget() {
        let i = demo();
        // Seen at 100 ms + U(0, 10 ms): leader iff T < 105 ms on average.
        let c0 = shares(&i, spec("causal:0ms@least-lagged"));
        assert!(close(c0.leader, 0.105), "{}", c0.leader);
        assert_eq!((c0.waits, c0.wasted_waits), (0.0, 0.0));
        assert!(close(c0.followers[0], 0.895) && c0.followers[1] == 0.0);
        // By load (the default): a read after follower2 is seen (400 ms +
        // U(0, 10 ms), 59.5% of reads) has two followers to choose from.
        let spread = shares(&i, spec("causal:0ms"));
        assert!(close(spread.leader, 0.105));
        assert!(
            close(spread.followers[1], 0.5 * 0.595) && close(spread.followers[0], 0.895 - 0.2975),
            "{:?}",
            spread.followers
        );
        let c20 = shares(&i, spec("causal:20ms"));
        assert!(close(c20.leader, 0.085));
        assert!(close(c20.waits, 0.105) && close(c20.wasted_waits, 0.085));
        // 200 ms outlasts follower1's catch-up: nothing on the leader.
        assert!(close(shares(&i, spec("causal")).leader, 0.0));
        // Without polls (P = 0) causal:0ms is the oracle.
        let exact = Input {
            poll_interval: Duration::ZERO,
            ..demo()
        };
        assert!(close(shares(&exact, spec("causal:0ms")).leader, 0.1));
    }

    #[test]
    fn hybrid_waits_only_near_the_pace_and_rarely_in_vain() {
        let i = demo();
        let h = shares(&i, spec("hybrid"));
        // Pace 100 + 8.9 ms; it waits from 88.9 ms on, for a follower seen
        // at 100..110 ms: leader below 88.9 ms, a wasted wait never
        // (88.9 + 20 > 110).
        assert!(close(h.leader, 0.0889), "{}", h.leader);
        assert!(close(h.waits, 0.105 - 0.0889), "{}", h.waits);
        assert!(h.wasted_waits < 1e-4, "{}", h.wasted_waits);
        // Between causal:0ms and the oracle-with-budget.
        assert!(h.leader < shares(&i, spec("causal:0ms")).leader);
        // No budget: hybrid is causal:0ms.
        assert!(close(
            shares(&i, spec("hybrid:0ms")).leader,
            shares(&i, spec("causal:0ms")).leader
        ));
    }

    #[test]
    fn several_followers_are_seen_at_the_first_of_them() {
        // Two followers with the same 100 ms catch-up: the first of two
        // polls comes sooner, min of two U(0,10): mean 3.3 ms.
        let i = Input {
            followers: vec![ms(100), ms(100)],
            ..demo()
        };
        let c = shares(&i, spec("causal:0ms"));
        assert!(close(c.leader, 0.1 + 0.01 / 3.0), "{}", c.leader);
        // Equally lagged followers share the fresh reads.
        assert!(close(c.followers[0], c.followers[1]));
    }

    #[test]
    fn the_spread_gives_every_follower_that_has_the_write_an_even_share_and_least_lagged_gives_it_all_to_one()
     {
        // 20, 50 and 100 ms; reads 600 ms after the write: all have it.
        let i = Input {
            think: Think::Fixed(ms(600)),
            followers: vec![ms(21), ms(51), ms(101)],
            ..demo()
        };
        for strategy in ["causal", "hybrid"] {
            let spread = shares(&i, spec(strategy));
            assert!(close(spread.leader, 0.0));
            for f in &spread.followers {
                assert!(close(*f, 1.0 / 3.0), "{strategy}: {:?}", spread.followers);
            }
            let old = shares(&i, spec(&format!("{strategy}@least-lagged")));
            assert!(
                close(old.followers[0], 1.0),
                "{strategy}: {:?}",
                old.followers
            );
        }
        // Uniform 0–1 s: reads before a follower catches up go to the
        // followers that have it, so the least lagged still gets more.
        let u = Input {
            followers: vec![ms(21), ms(51), ms(101)],
            ..demo()
        };
        let c = shares(&u, spec("causal:0ms"));
        let total: f64 = c.followers.iter().sum();
        assert!(close(total + c.leader, 1.0), "{c:?}");
        assert!(c.followers[0] > c.followers[1] && c.followers[1] > c.followers[2]);
        assert!(c.followers[2] > 0.28, "{c:?}");
        // The even share at one instant, by the formula.
        let at = spread_at(&[0.0, 0.0], 0.010, 0.005);
        // Each seen with 1/2: E[1{f} / n] = 1/2 × (1/2 × 1 + 1/2 × 1/2).
        assert!(close(at[0], 0.375) && close(at[1], 0.375), "{at:?}");
    }

    #[test]
    fn rates_add_writes_reads_and_polls() {
        let i = Input {
            rate: Rate::Open {
                iterations_per_s: 100.0,
            },
            instances: 4,
            ..demo()
        };
        // 100 it/s: 120 writes, 120 fresh reads, 50 stale-ok reads per s.
        let p = &predict(&i, &[spec("causal:0ms@least-lagged").unwrap()])[0];
        assert!(close(p.rates.writes, 120.0) && close(p.rates.fresh_reads, 120.0));
        assert!(close(p.rates.polls_per_node, 400.0));
        assert!(close(p.rates.leader_total, 120.0 + 12.6 + 400.0));
        assert!(close(
            p.rates.follower_total[0],
            120.0 * 0.895 + 25.0 + 400.0
        ));
        assert!(close(p.rates.follower_total[1], 25.0 + 400.0));
        // The feed: one poller whatever the number of instances.
        let fed = Input { feed: true, ..i };
        assert!(close(fed.polls_per_node(), 100.0));
        // per-read-check adds a check per fresh read on its follower.
        let c = &predict(&fed, &[spec("per-read-check").unwrap()])[0];
        assert!(close(
            c.rates.follower_total[0],
            120.0 * (0.45 + 0.5) + 25.0 + 100.0
        ));
    }

    #[test]
    fn a_report_is_compared_strategy_by_strategy_with_its_own_conditions() {
        let strategy = |name: &str, users: u64, reads: u64, leader: f64, waits: u64| {
            serde_json::json!({
                "strategy": name, "users": users, "reads": reads, "writes": reads,
                "stale_ok_reads": 0, "errors": 0, "ryw_violations": 0,
                "monotonic_violations": 0, "stale_rate": 0.0, "leader_share": leader,
                "oracle_share": null,
                "latency_ms": {"p50": 0.3, "p95": 0.5, "p99": 1.0, "max": 2.0, "mean": 0.3},
                "latency_cdf": [], "reads_per_s": reads as f64 / 40.0, "waits": waits,
                "mean_wait_ms": 0.0, "wasted_waits": waits / 2, "by_gap": []
            })
        };
        let report = serde_json::json!({
            "targets": [], "think": "0ms..1s", "load": "closed", "send_token": true,
            "elapsed_s": 40.0, "interrupted": false, "missed_arrivals": 0,
            "operations": 0, "ryw_violations": 0, "monotonic_violations": 0,
            "violations": [], "oracle": null,
            "strategies": [
                strategy("causal:0ms", 8, 800, 0.11, 0),
                strategy("causal:20ms", 4, 400, 0.09, 100),
                strategy("pgpool-1B/same", 4, 400, 1.0, 0),
            ],
            "followers": [
                {"node": "follower1", "samples": 10, "min_ms": 99.0, "median_ms": 101.0,
                 "max_ms": 104.0, "in_rotation_share": 1.0, "configured_delay_ms": 100},
                {"node": "follower2", "samples": 10, "min_ms": 399.0, "median_ms": 401.0,
                 "max_ms": 404.0, "in_rotation_share": 1.0, "configured_delay_ms": 400}
            ]
        });
        let report: crate::BenchReport = serde_json::from_value(report).unwrap();
        let rows = compare(&report, &demo()).unwrap();
        // The SQL group is not a strategy the model knows.
        assert_eq!(rows.len(), 2);
        let c0 = &rows[0];
        assert_eq!(c0.strategy, "causal:0ms");
        // Catch-up 101 ms + half a poll: 10.6%.
        assert!(close(c0.predicted.shares.leader, 0.106));
        assert!(close(c0.leader_reads_per_s, 800.0 * 0.11 / 40.0));
        // Its own 8 users (not the 16 of `demo()`).
        assert!(close(
            c0.predicted.rates.fresh_reads,
            8.0 * 1.2 / (0.6 + 2.9 * 0.0003)
        ));
        assert!(close(rows[1].waits, 0.25) && close(rows[1].wasted_waits, 0.125));
        assert!(compare_table(&rows).contains("10.6/-/11.0"));
    }

    #[test]
    fn measured_gaps_replace_the_think_time() {
        let op = |client: &str, kind, sent_us, recv_us, version| crate::Op {
            user: "u".into(),
            client: client.into(),
            strategy: "causal:0ms".into(),
            kind,
            sent_us,
            recv_us,
            status: 200,
            version,
            served_by: Some("leader".into()),
            waited_ms: None,
            problem: None,
        };
        use crate::OpKind::{Balance, Pay, Products};
        let history = crate::RunHistory {
            ops: vec![
                op("a", Pay, 0, 1_000, Some(1)),
                op("b", Pay, 0, 2_000, Some(1)),
                op("a", Balance, 51_000, 52_000, Some(1)),
                op("a", Products, 53_000, 54_000, None),
                op("b", Balance, 202_000, 203_000, Some(1)),
                // A read of another client before any write of its own.
                op("c", Balance, 10_000, 11_000, Some(0)),
            ],
            lag: Vec::new(),
        };
        let gaps = measured_gaps(&history, "causal:0ms");
        assert_eq!(gaps.len(), 2);
        assert!(close(gaps[0], 0.05) && close(gaps[1], 0.2));
        assert!(measured_gaps(&history, "leader").is_empty());
        // 50 ms is before follower1's 100 ms, 200 ms after: half on the leader.
        let i = Input {
            measured_gaps: Some(gaps),
            ..demo()
        };
        assert!(close(shares(&i, spec("causal:0ms")).leader, 0.5));
        // legacy: stale on follower1 for the first read, on follower2 for both.
        assert!(close(shares(&i, spec("legacy")).stale, 0.75));
        assert!(close(shares(&i, spec("sticky:100ms")).leader, 0.5));
    }

    #[test]
    fn a_closed_loop_runs_at_users_over_its_period() {
        // 16 users; an iteration: 1.2 thinks of 0.5 s + 2.9 requests of 1 ms.
        let i = demo();
        assert!(close(i.iterations_per_s(), 16.0 / (0.6 + 0.0029)));
        assert!(close(Mix::bench(0, 0).requests(), 2.0));
        // The oracle row comes last.
        let all = predict(&i, &StrategySpec::all());
        assert_eq!(all.len(), 9);
        assert!(all[8].strategy.is_none());
        assert!(table(&i, &all).contains("oracle"));
    }
}
