//! The consistency checker: judges a [`RunHistory`](crate::RunHistory) against the
//! definitions in this crate's README ("The checker"), from the versions in the responses and the
//! client's own clock — never from `served_by` (the server's word is what is
//! being tested).
//!
//! - **RYW violation**: a fresh read by user `u` returns a `version` lower
//!   than the highest `version` of any write by `u` (to the same object)
//!   acknowledged before the read was sent.
//! - **Monotonic-read violation**: a read by one client returns a `version`
//!   lower than a read of the same object by the same client that completed
//!   before it was sent.
//!
//! Both are judged per object: the account (`account`, `pay` → `balance`)
//! and the profile (`profile` → `me`). A write whose response never came is
//! not acknowledged, so a read may or may not see it. Each is an O(n log n)
//! sweep over the history, so it also judges long recorded histories.
//!
//! A fresh read that *found nothing* (404 `no-account` / `no-profile`, see
//! [`Op::found_nothing`]) saw the object not exist: lower than every version,
//! account version 0 included. So it breaks read-your-writes once the
//! object's creation (or any later write) was acknowledged before it was
//! sent, and monotonic reads once the same client had read the object; before
//! the first acknowledged write it is the right answer.

use crate::history::{Object, Op, OpKind, Seen};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Which rule a read broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// Older than the user's own acknowledged write.
    ReadYourWrites,
    /// Older than what the same client had already read.
    MonotonicRead,
}

/// One broken rule, with what is needed to find it in the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// Which rule.
    pub kind: ViolationKind,
    /// Index of the read in `RunHistory::ops`.
    pub op: usize,
    /// The read's user.
    pub user: String,
    /// The read's client.
    pub client: String,
    /// The read's strategy.
    pub strategy: String,
    /// `balance` or `me`.
    pub read: OpKind,
    /// When the read was sent (µs).
    pub sent_us: u64,
    /// The version it returned; `None`: it found nothing (404).
    pub version: Option<u64>,
    /// The version it had to return at least.
    pub expected: u64,
    /// Who served it (reported, not used to judge).
    pub served_by: Option<String>,
}

impl Violation {
    /// What the read saw, in words: `read version 1`, `found nothing (404)`.
    pub fn saw(&self) -> String {
        match self.version {
            Some(v) => format!("read version {v}"),
            None => "found nothing (404)".to_string(),
        }
    }
}

/// The verdict on one checked fresh read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReadCheck {
    /// Index of the read in `RunHistory::ops`.
    pub op: usize,
    /// Highest version of the user's writes acknowledged before the read was
    /// sent (`None`: no acknowledged write yet).
    pub required: Option<u64>,
    /// Time from the acknowledgement of the user's latest such write to the
    /// read's send, µs (`None`: no acknowledged write yet).
    pub since_write_us: Option<u64>,
    /// The read broke read-your-writes.
    pub ryw_violation: bool,
    /// The read broke monotonic reads.
    pub monotonic_violation: bool,
}

/// What the checker found in a history.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Check {
    /// One verdict per checked fresh read (2xx with a version, or a 404 that
    /// found nothing), in history order.
    pub reads: Vec<ReadCheck>,
    /// Every violation, in history order (a read can break both rules).
    pub violations: Vec<Violation>,
}

impl Check {
    /// Number of read-your-writes violations.
    pub fn ryw_violations(&self) -> usize {
        self.violations
            .iter()
            .filter(|v| v.kind == ViolationKind::ReadYourWrites)
            .count()
    }

    /// Number of monotonic-read violations.
    pub fn monotonic_violations(&self) -> usize {
        self.violations
            .iter()
            .filter(|v| v.kind == ViolationKind::MonotonicRead)
            .count()
    }
}

/// (time, version) events sorted by time, with the running maximum version.
struct Timeline {
    times: Vec<u64>,
    max_version: Vec<u64>,
}

impl Timeline {
    fn new(mut events: Vec<(u64, u64)>) -> Timeline {
        events.sort_unstable();
        let mut max = 0;
        let max_version = events
            .iter()
            .map(|&(_, v)| {
                max = max.max(v);
                max
            })
            .collect();
        Timeline {
            times: events.into_iter().map(|(t, _)| t).collect(),
            max_version,
        }
    }

