//! What the feed's holder publishes once per poll round: every node's poll
//! outcome, as JSON, with the ages a subscriber needs to place each poll on
//! its own clock. Pure: encoded, decoded and timed here, applied by the
//! tracker (`TrackerState::apply`).

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::Lsn;
use crate::timeline::{Switch, TimelineHistory};
use crate::tracker::{FollowerPoll, PollOutcome, PrimaryPoll};

/// The format's version: a message of another version is ignored (an
/// instance of another release polls on its own rather than misread it).
pub(crate) const FORMAT: u32 = 1;

/// One poll round of the holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FeedMessage {
    /// [`FORMAT`].
    pub v: u32,
    /// The publishing instance (its lease value): an instance ignores its
    /// own messages.
    pub holder: String,
    /// Rises by one per message of this holder.
    pub seq: u64,
    /// The holder's wall clock at publish, µs since the epoch: how long the
    /// message took to arrive (clamped at 0), so an old one is never taken
    /// for fresh.
    pub published_us: i64,
    /// One entry per node polled in this round.
    pub nodes: Vec<NodeReport>,
}

/// One node's poll in a round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeReport {
    /// The node's index (followers in configuration order, then the node
    /// configured as the leader).
    pub node: usize,
    /// Its name, checked by the subscriber against its own at that index.
    pub name: String,
    /// From sending the poll to publishing, µs.
    pub sent_age_us: u64,
    /// From its answer (or failure) to publishing, µs.
    pub recv_age_us: u64,
    /// What the poll said.
    pub outcome: WireOutcome,
}

/// A poll's outcome on the wire (positions as `u64` WAL offsets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum WireOutcome {
    /// In recovery: [`FollowerPoll`].
    Follower {
        replay: Option<u64>,
        started_at_us: i64,
        receiver: Option<String>,
        timeline: Option<u32>,
    },
    /// Not in recovery: [`PrimaryPoll`], with its timeline's history as
    /// `(timeline, switch position)` pairs.
    Primary {
        lsn: u64,
        timeline: u32,
        started_at_us: i64,
        history: Vec<(u32, u64)>,
    },
    /// The poll or the connection failed (rule 3: every subscriber forgets
    /// the node, as the holder did).
    Error { why: String },
}

impl From<&PollOutcome> for WireOutcome {
    fn from(o: &PollOutcome) -> WireOutcome {
        match o {
            PollOutcome::Follower(p) => WireOutcome::Follower {
                replay: p.replay.map(Lsn::as_u64),
                started_at_us: p.started_at_us,
                receiver: p.receiver.clone(),
                timeline: p.timeline,
            },
            PollOutcome::Primary(p) => WireOutcome::Primary {
                lsn: p.lsn.as_u64(),
                timeline: p.timeline,
                started_at_us: p.started_at_us,
                history: p
                    .history
                    .switches
                    .iter()
                    .map(|s| (s.timeline, s.switch_lsn.as_u64()))
                    .collect(),
            },
            PollOutcome::Error(why) => WireOutcome::Error { why: why.clone() },
        }
    }
}

impl WireOutcome {
    /// The outcome as the tracker applies it.
    pub fn into_outcome(self) -> PollOutcome {
        match self {
            WireOutcome::Follower {
                replay,
                started_at_us,
                receiver,
                timeline,
            } => PollOutcome::Follower(FollowerPoll {
                replay: replay.map(Lsn::from_u64),
                started_at_us,
                receiver,
                timeline,
            }),
            WireOutcome::Primary {
                lsn,
                timeline,
                started_at_us,
                history,
            } => PollOutcome::Primary(PrimaryPoll {
                lsn: Lsn::from_u64(lsn),
                timeline,
                started_at_us,
                history: Arc::new(TimelineHistory {
                    current: timeline,
                    switches: history
                        .into_iter()
                        .map(|(timeline, lsn)| Switch {
                            timeline,
                            switch_lsn: Lsn::from_u64(lsn),
                        })
                        .collect(),
                }),
            }),
            WireOutcome::Error { why } => PollOutcome::Error(format!("via the feed: {why}")),
        }
    }
}

