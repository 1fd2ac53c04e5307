//! [`ScramServer`]: the server side of one SCRAM-SHA-256 exchange (RFC 5802,
//! RFC 7677), as PostgreSQL runs it: without channel binding, or, over TLS,
//! `SCRAM-SHA-256-PLUS` bound to the proxy's certificate
//! (`tls-server-end-point`, RFC 5929).

use std::fmt;
use std::mem;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::AuthError;
use super::file::User;
use super::verifier::Verifier;

/// The mechanism the proxy advertises in `AuthenticationSASL` and accepts in
/// `SASLInitialResponse`.
pub const SCRAM_SHA_256: &str = postgres_protocol::authentication::sasl::SCRAM_SHA_256;

/// The mechanism with channel binding, advertised (first) only over TLS
/// with a certificate whose `tls-server-end-point` hash is known.
pub const SCRAM_SHA_256_PLUS: &str = postgres_protocol::authentication::sasl::SCRAM_SHA_256_PLUS;

/// The gs2 header of a client that binds to the certificate (no
/// authorization identity).
const END_POINT_HEADER: &str = "p=tls-server-end-point,,";

/// The longest client SCRAM message accepted. Real ones are under 200 bytes
/// (libpq's client-first is `n,,n=,r=` and a 24-character nonce); the cap
/// leaves room for long user names and nonces, and bounds the work a client
/// can ask for.
pub const MAX_SCRAM_MESSAGE: usize = 2048;

/// Random bytes in the server's half of the nonce (PostgreSQL's count): 24
/// base64 characters.
const SERVER_NONCE_BYTES: usize = 18;

/// One client's SCRAM-SHA-256 exchange with the proxy, against one user's
/// verifier. No I/O: the proxy moves the bytes.
///
/// The messages, as PostgreSQL sends and expects them (`R` messages are
/// `'R'`, an `i32` length that counts itself, an `i32` code, then the body):
///
/// 1. proxy → client, **AuthenticationSASL**: `R`, code **10**, then the
///    mechanism names, each a C string, and a final `\0`: for us
///    `SCRAM-SHA-256\0\0`.
/// 2. client → proxy, **SASLInitialResponse**: `p`, length, the chosen
///    mechanism as a C string (must be [`SCRAM_SHA_256`], else 08P01), an
///    `i32` data length (`-1` for none), the data: pass it to
///    [`ScramServer::client_first`]. (With `-1`, PostgreSQL answers an empty
///    AuthenticationSASLContinue and takes the next SASLResponse's data as the
///    client-first-message; no common client does this.)
/// 3. proxy → client, **AuthenticationSASLContinue**: `R`, code **11**, then
///    `client_first`'s output (server-first-message) as the rest of the body.
/// 4. client → proxy, **SASLResponse**: `p`, length, data (the whole rest of
///    the body): pass it to [`ScramServer::client_final`].
/// 5. proxy → client, **AuthenticationSASLFinal**: `R`, code **12**, then
///    `client_final`'s output (`v=…`, the server's signature).
/// 6. proxy → client, **AuthenticationOk**: `R`, length 8, code **0**; then
///    ParameterStatus…, BackendKeyData, ReadyForQuery as after any login.
///
/// On any error the proxy sends an ErrorResponse (severity `FATAL`, code
/// [`AuthError::sqlstate`], message its `Display`) and closes the
/// connection, as PostgreSQL does. Both `p` messages share one type byte, so
/// the proxy knows which is which only by where it is in the exchange.
pub struct ScramServer {
    user: String,
    verifier: Verifier,
    /// False for a name not in the auth file: the exchange runs, the proof
    /// never passes.
    known: bool,
    server_nonce: String,
    /// The `tls-server-end-point` data when this connection offers
    /// channel binding (TLS), and whether the client chose
    /// `SCRAM-SHA-256-PLUS`.
    binding: Option<(std::sync::Arc<[u8]>, bool)>,
    state: State,
}

enum State {
    /// Waiting for the client-first-message.
    Start,
    /// The server-first-message went out; waiting for the client-final-message.
    SentServerFirst {
        /// The `c=` value the client must send back: base64 of its gs2
        /// header (and, bound, of the certificate's hash).
        channel_binding: String,
        client_first_bare: String,
        server_first: String,
        /// client nonce + server nonce.
        nonce: String,
    },
    /// Succeeded, failed, or misused: every further message is an error.
    Ended,
}

