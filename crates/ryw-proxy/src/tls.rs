//! TLS, both ways. Clients: [`TlsMode`] (`--tls-mode`) with a certificate
//! and key (`--tls-cert`, `--tls-key`, read again on SIGHUP), answered at
//! the client's `SSLRequest` (`session/startup.rs`). Nodes: each node URL's
//! `sslmode`/`sslrootcert` ([`ryw_router::tls`]), negotiated when the relay
//! opens a connection ([`connect_node`]). The two stream types here let the
//! relay read and write either way alike.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures_util::FutureExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::ServerConfig;
use ryw_router::tls::{NodeTls, SslMode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// What the proxy asks of its clients (`--tls-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS: an `SSLRequest` is answered `N` (the client goes on in the
    /// clear or gives up, as its `sslmode` says).
    #[default]
    Disable,
    /// TLS for clients that ask for it, the clear for the others (the
    /// default when a certificate and key are given).
    Allow,
    /// TLS only: a startup in the clear is refused (SQLSTATE 28000) before
    /// any authentication. Cancel requests in the clear are still taken,
    /// as libpq before 17 sends them so.
    Require,
}

impl TlsMode {
    /// The mode when `--tls-mode` is not given: `allow` with a
    /// certificate, else `disable`.
    pub fn default_for(have_certificate: bool) -> TlsMode {
        if have_certificate {
            TlsMode::Allow
        } else {
            TlsMode::Disable
        }
    }
}

impl FromStr for TlsMode {
    type Err = TlsConfigError;

    fn from_str(s: &str) -> Result<TlsMode, TlsConfigError> {
        match s {
            "disable" => Ok(TlsMode::Disable),
            "allow" => Ok(TlsMode::Allow),
            "require" => Ok(TlsMode::Require),
            other => Err(TlsConfigError::Mode(other.to_owned())),
        }
    }
}

impl std::fmt::Display for TlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsMode::Disable => "disable",
            TlsMode::Allow => "allow",
            TlsMode::Require => "require",
        })
    }
}

/// Why the clients' TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// Not one of the modes.
    #[error("invalid --tls-mode {0:?} (expected disable, allow or require)")]
    Mode(String),
    /// `allow`/`require` with no certificate or key.
    #[error("--tls-mode {0} needs --tls-cert and --tls-key")]
    NoCertificate(TlsMode),
    /// One of the pair without the other.
    #[error("--tls-cert and --tls-key are given together")]
    HalfPair,
    /// A file that cannot be read or holds nothing usable.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the pair (a key that is not the certificate's).
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The clients' TLS in force: the mode, and the certificate (reloaded
/// from its files on SIGHUP).
#[derive(Debug)]
pub(crate) struct ServerTls {
    pub mode: TlsMode,
    files: Option<(PathBuf, PathBuf)>,
    config: RwLock<Option<Loaded>>,
}

/// A certificate in force: the configuration, and the certificate's
/// `tls-server-end-point` hash for SCRAM channel binding (none when its
/// signature algorithm is not one RFC 5929 gives a hash for here).
#[derive(Clone, Debug)]
struct Loaded {
    config: Arc<ServerConfig>,
    end_point: Option<Arc<[u8]>>,
}

impl ServerTls {
    /// Checks the flags and reads the certificate and key.
    pub fn new(
        mode: TlsMode,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<ServerTls, TlsConfigError> {
        let files = match (cert, key) {
            (Some(c), Some(k)) => Some((c.to_owned(), k.to_owned())),
            (None, None) => None,
            _ => return Err(TlsConfigError::HalfPair),
        };
        let config = match (&files, mode) {
            (_, TlsMode::Disable) => None,
            (None, mode) => return Err(TlsConfigError::NoCertificate(mode)),
            (Some((c, k)), _) => Some(server_config(c, k)?),
        };
        Ok(ServerTls {
            mode,
            files,
            config: RwLock::new(config),
        })
    }

    /// What answers an `SSLRequest` (`None` when TLS is off), with the
    /// certificate's `tls-server-end-point` hash.
    pub fn acceptor(&self) -> Option<(tokio_rustls::TlsAcceptor, Option<Arc<[u8]>>)> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map(|l| (tokio_rustls::TlsAcceptor::from(l.config), l.end_point))
    }

    /// Reads the certificate and key again (SIGHUP): new handshakes use
    /// them, connections made stay. `Ok(false)` when TLS is off; on an
    /// error the old pair stays in force.
    pub fn reload(&self) -> Result<bool, TlsConfigError> {
        let Some((cert, key)) = self
            .files
            .as_ref()
            .filter(|_| self.mode != TlsMode::Disable)
        else {
            return Ok(false);
        };
        let fresh = server_config(cert, key)?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Some(fresh);
        Ok(true)
    }
}

