//! Timelines: what a position means after a failover.
//!
//! A promoted standby starts a new timeline at its *switch point*: the WAL
//! up to it is the old timeline's, shared by every node that follows the
//! new leader; what the old leader wrote past it exists on no node of the
//! new history. A bare LSN cannot tell the two apart (PostgreSQL's own
//! `WAIT FOR LSN` is documented as timeline-blind): the new timeline's
//! positions soon pass an LSN that named a write the old leader
//! acknowledged but never shipped, and a follower "caught up" with it
//! numerically does not have it. So tokens name their timeline
//! ([`Position`]), and a position from an older timeline is judged against
//! the switch point it ended at ([`TimelineHistory::judge`]).

use std::fmt;

use crate::Lsn;

/// A WAL position and the timeline it was read on. Ordered as (timeline,
/// LSN): a later timeline is after every position of an earlier one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// The timeline (1 for a cluster that never failed over).
    pub timeline: u32,
    /// The WAL position on it.
    pub lsn: Lsn,
}

impl Position {
    /// `lsn` on `timeline`.
    pub const fn new(timeline: u32, lsn: Lsn) -> Position {
        Position { timeline, lsn }
    }

    /// One number ordering positions as (timeline, LSN): a later timeline
    /// is after every position of an earlier one. For stores that keep a
    /// maximum (the Redis store compares decimal strings of any length).
    pub const fn ordinal(self) -> u128 {
        ((self.timeline as u128) << 64) | self.lsn.as_u64() as u128
    }

    /// The inverse of [`Position::ordinal`] (`None` past the timeline
    /// range).
    pub fn from_ordinal(n: u128) -> Option<Position> {
        let timeline = u32::try_from(n >> 64).ok()?;
        Some(Position::new(timeline, Lsn::from_u64(n as u64)))
    }
}

impl From<Lsn> for Position {
    /// `lsn` as of the current timeline (timeline 0, like a token from
    /// before timelines).
    fn from(lsn: Lsn) -> Position {
        Position::new(0, lsn)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on timeline {}", self.lsn, self.timeline)
    }
}

/// One switch of the cluster's history: `timeline` ended at `switch_lsn`,
/// where the next began (a line of PostgreSQL's `NNNNNNNN.history` file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switch {
    /// The timeline that ended.
    pub timeline: u32,
    /// The first position of the next timeline: WAL before it is shared.
    pub switch_lsn: Lsn,
}

/// What a session's position means on the cluster's current timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The position holds as it is: on the current timeline, or on an
    /// older one at or before where it ended (its WAL survived).
    Holds(Lsn),
    /// On an older timeline, past its switch point: the write it names was
    /// acknowledged by a leader that is gone, and is in no node of the new
    /// history. The session starts again on the current timeline.
    Lost(Position),
    /// A timeline the router does not know: newer than the one it follows
    /// (it has not seen a promotion yet), or one the cluster never had. No
    /// follower can be proven to have it; only the leader can serve.
    Unknown(Position),
}

/// The cluster's timeline history, as the router knows it: the current
/// timeline and where each earlier one ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimelineHistory {
    /// The leader's timeline; 0 while unknown (before its first poll).
    pub current: u32,
    /// Earlier timelines, oldest first.
    pub switches: Vec<Switch>,
}

impl TimelineHistory {
    /// A cluster on timeline 1, never failed over.
    pub fn first() -> TimelineHistory {
        TimelineHistory {
            current: 1,
            switches: Vec::new(),
        }
    }

    /// Where `timeline` ended, if it is an earlier one of this history.
    pub fn switch_point(&self, timeline: u32) -> Option<Lsn> {
        self.switches
            .iter()
            .find(|s| s.timeline == timeline)
            .map(|s| s.switch_lsn)
    }

    /// What `pos` means now. Until the current timeline is known (0), every
    /// position holds as it is: before the first failover there is nothing
    /// to judge. Timeline 0 is a token from before timelines (version 1): it
    /// is read as of the current timeline (a write it names that a failover
    /// lost is then not reported, only not waited for).
    pub fn judge(&self, pos: Position) -> Verdict {
        if self.current == 0 || pos.timeline == 0 || pos.timeline == self.current {
            return Verdict::Holds(pos.lsn);
        }
        match self.switch_point(pos.timeline) {
            Some(end) if pos.lsn <= end => Verdict::Holds(pos.lsn),
            Some(_) => Verdict::Lost(pos),
            None => Verdict::Unknown(pos),
        }
    }

    /// Whether a write whose commit record came after `floor` (a position
    /// the leader had reached before the write committed) was lost: its
    /// timeline ended at or before `floor`, so none of the write's records
    /// is in the new history. `None` when it survived or cannot be told
    /// (the current timeline, an unknown one, or a position from before
    /// timelines). A floor, not the write's own position, because a
    /// position read after `COMMIT` also covers other sessions' WAL written
    /// meanwhile, which may be all that the switch cut off: judging by it
    /// would tell a session its write was lost when it survived.
    pub fn write_lost(&self, floor: Position) -> Option<Position> {
        if self.current == 0 || floor.timeline == 0 || floor.timeline == self.current {
            return None;
        }
        match self.switch_point(floor.timeline) {
            Some(end) if floor.lsn >= end => Some(floor),
            _ => None,
        }
    }

