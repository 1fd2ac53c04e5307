//! [`AuthFile`]: the users of `--auth-file` and their secrets (the format is
//! in the module docs of [`crate::auth`]).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::fs::File;
use std::io::Read as _;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::AuthError;
use super::scram::ScramServer;
use super::verifier::Verifier;

/// The largest auth file accepted. Each plaintext password costs one PBKDF2
/// (a few milliseconds) at load, so this also bounds the load time.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// PostgreSQL's longest role name (`NAMEDATALEN - 1`).
const MAX_USER_BYTES: usize = 63;
/// Longer than any password a person types, or any verifier (about 130 bytes).
const MAX_SECRET_BYTES: usize = 1024;

/// The users of the auth file, by name.
pub struct AuthFile {
    users: HashMap<String, User>,
    /// Keys the stand-in salt of a user not in the file, so that it is the
    /// same at every attempt (as a real user's is) and not guessable.
    unknown_user_key: [u8; 32],
}

/// One user of the auth file. `Debug` prints the name and the kind of
/// secret, never the secret.
#[derive(Clone)]
pub struct User {
    name: String,
    verifier: Verifier,
    password: Option<String>,
}

impl AuthFile {
    /// Reads and parses the auth file at `path` (at most [`MAX_FILE_BYTES`]).
    /// This computes a SCRAM verifier for each plaintext password, a few
    /// milliseconds each: call it at startup, or from a blocking task.
    pub fn load(path: &Path) -> Result<AuthFile, AuthError> {
        let read_error = |source| AuthError::Read {
            path: path.to_owned(),
            source,
        };
        // `take` rather than the file's metadata: a FIFO or a growing file
        // has no meaningful length.
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|f| f.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes))
            .map_err(read_error)?;
        if bytes.len() > MAX_FILE_BYTES {
            return Err(AuthError::FileTooLarge {
                max: MAX_FILE_BYTES,
            });
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let bytes = e.as_bytes();
            let valid = e.utf8_error().valid_up_to();
            AuthError::Line {
                line: 1 + bytes[..valid].iter().filter(|&&b| b == b'\n').count(),
                reason: "not valid UTF-8".to_owned(),
            }
        })?;
        AuthFile::parse(&text)
    }

    /// Parses the text of an auth file (see the module docs for the format).
    /// Like [`AuthFile::load`], this runs one PBKDF2 per plaintext password.
    pub fn parse(text: &str) -> Result<AuthFile, AuthError> {
        if text.len() > MAX_FILE_BYTES {
            return Err(AuthError::FileTooLarge {
                max: MAX_FILE_BYTES,
            });
        }
        // A byte-order mark, as some Windows editors write.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut users = HashMap::new();
        let mut first_seen = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let bad = |reason: &str| AuthError::Line {
                line: number,
                reason: reason.to_owned(),
            };
            let Some((name, secret)) = parse_line(line).map_err(bad)? else {
                continue;
            };
            check_name(&name).map_err(bad)?;
            let user = User::new(name, secret).map_err(bad)?;
            match users.entry(user.name.clone()) {
                Entry::Occupied(_) => {
                    return Err(AuthError::Line {
                        line: number,
                        reason: format!(
                            "user {:?} is already given on line {}",
                            user.name, first_seen[&user.name]
                        ),
                    });
                }
                Entry::Vacant(slot) => {
                    first_seen.insert(user.name.clone(), number);
                    slot.insert(user);
                }
            }
        }
        if users.is_empty() {
            return Err(AuthError::NoUsers);
        }
        Ok(AuthFile {
            users,
            unknown_user_key: rand::random(),
        })
    }

    /// The user called `name` (as in the startup message: case matters).
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// The SCRAM exchange for a client that says it is `name`: against the
    /// user's verifier, or, for a name not in the file, an exchange that
    /// looks the same on the wire and fails with 28P01 at the end, so that
    /// a client cannot probe which users exist.
    pub fn scram_server(&self, name: &str) -> ScramServer {
        match self.user(name) {
            Some(user) => ScramServer::new(user),
            None => {
                let mut mac = Hmac::<Sha256>::new_from_slice(&self.unknown_user_key)
                    .expect("HMAC takes keys of any length");
                mac.update(name.as_bytes());
                let salt = mac.finalize().into_bytes()[..16].to_vec();
                ScramServer::unknown_user(name, Verifier::unknown(salt))
            }
        }
    }

    /// How many users the file gives.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Never true for a file that parsed (an empty one is an error), but
    /// clippy asks for it beside `len`.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

