//! [`ProxyError`]: what can stop the proxy from starting or serving. A
//! client's own errors are answered on its connection (an `ErrorResponse`
//! with a SQLSTATE) and never stop the proxy.

/// Why the proxy cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A setting that cannot work: an unreadable auth file, a node URL
    /// without a host, a port in use, an unreachable session store.
    #[error("{0}")]
    Config(String),
}
