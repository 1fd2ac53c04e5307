//! Client authentication: the `--auth-file` (users and their secrets) and the
//! server side of SCRAM-SHA-256 against it. The proxy then authenticates to
//! the backends as the same user, with the same password, through
//! `postgres-protocol`'s SCRAM client (the one tokio-postgres uses).
//!
//! # Layout
//!
//! | file | what |
//! | --- | --- |
//! | `file.rs` | [`AuthFile`] and [`User`]: parsing the auth file |
//! | `verifier.rs` | the SCRAM-SHA-256 verifier (`pg_authid` format) |
//! | `scram.rs` | [`ScramServer`]: one client's SCRAM-SHA-256 exchange |
//!
//! # The auth file
//!
//! PgBouncer's `userlist.txt` format, one user a line:
//!
//! ```text
//! # comment lines start with # or ;  Blank lines are ignored.
//! "alice" "correct horse battery staple"
//! "bob"   "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$<StoredKey>:<ServerKey>"
//! "o""neil" "a ""quoted"" password"   ; trailing comment
//! ```
//!
//! Both fields are in double quotes, a literal `"` inside one is written
//! `""`. After the secret only whitespace or a `#`/`;` comment may follow
//! (PgBouncer ignores anything there; we refuse it, so a stray quote cannot
//! silently cut a password short). The secret is either
//!
//! - a **plaintext password**, or
//! - a **SCRAM-SHA-256 verifier** as PostgreSQL stores it in `pg_authid`
//!   (`SELECT rolpassword FROM pg_authid WHERE rolname = 'bob'`):
//!   `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`,
//!   with 1 to [`MAX_ITERATIONS`] iterations and 32-byte keys.
//!
//! An md5 hash (`md5` and 32 hex digits) is refused: md5 is deprecated in
//! PostgreSQL and the proxy does not offer it. A secret that starts like a
//! verifier but does not parse as one is an error too (PostgreSQL would take
//! it as a plaintext password, which hides the typo). Errors name the line
//! and never echo a secret. The file may not exceed [`MAX_FILE_BYTES`].
//!
//! # What is stored, and why
//!
//! For every user the proxy keeps a SCRAM verifier: the salt, iteration
//! count, StoredKey and ServerKey. For a plaintext password the verifier is
//! computed once, when the file is loaded (random 16-byte salt, 4096
//! iterations, SASLprep as libpq and PostgreSQL do it). PBKDF2 is only
//! needed to turn a password into a verifier; a SCRAM server that has the
//! verifier checks a login with two HMACs and a hash. Computing it per login
//! instead would cost the proxy 8192 HMACs for every connection attempt,
//! which anyone who can reach the port could turn into a CPU flood. (The
//! iteration count is the *client's* cost at each login; [`MAX_ITERATIONS`]
//! caps it for the verifiers in the file.)
//! The plaintext is kept as well, because the proxy needs it to log in to the
//! backends (SCRAM's client side starts from the password). It lives in
//! memory for the proxy's lifetime and is not zeroed on drop.
//!
//! # What a verifier-only user can and cannot do
//!
//! A user given by verifier can log in to the proxy. But the proxy cannot
//! derive the password from a verifier, so [`User::backend_password`] is
//! `None`: the proxy can then open backend connections for that user only
//! if the backends let it in without a password (`trust` in `pg_hba.conf`
//! for the proxy's address). Against a backend that asks for a password,
//! such a user's connection fails when the proxy opens its first backend
//! connection. Give plaintext passwords for users whose backends require
//! one. (PgBouncer's way around this, reusing the ClientKey recovered during
//! the client's exchange against a backend verifier with the same salt and
//! iteration count, needs a SCRAM client of our own: `postgres-protocol`'s
//! wants the plaintext.)
//!
//! # Users not in the file
//!
//! [`AuthFile::scram_server`] answers a user that is not in the file with an
//! exchange that looks the same on the wire (a salt that is stable for that
//! name, 4096 iterations) and fails at the end with 28P01, as PostgreSQL's
//! "mock authentication" does, so a client cannot probe which users exist.
//!
//! # The exchange
//!
//! RFC 5802 and RFC 7677 as PostgreSQL does them: the user name is the
//! startup message's (the `n=` attribute is ignored), no authorization
//! identity. In the clear only `SCRAM-SHA-256` is advertised (`n,,` and
//! `y,,` log in); over TLS `SCRAM-SHA-256-PLUS` comes first, bound to the
//! proxy's certificate (`tls-server-end-point`: its hash with the hash of
//! its signature algorithm, SHA-256 for SHA-1 and MD5, as PostgreSQL), when
//! that algorithm is known; a client that chose plain `SCRAM-SHA-256` there
//! must say `n,,`, as `y,,` would be a downgrade. See [`ScramServer`] for
//! the messages around it.