/// A server configuration from a PEM certificate chain and a PEM key.
fn server_config(cert: &Path, key: &Path) -> Result<Loaded, TlsConfigError> {
    let bad = |path: &Path, why: String| TlsConfigError::File {
        path: path.to_owned(),
        why,
    };
    let pem = std::fs::read(cert).map_err(|e| bad(cert, e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert, "no certificate in the file".into()));
    }
    let pem = std::fs::read(key).map_err(|e| bad(key, e.to_string()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| bad(key, e.to_string()))?;
    let end_point = end_point_hash(&chain[0]).map(Arc::from);
    let config = ServerConfig::builder_with_provider(ryw_router::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    Ok(Loaded {
        config: Arc::new(config),
        end_point,
    })
}

/// RFC 5929's `tls-server-end-point`: the certificate hashed with the hash
/// of its signature algorithm (SHA-256 for MD5 and SHA-1), as libpq and
/// PostgreSQL compute it. `None` for an algorithm without one here (PSS,
/// Ed25519, SHA-224): then no channel binding is offered.
fn end_point_hash(cert: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm
    // SEQUENCE { OID, … }, signature }: the OID's bytes.
    let (0x30, body, _) = der(cert)? else {
        return None;
    };
    let (0x30, _, rest) = der(body)? else {
        return None;
    };
    let (0x30, algorithm, _) = der(rest)? else {
        return None;
    };
    let (0x06, oid, _) = der(algorithm)? else {
        return None;
    };
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    let bits = match oid {
        [r @ .., 0x04 | 0x05 | 0x0b] if r == RSA => 256,
        [r @ .., 0x0c] if r == RSA => 384,
        [r @ .., 0x0d] if r == RSA => 512,
        o if o == ECDSA_SHA1 => 256,
        [e @ .., 0x02] if e == ECDSA_SHA2 => 256,
        [e @ .., 0x03] if e == ECDSA_SHA2 => 384,
        [e @ .., 0x04] if e == ECDSA_SHA2 => 512,
        _ => return None,
    };
    Some(match bits {
        256 => sha2::Sha256::digest(cert).to_vec(),
        384 => sha2::Sha384::digest(cert).to_vec(),
        _ => sha2::Sha512::digest(cert).to_vec(),
    })
}

/// One DER element: its tag, its content, what follows it.
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*b.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let content = b.get(header..header.checked_add(len)?)?;
    Some((tag, content, &b[header + len..]))
}

/// A client's connection: in the clear, or TLS once the client asked.
#[derive(Debug)]
pub(crate) enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// Taken for a handshake that did not finish.
    Gone,
}

impl ClientStream {
    /// Whether the client's bytes are encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    /// The TLS handshake, after the `S` answer to an `SSLRequest`.
    pub async fn accept(&mut self, acceptor: tokio_rustls::TlsAcceptor) -> io::Result<()> {
        let ClientStream::Plain(tcp) = std::mem::replace(self, ClientStream::Gone) else {
            return Err(io::Error::other("TLS is already on"));
        };
        *self = ClientStream::Tls(Box::new(acceptor.accept(tcp).await?));
        Ok(())
    }

    /// Writes all of `bytes` and, with TLS, the records rustls still holds.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes).await?;
        if self.is_tls() {
            self.flush().await?;
        }
        Ok(())
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            ClientStream::Gone => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            ClientStream::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            ClientStream::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            ClientStream::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// A connection to a node: in the clear, or TLS as its URL's `sslmode`
/// says.
#[derive(Debug)]
pub(crate) enum NodeStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// PostgreSQL's `SSLRequest`: length 8, code 1234.5679.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Opens a connection to a node at `addr`, with TLS as `tls` says
/// (`SSLRequest`, then the handshake, checking `host` for `verify-full`).
pub(crate) async fn connect_node(
    addr: std::net::SocketAddr,
    tls: &NodeTls,
    host: &ServerName<'static>,
) -> Result<NodeStream, String> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mode = tls.mode();
    if mode == SslMode::Disable {
        return Ok(NodeStream::Plain(tcp));
    }
    tcp.write_all(&SSL_REQUEST)
        .await
        .map_err(|e| format!("write: {e}"))?;
    // One byte exactly: whatever follows it is the server's TLS (or an
    // attacker's bytes, which then fail the handshake).
    let answer = tcp.read_u8().await.map_err(|e| format!("read: {e}"))?;
    match answer {
        b'S' => {
            let s = tls
                .connector()
                .connect(host.clone(), tcp)
                .await
                .map_err(|e| format!("TLS handshake (sslmode={mode}): {e}"))?;
            Ok(NodeStream::Tls(Box::new(s)))
        }
        b'N' if !mode.required() => Ok(NodeStream::Plain(tcp)),
        b'N' => Err(format!(
            "the server does not support TLS, and sslmode={mode} requires it"
        )),
        other => Err(format!(
            "unexpected answer {:?} to the TLS request",
            other as char
        )),
    }
}