impl ScramServer {
    /// An exchange for `user`, with a fresh random server nonce.
    pub fn new(user: &User) -> ScramServer {
        let nonce: [u8; SERVER_NONCE_BYTES] = rand::random();
        ScramServer::with_parts(
            user.name(),
            user.verifier().clone(),
            true,
            STANDARD.encode(nonce),
        )
    }

    /// An exchange that fails at the end, for a name not in the auth file.
    pub(super) fn unknown_user(name: &str, verifier: Verifier) -> ScramServer {
        let nonce: [u8; SERVER_NONCE_BYTES] = rand::random();
        ScramServer::with_parts(name, verifier, false, STANDARD.encode(nonce))
    }

    /// An exchange with a chosen server nonce, for tests against recorded
    /// exchanges (RFC 7677's uses characters base64 does not).
    #[cfg(test)]
    pub(crate) fn with_server_nonce(user: &User, server_nonce: &str) -> ScramServer {
        ScramServer::with_parts(
            user.name(),
            user.verifier().clone(),
            true,
            server_nonce.to_owned(),
        )
    }

    fn with_parts(
        name: &str,
        verifier: Verifier,
        known: bool,
        server_nonce: String,
    ) -> ScramServer {
        ScramServer {
            user: name.to_owned(),
            verifier,
            known,
            server_nonce,
            binding: None,
            state: State::Start,
        }
    }

    /// Over TLS: the connection offered `SCRAM-SHA-256-PLUS` bound to
    /// `end_point` (the certificate's `tls-server-end-point` hash), and
    /// `plus` says whether the client chose it. A client that chose plain
    /// `SCRAM-SHA-256` must then say `n` (it cannot bind), never `y` (it
    /// could, and thinks the server cannot: a downgrade, RFC 5802 §6).
    pub fn offer_binding(&mut self, end_point: std::sync::Arc<[u8]>, plus: bool) {
        self.binding = Some((end_point, plus));
    }

