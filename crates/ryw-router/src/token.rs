//! [`Token`] and [`TokenKey`]: the consistency token a client carries between
//! requests, signed so that it cannot be forged or raised (rule 4).
//!
//! Wire format, version 2: `v2.<timeline as 8 lowercase hex digits><lsn as
//! 16 lowercase hex digits>.<mac>`, where `<mac>` is HMAC-SHA256 under the
//! service's key of the text before the last dot, in unpadded base64url. The
//! version is inside the signed text, so one version cannot be made out of
//! another's signature, nor a timeline changed without the key.
//!
//! Version 1 (`v1.<lsn as 16 hex>.<mac>`, before failover support) still
//! verifies, as a position with timeline 0: read as of the cluster's
//! current timeline (see [`TimelineHistory::judge`](crate::TimelineHistory::judge)). A
//! client keeps its token across an upgrade; it only learns of a lost write
//! once it holds a version 2 token.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::{Lsn, Position};

type HmacSha256 = Hmac<Sha256>;

/// The format of tokens without a timeline (still read).
const V1: &str = "v1";
/// The format this build writes.
const V2: &str = "v2";
/// `v2.` + 24 hex + `.` + 43 base64url characters of a 32-byte MAC.
const V2_LEN: usize = 3 + 24 + 1 + 43;
/// Anything longer than this is refused before any parsing or hashing work.
const MAX_INPUT: usize = 256;
/// Shortest key accepted: 128 bits, so the MAC cannot be brute-forced.
pub const MIN_KEY_BYTES: usize = 16;

/// Why a client's token was refused. Every variant is the client's fault and
/// maps to an HTTP 400 (rule 4): never a 500, never a silent stale read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The header was present but empty.
    #[error("empty token")]
    Empty,
    /// Not shaped like `vN.<hex>.<mac>`, too long, or not valid hex/base64.
    #[error("malformed token")]
    Malformed,
    /// Shaped like a token, but of a version this build does not read.
    #[error("unsupported token version")]
    UnsupportedVersion,
    /// Well formed, but not signed by our key: forged, tampered with, or
    /// signed by another deployment.
    #[error("bad token signature")]
    BadSignature,
    /// A key shorter than [`MIN_KEY_BYTES`] was configured.
    #[error("token key shorter than 16 bytes")]
    KeyTooShort,
}

/// The WAL position (and timeline) a session must see, as carried by a
/// client.
///
/// A `Token` only exists for a position that was signed by us or is about to
/// be: build one from a [`Position`] the router returned, or get one from
/// [`Token::decode`], which checks the signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(Position);

impl Token {
    /// A token for `pos` (typically the position of the caller's write, or
    /// the one its last read saw).
    pub fn new(pos: impl Into<Position>) -> Token {
        Token(pos.into())
    }

    /// The position the holder must see.
    pub const fn position(self) -> Position {
        self.0
    }

    /// Its LSN.
    pub const fn lsn(self) -> Lsn {
        self.0.lsn
    }

    /// The header value for this token, signed with `key`.
    pub fn encode(self, key: &TokenKey) -> String {
        key.sign(self.0)
    }

    /// Reads a header value, accepting it only if `key` signed it.
    pub fn decode(text: &str, key: &TokenKey) -> Result<Token, TokenError> {
        key.verify(text).map(Token)
    }
}

impl From<Position> for Token {
    fn from(pos: Position) -> Token {
        Token(pos)
    }
}

/// The secret that signs and checks tokens.
///
/// Every instance of a service must share one key, so that a token issued by
/// one instance is accepted by the next (read-your-writes across instances).
/// `Debug` never prints the key.
#[derive(Clone)]
pub struct TokenKey {
    /// The keyed HMAC state, cloned per use: cheaper than re-keying.
    mac: HmacSha256,
}