impl NodeStream {
    /// Ready when there may be something to read (may be stale: follow
    /// with [`NodeStream::try_read_buf`]; the waker of the latest call is
    /// woken). With TLS, decrypted bytes rustls still holds count.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            NodeStream::Plain(s) => s.poll_read_ready(cx),
            NodeStream::Tls(s) => {
                let (tcp, conn) = s.get_ref();
                // rustls wants no more input while it holds plaintext (or
                // the peer closed): there is something to read now.
                if !conn.wants_read() {
                    return Poll::Ready(Ok(()));
                }
                tcp.poll_read_ready(cx)
            }
        }
    }

    /// Reads what is there without waiting: `WouldBlock` when nothing is.
    pub fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            NodeStream::Plain(s) => s.try_read_buf(buf),
            // One poll: rustls reads what the socket has and decrypts it.
            NodeStream::Tls(s) => s
                .read_buf(buf)
                .now_or_never()
                .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into())),
        }
    }

    /// Writes all of `bytes` and, with TLS, the records rustls still holds.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            NodeStream::Plain(s) => s.write_all(bytes).await,
            NodeStream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    /// Reads what comes next (at least a byte; 0 when the node closed).
    pub async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            NodeStream::Plain(s) => s.read_buf(buf).await,
            NodeStream::Tls(s) => s.read_buf(buf).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_mode_parses_and_defaults_to_allow_only_with_a_certificate() {
        assert_eq!("disable".parse::<TlsMode>().unwrap(), TlsMode::Disable);
        assert_eq!("allow".parse::<TlsMode>().unwrap(), TlsMode::Allow);
        assert_eq!("require".parse::<TlsMode>().unwrap(), TlsMode::Require);
        let e = "prefer".parse::<TlsMode>().unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid --tls-mode \"prefer\" (expected disable, allow or require)"
        );
        assert_eq!(TlsMode::default_for(true), TlsMode::Allow);
        assert_eq!(TlsMode::default_for(false), TlsMode::Disable);
        assert_eq!(TlsMode::Require.to_string(), "require");
    }

    #[test]
    fn the_end_point_hash_follows_the_signature_algorithm() {
        use sha2::Digest;
        // rcgen signs with ECDSA P-256 / SHA-256 (and P-384 / SHA-384).
        for (alg, len) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, 32),
            (&rcgen::PKCS_ECDSA_P384_SHA384, 48),
        ] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let hash = end_point_hash(cert.der()).expect("a known algorithm");
            assert_eq!(hash.len(), len);
            if len == 32 {
                assert_eq!(hash, sha2::Sha256::digest(cert.der()).to_vec());
            } else {
                assert_eq!(hash, sha2::Sha384::digest(cert.der()).to_vec());
            }
        }
        // Ed25519 has no hash of its own: no binding offered.
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(end_point_hash(cert.der()), None);
        assert_eq!(end_point_hash(b"\x30\x05garbage"), None);
        assert_eq!(end_point_hash(b""), None);
    }

    #[test]
    fn allow_or_require_without_a_certificate_is_refused_at_start() {
        for mode in [TlsMode::Allow, TlsMode::Require] {
            let e = ServerTls::new(mode, None, None).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("--tls-mode {mode} needs --tls-cert and --tls-key")
            );
        }
        let e = ServerTls::new(TlsMode::Allow, Some(Path::new("/x.pem")), None)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "--tls-cert and --tls-key are given together");
        let off = ServerTls::new(TlsMode::Disable, None, None).unwrap();
        assert!(off.acceptor().is_none());
        assert!(!off.reload().unwrap());
    }

    #[test]
    fn a_certificate_and_key_load_and_a_bad_file_says_which() {
        let dir = tempfile::tempdir().unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        let tls = ServerTls::new(TlsMode::Require, Some(&cert), Some(&key)).unwrap();
        assert!(tls.acceptor().is_some());
        assert!(tls.reload().unwrap());
        std::fs::write(&key, "garbage").unwrap();
        let e = tls.reload().unwrap_err().to_string();
        assert!(e.starts_with(&key.display().to_string()), "{e}");
        // The old pair stays in force.
        assert!(tls.acceptor().is_some());
        let e = ServerTls::new(TlsMode::Allow, Some(&key), Some(&key))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no certificate"), "{e}");
    }
}
