//! The session key of the .NET + Redis read-your-writes demo ryw grew from,
//! read so that a team can move from that demo's design to ryw, or run both
//! side by side, without dropping its users' sessions: the demo records only
//! `user:{userId}:last_write_utc` (an ISO-8601 UTC time, TTL 10 minutes)
//! after each write, and no position.

use std::time::Duration;

/// The .NET + Redis demo's key, with `{id}` for the session id.
pub const SEED_LAST_WRITE_KEY: &str = "user:{id}:last_write_utc";

/// How much later than the demo's time ryw's own last write must be for
/// ryw's position to cover the demo's write: the demo may record whole
/// seconds, and the two services' clocks may differ a little.
pub const SEED_TIME_SLACK: Duration = Duration::from_secs(1);

/// The write time to give a seed value that cannot be parsed: "just now"
/// forever (the sticky window's safe side: the leader) while the key lives.
pub const UNPARSEABLE: u64 = u64::MAX;

/// The seed key of session `id` under `template` (`{id}` replaced).
pub fn key(template: &str, id: &str) -> String {
    template.replace("{id}", id)
}

/// The demo's write time in ms since the epoch, and whether ryw's own
/// position may have missed it: `(last write for the window, untracked
/// write)`, from ryw's own last write time and the demo's value.
///
/// The demo's write is covered by ryw's position when ryw recorded a write
/// of its own [`SEED_TIME_SLACK`] after it: ryw's token is read after its
/// own commit, so it covers every write that committed before.
pub fn merge(own_last_write_ms: Option<u64>, seed: Option<&str>) -> (Option<u64>, Option<u64>) {
    let Some(text) = seed else {
        return (own_last_write_ms, None);
    };
    let seed_ms = parse_utc_ms(text).unwrap_or_else(|| {
        tracing::warn!(
            value = text.chars().take(64).collect::<String>(),
            "unparseable last_write_utc: treated as a write just now"
        );
        UNPARSEABLE
    });
    let slack = SEED_TIME_SLACK.as_millis() as u64;
    let covered = own_last_write_ms.is_some_and(|own| seed_ms.saturating_add(slack) < own);
    (
        own_last_write_ms.max(Some(seed_ms)),
        (!covered).then_some(seed_ms),
    )
}

/// Parses an ISO-8601 / RFC 3339 time as .NET and others write it:
/// `2025-11-17T11:25:30Z`, `2025-11-17T11:25:30.1234567Z`,
/// `2025-11-17T11:25:30+01:00`, a space for the `T`, and no zone meaning
/// UTC (the key says so). Returns ms since the epoch; `None` for anything
/// else or a time before 1970.
pub fn parse_utc_ms(text: &str) -> Option<u64> {
    let t = text.trim().as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = t.get(range)?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    if t.len() < 19 || t[4] != b'-' || t[7] != b'-' || !matches!(t[10], b'T' | b't' | b' ') {
        return None;
    }
    if t[13] != b':' || t[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &t[19..];
    let mut millis = 0;
    if let Some((b'.', frac)) = rest.split_first() {
        let n = frac.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        // Milliseconds: the first three digits, padded.
        for i in 0..3 {
            millis = millis * 10
                + frac
                    .get(i)
                    .filter(|_| i < n)
                    .map_or(0, |d| i64::from(d - b'0'));
        }
        rest = &frac[n..];
    }
    let offset_min = match rest {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hm = [*h1, *h2, *m1, *m2];
            if !hm.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let h = i64::from(h1 - b'0') * 10 + i64::from(h2 - b'0');
            let m = i64::from(m1 - b'0') * 10 + i64::from(m2 - b'0');
            if h > 23 || m > 59 {
                return None;
            }
            let total = h * 60 + m;
            if *sign == b'+' { total } else { -total }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    u64::try_from(secs * 1000 + millis).ok()
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats ms since the epoch as the .NET + Redis demo writes it (`…T11:25:30.123Z`), for
/// tests and tools that play the demo's part.
pub fn format_utc_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_formats_parse_to_the_same_instant() {
        // 2025-11-17T11:25:30Z, the demo's README example.
        let at = 1_763_378_730_000;
        for text in [
            "2025-11-17T11:25:30Z",
            "2025-11-17T11:25:30.000Z",
            "2025-11-17T11:25:30.0000000Z",
            "2025-11-17 11:25:30Z",
            "2025-11-17T11:25:30",
            "2025-11-17T12:25:30+01:00",
            "2025-11-17T06:55:30-04:30",
            " 2025-11-17T11:25:30z ",
        ] {
            assert_eq!(parse_utc_ms(text), Some(at), "{text}");
        }
        assert_eq!(parse_utc_ms("2025-11-17T11:25:30.1234567Z"), Some(at + 123));
        assert_eq!(parse_utc_ms("2025-11-17T11:25:30.5Z"), Some(at + 500));
        assert_eq!(parse_utc_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_utc_ms("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "yesterday",
            "1763378730",
            "2025-11-17",
            "2025-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2025-11-17T24:00:00Z",
            "2025-11-17T11:25:30.Z",
            "2025-11-17T11:25:30.1234567890Z",
            "2025-11-17T11:25:30+0100",
            "2025-11-17T11:25:30 UTC",
            "1969-12-31T23:59:59Z",
            "２０２５-11-17T11:25:30Z",
        ] {
            assert_eq!(parse_utc_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for ms in [0, 1_763_378_730_123, 1_709_164_800_000, 4_102_444_799_999] {
            assert_eq!(parse_utc_ms(&format_utc_ms(ms)), Some(ms), "{ms}");
        }
        assert_eq!(format_utc_ms(1_763_378_730_123), "2025-11-17T11:25:30.123Z");
    }

    #[test]
    fn a_seed_write_is_untracked_until_ryw_records_a_later_write_of_its_own() {
        let seed = "2025-11-17T11:25:30Z";
        let at = 1_763_378_730_000;
        // Only the demo's key: its time is the last write, and untracked.
        assert_eq!(merge(None, Some(seed)), (Some(at), Some(at)));
        // ryw wrote 0.5 s later: within the slack, still untracked.
        assert_eq!(
            merge(Some(at + 500), Some(seed)),
            (Some(at + 500), Some(at))
        );
        // ryw wrote 2 s later: its position covers the demo's write.
        assert_eq!(
            merge(Some(at + 2_000), Some(seed)),
            (Some(at + 2_000), None)
        );
        // The demo wrote after ryw: untracked again.
        assert_eq!(merge(Some(at - 60_000), Some(seed)), (Some(at), Some(at)));
        // No seed key: ryw's own record alone.
        assert_eq!(merge(Some(at), None), (Some(at), None));
        // A value that is no time: a write just now, on the safe side.
        assert_eq!(
            merge(Some(at), Some("soon")),
            (Some(UNPARSEABLE), Some(UNPARSEABLE))
        );
    }

    #[test]
    fn the_key_is_the_seeds() {
        assert_eq!(
            key(SEED_LAST_WRITE_KEY, "11111111-1111-1111-1111-111111111111"),
            "user:11111111-1111-1111-1111-111111111111:last_write_utc"
        );
    }
}