impl fmt::Debug for AuthFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.users.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("AuthFile")
            .field("users", &names)
            .finish_non_exhaustive()
    }
}

impl User {
    fn new(name: String, secret: String) -> Result<User, &'static str> {
        if secret.is_empty() {
            return Err("the secret is empty (PostgreSQL refuses empty passwords)");
        }
        if secret.len() > MAX_SECRET_BYTES {
            return Err("the secret is longer than 1024 bytes");
        }
        if secret.contains('\0') {
            return Err("the secret contains a NUL character");
        }
        if is_md5(&secret) {
            return Err("md5 secrets are refused (md5 is deprecated): \
                 give the plaintext password or a SCRAM-SHA-256 verifier");
        }
        if Verifier::looks_like_one(&secret) {
            return Ok(User {
                name,
                verifier: Verifier::parse(&secret)?,
                password: None,
            });
        }
        Ok(User {
            name,
            verifier: Verifier::from_password(&secret)?,
            password: Some(secret),
        })
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plaintext password, for the proxy's own logins to the backends
    /// (`postgres_protocol::authentication::sasl::ScramSha256::new`). `None`
    /// for a user given by verifier: the proxy can then reach only backends
    /// that trust it.
    pub fn backend_password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    pub(super) fn verifier(&self) -> &Verifier {
        &self.verifier
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = match self.password {
            Some(_) => "plaintext password",
            None => "SCRAM-SHA-256 verifier",
        };
        f.debug_struct("User")
            .field("name", &self.name)
            .field("secret", &secret)
            .finish()
    }
}

/// PostgreSQL's test: `md5` and 32 lowercase or uppercase hex digits. Any
/// other secret starting with `md5` is a plaintext password, as there.
fn is_md5(secret: &str) -> bool {
    secret.len() == 35
        && secret.starts_with("md5")
        && secret[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the user name is empty");
    }
    if name.len() > MAX_USER_BYTES {
        return Err("the user name is longer than 63 bytes (PostgreSQL's limit)");
    }
    if name.contains('\0') {
        return Err("the user name contains a NUL character");
    }
    Ok(())
}

/// One line: `None` for a blank or comment line, else the user and secret.
fn parse_line(line: &str) -> Result<Option<(String, String)>, &'static str> {
    const SHAPE: &str = "expected \"user\" \"secret\", both in double quotes";
    let rest = line.trim_start();
    if rest.is_empty() || rest.starts_with('#') || rest.starts_with(';') {
        return Ok(None);
    }
    let (name, rest) = quoted(rest).ok_or(SHAPE)?;
    let (secret, rest) = quoted(rest.trim_start()).ok_or(SHAPE)?;
    let rest = rest.trim_start();
    if !(rest.is_empty() || rest.starts_with('#') || rest.starts_with(';')) {
        return Err("unexpected text after the secret (only a # or ; comment may follow)");
    }
    Ok(Some((name, secret)))
}

