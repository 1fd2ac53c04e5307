//! [`Token`] and [`TokenKey`]: the consistency token a client carries between
//! requests, signed so that it cannot be forged or raised (rule 4).
//!
//! Wire format, version 1: `v1.<lsn as 16 lowercase hex digits>.<mac>`, where
//! `<mac>` is HMAC-SHA256 under the service's key of the text before the last
//! dot, in unpadded base64url. The version is inside the signed text, so a
//! future `v2` cannot be made out of a `v1` signature.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::Lsn;

type HmacSha256 = Hmac<Sha256>;

/// The only format this build writes and reads.
const VERSION: &str = "v1";
/// `v1.` + 16 hex + `.` + 43 base64url characters of a 32-byte MAC.
const V1_LEN: usize = 3 + 16 + 1 + 43;
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

/// The WAL position a session must see, as carried by a client.
///
/// A `Token` only exists for a position that was signed by us or is about to
/// be: build one from an [`Lsn`] the router returned, or get one from
/// [`Token::decode`], which checks the signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(Lsn);

impl Token {
    /// A token for `lsn` (typically the commit LSN of the caller's write, or
    /// the position its last read saw).
    pub const fn new(lsn: Lsn) -> Token {
        Token(lsn)
    }

    /// The position the holder must see.
    pub const fn lsn(self) -> Lsn {
        self.0
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

impl From<Lsn> for Token {
    fn from(lsn: Lsn) -> Token {
        Token(lsn)
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

    /// The header value carrying `lsn`: `v1.<16 hex>.<mac>`.
    pub fn sign(&self, lsn: Lsn) -> String {
        let mut out = String::with_capacity(V1_LEN);
        out.push_str(VERSION);
        out.push('.');
        out.push_str(&format!("{:016x}", lsn.as_u64()));
        let tag = self.tag(out.as_bytes());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(tag));
        out
    }

    /// The position in a header value, if and only if this key signed it
    /// (checked in constant time).
    pub fn verify(&self, text: &str) -> Result<Lsn, TokenError> {
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
        if version != VERSION {
            return Err(TokenError::UnsupportedVersion);
        }
        // Exactly 16 lowercase hex digits: one spelling per position.
        if hex.len() != 16 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(TokenError::Malformed);
        }
        let offset = u64::from_str_radix(hex, 16).map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(mac_b64)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac.clone();
        mac.update(signed.as_bytes());
        mac.verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        Ok(Lsn::from_u64(offset))
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

    #[test]
    fn round_trips_a_position() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        let text = key().sign(lsn);
        assert_eq!(text.len(), V1_LEN);
        assert!(text.starts_with("v1.00000016b374d848."));
        assert_eq!(key().verify(&text), Ok(lsn));
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
        let v2 = text.replacen("v1.", "v2.", 1);
        assert_eq!(key().verify(&v2), Err(TokenError::UnsupportedVersion));
        let v10 = text.replacen("v1.", "v10.", 1);
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
        fn sign_then_verify_is_identity(v in any::<u64>()) {
            let k = key();
            prop_assert_eq!(k.verify(&k.sign(Lsn::from_u64(v))), Ok(Lsn::from_u64(v)));
        }

        #[test]
        fn verify_never_panics_and_never_accepts_noise(s in "\\PC{0,120}") {
            prop_assert!(key().verify(&s).is_err());
        }

        #[test]
        fn any_single_byte_change_is_refused(v in any::<u64>(), at in 0usize..V1_LEN, to in 0x21u8..0x7f) {
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
        fn any_single_character_change_is_refused(v in any::<u64>(), at in 0usize..V1_LEN, to in any::<char>()) {
            let k = key();
            let text = k.sign(Lsn::from_u64(v));
            prop_assume!(text.as_bytes()[at] as char != to);
            let mut changed = text.clone();
            changed.replace_range(at..at + 1, to.encode_utf8(&mut [0; 4]));
            prop_assert!(k.verify(&changed).is_err(), "{:?} accepted", changed);
        }

        #[test]
        fn truncated_or_extended_tokens_are_refused(v in any::<u64>(), cut in 0usize..V1_LEN, tail in "[!-~]{1,8}") {
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
