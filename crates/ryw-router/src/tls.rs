//! TLS to the nodes: a node URL's `sslmode` and `sslrootcert`, read as
//! libpq reads them, for the router's own connections (positions, polls,
//! reads) and for `ryw proxy`'s relay.
//!
//! `tokio-postgres` knows `disable`, `prefer` and `require` only, and no
//! `sslrootcert`: [`parse_node_url`] takes both out of the URL and gives a
//! [`NodeTls`] (rustls, the ring provider) with the rest parsed as usual.
//!
//! | `sslmode` | encrypted | the server's certificate |
//! | --- | --- | --- |
//! | `disable` | never | — |
//! | `prefer` (the default, as libpq's) | when the server offers TLS | not checked |
//! | `require` | always | not checked; checked as `verify-ca` when `sslrootcert` is given (libpq does the same) |
//! | `verify-ca` | always | signed by `sslrootcert` |
//! | `verify-full` | always | signed by `sslrootcert`, and made out to the URL's host |
//!
//! Without `sslrootcert`, `verify-ca` and `verify-full` read
//! `~/.postgresql/root.crt`, as libpq does; `sslrootcert=system` and client
//! certificates (`sslcert`, `sslkey`) are not supported.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Why a node's TLS settings cannot work.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// An `sslmode` libpq does not have.
    #[error(
        "invalid sslmode {0:?} (expected disable, allow, prefer, require, verify-ca or verify-full)"
    )]
    Mode(String),
    /// A URL that does not parse once `sslmode`/`sslrootcert` are out.
    #[error("{0}")]
    Url(String),
    /// `verify-ca`/`verify-full` without a CA to verify with.
    #[error(
        "sslmode={0} needs the certificate authority: give sslrootcert=<file> (or put it in ~/.postgresql/root.crt)"
    )]
    NoRootCert(SslMode),
    /// The CA file could not be read, or holds no certificate.
    #[error("sslrootcert {path}: {why}")]
    RootCert {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// A setting libpq has that this does not.
    #[error("{0} is not supported")]
    Unsupported(&'static str),
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// libpq's `sslmode`: whether to encrypt, and what to check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, certificate unchecked (libpq's
    /// default). libpq's `allow` is read as this.
    Prefer,
    /// Always TLS, certificate unchecked.
    Require,
    /// Always TLS, the certificate signed by the CA.
    VerifyCa,
    /// Always TLS, the certificate signed by the CA and made out to the
    /// host connected to.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<SslMode, TlsError> {
        match s {
            "disable" => Ok(SslMode::Disable),
            // libpq's `allow` tries plaintext first; encrypting when the
            // server offers it is no weaker.
            "allow" | "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(TlsError::Mode(other.to_owned())),
        }
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

impl SslMode {
    /// Whether a server that refuses TLS is refused.
    pub fn required(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

/// How to reach one node: its mode and the rustls configuration for it.
#[derive(Clone, Debug)]
pub struct NodeTls {
    mode: SslMode,
    config: Arc<ClientConfig>,
}

impl NodeTls {
    /// TLS as `sslmode` and `sslrootcert` (a PEM file) say.
    pub fn new(mode: SslMode, root_cert: Option<&Path>) -> Result<NodeTls, TlsError> {
        let provider = provider();
        let default_root = || {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
                .filter(|p| p.exists())
        };
        // libpq: `require` with a CA file checks the chain, as `verify-ca`.
        let mode = match (mode, root_cert) {
            (SslMode::Require, Some(_)) => SslMode::VerifyCa,
            (m, _) => m,
        };
        let roots = match mode {
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let path = root_cert
                    .map(Path::to_path_buf)
                    .or_else(default_root)
                    .ok_or(TlsError::NoRootCert(mode))?;
                Some(Arc::new(load_roots(&path)?))
            }
            _ => None,
        };
        let verifier: Arc<dyn ServerCertVerifier> = match roots {
            None => Arc::new(Unverified(provider.clone())),
            Some(roots) => {
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| TlsError::Url(format!("sslrootcert: {e}")))?;
                if mode == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(AnyName(webpki))
                }
            }
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(NodeTls {
            mode,
            config: Arc::new(config),
        })
    }

    /// No TLS at all (`sslmode=disable`).
    pub fn disabled() -> NodeTls {
        NodeTls::new(SslMode::Disable, None).expect("no file to read")
    }

    /// The mode in force (`require` with a CA file reads as `verify-ca`).
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// A handshake maker for a raw connection (the proxy's relay); the
    /// server name to check comes with each connection.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.config.clone())
    }

    /// The same, for `tokio-postgres` connections (it passes the host).
    pub fn make_connect(&self) -> tokio_postgres_rustls::MakeRustlsConnect {
        tokio_postgres_rustls::MakeRustlsConnect::new((*self.config).clone())
    }

    /// What `tokio-postgres` is told: it knows `disable`, `prefer` and
    /// `require`; the checks are the connector's.
    fn pg_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// The crypto provider of every TLS connection here: rustls's *ring*
/// provider (aws-lc-rs, whose post-quantum key exchange is the reason ring's
/// is marked deprecated, is a long C build; PostgreSQL 15's OpenSSL offers
/// no post-quantum group to use anyway).
pub fn provider() -> Arc<CryptoProvider> {
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server name for a host as written in a URL (a name or an address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned())
        .map_err(|e| TlsError::Url(format!("host {host:?} for TLS: {e}")))
}

/// Parses a node URL (`postgres://…?sslmode=verify-full&sslrootcert=ca.pem`
/// or `host=… sslmode=…`), its TLS settings taken out and read as libpq
/// reads them.
pub fn parse_node_url(url: &str) -> Result<(tokio_postgres::Config, NodeTls), TlsError> {
    let (rest, mode, root) = take_tls_params(url)?;
    let mut pg: tokio_postgres::Config = rest
        .parse()
        .map_err(|e: tokio_postgres::Error| TlsError::Url(e.to_string()))?;
    let tls = NodeTls::from_params(mode.as_deref(), root.as_deref())?;
    tls.configure(&mut pg);
    Ok((pg, tls))
}

impl NodeTls {
    /// From a URL's `sslmode` and `sslrootcert` values (absent: `prefer`,
    /// as libpq).
    pub fn from_params(mode: Option<&str>, root_cert: Option<&str>) -> Result<NodeTls, TlsError> {
        let mode = match mode {
            Some(m) => m.parse()?,
            None => SslMode::Prefer,
        };
        if root_cert == Some("system") {
            return Err(TlsError::Unsupported("sslrootcert=system"));
        }
        NodeTls::new(mode, root_cert.map(Path::new))
    }

    /// Tells `tokio-postgres` whether to ask for TLS (the checks are the
    /// connector's: [`NodeTls::make_connect`]).
    pub fn configure(&self, pg: &mut tokio_postgres::Config) {
        pg.ssl_mode(self.pg_mode());
    }
}

/// The URL without `sslmode` and `sslrootcert`, and their values.
pub fn take_tls_params(url: &str) -> Result<(String, Option<String>, Option<String>), TlsError> {
    let (mut mode, mut root) = (None, None);
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            mode = Some(value);
            true
        }
        "sslrootcert" => {
            root = Some(value);
            true
        }
        _ => false,
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for part in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = part.split_once('=').unwrap_or((part, ""));
                    if !take(&percent_decode(k)?, percent_decode(v)?) {
                        kept.push(part);
                    }
                }
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (key, value, span) in key_values(url)? {
            if !take(&key, value) {
                kept.push(&url[span]);
            }
        }
        kept.join(" ")
    };
    Ok((rest, mode, root))
}