    /// The user this exchange authenticates (the startup message's).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Takes the client-first-message (SASLInitialResponse's data, e.g.
    /// `n,,n=,r=<client nonce>`) and returns the server-first-message
    /// `r=<client nonce><server nonce>,s=<salt>,i=<iterations>` for
    /// AuthenticationSASLContinue.
    ///
    /// The gs2 header must be `n,,` or `y,,` without channel binding on
    /// offer, `n,,` or `p=tls-server-end-point,,` with it (as the mechanism
    /// chosen says); an authorization identity is refused. The `n=` user name is ignored, as
    /// PostgreSQL ignores it: the startup message's user is the one that
    /// counts. Any error ends the exchange.
    pub fn client_first(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(mem::replace(&mut self.state, State::Ended), State::Start) {
            return Err(AuthError::OutOfOrder(
                "a second client-first-message, or one after the exchange ended",
            ));
        }
        let binding = self.binding.as_ref().map(|(d, plus)| (&d[..], *plus));
        let first = ClientFirst::parse(text(data)?, binding)?;
        let nonce = format!("{}{}", first.nonce, self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&self.verifier.salt),
            self.verifier.iterations
        );
        let reply = server_first.clone().into_bytes();
        self.state = State::SentServerFirst {
            channel_binding: first.channel_binding,
            client_first_bare: first.bare.to_owned(),
            server_first,
            nonce,
        };
        Ok(reply)
    }

    /// Takes the client-final-message (SASLResponse's data,
    /// `c=<base64 gs2 header>,r=<nonce>,p=<base64 proof>`), checks the
    /// channel binding and nonce exactly and the proof in constant time, and
    /// returns the server-final-message `v=<server signature>` for
    /// AuthenticationSASLFinal. A wrong proof is
    /// [`AuthError::WrongPassword`] (28P01). The exchange ends either way.
    pub fn client_final(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        let State::SentServerFirst {
            channel_binding,
            client_first_bare,
            server_first,
            nonce,
        } = mem::replace(&mut self.state, State::Ended)
        else {
            return Err(AuthError::OutOfOrder(
                "a client-final-message before the client-first-message, or after the exchange ended",
            ));
        };
        let last = ClientFinal::parse(text(data)?)?;
        if last.channel_binding != channel_binding {
            return Err(AuthError::Malformed(
                "the channel binding (c=) does not repeat the client-first-message's gs2 header",
            ));
        }
        if last.nonce != nonce {
            return Err(AuthError::Malformed("the nonce (r=) does not match"));
        }

        // RFC 5802 section 3: ClientKey = ClientProof XOR HMAC(StoredKey,
        // AuthMessage); the proof is right iff H(ClientKey) == StoredKey.
        let auth_message = format!("{client_first_bare},{server_first},{}", last.without_proof);
        let client_signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = last.proof;
        for (k, s) in client_key.iter_mut().zip(client_signature) {
            *k ^= s;
        }
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        if !(constant_time_eq(&stored_key, &self.verifier.stored_key) && self.known) {
            return Err(AuthError::WrongPassword {
                user: self.user.clone(),
            });
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Start => "start",
            State::SentServerFirst { .. } => "sent server-first",
            State::Ended => "ended",
        };
        f.debug_struct("ScramServer")
            .field("user", &self.user)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// The message as text, after the size cap. RFC 5802 messages are UTF-8
/// and PostgreSQL's have no NUL.
fn text(data: &[u8]) -> Result<&str, AuthError> {
    if data.len() > MAX_SCRAM_MESSAGE {
        return Err(AuthError::Malformed("longer than 2048 bytes"));
    }
    let text = std::str::from_utf8(data).map_err(|_| AuthError::Malformed("not UTF-8"))?;
    if text.contains('\0') {
        return Err(AuthError::Malformed("contains a NUL byte"));
    }
    Ok(text)
}

/// `client-first-message = gs2-header client-first-message-bare`, with
/// `gs2-header = ("n" / "y" / "p=tls-server-end-point") ",,"` (what we
/// accept of it) and
/// `client-first-message-bare = "n=" saslname ",r=" c-nonce ["," extensions]`.
struct ClientFirst<'a> {
    /// base64 of the gs2 header (and the binding data): what `c=` must say
    /// in the final message.
    channel_binding: String,
    bare: &'a str,
    nonce: &'a str,
}

impl<'a> ClientFirst<'a> {
    /// `binding`: the end-point data when channel binding is on offer, and
    /// whether the client chose `SCRAM-SHA-256-PLUS`.
    fn parse(text: &'a str, binding: Option<(&[u8], bool)>) -> Result<ClientFirst<'a>, AuthError> {
        let plus = binding.is_some_and(|(_, plus)| plus);
        let (channel_binding, flag_len) = match text.as_bytes().first() {
            None => return Err(AuthError::Malformed("the client-first-message is empty")),
            // base64("n,,"): the client does not support channel binding.
            Some(b'n') if !plus => ("biws".to_owned(), 1),
            // base64("y,,"): it does, but sees we do not: true only when
            // none is on offer (else a downgrade).
            Some(b'y') if binding.is_none() => ("eSws".to_owned(), 1),
            Some(b'y') => {
                return Err(AuthError::Malformed(
                    "the client says the server does not support channel binding, but it does",
                ));
            }
            Some(b'n') => {
                return Err(AuthError::Malformed(
                    "SCRAM-SHA-256-PLUS was chosen without channel binding",
                ));
            }
            Some(b'p') => match binding {
                Some((data, true)) if text.starts_with(END_POINT_HEADER) => {
                    let mut input = END_POINT_HEADER.as_bytes().to_vec();
                    input.extend_from_slice(data);
                    (STANDARD.encode(input), END_POINT_HEADER.len() - 2)
                }
                Some((_, true)) => {
                    return Err(AuthError::Malformed(
                        "unsupported channel binding type (tls-server-end-point only)",
                    ));
                }
                _ => return Err(AuthError::ChannelBinding),
            },
            Some(_) => return Err(AuthError::Malformed("unexpected channel-binding flag")),
        };
        let rest = text[flag_len..]
            .strip_prefix(',')
            .ok_or(AuthError::Malformed(
                "expected a comma after the channel-binding flag",
            ))?;
        if rest.starts_with('a') {
            return Err(AuthError::Malformed(
                "an authorization identity (a=) is not supported",
            ));
        }
        let bare = rest.strip_prefix(',').ok_or(AuthError::Malformed(
            "unexpected attribute in the gs2 header",
        ))?;
        if bare.starts_with('m') {
            return Err(AuthError::Malformed(
                "the client requires an unsupported SCRAM extension (m=)",
            ));
        }
        let mut attributes = bare.split(',');
        // The user name: ignored (PostgreSQL uses the startup message's).
        attribute(attributes.next(), "n=")
            .ok_or(AuthError::Malformed("expected the user name (n=)"))?;
        let nonce = attribute(attributes.next(), "r=").ok_or(AuthError::Malformed(
            "expected the nonce (r=) after the user name",
        ))?;
        if nonce.is_empty() || !nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(AuthError::Malformed(
                "the nonce is empty or has non-printable characters",
            ));
        }
        attributes.try_for_each(extension)?;
        Ok(ClientFirst {
            channel_binding,
            bare,
            nonce,
        })
    }
}