    /// Parses the text of PostgreSQL's `NNNNNNNN.history` file: one line
    /// per earlier timeline, `<timeline>\t<switch lsn>\t<reason>`; blank
    /// lines and `#` comments skipped. `current` is the timeline the file
    /// belongs to.
    pub fn parse(current: u32, text: &str) -> Option<TimelineHistory> {
        let mut switches = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let timeline = fields.next()?.parse().ok()?;
            let switch_lsn = fields.next()?.parse().ok()?;
            switches.push(Switch {
                timeline,
                switch_lsn,
            });
        }
        Some(TimelineHistory { current, switches })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(timeline: u32, lsn: u64) -> Position {
        Position::new(timeline, Lsn::from_u64(lsn))
    }

    /// Timeline 1 ended at 1000, timeline 2 at 5000; the cluster is on 3.
    fn history() -> TimelineHistory {
        TimelineHistory::parse(
            3,
            "1\t0/3E8\tno recovery target specified\n\n2\t0/1388\tpromoted\n",
        )
        .unwrap()
    }

    #[test]
    fn a_position_on_the_current_timeline_holds() {
        assert_eq!(
            history().judge(at(3, 42)),
            Verdict::Holds(Lsn::from_u64(42))
        );
    }

    #[test]
    fn before_or_at_the_switch_point_the_write_survived() {
        let h = history();
        assert_eq!(h.judge(at(1, 999)), Verdict::Holds(Lsn::from_u64(999)));
        assert_eq!(
            h.judge(at(1, 1000)),
            Verdict::Holds(Lsn::from_u64(1000)),
            "at it"
        );
        assert_eq!(h.judge(at(2, 5000)), Verdict::Holds(Lsn::from_u64(5000)));
    }

    #[test]
    fn past_the_switch_point_the_write_was_lost() {
        let h = history();
        assert_eq!(h.judge(at(1, 1001)), Verdict::Lost(at(1, 1001)));
        // Numerically far behind the new timeline's positions, and still
        // lost: what a bare LSN comparison would get wrong.
        assert_eq!(h.judge(at(2, 5001)), Verdict::Lost(at(2, 5001)));
    }

    #[test]
    fn a_write_is_lost_only_when_its_floor_is_at_or_past_the_switch_point() {
        let h = TimelineHistory {
            current: 2,
            switches: vec![Switch {
                timeline: 1,
                switch_lsn: Lsn::from_u64(1000),
            }],
        };
        // Its records came after the floor: at the switch point, none of
        // them is in the new history.
        assert_eq!(h.write_lost(at(1, 1000)), Some(at(1, 1000)));
        assert_eq!(h.write_lost(at(1, 1500)), Some(at(1, 1500)));
        // Before it: the write may have survived; never called lost.
        assert_eq!(h.write_lost(at(1, 999)), None);
        assert_eq!(h.write_lost(at(2, 5000)), None);
        assert_eq!(h.write_lost(at(7, 5000)), None, "unknown timeline");
        assert_eq!(h.write_lost(at(0, 5000)), None, "before timelines");
        assert_eq!(TimelineHistory::default().write_lost(at(1, 5000)), None);
    }

    #[test]
    fn a_timeline_the_cluster_never_had_is_unknown() {
        assert_eq!(history().judge(at(7, 1)), Verdict::Unknown(at(7, 1)));
        assert_eq!(history().judge(at(4, 1)), Verdict::Unknown(at(4, 1)));
    }

    #[test]
    fn a_token_from_before_timelines_is_read_as_of_the_current_one() {
        assert_eq!(history().judge(at(0, 9)), Verdict::Holds(Lsn::from_u64(9)));
    }

    #[test]
    fn before_the_first_poll_everything_holds() {
        assert_eq!(
            TimelineHistory::default().judge(at(9, 1)),
            Verdict::Holds(Lsn::from_u64(1))
        );
        assert_eq!(
            TimelineHistory::first().judge(at(1, 5)),
            Verdict::Holds(Lsn::from_u64(5))
        );
    }

    #[test]
    fn ordinals_order_by_timeline_then_position_and_round_trip() {
        assert!(at(2, 0).ordinal() > at(1, u64::MAX).ordinal());
        assert!(at(1, 6).ordinal() > at(1, 5).ordinal());
        for p in [at(1, 0), at(3, 77), at(u32::MAX, u64::MAX)] {
            assert_eq!(Position::from_ordinal(p.ordinal()), Some(p));
        }
    }

    #[test]
    fn history_files_that_do_not_parse_are_refused() {
        assert!(TimelineHistory::parse(2, "1\tnot-an-lsn\treason").is_none());
        assert!(TimelineHistory::parse(2, "x\t0/1\treason").is_none());
        assert_eq!(
            TimelineHistory::parse(1, "").unwrap(),
            TimelineHistory::first()
        );
    }
}