mod file;
mod scram;
mod verifier;

pub use file::{AuthFile, MAX_FILE_BYTES, User};
pub use scram::{MAX_SCRAM_MESSAGE, SCRAM_SHA_256, SCRAM_SHA_256_PLUS, ScramServer};
pub use verifier::MAX_ITERATIONS;

use std::io;
use std::path::PathBuf;

/// Why a user could not be loaded or could not log in. Each variant maps to
/// the SQLSTATE the proxy sends in its `ErrorResponse` ([`AuthError::sqlstate`]).
/// No message ever contains a password, a verifier or a proof.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The auth file could not be read.
    #[error("cannot read the auth file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The auth file is larger than [`MAX_FILE_BYTES`].
    #[error("the auth file is larger than {max} bytes")]
    FileTooLarge {
        /// The cap.
        max: usize,
    },
    /// The auth file has no users: no client could ever log in.
    #[error("the auth file has no users")]
    NoUsers,
    /// A line of the auth file is wrong. `reason` never contains the secret.
    #[error("auth file line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong, in words.
        reason: String,
    },
    /// A SCRAM message the client sent is not what RFC 5802 and PostgreSQL
    /// allow here: bad syntax, a nonce or channel-binding attribute that does
    /// not match, an unsupported feature (authorization identity, `m=`
    /// extension), or more than [`MAX_SCRAM_MESSAGE`] bytes.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding (`p=` in the gs2 header)
    /// where none is on offer (no TLS, a certificate with no
    /// `tls-server-end-point` hash) or with plain `SCRAM-SHA-256`.
    #[error(
        "malformed SCRAM message: the client asked for channel binding, \
         but the proxy offers SCRAM-SHA-256 without it here"
    )]
    ChannelBinding,
    /// The SCRAM methods were called out of order: the final message before
    /// the first, a message twice, or anything after the exchange ended.
    #[error("SCRAM exchange out of order: {0}")]
    OutOfOrder(&'static str),
    /// The proof is wrong: a wrong password, or a user not in the auth file.
    /// The message is PostgreSQL's, which does not tell the two apart.
    #[error("password authentication failed for user \"{user}\"")]
    WrongPassword {
        /// The user from the startup message.
        user: String,
    },
}

impl AuthError {
    /// The SQLSTATE of the `ErrorResponse` that reports this error: 28P01
    /// (`invalid_password`) for a failed proof, 08P01 (`protocol_violation`)
    /// for a message the client should not have sent, F0000
    /// (`config_file_error`) for a bad auth file (which is the operator's
    /// problem, reported at startup, never to a client).
    pub fn sqlstate(&self) -> &'static str {
        match self {
            AuthError::WrongPassword { .. } => "28P01",
            AuthError::Malformed(_) | AuthError::ChannelBinding | AuthError::OutOfOrder(_) => {
                "08P01"
            }
            AuthError::Read { .. }
            | AuthError::FileTooLarge { .. }
            | AuthError::NoUsers
            | AuthError::Line { .. } => "F0000",
        }
    }
}
