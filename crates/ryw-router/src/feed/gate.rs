//! [`Gate`]: whether this instance polls the nodes itself, as a pure
//! function of what it knows (holding the lease, when the last feed
//! message arrived) and an injected instant.

use std::time::Duration;

use tokio::time::Instant;

/// What a step of the [`Gate`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Nothing.
    Same,
    /// Local polling starts. `fallback`: because the feed went quiet while
    /// another instance held the lease (or none did), not because this
    /// instance took the lease.
    Start { fallback: bool },
    /// Local polling stops: the feed carries the positions.
    Stop,
}

/// Decides local polling: on while this instance holds the lease (it polls
/// for everyone), and on while the feed has been quiet for longer than
/// `quiet_after` (a dead feed costs load, never correctness); off while a
/// feed message arrived within `quiet_after` and another instance holds.
#[derive(Debug)]
pub(crate) struct Gate {
    quiet_after: Duration,
    last_message: Option<Instant>,
    holding: bool,
    polling: bool,
}

impl Gate {
    /// Polling at first: nothing has been heard yet.
    pub fn new(quiet_after: Duration) -> Gate {
        Gate {
            quiet_after,
            last_message: None,
            holding: false,
            polling: true,
        }
    }

    /// A feed message from another instance, applied at `now`.
    pub fn on_message(&mut self, now: Instant) {
        self.last_message = Some(self.last_message.map_or(now, |t| t.max(now)));
    }

    /// Whether this instance holds the lease now.
    pub fn set_holding(&mut self, holding: bool) {
        self.holding = holding;
    }

    /// Whether the feed has been heard within `quiet_after` of `now`.
    pub fn feed_alive(&self, now: Instant) -> bool {
        self.last_message
            .is_some_and(|t| now.saturating_duration_since(t) <= self.quiet_after)
    }

    /// Whether it polls locally (as of the last step).
    #[cfg(test)]
    pub fn polling(&self) -> bool {
        self.polling
    }

    /// Re-decides at `now`; says what changed.
    pub fn step(&mut self, now: Instant) -> Change {
        let poll = self.holding || !self.feed_alive(now);
        match (self.polling, poll) {
            (false, true) => {
                self.polling = true;
                Change::Start {
                    fallback: !self.holding,
                }
            }
            (true, false) => {
                self.polling = false;
                Change::Stop
            }
            _ => Change::Same,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn an_instance_polls_until_the_feed_speaks_and_again_once_it_is_quiet() {
        let t0 = Instant::now();
        let mut g = Gate::new(ms(30));
        assert!(g.polling(), "nothing heard yet");
        assert_eq!(g.step(t0), Change::Same);
        g.on_message(t0 + ms(5));
        assert_eq!(g.step(t0 + ms(5)), Change::Stop);
        g.on_message(t0 + ms(15));
        assert_eq!(g.step(t0 + ms(40)), Change::Same, "25 ms quiet is fine");
        assert!(!g.polling());
        assert_eq!(
            g.step(t0 + ms(46)),
            Change::Start { fallback: true },
            "31 ms quiet: poll on its own"
        );
        assert_eq!(g.step(t0 + ms(500)), Change::Same);
        // The feed returns.
        g.on_message(t0 + ms(510));
        assert_eq!(g.step(t0 + ms(511)), Change::Stop);
        // An older arrival time never moves the last message back.
        g.on_message(t0 + ms(100));
        assert!(g.feed_alive(t0 + ms(530)));
    }

    #[test]
    fn the_holder_polls_whatever_it_hears_and_stops_when_it_loses_the_lease() {
        let t0 = Instant::now();
        let mut g = Gate::new(ms(30));
        g.on_message(t0);
        assert_eq!(g.step(t0), Change::Stop);
        g.set_holding(true);
        assert_eq!(g.step(t0 + ms(1)), Change::Start { fallback: false });
        g.on_message(t0 + ms(2));
        assert_eq!(g.step(t0 + ms(2)), Change::Same, "still polls: it holds");
        g.set_holding(false);
        assert_eq!(g.step(t0 + ms(3)), Change::Stop, "another holder speaks");
    }
}