/// A `"…"` field at the start of `text`, with `""` for a literal quote:
/// the unquoted value and what follows the closing quote. `None` if `text`
/// does not start with a quote or the quote is not closed on this line.
fn quoted(text: &str) -> Option<(String, &str)> {
    let mut rest = text.strip_prefix('"')?;
    let mut value = String::new();
    loop {
        let end = rest.find('"')?;
        value.push_str(&rest[..end]);
        rest = &rest[end + 1..];
        match rest.strip_prefix('"') {
            Some(after) => {
                value.push('"');
                rest = after;
            }
            None => return Some((value, rest)),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn line_error(text: &str) -> (usize, String) {
        match AuthFile::parse(text) {
            Err(AuthError::Line { line, reason }) => (line, reason),
            other => panic!("{text:?}: expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn reads_users_comments_blank_lines_and_quotes() {
        let file = AuthFile::parse(
            "# the proxy's users\n\
             \n\
             ; PgBouncer's comment style\n\
             \"alice\" \"correct horse\"\n\
             \t \"o\"\"neil\"\t\"a \"\"quoted\"\" one\"   # trailing comment\r\n\
             \"carol\" \"\"\"\"  ; a password that is one quote\n",
        )
        .unwrap();
        assert_eq!(file.len(), 3);
        assert_eq!(
            file.user("alice").unwrap().backend_password(),
            Some("correct horse")
        );
        let oneil = file.user("o\"neil").unwrap();
        assert_eq!(oneil.name(), "o\"neil");
        assert_eq!(oneil.backend_password(), Some("a \"quoted\" one"));
        assert_eq!(file.user("carol").unwrap().backend_password(), Some("\""));
        assert!(file.user("Alice").is_none(), "names are case-sensitive");
        assert!(file.user("bob").is_none());
    }

    #[test]
    fn a_plaintext_user_gets_a_fresh_default_verifier() {
        let file = AuthFile::parse("\"a\" \"pw\"\n\"b\" \"pw\"\n").unwrap();
        let a = file.user("a").unwrap().verifier();
        let b = file.user("b").unwrap().verifier();
        assert_eq!(a.iterations, 4096);
        assert_eq!(a.salt.len(), 16);
        assert_ne!(a.salt, b.salt, "each password gets its own random salt");
        assert_ne!(a.stored_key, b.stored_key);
    }

    #[test]
    fn a_verifier_user_has_no_backend_password() {
        let verifier = postgres_protocol::password::scram_sha_256(b"secret");
        let file = AuthFile::parse(&format!("\"bob\" \"{verifier}\"")).unwrap();
        let bob = file.user("bob").unwrap();
        assert_eq!(bob.backend_password(), None);
        assert_eq!(bob.verifier().iterations, 4096);
    }

    #[test]
    fn bad_lines_are_named_by_number() {
        let cases = [
            ("alice secret", 1, "double quotes"),
            ("\"alice\"", 1, "double quotes"),
            ("\"alice\" secret", 1, "double quotes"),
            ("# ok\n\"alice\" \"secret", 2, "double quotes"),
            ("\"alice \"secret\"", 1, "double quotes"),
            ("\"alice\" \"secret\" extra", 1, "unexpected text"),
            ("\"alice\" \"sec\"ret\"", 1, "unexpected text"),
            ("\n\n\"\" \"secret\"", 3, "user name is empty"),
            ("\"alice\" \"\"", 1, "secret is empty"),
            (&format!("\"{}\" \"pw\"", "u".repeat(64)), 1, "63 bytes"),
            ("\"al\0ce\" \"pw\"", 1, "NUL"),
            ("\"alice\" \"p\0w\"", 1, "NUL"),
            (&format!("\"alice\" \"{}\"", "p".repeat(1025)), 1, "1024"),
            (
                "\"alice\" \"a\"\n\"bob\" \"b\"\n\"alice\" \"c\"",
                3,
                "line 1",
            ),
        ];
        for (text, line, want) in cases {
            let (got_line, reason) = line_error(text);
            assert_eq!(got_line, line, "{text:?}: {reason}");
            assert!(reason.contains(want), "{text:?}: {reason}");
        }
    }

    #[test]
    fn md5_is_refused_without_echoing_the_hash() {
        let hash = "md5a3556571e93b0d20722ba62be61e8c2d";
        let err = AuthFile::parse(&format!("\"ok\" \"pw\"\n\"old\" \"{hash}\"")).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with("auth file line 2: md5 secrets are refused"),
            "{shown}"
        );
        assert!(!shown.contains("a3556571"), "{shown}");
        // Not an md5 hash: a plaintext password that starts with "md5".
        let file = AuthFile::parse("\"u\" \"md5 is old\"").unwrap();
        assert_eq!(
            file.user("u").unwrap().backend_password(),
            Some("md5 is old")
        );
    }

    #[test]
    fn a_broken_verifier_is_an_error_not_a_password() {
        let secret = "SCRAM-SHA-256$4096:c2FsdA==$notakey:notakey";
        let (line, reason) = line_error(&format!("\"u\" \"{secret}\""));
        assert_eq!(line, 1);
        assert!(reason.contains("StoredKey"), "{reason}");
        assert!(!reason.contains("c2FsdA"), "{reason}");
    }

    #[test]
    fn a_verifier_with_too_many_iterations_is_refused() {
        let verifier =
            postgres_protocol::password::scram_sha_256(b"secret").replace("$4096:", "$1000000:");
        let (line, reason) = line_error(&format!("\"u\" \"{verifier}\""));
        assert_eq!(line, 1);
        assert!(reason.contains("above 100000"), "{reason}");
    }

    #[test]
    fn an_empty_file_is_an_error() {
        for text in ["", "\n\n", "# nobody\n; at all\n"] {
            assert!(matches!(AuthFile::parse(text), Err(AuthError::NoUsers)));
        }
    }

    #[test]
    fn debug_prints_no_secret() {
        let verifier = postgres_protocol::password::scram_sha_256(b"hunter2");
        let file = AuthFile::parse(&format!("\"a\" \"hunter2\"\n\"b\" \"{verifier}\"")).unwrap();
        let shown = format!("{file:?} {:?} {:?}", file.user("a"), file.user("b"));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("SCRAM-SHA-256$"), "{shown}");
        assert!(shown.contains("\"a\""), "{shown}");
        assert!(shown.contains("plaintext password"), "{shown}");
    }

    #[test]
    fn load_reads_a_file_and_caps_its_size() {
        let dir = std::env::temp_dir().join(format!("ryw-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let good = dir.join("userlist.txt");
        std::fs::write(&good, "\"alice\" \"pw\"\n").unwrap();
        assert!(AuthFile::load(&good).unwrap().user("alice").is_some());

        let big = dir.join("big.txt");
        std::fs::write(&big, "#".repeat(MAX_FILE_BYTES + 1)).unwrap();
        assert!(matches!(
            AuthFile::load(&big),
            Err(AuthError::FileTooLarge { .. })
        ));

        let latin1 = dir.join("latin1.txt");
        std::fs::write(&latin1, b"\"a\" \"pw\"\n\"b\" \"caf\xe9\"\n").unwrap();
        assert!(matches!(
            AuthFile::load(&latin1),
            Err(AuthError::Line { line: 2, .. })
        ));

        let missing = dir.join("missing.txt");
        let err = AuthFile::load(&missing).unwrap_err();
        assert!(matches!(err, AuthError::Read { .. }));
        assert!(err.to_string().contains("missing.txt"), "{err}");

        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        let file = AuthFile::parse("\u{feff}\"alice\" \"pw\"\n").unwrap();
        assert!(file.user("alice").is_some());
    }

    #[test]
    fn parse_caps_the_size_too() {
        let text = "#".repeat(MAX_FILE_BYTES + 1);
        assert!(matches!(
            AuthFile::parse(&text),
            Err(AuthError::FileTooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn any_text_parses_or_names_a_line_that_exists(text in "(\\PC{0,30}\n?){0,6}") {
            match AuthFile::parse(&text) {
                Ok(file) => prop_assert!(!file.is_empty()),
                Err(AuthError::Line { line, .. }) => {
                    prop_assert!(line >= 1 && line <= text.lines().count(), "line {}", line)
                }
                Err(AuthError::NoUsers) => {}
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }

        #[test]
        fn quote_shaped_lines_never_panic(text in "([ \t]*(\"[a-z\"#;]{0,4}\"?[ \t]*){0,3}[#;x]?\n){1,4}") {
            let _ = AuthFile::parse(&text);
        }

        #[test]
        fn errors_never_echo_the_secret(secret in "[A-Za-z0-9]{12,24}", shape in 0..7usize) {
            let line = match shape {
                0 => format!("\"u\" \"{secret}\" trailing"),
                1 => format!("\"u\" \"{secret}"),
                2 => format!("\"\" \"{secret}\""),
                3 => format!("\"u\" \"SCRAM-SHA-256$4096:{secret}\""),
                4 => format!("\"u\" \"SCRAM-SHA-256$4096:{secret}$k:k\""),
                5 => format!("\"u\" \"SCRAM-SHA-256${secret}:c2FsdA==$k:k\""),
                _ => format!("\"u\" \"md5{:0<32}\"", secret.to_lowercase().replace(|c: char| !c.is_ascii_hexdigit(), "0")),
            };
            let err = AuthFile::parse(&format!("# users\n{line}\n")).unwrap_err();
            let shown = format!("{err} {err:?}");
            prop_assert!(shown.starts_with("auth file line 2: "), "{}", shown);
            let md5_hex = secret.to_lowercase().replace(|c: char| !c.is_ascii_hexdigit(), "0");
            prop_assert!(!shown.contains(&secret) && !shown.contains(&md5_hex), "{}", shown);
        }
    }
}