    /// Highest version among events strictly before `t`, and the time of the
    /// latest such event.
    fn before(&self, t: u64) -> Option<(u64, u64)> {
        let n = self.times.partition_point(|&x| x < t);
        (n > 0).then(|| (self.max_version[n - 1], self.times[n - 1]))
    }
}

/// Events per key: (time µs, version).
type Events<K> = HashMap<K, Vec<(u64, u64)>>;

/// Judges a history: every fresh read (`balance`, `me`) that returned 2xx and
/// a version, or found nothing ([`Op::seen`]), is checked for read-your-writes
/// and monotonic reads.
pub fn check_history(ops: &[Op]) -> Check {
    // Acknowledged writes per (user, object), by acknowledgement time.
    let mut writes: Events<(&str, Object)> = HashMap::new();
    // Completed reads that found a version, per (client, user, object), by
    // completion time. The user is part of the key because versions are per
    // account. A read that found nothing raises no floor.
    let mut reads: Events<(&str, &str, Object)> = HashMap::new();
    for op in ops {
        let Some(obj) = op.kind.object() else {
            continue;
        };
        if op.kind.is_write() {
            if let (true, Some(v)) = (op.ok(), op.version) {
                writes
                    .entry((&op.user, obj))
                    .or_default()
                    .push((op.recv_us, v));
            }
        } else if let Some(Seen::Version(v)) = op.seen() {
            reads
                .entry((&op.client, &op.user, obj))
                .or_default()
                .push((op.recv_us, v));
        }
    }
    let writes: HashMap<_, _> = writes
        .into_iter()
        .map(|(k, e)| (k, Timeline::new(e)))
        .collect();
    let reads: HashMap<_, _> = reads
        .into_iter()
        .map(|(k, e)| (k, Timeline::new(e)))
        .collect();

    let mut check = Check::default();
    for (i, op) in ops.iter().enumerate() {
        let (Some(obj), Some(got)) = (op.kind.object(), op.seen()) else {
            continue;
        };
        let acked = writes
            .get(&(op.user.as_str(), obj))
            .and_then(|t| t.before(op.sent_us));
        let seen = reads
            .get(&(op.client.as_str(), op.user.as_str(), obj))
            .and_then(|t| t.before(op.sent_us));
        let verdict = ReadCheck {
            op: i,
            required: acked.map(|(v, _)| v),
            since_write_us: acked.map(|(_, t)| op.sent_us - t),
            ryw_violation: acked.is_some_and(|(v, _)| got < Seen::Version(v)),
            monotonic_violation: seen.is_some_and(|(v, _)| got < Seen::Version(v)),
        };
        let violation = |kind, expected| Violation {
            kind,
            op: i,
            user: op.user.clone(),
            client: op.client.clone(),
            strategy: op.strategy.clone(),
            read: op.kind,
            sent_us: op.sent_us,
            version: match got {
                Seen::Version(v) => Some(v),
                Seen::Nothing => None,
            },
            expected,
            served_by: op.served_by.clone(),
        };
        if let (true, Some((v, _))) = (verdict.ryw_violation, acked) {
            check
                .violations
                .push(violation(ViolationKind::ReadYourWrites, v));
        }
        if let (true, Some((v, _))) = (verdict.monotonic_violation, seen) {
            check
                .violations
                .push(violation(ViolationKind::MonotonicRead, v));
        }
        check.reads.push(verdict);
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A terse op builder: `op(user, client, kind, sent, recv, version)`.
    fn op(user: &str, client: &str, kind: OpKind, sent: u64, recv: u64, version: u64) -> Op {
        Op {
            user: user.into(),
            client: client.into(),
            strategy: "legacy".into(),
            kind,
            sent_us: sent,
            recv_us: recv,
            status: if kind == OpKind::Account { 201 } else { 200 },
            version: Some(version),
            served_by: Some("follower1".into()),
            waited_ms: None,
            problem: None,
        }
    }

    use OpKind::{Balance, Me, Pay, Profile};

    #[test]
    fn a_clean_history_has_no_violation() {
        let h = vec![
            op("a", "a1", OpKind::Account, 0, 5, 0),
            op("a", "a1", Pay, 10, 20, 1),
            op("a", "a1", Balance, 25, 30, 1),
            // sent while the payment was in flight: may see the old version
            op("a", "a2", Pay, 40, 60, 2),
            op("a", "a1", Balance, 50, 55, 1),
            op("a", "a1", Balance, 61, 70, 2),
            op("a", "a1", Profile, 80, 90, 1),
            op("a", "a1", Me, 91, 95, 1),
            // another user's higher versions do not matter
            op("b", "b1", Pay, 10, 12, 9),
            op("b", "b1", Balance, 13, 14, 9),
        ];
        let c = check_history(&h);
        assert_eq!(c.violations, vec![]);
        assert_eq!(c.reads.len(), 5);
        assert_eq!(c.reads[0].since_write_us, Some(5));
        assert_eq!(
            c.reads[1].required,
            Some(1),
            "the payment in flight is not required"
        );
    }

    #[test]
    fn stale_and_non_monotonic_reads_are_each_counted() {
        let mut h = vec![
            op("a", "a1", Pay, 0, 10, 1),
            op("a", "a1", Pay, 20, 30, 2),
            op("a", "a1", Balance, 31, 40, 1), // stale: RYW (needs 2)
            op("a", "a1", Balance, 41, 50, 2),
            op("a", "a1", Balance, 51, 60, 1), // stale and goes back: RYW + monotonic
            op("a", "a2", Balance, 61, 70, 2), // other device: fine
            op("a", "a2", Balance, 65, 75, 1), // overlaps the previous read: RYW only
            op("b", "b1", Profile, 0, 10, 3),
            op("b", "b1", Me, 11, 20, 3),
            op("b", "b1", Me, 21, 30, 3),
            op("b", "b1", Profile, 31, 40, 4),
            op("b", "b1", Me, 41, 50, 2), // RYW (4) + monotonic (3)
        ];
        // a failed write is not acknowledged; a failed read is not judged
        let mut failed = op("a", "a1", Pay, 80, 90, 99);
        failed.status = 0;
        h.push(failed);
        let mut err_read = op("a", "a1", Balance, 91, 95, 0);
        err_read.status = 404;
        h.push(err_read);
        h.push(op("a", "a1", Balance, 96, 99, 2));

        let c = check_history(&h);
        assert_eq!(c.ryw_violations(), 4);
        assert_eq!(c.monotonic_violations(), 2);
        let at: Vec<(usize, ViolationKind, u64, u64)> = c
            .violations
            .iter()
            .map(|v| (v.op, v.kind, v.version.unwrap(), v.expected))
            .collect();
        use ViolationKind::*;
        assert_eq!(
            at,
            [
                (2, ReadYourWrites, 1, 2),
                (4, ReadYourWrites, 1, 2),
                (4, MonotonicRead, 1, 2),
                (6, ReadYourWrites, 1, 2),
                (11, ReadYourWrites, 2, 4),
                (11, MonotonicRead, 2, 3)
            ]
        );
        assert_eq!(c.reads.len(), 9);
    }

    /// A fresh read answered 404 with its not-found problem.
    fn nothing(user: &str, client: &str, kind: OpKind, sent: u64, recv: u64) -> Op {
        Op {
            status: 404,
            version: None,
            problem: kind.not_found_problem().map(String::from),
            ..op(user, client, kind, sent, recv, 0)
        }
    }

    #[test]
    fn a_read_that_found_nothing_after_the_acknowledged_creation_is_stale() {
        use OpKind::Account;
        let mut lost = op("c", "c1", Account, 0, 10, 0);
        lost.status = 0; // the creation's answer never came: not acknowledged
        let mut other_404 = nothing("a", "a1", Balance, 300, 310);
        other_404.problem = Some("not-available".into()); // a wrong URL: an error
        let mut old_format = nothing("a", "a1", Me, 320, 330);
        old_format.problem = None; // written before `problem` existed: an error
        let h = vec![
            nothing("a", "a1", Me, 0, 5),        // 0: no profile yet: right
            op("a", "a1", Account, 10, 20, 0),   // 1
            nothing("a", "a1", Balance, 15, 25), // 2: creation in flight: right
            nothing("a", "a2", Balance, 21, 30), // 3: RYW (needs 0)
            op("a", "a1", Balance, 31, 40, 0),   // 4
            nothing("a", "a1", Balance, 41, 50), // 5: RYW (0) + monotonic (0)
            op("a", "a1", Profile, 60, 70, 1),   // 6
            nothing("a", "a2", Me, 65, 75),      // 7: profile in flight: right
            nothing("a", "a2", Me, 71, 80),      // 8: RYW (needs 1)
            lost,                                // 9
            op("c", "c1", Balance, 20, 30, 0),   // 10: sees the lost creation
            nothing("c", "c1", Balance, 40, 50), // 11: monotonic only
            nothing("c", "c2", Balance, 41, 51), // 12: other device, no ack: right
            op("c", "c2", Balance, 60, 70, 0),   // 13: nothing raised no floor
            other_404,                           // 14
            old_format,                          // 15
        ];
        let c = check_history(&h);
        use ViolationKind::*;
        let at: Vec<_> = c
            .violations
            .iter()
            .map(|v| (v.op, v.kind, v.version, v.expected))
            .collect();
        assert_eq!(
            at,
            [
                (3, ReadYourWrites, None, 0),
                (5, ReadYourWrites, None, 0),
                (5, MonotonicRead, None, 0),
                (8, ReadYourWrites, None, 1),
                (11, MonotonicRead, None, 0),
            ]
        );
        assert_eq!((c.ryw_violations(), c.monotonic_violations()), (3, 2));
        let checked: Vec<usize> = c.reads.iter().map(|r| r.op).collect();
        assert_eq!(checked, [0, 2, 3, 4, 5, 7, 8, 10, 11, 12, 13]);
        assert_eq!(c.reads[0].required, None, "no write yet");
        assert_eq!(c.violations[0].saw(), "found nothing (404)");
        assert!(h[14].is_error() && h[15].is_error() && !h[3].is_error());
    }

    #[test]
    fn a_violation_says_what_the_read_saw() {
        let h = vec![
            op("a", "a1", Pay, 0, 10, 2),
            op("a", "a1", Balance, 11, 20, 1),
        ];
        let v = &check_history(&h).violations[0];
        assert_eq!(
            format!("{} < {}", v.saw(), v.expected),
            "read version 1 < 2"
        );
    }

    #[test]
    fn a_new_account_of_the_same_client_starts_its_versions_again() {
        let h = vec![
            op("a", "c", Pay, 0, 1, 5),
            op("a", "c", Balance, 2, 3, 5),
            op("z", "c", Pay, 4, 5, 1),
            op("z", "c", Balance, 6, 7, 1),
        ];
        assert_eq!(check_history(&h).violations, vec![]);
    }

    /// A model of a correct service: per user, writes commit halfway through
    /// their request; a read returns any committed version at or above both
    /// the user's acknowledged writes and what its client already saw.
    /// Requests overlap (the next one may start before the last one ended).
    /// Per user, steps of (is a write, client, duration, gap to the next, pick).
    type Steps = Vec<Vec<(bool, u8, u16, u16, u8)>>;

    fn model_history(steps: Steps) -> (Vec<Op>, Vec<(u64, u64)>) {
        let mut ops = Vec::new();
        let mut bounds = Vec::new(); // per op: (ryw floor, monotonic floor) for reads
        for (u, user_steps) in steps.into_iter().enumerate() {
            let user = format!("user{u}");
            let mut t = 0u64;
            let mut commits: Vec<(u64, u64)> = Vec::new(); // (commit time, version)
            let mut mine: Vec<usize> = Vec::new(); // indexes of this user's ops
            for (is_write, client, dur, gap, pick) in user_steps {
                let client = format!("{user}-c{}", client % 2);
                let dur = u64::from(dur) + 1;
                let sent = t;
                let recv = sent + dur;
                let acked_floor = mine
                    .iter()
                    .map(|&i| &ops[i])
                    .filter(|o: &&Op| o.kind == Pay && o.recv_us < sent)
                    .map(|o| o.version.unwrap())
                    .max()
                    .unwrap_or(0);
                let seen_floor = mine
                    .iter()
                    .map(|&i| &ops[i])
                    .filter(|o: &&Op| o.kind == Balance && o.client == client && o.recv_us < sent)
                    .map(|o| o.version.unwrap())
                    .max()
                    .unwrap_or(0);
                let op = if is_write {
                    let v = commits.len() as u64 + 1;
                    commits.push((sent + dur / 2, v));
                    bounds.push((0, 0));
                    Op {
                        version: Some(v),
                        ..self::op(&user, &client, Pay, sent, recv, v)
                    }
                } else {
                    let committed = commits
                        .iter()
                        .filter(|&&(ct, _)| ct <= sent)
                        .map(|&(_, v)| v)
                        .max()
                        .unwrap_or(0);
                    let lo = acked_floor.max(seen_floor);
                    let v = lo + u64::from(pick) % (committed - lo + 1);
                    bounds.push((acked_floor, seen_floor));
                    self::op(&user, &client, Balance, sent, recv, v)
                };
                mine.push(ops.len());
                ops.push(op);
                t = sent + u64::from(gap) % (dur + 5);
            }
        }
        (ops, bounds)
    }

    fn steps() -> impl Strategy<Value = Steps> {
        prop::collection::vec(
            prop::collection::vec(
                (
                    any::<bool>(),
                    any::<u8>(),
                    0u16..50,
                    any::<u16>(),
                    any::<u8>(),
                ),
                1..40,
            ),
            1..4,
        )
    }

    proptest! {
        #[test]
        fn a_correct_service_never_shows_a_violation(steps in steps()) {
            let (ops, _) = model_history(steps);
            prop_assert_eq!(check_history(&ops).violations, vec![]);
        }

        #[test]
        fn one_injected_stale_read_is_exactly_one_ryw_violation(steps in steps(), which in any::<prop::sample::Index>()) {
            let (mut ops, bounds) = model_history(steps);
            let stale_able: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].kind == Balance && bounds[i].0 > 0).collect();
            prop_assume!(!stale_able.is_empty());
            let i = stale_able[which.index(stale_able.len())];
            let (ryw_floor, seen_floor) = bounds[i];
            ops[i].version = Some(ryw_floor - 1);
            let c = check_history(&ops);
            prop_assert_eq!(c.ryw_violations(), 1);
            prop_assert_eq!(c.monotonic_violations(), usize::from(seen_floor > ryw_floor - 1));
            prop_assert!(c.violations.iter().all(|v| v.op == i));
        }

        #[test]
        fn one_injected_404_after_a_write_is_exactly_one_ryw_violation(steps in steps(), which in any::<prop::sample::Index>()) {
            let (mut ops, bounds) = model_history(steps);
            let stale_able: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].kind == Balance && bounds[i].0 > 0).collect();
            prop_assume!(!stale_able.is_empty());
            let i = stale_able[which.index(stale_able.len())];
            // Monotonic too if this client had completed any read before (404s raise no floor).
            let read_before = ops.iter().any(|o| {
                o.kind == Balance && o.user == ops[i].user && o.client == ops[i].client && o.recv_us < ops[i].sent_us
            });
            ops[i] = nothing(&ops[i].user.clone(), &ops[i].client.clone(), Balance, ops[i].sent_us, ops[i].recv_us);
            let c = check_history(&ops);
            prop_assert_eq!(c.ryw_violations(), 1);
            prop_assert_eq!(c.monotonic_violations(), usize::from(read_before));
            prop_assert!(c.violations.iter().all(|v| v.op == i && v.version.is_none()));
        }

        #[test]
        fn one_injected_step_back_is_exactly_one_monotonic_violation(steps in steps(), which in any::<prop::sample::Index>()) {
            let (mut ops, bounds) = model_history(steps);
            let able: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].kind == Balance && bounds[i].1 > 0).collect();
            prop_assume!(!able.is_empty());
            let i = able[which.index(able.len())];
            let (ryw_floor, seen_floor) = bounds[i];
            ops[i].version = Some(seen_floor - 1);
            let c = check_history(&ops);
            prop_assert_eq!(c.monotonic_violations(), 1);
            prop_assert_eq!(c.ryw_violations(), usize::from(seen_floor - 1 < ryw_floor));
            prop_assert!(c.violations.iter().all(|v| v.op == i));
        }
    }
}