impl FeedMessage {
    /// JSON text.
    pub fn encode(&self) -> String {
        // Plain data: serialising it cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a message; `None` for anything else (another format version
    /// included).
    pub fn decode(text: &[u8]) -> Option<FeedMessage> {
        serde_json::from_slice::<FeedMessage>(text)
            .ok()
            .filter(|m| m.v == FORMAT)
    }
}

/// How long a message took from the holder to here, from the two wall
/// clocks; a clock behind the holder's reads as 0 (so hosts' clocks must
/// agree within the feed's quiet limit for the feed to be used at all:
/// otherwise every message is too old and the instance polls on its own).
pub(crate) fn transit(now_us: i64, published_us: i64) -> Duration {
    Duration::from_micros(u64::try_from(now_us.saturating_sub(published_us)).unwrap_or(0))
}

/// When, on this instance's clock, a reported poll was sent and answered:
/// the message arrived at `arrival` after `transit`; the holder saw the
/// poll `sent_age`/`recv_age` before publishing. Never later than
/// `arrival`, so a position's age is never understated by the mapping.
pub(crate) fn local_times(
    arrival: Instant,
    transit: Duration,
    report: &NodeReport,
) -> (Instant, Instant) {
    let back = |age_us: u64| {
        let d = transit + Duration::from_micros(age_us);
        arrival.checked_sub(d).unwrap_or(arrival)
    };
    (back(report.sent_age_us), back(report.recv_age_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FeedMessage {
        FeedMessage {
            v: FORMAT,
            holder: "h-1".into(),
            seq: 7,
            published_us: 1_700_000_000_000_000,
            nodes: vec![
                NodeReport {
                    node: 0,
                    name: "f1".into(),
                    sent_age_us: 900,
                    recv_age_us: 400,
                    outcome: WireOutcome::Follower {
                        replay: Some(0x1_0000_0028),
                        started_at_us: 42,
                        receiver: Some("streaming".into()),
                        timeline: Some(2),
                    },
                },
                NodeReport {
                    node: 1,
                    name: "f2".into(),
                    sent_age_us: 0,
                    recv_age_us: 0,
                    outcome: WireOutcome::Error {
                        why: "connect: refused".into(),
                    },
                },
                NodeReport {
                    node: 2,
                    name: "former-leader".into(),
                    sent_age_us: 800,
                    recv_age_us: 300,
                    outcome: WireOutcome::Primary {
                        lsn: 5000,
                        timeline: 2,
                        started_at_us: 43,
                        history: vec![(1, 4000)],
                    },
                },
            ],
        }
    }

    #[test]
    fn a_message_survives_encoding_and_every_outcome_converts_both_ways() {
        let m = sample();
        let text = m.encode();
        assert_eq!(FeedMessage::decode(text.as_bytes()), Some(m.clone()));
        for report in &m.nodes {
            let outcome = report.outcome.clone().into_outcome();
            let back = WireOutcome::from(&outcome);
            match (&report.outcome, back) {
                (WireOutcome::Error { why }, WireOutcome::Error { why: got }) => {
                    assert!(got.ends_with(why.as_str()), "{got}")
                }
                (sent, got) => assert_eq!(sent, &got),
            }
        }
        // The primary's history arrives as the tracker needs it.
        let PollOutcome::Primary(p) = m.nodes[2].outcome.clone().into_outcome() else {
            panic!("not a primary");
        };
        assert_eq!(p.history.current, 2);
        assert_eq!(p.history.switch_point(1), Some(Lsn::from_u64(4000)));
    }

    #[test]
    fn garbage_and_other_versions_are_not_messages() {
        assert_eq!(FeedMessage::decode(b"hello"), None);
        assert_eq!(FeedMessage::decode(b"{}"), None);
        let other = FeedMessage {
            v: FORMAT + 1,
            ..sample()
        };
        assert_eq!(FeedMessage::decode(other.encode().as_bytes()), None);
    }

    #[test]
    fn a_poll_is_placed_before_its_arrival_by_its_age_and_the_transit() {
        let arrival = Instant::now() + Duration::from_secs(10);
        let m = sample();
        let transit = transit(1_000_500, 1_000_000);
        assert_eq!(transit, Duration::from_micros(500));
        let (sent, received) = local_times(arrival, transit, &m.nodes[0]);
        assert_eq!(arrival - sent, Duration::from_micros(1400));
        assert_eq!(arrival - received, Duration::from_micros(900));
        // A clock behind the holder's: no negative transit.
        assert_eq!(super::transit(1_000_000, 1_000_500), Duration::ZERO);
    }
}