/// `client-final-message = "c=" base64 ",r=" nonce ["," extensions] ",p=" proof`.
struct ClientFinal<'a> {
    channel_binding: &'a str,
    nonce: &'a str,
    /// Everything before `,p=`: part of the AuthMessage both sides sign.
    without_proof: &'a str,
    proof: [u8; 32],
}

impl<'a> ClientFinal<'a> {
    fn parse(text: &'a str) -> Result<ClientFinal<'a>, AuthError> {
        let (without_proof, proof) = text
            .rsplit_once(',')
            .ok_or(AuthError::Malformed("expected c=, r= and p= attributes"))?;
        let proof = proof.strip_prefix("p=").ok_or(AuthError::Malformed(
            "the client-final-message does not end with the proof (p=)",
        ))?;
        let mut attributes = without_proof.split(',');
        let channel_binding = attribute(attributes.next(), "c=").ok_or(AuthError::Malformed(
            "expected the channel binding (c=) first",
        ))?;
        let nonce = attribute(attributes.next(), "r=")
            .ok_or(AuthError::Malformed("expected the nonce (r=) second"))?;
        for a in attributes {
            if a.starts_with("p=") {
                return Err(AuthError::Malformed("more than one proof (p=)"));
            }
            extension(a)?;
        }
        // 32 bytes are 44 base64 characters: check before decoding.
        let proof = (proof.len() == 44)
            .then(|| STANDARD.decode(proof).ok())
            .flatten()
            .and_then(|p| <[u8; 32]>::try_from(p).ok())
            .ok_or(AuthError::Malformed("the proof is not 32 bytes in base64"))?;
        Ok(ClientFinal {
            channel_binding,
            nonce,
            without_proof,
            proof,
        })
    }
}

/// The value of `part` if it is `<name>…`, e.g. `attribute(Some("r=abc"), "r=")`.
fn attribute<'a>(part: Option<&'a str>, name: &str) -> Option<&'a str> {
    part?.strip_prefix(name)
}

