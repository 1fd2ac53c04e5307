//! The SCRAM-SHA-256 verifier: all a SCRAM server needs to know about a
//! password, in PostgreSQL's `pg_authid` text format.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The most iterations a verifier in the auth file may ask for. A client runs
/// PBKDF2 with this count at every login (the server does not), and
/// tokio-postgres (`postgres-protocol` 0.6.12) and pgjdbc refuse a server
/// that asks for more, so a higher count could only lock users out or make
/// their logins slow. PostgreSQL's default is 4096.
pub const MAX_ITERATIONS: u32 = 100_000;

/// What PostgreSQL and libpq use, and what a plaintext password gets.
pub(super) const DEFAULT_ITERATIONS: u32 = 4096;

const PREFIX: &str = "SCRAM-SHA-256$";

/// One user's SCRAM-SHA-256 verifier. `Debug` shows the iteration count only:
/// StoredKey and a recorded exchange are enough to log in as the user.
#[derive(Clone)]
pub(super) struct Verifier {
    pub(super) iterations: u32,
    pub(super) salt: Vec<u8>,
    pub(super) stored_key: [u8; 32],
    pub(super) server_key: [u8; 32],
}

impl Verifier {
    /// Whether a secret from the auth file is meant as a verifier (and so
    /// must parse as one rather than fall back to a plaintext password).
    pub(super) fn looks_like_one(secret: &str) -> bool {
        secret.starts_with(PREFIX)
    }

    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    /// The error says which part is wrong, never what it holds.
    pub(super) fn parse(text: &str) -> Result<Verifier, &'static str> {
        const SHAPE: &str = "a SCRAM-SHA-256 verifier must read \
             SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>";
        let rest = text.strip_prefix(PREFIX).ok_or(SHAPE)?;
        let (params, keys) = rest.split_once('$').ok_or(SHAPE)?;
        let (iterations, salt) = params.split_once(':').ok_or(SHAPE)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(SHAPE)?;

        // `u32::from_str` accepts a leading `+`; PostgreSQL's verifiers never have one.
        if iterations.is_empty() || !iterations.bytes().all(|b| b.is_ascii_digit()) {
            return Err("the verifier's iteration count is not a number");
        }
        let iterations: u32 = match iterations.parse() {
            Ok(0) => return Err("the verifier's iteration count is 0"),
            Ok(n) if n <= MAX_ITERATIONS => n,
            _ => {
                return Err("the verifier's iteration count is above 100000 \
                     (clients refuse more, and pay for every iteration at each login)");
            }
        };
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| "the verifier's salt is not base64")?;
        if salt.is_empty() {
            return Err("the verifier's salt is empty");
        }
        let stored_key =
            decode_key(stored_key).ok_or("the verifier's StoredKey is not 32 bytes in base64")?;
        let server_key =
            decode_key(server_key).ok_or("the verifier's ServerKey is not 32 bytes in base64")?;
        Ok(Verifier {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// The verifier PostgreSQL would store for `password`: a random 16-byte
    /// salt, [`DEFAULT_ITERATIONS`], and SASLprep of the password as libpq
    /// and the SCRAM client do it (this is `postgres-protocol`'s own
    /// `scram_sha_256`, so client and server normalise alike). Costs one
    /// PBKDF2, a few milliseconds.
    pub(super) fn from_password(password: &str) -> Result<Verifier, &'static str> {
        let text = postgres_protocol::password::scram_sha_256(password.as_bytes());
        Verifier::parse(&text).map_err(|_| "could not build a SCRAM verifier for the password")
    }

    /// A verifier that no proof matches, for a user not in the file: `salt`
    /// stands in for theirs, the keys are random.
    pub(super) fn unknown(salt: Vec<u8>) -> Verifier {
        Verifier {
            iterations: DEFAULT_ITERATIONS,
            salt,
            stored_key: rand::random(),
            server_key: rand::random(),
        }
    }
}

fn decode_key(text: &str) -> Option<[u8; 32]> {
    // 32 bytes are 44 base64 characters; anything longer is refused unread.
    if text.len() != 44 {
        return None;
    }
    STANDARD.decode(text).ok()?.try_into().ok()
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's user ("pencil"), as `pg_authid` would hold it.
    const GOOD: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
        WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
        wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    #[test]
    fn parses_a_pg_authid_verifier() {
        let v = Verifier::parse(GOOD).unwrap();
        assert_eq!(v.iterations, 4096);
        assert_eq!(STANDARD.encode(&v.salt), "W22ZaJ0SNY7soEsUEjb6gQ==");
        assert_eq!(
            STANDARD.encode(v.stored_key),
            "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
        );
        assert_eq!(
            STANDARD.encode(v.server_key),
            "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
    }

    #[test]
    fn parses_what_postgres_protocol_builds() {
        let text = postgres_protocol::password::scram_sha_256(b"secret");
        let v = Verifier::parse(&text).unwrap();
        assert_eq!(v.iterations, DEFAULT_ITERATIONS);
        assert_eq!(v.salt.len(), 16);
    }

    #[test]
    fn refuses_each_broken_part() {
        let cases = [
            ("SCRAM-SHA-256$4096:c2FsdA==", "must read"),
            ("SCRAM-SHA-256$4096$a:b", "must read"),
            ("SCRAM-SHA-1$4096:c2FsdA==$a:b", "must read"),
            (&GOOD.replace("$4096:", "$:"), "not a number"),
            (&GOOD.replace("$4096:", "$+4096:"), "not a number"),
            (&GOOD.replace("$4096:", "$0:"), "is 0"),
            (&GOOD.replace("$4096:", "$100001:"), "above 100000"),
            (
                &GOOD.replace("$4096:", "$99999999999999999999:"),
                "above 100000",
            ),
            (
                &GOOD.replace("W22ZaJ0SNY7soEsUEjb6gQ==", "W22Z*J0S"),
                "salt is not base64",
            ),
            (
                &GOOD.replace("W22ZaJ0SNY7soEsUEjb6gQ==", ""),
                "salt is empty",
            ),
            (&GOOD.replace("WG5d8oPm", "WG5d8o"), "StoredKey"),
            (&GOOD.replace("wfPLwcE6", "wfPL!cE6"), "ServerKey"),
        ];
        for (text, want) in cases {
            let err = Verifier::parse(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
        assert!(Verifier::parse(&GOOD.replace("$4096:", "$100000:")).is_ok());
    }

    #[test]
    fn debug_shows_no_key_or_salt() {
        let shown = format!("{:?}", Verifier::parse(GOOD).unwrap());
        assert_eq!(shown, "Verifier { iterations: 4096, .. }");
    }
}