impl TokenKey {
    /// A key from raw secret bytes (at least [`MIN_KEY_BYTES`]).
    pub fn from_bytes(secret: &[u8]) -> Result<TokenKey, TokenError> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(TokenError::KeyTooShort);
        }
        let mac = HmacSha256::new_from_slice(secret).map_err(|_| TokenError::KeyTooShort)?;
        Ok(TokenKey { mac })
    }

    /// A key from a configured secret string (its UTF-8 bytes, at least 16).
    pub fn from_secret(secret: &str) -> Result<TokenKey, TokenError> {
        TokenKey::from_bytes(secret.as_bytes())
    }

    /// A fresh random 256-bit key, for a single-instance service or tests:
    /// tokens signed with it die with the process.
    pub fn generate() -> TokenKey {
        let mut secret = [0u8; 32];
        // ThreadRng is a CSPRNG seeded from the OS.
        rand::rng().fill_bytes(&mut secret);
        TokenKey::from_bytes(&secret).expect("32 bytes is long enough")
    }

    /// The header value carrying `pos`: `v2.<8 + 16 hex>.<mac>`. A bare
    /// [`Lsn`] signs as timeline 0: "as of the current timeline", judged
    /// as such after a failover (never reported lost).
    pub fn sign(&self, pos: impl Into<Position>) -> String {
        let pos = pos.into();
        let mut out = String::with_capacity(V2_LEN);
        out.push_str(V2);
        out.push('.');
        out.push_str(&format!("{:08x}{:016x}", pos.timeline, pos.lsn.as_u64()));
        let tag = self.tag(out.as_bytes());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(tag));
        out
    }

    /// The position in a header value, if and only if this key signed it
    /// (checked in constant time). A version 1 token has timeline 0.
    pub fn verify(&self, text: &str) -> Result<Position, TokenError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(TokenError::Empty);
        }
        if text.len() > MAX_INPUT {
            return Err(TokenError::Malformed);
        }
        let (signed, mac_b64) = text.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (version, hex) = signed.split_once('.').ok_or(TokenError::Malformed)?;
        let looks_versioned = version.len() >= 2
            && version.starts_with('v')
            && version[1..].bytes().all(|b| b.is_ascii_digit());
        if !looks_versioned {
            return Err(TokenError::Malformed);
        }
        let digits = match version {
            V1 => 16,
            V2 => 24,
            _ => return Err(TokenError::UnsupportedVersion),
        };
        // Exactly so many lowercase hex digits: one spelling per position.
        if hex.len() != digits || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(TokenError::Malformed);
        }
        let (timeline, offset) = hex.split_at(digits - 16);
        let timeline = if timeline.is_empty() {
            0
        } else {
            u32::from_str_radix(timeline, 16).map_err(|_| TokenError::Malformed)?
        };
        let offset = u64::from_str_radix(offset, 16).map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(mac_b64)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac.clone();
        mac.update(signed.as_bytes());
        mac.verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        Ok(Position::new(timeline, Lsn::from_u64(offset)))
    }

    fn tag(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> TokenKey {
        TokenKey::from_secret("a test secret of enough length").unwrap()
    }

    /// A version 1 token, as builds before timelines signed them.
    fn sign_v1(key: &TokenKey, lsn: Lsn) -> String {
        let signed = format!("v1.{:016x}", lsn.as_u64());
        let tag = key.tag(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    #[test]
    fn round_trips_a_position() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        let text = key().sign(Position::new(1, lsn));
        assert_eq!(text.len(), V2_LEN);
        assert!(text.starts_with("v2.0000000100000016b374d848."));
        assert_eq!(key().verify(&text), Ok(Position::new(1, lsn)));
        let later = Position::new(0x2a, lsn);
        let on_42 = key().sign(later);
        assert!(on_42.starts_with("v2.0000002a00000016b374d848."));
        assert_eq!(key().verify(&on_42), Ok(later));
        // A bare LSN is "as of the current timeline".
        assert_eq!(key().verify(&key().sign(lsn)), Ok(Position::new(0, lsn)));
        let token = Token::decode(&text, &key()).unwrap();
        assert_eq!(token.lsn(), lsn);
        assert_eq!(token.encode(&key()), text);
    }

    #[test]
    fn raising_the_position_breaks_the_signature() {
        let text = key().sign(Lsn::from_u64(0x1000));
        let raised = text.replace("0000000000001000", "0000000000002000");
        assert_ne!(raised, text);
        assert_eq!(key().verify(&raised), Err(TokenError::BadSignature));
    }

    #[test]
    fn a_forged_timeline_is_refused_by_the_signature() {
        let text = key().sign(Position::new(2, Lsn::from_u64(0x1000)));
        let moved = text.replacen("v2.00000002", "v2.00000003", 1);
        assert_ne!(moved, text);
        assert_eq!(key().verify(&moved), Err(TokenError::BadSignature));
    }

    #[test]
    fn version_1_tokens_still_verify_with_no_timeline() {
        let lsn = Lsn::from_u64(0xabc);
        let v1 = sign_v1(&key(), lsn);
        assert_eq!(key().verify(&v1), Ok(Position::new(0, lsn)));
        // A v1 signature does not make a v2 token, nor the other way round.
        let as_v2 = v1.replacen("v1.", "v2.00000001", 1);
        assert!(key().verify(&as_v2).is_err());
        let other = TokenKey::from_secret("some other secret, also long").unwrap();
        assert_eq!(
            key().verify(&sign_v1(&other, lsn)),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn a_tampered_mac_is_refused() {
        let text = key().sign(Lsn::from_u64(42));
        let mut bytes = text.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(key().verify(&tampered), Err(TokenError::BadSignature));
    }

    #[test]
    fn another_deployments_key_is_refused() {
        let other = TokenKey::from_secret("some other secret, also long").unwrap();
        let text = other.sign(Lsn::from_u64(42));
        assert_eq!(key().verify(&text), Err(TokenError::BadSignature));
        assert_eq!(
            TokenKey::generate().verify(&key().sign(Lsn::ZERO)),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for bad in [
            "x",
            "v1",
            "v1.",
            "v1..",
            "v1.zz.abc",
            "v1.0000000000000001",
            "v1.000000000000001.AAAA",
            "v1.00000000000000010.AAAA",
            "v1.000000000000000A.AAAA",
            "v1.0000000000000001.!!!!",
            "v2.0000000000000001.AAAA",
            "v2.00000001000000000000000G.AAAA",
            "1.0000000000000001.AAAA",
            "vx.0000000000000001.AAAA",
            "\u{0}\u{1}",
        ] {
            assert_eq!(key().verify(bad), Err(TokenError::Malformed), "{bad:?}");
        }
        assert_eq!(key().verify(""), Err(TokenError::Empty));
        assert_eq!(key().verify("   "), Err(TokenError::Empty));
        assert_eq!(key().verify(&"v1.".repeat(200)), Err(TokenError::Malformed));
    }

    #[test]
    fn other_versions_are_refused_as_such() {
        let text = key().sign(Lsn::from_u64(7));
        let v3 = text.replacen("v2.", "v3.", 1);
        assert_eq!(key().verify(&v3), Err(TokenError::UnsupportedVersion));
        let v10 = text.replacen("v2.", "v10.", 1);
        assert_eq!(key().verify(&v10), Err(TokenError::UnsupportedVersion));
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(
            TokenKey::from_secret("short").unwrap_err(),
            TokenError::KeyTooShort
        );
        assert!(TokenKey::from_bytes(&[7u8; MIN_KEY_BYTES]).is_ok());
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let printed = format!(
            "{:?}",
            TokenKey::from_secret("supersecretsupersecret").unwrap()
        );
        assert!(!printed.contains("supersecret"));
    }

    proptest! {
        #[test]
        fn sign_then_verify_is_identity(t in any::<u32>(), v in any::<u64>()) {
            let k = key();
            let pos = Position::new(t, Lsn::from_u64(v));
            prop_assert_eq!(k.verify(&k.sign(pos)), Ok(pos));
        }

        #[test]
        fn verify_never_panics_and_never_accepts_noise(s in "\\PC{0,120}") {
            prop_assert!(key().verify(&s).is_err());
        }

        #[test]
        fn any_single_byte_change_is_refused(v in any::<u64>(), at in 0usize..V2_LEN, to in 0x21u8..0x7f) {
            let k = key();
            let text = k.sign(Lsn::from_u64(v));
            let mut bytes = text.clone().into_bytes();
            prop_assume!(bytes[at] != to);
            bytes[at] = to;
            let changed = String::from_utf8(bytes).unwrap();
            // Includes the spare low bits of the last base64 character:
            // base64 0.22 refuses non-canonical encodings.
            prop_assert!(k.verify(&changed).is_err());
        }

        #[test]
        fn any_single_character_change_is_refused(v in any::<u64>(), at in 0usize..V2_LEN, to in any::<char>()) {
            let k = key();
            let text = k.sign(Lsn::from_u64(v));
            prop_assume!(text.as_bytes()[at] as char != to);
            let mut changed = text.clone();
            changed.replace_range(at..at + 1, to.encode_utf8(&mut [0; 4]));
            prop_assert!(k.verify(&changed).is_err(), "{:?} accepted", changed);
        }

        #[test]
        fn truncated_or_extended_tokens_are_refused(v in any::<u64>(), cut in 0usize..V2_LEN, tail in "[!-~]{1,8}") {
            let k = key();
            let text = k.sign(Lsn::from_u64(v));
            prop_assert!(k.verify(&text[..cut]).is_err());
            let extended = format!("{text}{tail}");
            prop_assert!(k.verify(&extended).is_err());
        }

        #[test]
        fn verify_never_panics_on_any_text(s in "(?s).{0,300}") {
            // Any characters (control, multi-byte, newlines), past MAX_INPUT.
            prop_assert!(key().verify(&s).is_err());
        }

        #[test]
        fn near_valid_tokens_are_refused(
            s in prop_oneof![
                "v1\\.[0-9a-f]{16}\\.[A-Za-z0-9_-]{43}",
                "v[0-9]{0,3}\\.[0-9a-fA-F]{0,20}\\.[A-Za-z0-9_=+/-]{0,50}",
            ]
        ) {
            prop_assert!(key().verify(&s).is_err());
        }
    }
}
