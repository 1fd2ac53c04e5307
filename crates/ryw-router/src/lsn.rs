//! [`Lsn`]: a position in PostgreSQL's write-ahead log.
//!
//! Every consistency decision in ryw compares WAL positions, so they are a
//! number with an order, never a string compared as text (`"0/9"` > `"0/10"`
//! as text, but not as a position).

use std::fmt;
use std::str::FromStr;

use tokio_postgres::types::PgLsn;

use crate::Error;

/// A WAL position (`pg_lsn`), as PostgreSQL prints it: `X/Y`, two hexadecimal
/// halves of a 64-bit byte offset.
///
/// Ordered like the log itself, so `max` of two tokens is "the later one", and
/// the difference of two positions is the number of WAL bytes between them
/// (the lag in bytes of a follower).
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(u64);

impl Lsn {
    /// `0/0`, PostgreSQL's "invalid" position; every real position is after it.
    pub const ZERO: Lsn = Lsn(0);

    /// The position at byte offset `offset` of the WAL.
    pub const fn from_u64(offset: u64) -> Lsn {
        Lsn(offset)
    }

    /// The byte offset of this position (what the Redis store keeps, as a
    /// decimal string).
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// WAL bytes from `earlier` to `self`; 0 when `earlier` is not before
    /// `self` (a follower ahead of a stale leader reading is not "negative
    /// lag").
    pub const fn bytes_since(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The position `bytes` further on, or `None` past the end of the space.
    pub const fn checked_add(self, bytes: u64) -> Option<Lsn> {
        match self.0.checked_add(bytes) {
            Some(v) => Some(Lsn(v)),
            None => None,
        }
    }

    /// The position `bytes` further on, stopping at the largest position.
    pub const fn saturating_add(self, bytes: u64) -> Lsn {
        Lsn(self.0.saturating_add(bytes))
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({self})")
    }
}

impl fmt::Display for Lsn {
    /// PostgreSQL's own spelling (`16/B374D848`), so values can be pasted
    /// into `psql` and compared with `pg_current_wal_lsn()` by eye.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = Error;

    /// Parses `X/Y` with 1–8 hex digits on each side, as `pg_lsn` input does.
    fn from_str(s: &str) -> Result<Lsn, Error> {
        let bad = || Error::InvalidLsn(s.chars().take(40).collect());
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let half = |part: &str| -> Result<u64, Error> {
            if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u64::from_str_radix(part, 16).map_err(|_| bad())
        };
        Ok(Lsn((half(hi)? << 32) | half(lo)?))
    }
}

impl From<PgLsn> for Lsn {
    fn from(lsn: PgLsn) -> Lsn {
        Lsn(u64::from(lsn))
    }
}

impl From<Lsn> for PgLsn {
    fn from(lsn: Lsn) -> PgLsn {
        PgLsn::from(lsn.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints_postgres_spelling() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.as_u64(), 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn::ZERO);
        assert_eq!(
            "ffffffff/ffffffff".parse::<Lsn>().unwrap(),
            Lsn::from_u64(u64::MAX)
        );
        assert_eq!(Lsn::from_u64(u64::MAX).to_string(), "FFFFFFFF/FFFFFFFF");
    }

    #[test]
    fn rejects_what_postgres_rejects() {
        for bad in [
            "",
            "/",
            "0/",
            "/0",
            "0",
            "0/0/0",
            "g/0",
            "0/-1",
            " 0/1",
            "0/1 ",
            "+1/0",
            "123456789/0",
            "0x1/0",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn orders_as_positions_not_as_text() {
        let nine: Lsn = "0/9".parse().unwrap();
        let ten: Lsn = "0/10".parse().unwrap();
        let next_segment: Lsn = "1/0".parse().unwrap();
        assert!(nine < ten);
        assert!(ten < next_segment);
        assert!("0/FFFFFFFF".parse::<Lsn>().unwrap() < next_segment);
    }

    #[test]
    fn lag_bytes_are_the_distance_and_never_negative() {
        let follower: Lsn = "0/1000".parse().unwrap();
        let leader: Lsn = "0/1800".parse().unwrap();
        assert_eq!(leader.bytes_since(follower), 0x800);
        assert_eq!(follower.bytes_since(leader), 0);
        assert_eq!(follower.checked_add(0x800), Some(leader));
        assert_eq!(Lsn::from_u64(u64::MAX).checked_add(1), None);
        assert_eq!(Lsn::from_u64(u64::MAX).saturating_add(5).as_u64(), u64::MAX);
    }

    #[test]
    fn converts_to_and_from_pg_lsn() {
        let lsn = Lsn::from_u64(0x1_0000_0042);
        let pg: PgLsn = lsn.into();
        assert_eq!(pg.to_string(), "1/42");
        assert_eq!(Lsn::from(pg), lsn);
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(v in any::<u64>()) {
            let lsn = Lsn::from_u64(v);
            prop_assert_eq!(lsn.to_string().parse::<Lsn>().unwrap(), lsn);
        }

        #[test]
        fn display_matches_pg_lsn(v in any::<u64>()) {
            prop_assert_eq!(Lsn::from_u64(v).to_string(), PgLsn::from(v).to_string());
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,24}") {
            let _ = s.parse::<Lsn>();
        }

        #[test]
        fn parse_never_panics_on_any_text(s in "(?s).{0,40}") {
            let _ = s.parse::<Lsn>();
        }

        #[test]
        fn near_valid_text_parses_exactly_when_both_halves_are_1_to_8_hex_digits(
            s in "[0-9A-Fa-fgxX+ -]{0,10}/[0-9A-Fa-fgxX+ -]{0,10}"
        ) {
            let (hi, lo) = s.split_once('/').unwrap();
            let half_ok = |p: &str| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_hexdigit());
            prop_assert_eq!(s.parse::<Lsn>().is_ok(), half_ok(hi) && half_ok(lo), "{:?}", s);
        }

        #[test]
        fn lowercase_parses_like_uppercase(hi in 0u64..=0xFFFF_FFFF, lo in 0u64..=0xFFFF_FFFF) {
            let text = format!("{hi:x}/{lo:x}");
            prop_assert_eq!(text.parse::<Lsn>().unwrap(), Lsn::from_u64((hi << 32) | lo));
        }
    }
}