/// An optional extension attribute: a letter, `=`, a value. Ignored, as
/// PostgreSQL ignores them (`m=`, the mandatory one, is refused earlier).
fn extension(part: &str) -> Result<(), AuthError> {
    match part.as_bytes() {
        [letter, b'=', ..] if letter.is_ascii_alphabetic() => Ok(()),
        _ => Err(AuthError::Malformed(
            "expected an attribute (a letter and =)",
        )),
    }
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Compares without an early exit, so the time taken says nothing about
/// how many leading bytes matched.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
    use proptest::prelude::*;

    use super::*;
    use crate::auth::AuthFile;

    // RFC 7677 section 3: user "user", password "pencil".
    const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
         p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    /// PBKDF2-HMAC-SHA256 with one output block: SCRAM's `Hi()`.
    fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
        let mut block = hmac(password, &[salt, &[0, 0, 0, 1]].concat());
        let mut sum = block;
        for _ in 1..iterations {
            block = hmac(password, &block);
            sum.iter_mut().zip(block).for_each(|(s, b)| *s ^= b);
        }
        sum
    }

    /// The `pg_authid` verifier for an ASCII password, computed here from
    /// RFC 5802's definitions rather than by the code under test.
    fn pg_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
        let salted = salted_password(password.as_bytes(), salt, iterations);
        let stored_key: [u8; 32] = Sha256::digest(hmac(&salted, b"Client Key")).into();
        let server_key = hmac(&salted, b"Server Key");
        format!(
            "SCRAM-SHA-256${iterations}:{}${}:{}",
            STANDARD.encode(salt),
            STANDARD.encode(stored_key),
            STANDARD.encode(server_key)
        )
    }

    /// The client proof for `auth_message`, for hand-made final messages.
    fn proof(password: &str, salt: &[u8], iterations: u32, auth_message: &str) -> String {
        let salted = salted_password(password.as_bytes(), salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        STANDARD.encode(proof)
    }

    /// The RFC's user's verifier (computed apart, with Python's hashlib).
    const RFC_VERIFIER: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
        WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
        wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";

    /// The RFC's user, from a verifier line in an auth file.
    static RFC_FILE: LazyLock<AuthFile> =
        LazyLock::new(|| AuthFile::parse(&format!("\"user\" \"{RFC_VERIFIER}\"")).unwrap());

    #[test]
    fn the_test_helpers_agree_with_the_rfc() {
        let salt = STANDARD.decode(RFC_SALT).unwrap();
        assert_eq!(pg_verifier("pencil", &salt, 4096), RFC_VERIFIER);
    }

    fn rfc_server() -> ScramServer {
        ScramServer::with_server_nonce(RFC_FILE.user("user").unwrap(), RFC_SERVER_NONCE)
    }

    /// A whole exchange between tokio-postgres's SCRAM client and `server`.
    fn exchange(
        server: &mut ScramServer,
        password: &str,
        channel_binding: ChannelBinding,
    ) -> Result<(), AuthError> {
        let mut client = ScramSha256::new(password.as_bytes(), channel_binding);
        let server_first = server.client_first(client.message())?;
        client
            .update(&server_first)
            .expect("the client takes server-first");
        let server_final = server.client_final(client.message())?;
        client
            .finish(&server_final)
            .expect("the client checks the server's signature");
        Ok(())
    }

    fn users() -> AuthFile {
        let verifier = postgres_protocol::password::scram_sha_256(b"bob's secret");
        AuthFile::parse(&format!(
            "\"alice\" \"alice's secret\"\n\"bob\" \"{verifier}\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn reproduces_the_rfc_7677_exchange() {
        let mut server = rfc_server();
        let server_first = server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(server_first).unwrap(), RFC_SERVER_FIRST);
        let server_final = server.client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(server_final).unwrap(), RFC_SERVER_FINAL);
    }

    #[test]
    fn a_plaintext_user_logs_in_with_the_tokio_postgres_client() {
        let file = users();
        let alice = file.user("alice").unwrap();
        // "n,,": a client without TLS (tokio-postgres over NoTls, libpq), or
        // with TLS and channel_binding=disable.
        exchange(
            &mut ScramServer::new(alice),
            "alice's secret",
            ChannelBinding::unsupported(),
        )
        .unwrap();
        // "y,,": a client over TLS that could bind a channel but is not
        // offered SCRAM-SHA-256-PLUS (libpq's channel_binding=prefer).
        exchange(
            &mut ScramServer::new(alice),
            "alice's secret",
            ChannelBinding::unrequested(),
        )
        .unwrap();
        exchange(
            &mut file.scram_server("alice"),
            "alice's secret",
            ChannelBinding::unsupported(),
        )
        .unwrap();
    }

    #[test]
    fn a_verifier_only_user_logs_in_with_the_tokio_postgres_client() {
        let file = users();
        let bob = file.user("bob").unwrap();
        exchange(
            &mut ScramServer::new(bob),
            "bob's secret",
            ChannelBinding::unsupported(),
        )
        .unwrap();
        exchange(
            &mut file.scram_server("bob"),
            "bob's secret",
            ChannelBinding::unrequested(),
        )
        .unwrap();
    }

    #[test]
    fn a_wrong_password_is_28p01() {
        let file = users();
        for name in ["alice", "bob"] {
            let mut server = ScramServer::new(file.user(name).unwrap());
            let err = exchange(&mut server, "guess", ChannelBinding::unsupported()).unwrap_err();
            assert!(matches!(err, AuthError::WrongPassword { .. }), "{err:?}");
            assert_eq!(err.sqlstate(), "28P01");
            assert_eq!(
                err.to_string(),
                format!("password authentication failed for user \"{name}\"")
            );
            assert!(
                server.client_final(b"c=biws").is_err(),
                "the exchange is over"
            );
        }
    }

    #[test]
    fn passwords_are_saslprepped_on_both_sides() {
        // U+00A0 (no-break space) maps to a plain space under SASLprep.
        let file = AuthFile::parse("\"u\" \"caf\u{e9} au\u{a0}lait\"").unwrap();
        let user = file.user("u").unwrap();
        assert_eq!(user.backend_password(), Some("caf\u{e9} au\u{a0}lait"));
        for typed in ["caf\u{e9} au\u{a0}lait", "caf\u{e9} au lait"] {
            exchange(
                &mut ScramServer::new(user),
                typed,
                ChannelBinding::unsupported(),
            )
            .unwrap();
        }
    }

    #[test]
    fn an_unknown_user_fails_at_the_end_like_a_wrong_password() {
        let file = users();
        let server_first = |name: &str| {
            let mut server = file.scram_server(name);
            let reply = server.client_first(b"n,,n=,r=abcdef").unwrap();
            String::from_utf8(reply).unwrap()
        };
        let salt = |reply: &str| reply.split(',').nth(1).unwrap().to_owned();
        let first = server_first("mallory");
        assert!(first.ends_with(",i=4096"), "{first}");
        assert_eq!(STANDARD.decode(&salt(&first)[2..]).unwrap().len(), 16);
        assert_eq!(
            salt(&first),
            salt(&server_first("mallory")),
            "stable per name"
        );
        assert_ne!(salt(&first), salt(&server_first("trudy")));

        for password in ["", "alice's secret", "anything"] {
            let mut server = file.scram_server("mallory");
            assert_eq!(server.user(), "mallory");
            let err = exchange(&mut server, password, ChannelBinding::unsupported()).unwrap_err();
            assert_eq!(err.sqlstate(), "28P01");
            assert_eq!(
                err.to_string(),
                "password authentication failed for user \"mallory\""
            );
        }
    }

    #[test]
    fn over_tls_the_client_binds_to_the_certificate_and_a_downgrade_is_refused() {
        let file = users();
        let alice = file.user("alice").unwrap();
        let end_point: std::sync::Arc<[u8]> = std::sync::Arc::from(&[7u8; 32][..]);
        let bound = |plus: bool| {
            let mut server = ScramServer::new(alice);
            server.offer_binding(end_point.clone(), plus);
            server
        };
        // SCRAM-SHA-256-PLUS with the certificate's hash: logs in.
        exchange(
            &mut bound(true),
            "alice's secret",
            ChannelBinding::tls_server_end_point(end_point.to_vec()),
        )
        .unwrap();
        // Bound to another certificate (a man in the middle): refused.
        let e = exchange(
            &mut bound(true),
            "alice's secret",
            ChannelBinding::tls_server_end_point(vec![8u8; 32]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("channel binding (c=)"), "{e}");
        // Plain SCRAM-SHA-256 from a client that cannot bind ("n,,"): logs in.
        exchange(
            &mut bound(false),
            "alice's secret",
            ChannelBinding::unsupported(),
        )
        .unwrap();
        // "y,,": the client could bind and thinks the server cannot, but
        // it offered binding: a downgrade, refused.
        let e = exchange(
            &mut bound(false),
            "alice's secret",
            ChannelBinding::unrequested(),
        )
        .unwrap_err();
        assert_eq!(e.sqlstate(), "08P01");
        assert!(
            e.to_string()
                .contains("does not support channel binding, but it does"),
            "{e}"
        );
        // PLUS chosen, then no binding: refused.
        let e = exchange(
            &mut bound(true),
            "alice's secret",
            ChannelBinding::unsupported(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("without channel binding"), "{e}");
        // Binding asked for with plain SCRAM-SHA-256: refused.
        let e = exchange(
            &mut bound(false),
            "alice's secret",
            ChannelBinding::tls_server_end_point(end_point.to_vec()),
        )
        .unwrap_err();
        assert!(matches!(e, AuthError::ChannelBinding), "{e}");
    }

    #[test]
    fn channel_binding_is_refused_clearly() {
        let mut server = rfc_server();
        let err = server
            .client_first(b"p=tls-server-end-point,,n=,r=abcdef")
            .unwrap_err();
        assert!(matches!(err, AuthError::ChannelBinding));
        assert_eq!(err.sqlstate(), "08P01");
        assert!(
            err.to_string().contains("offers SCRAM-SHA-256 without it"),
            "{err}"
        );
    }

    #[test]
    fn malformed_client_first_messages_are_08p01() {
        let cases: &[&[u8]] = &[
            b"",
            b"x,,n=,r=abc",
            b"n",
            b"n;,n=,r=abc",
            b"n,a=admin,n=,r=abc",
            b"n,x,n=,r=abc",
            b"n,,m=ext,n=,r=abc",
            b"n,,r=abc",
            b"n,,n=",
            b"n,,n=,r=",
            b"n,,n=,r=ab c",
            b"n,,n=,r=abc,1=x",
            b"n,,n=,r=abc,",
            b"n,,n=,r=abc\0",
            b"n,,n=,r=\xff",
        ];
        for &case in cases {
            let err = rfc_server().client_first(case).unwrap_err();
            assert_eq!(
                err.sqlstate(),
                "08P01",
                "{:?}: {err}",
                String::from_utf8_lossy(case)
            );
        }
        let long = format!("n,,n=,r={}", "a".repeat(MAX_SCRAM_MESSAGE));
        let err = rfc_server().client_first(long.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
    }

    #[test]
    fn extensions_and_the_user_name_are_ignored() {
        let salt = STANDARD.decode(RFC_SALT).unwrap();
        let mut server = rfc_server();
        let client_first_bare = "n=someone else,r=rOprNGfwEbeRWgbNEkqO,x=ext";
        let server_first = server
            .client_first(format!("n,,{client_first_bare}").as_bytes())
            .unwrap();
        let server_first = String::from_utf8(server_first).unwrap();
        assert_eq!(server_first, RFC_SERVER_FIRST);
        let without_proof = format!("c=biws,r=rOprNGfwEbeRWgbNEkqO{RFC_SERVER_NONCE},y=ext");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let p = proof("pencil", &salt, 4096, &auth_message);
        server
            .client_final(format!("{without_proof},p={p}").as_bytes())
            .unwrap();
    }

    #[test]
    fn the_final_message_must_repeat_the_channel_binding_and_nonce() {
        let nonce = format!("rOprNGfwEbeRWgbNEkqO{RFC_SERVER_NONCE}");
        let p = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let cases = [
            // "y,," where the first message said "n,,".
            (format!("c=eSws,r={nonce},p={p}"), "channel binding"),
            (format!("c=biws,r={nonce}x,p={p}"), "nonce"),
            (format!("c=biws,r=rOprNGfwEbeRWgbNEkqO,p={p}"), "nonce"),
            (format!("r={nonce},c=biws,p={p}"), "(c=) first"),
            (format!("c=biws,p={p}"), "(r=) second"),
            (format!("c=biws,r={nonce}"), "proof"),
            (
                format!("c=biws,r={nonce},p={p},p={p}"),
                "more than one proof",
            ),
            (format!("c=biws,r={nonce},p=AAAA"), "32 bytes"),
            (format!("c=biws,r={nonce},p={}", &p[..43]), "32 bytes"),
            ("garbage".to_owned(), "c=, r= and p="),
        ];
        for (message, want) in cases {
            let mut server = rfc_server();
            server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
            let err = server.client_final(message.as_bytes()).unwrap_err();
            assert_eq!(err.sqlstate(), "08P01", "{message}: {err}");
            assert!(err.to_string().contains(want), "{message}: {err}");
        }
    }

    #[test]
    fn a_tampered_proof_is_28p01() {
        let mut server = rfc_server();
        server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
        let tampered = RFC_CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
        let err = server.client_final(tampered.as_bytes()).unwrap_err();
        assert_eq!(err.sqlstate(), "28P01");
    }

    #[test]
    fn a_recorded_final_message_does_not_replay_into_a_new_exchange() {
        let file = users();
        let alice = file.user("alice").unwrap();
        let mut client = ScramSha256::new(b"alice's secret", ChannelBinding::unsupported());
        let mut server = ScramServer::new(alice);
        let server_first = server.client_first(client.message()).unwrap();
        client.update(&server_first).unwrap();
        let recorded_first = b"n,,n=,r=".iter().chain(&server_first[2..26]).copied();
        let recorded_final = client.message().to_vec();
        server.client_final(&recorded_final).unwrap();

        // Same client nonce, but the new exchange has a new server nonce.
        let mut again = ScramServer::new(alice);
        again
            .client_first(&recorded_first.collect::<Vec<u8>>())
            .unwrap();
        let err = again.client_final(&recorded_final).unwrap_err();
        assert_eq!(err.sqlstate(), "08P01");
        assert!(err.to_string().contains("nonce"), "{err}");
    }

    #[test]
    fn out_of_order_calls_are_errors_not_panics() {
        let mut server = rfc_server();
        let err = server
            .client_final(RFC_CLIENT_FINAL.as_bytes())
            .unwrap_err();
        assert!(matches!(err, AuthError::OutOfOrder(_)));
        assert_eq!(err.sqlstate(), "08P01");
        // A misused exchange is over: even the right first message is refused.
        assert!(matches!(
            server.client_first(RFC_CLIENT_FIRST.as_bytes()),
            Err(AuthError::OutOfOrder(_))
        ));

        let mut server = rfc_server();
        server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
        assert!(matches!(
            server.client_first(RFC_CLIENT_FIRST.as_bytes()),
            Err(AuthError::OutOfOrder(_))
        ));

        let mut server = rfc_server();
        server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
        server.client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
        assert!(matches!(
            server.client_final(RFC_CLIENT_FINAL.as_bytes()),
            Err(AuthError::OutOfOrder(_))
        ));
        assert!(matches!(
            server.client_first(RFC_CLIENT_FIRST.as_bytes()),
            Err(AuthError::OutOfOrder(_))
        ));
    }

    #[test]
    fn debug_shows_the_user_and_state_only() {
        let mut server = rfc_server();
        server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
        let shown = format!("{server:?}");
        assert_eq!(
            shown,
            "ScramServer { user: \"user\", state: \"sent server-first\", .. }"
        );
    }

    fn is_client_error(err: &AuthError) -> bool {
        matches!(err.sqlstate(), "08P01" | "28P01")
    }

    proptest! {
        #[test]
        fn random_client_first_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut server = rfc_server();
            if let Err(err) = server.client_first(&data) {
                prop_assert_eq!(err.sqlstate(), "08P01");
            }
        }

        #[test]
        fn random_client_final_bytes_never_log_in(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut server = rfc_server();
            server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
            let err = server.client_final(&data).unwrap_err();
            prop_assert!(is_client_error(&err), "{}", err);
        }

        #[test]
        fn scram_shaped_messages_never_panic(
            first in "[nyp]?[,=a]{0,3}(n=[a-z]{0,3},?)?(r=[!-~]{0,8})?(,[a-z1]=?[a-z]{0,3}){0,2}",
            last in "(c=[a-zA-Z]{0,4},?)?(r=[!-+\\--~]{0,40},?)?([a-z]=[a-z]*,)?(p=[A-Za-z0-9+/=]{0,46})?",
        ) {
            let mut server = rfc_server();
            match server.client_first(first.as_bytes()) {
                Err(err) => prop_assert_eq!(err.sqlstate(), "08P01"),
                Ok(_) => {
                    let err = server.client_final(last.as_bytes()).unwrap_err();
                    prop_assert!(is_client_error(&err), "{}", err);
                }
            }
        }

        #[test]
        fn any_change_to_a_valid_final_message_is_refused(
            at in 0..RFC_CLIENT_FINAL.len(),
            byte in any::<u8>(),
        ) {
            let mut message = RFC_CLIENT_FINAL.as_bytes().to_vec();
            prop_assume!(message[at] != byte);
            message[at] = byte;
            let mut server = rfc_server();
            server.client_first(RFC_CLIENT_FIRST.as_bytes()).unwrap();
            let err = server.client_final(&message).unwrap_err();
            prop_assert!(is_client_error(&err), "{}", err);
        }
    }
}