fn percent_decode(s: &str) -> Result<String, TlsError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| TlsError::Url(format!("invalid percent-encoding in {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| TlsError::Url(format!("{s:?} is not UTF-8")))
}

/// libpq's `key = value` connection string: each pair with where it
/// stands (values quoted with `'`, `\` escaping the next character).
fn key_values(s: &str) -> Result<Vec<(String, String, std::ops::Range<usize>)>, TlsError> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i == b.len() {
            return Ok(out);
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = s[start..i].to_owned();
        skip_ws(&mut i);
        if b.get(i) != Some(&b'=') {
            return Err(TlsError::Url(format!("missing \"=\" after {key:?}")));
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = Vec::new();
        if b.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err(TlsError::Url(format!("unterminated quoted {key:?}"))),
                    Some(b'\\') if i + 1 < b.len() => {
                        value.push(b[i + 1]);
                        i += 2;
                    }
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < b.len() && !b[i].is_ascii_whitespace() {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                value.push(b[i]);
                i += 1;
            }
        }
        let value =
            String::from_utf8(value).map_err(|_| TlsError::Url(format!("{key:?} is not UTF-8")))?;
        out.push((key, value, start..i));
    }
}

/// The certificates of a PEM file, as trust anchors.
fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let bad = |why: String| TlsError::RootCert {
        path: path.to_owned(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(roots)
}

/// `prefer` and `require`: any certificate (libpq checks none there); the
/// handshake's signatures are still checked, so the session key is the
/// server's.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is checked, the name is not. webpki checks the
/// chain before the name, so a name error means the chain was good.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_parses_libpq_names_and_refuses_others() {
        assert_eq!("disable".parse::<SslMode>().unwrap(), SslMode::Disable);
        assert_eq!("allow".parse::<SslMode>().unwrap(), SslMode::Prefer);
        assert_eq!("prefer".parse::<SslMode>().unwrap(), SslMode::Prefer);
        assert_eq!("require".parse::<SslMode>().unwrap(), SslMode::Require);
        assert_eq!("verify-ca".parse::<SslMode>().unwrap(), SslMode::VerifyCa);
        assert_eq!(
            "verify-full".parse::<SslMode>().unwrap(),
            SslMode::VerifyFull
        );
        let e = "verify_full".parse::<SslMode>().unwrap_err().to_string();
        assert!(e.contains("invalid sslmode \"verify_full\""), "{e}");
        assert!(SslMode::Require.required() && !SslMode::Prefer.required());
    }

    #[test]
    fn tls_params_are_taken_out_of_a_url() {
        let (rest, mode, root) = take_tls_params(
            "postgres://u@127.0.0.1:5432/db?application_name=x&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca%20dir%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@127.0.0.1:5432/db?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/tmp/ca dir/ca.pem"));
        let (rest, mode, root) = take_tls_params("postgresql://u@h/db?sslmode=require").unwrap();
        assert_eq!(rest, "postgresql://u@h/db");
        assert_eq!(mode.as_deref(), Some("require"));
        assert_eq!(root, None);
        let (rest, mode, _) = take_tls_params("postgres://u@h/db").unwrap();
        assert_eq!((rest.as_str(), mode), ("postgres://u@h/db", None));
    }

    #[test]
    fn tls_params_are_taken_out_of_a_key_value_string() {
        let (rest, mode, root) = take_tls_params(
            "host=127.0.0.1 port = 5432 sslmode=verify-ca sslrootcert='/tmp/my ca\\'s.pem' user=postgres",
        )
        .unwrap();
        assert_eq!(rest, "host=127.0.0.1 port = 5432 user=postgres");
        assert_eq!(mode.as_deref(), Some("verify-ca"));
        assert_eq!(root.as_deref(), Some("/tmp/my ca's.pem"));
        assert!(take_tls_params("host=h sslrootcert='/x").is_err());
        assert!(take_tls_params("host").is_err());
    }

    #[test]
    fn a_node_url_parses_with_its_tls_settings() {
        let (pg, tls) = parse_node_url("postgres://u@127.0.0.1:5432/db?sslmode=require").unwrap();
        assert_eq!(tls.mode(), SslMode::Require);
        assert_eq!(pg.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        assert_eq!(pg.get_dbname(), Some("db"));
        let (pg, tls) = parse_node_url("host=h user=u").unwrap();
        assert_eq!(tls.mode(), SslMode::Prefer);
        assert_eq!(pg.get_ssl_mode(), tokio_postgres::config::SslMode::Prefer);
        let (pg, tls) = parse_node_url("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(tls.mode(), SslMode::Disable);
        assert_eq!(pg.get_ssl_mode(), tokio_postgres::config::SslMode::Disable);
    }

    #[test]
    fn verifying_needs_a_readable_ca() {
        let e =
            parse_node_url("postgres://u@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
                .unwrap_err()
                .to_string();
        assert!(e.starts_with("sslrootcert /nonexistent/ca.pem:"), "{e}");
        let dir = std::env::temp_dir().join(format!("ryw-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = NodeTls::new(SslMode::VerifyCa, Some(&empty))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no certificate"), "{e}");
        let good = dir.join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&good, cert.cert.pem()).unwrap();
        // `require` with a CA file checks the chain, as libpq does.
        let tls = NodeTls::new(SslMode::Require, Some(&good)).unwrap();
        assert_eq!(tls.mode(), SslMode::VerifyCa);
        assert!(matches!(
            parse_node_url("postgres://u@h/db?sslmode=verify-full&sslrootcert=system"),
            Err(TlsError::Unsupported(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
