//! tunnel-tls: TLS for the links that cross networks we do not trust to keep metadata.
//!
//! ```text
//!   node ──ClientTrust (system roots + private CA + optional key pin)──> wss:// relay
//!   relay, MCP over HTTP ──ServerTls (PEM chain + key, reloaded on SIGHUP)──> clients
//! ```
//!
//! Peer traffic is end-to-end encrypted whatever the transport; TLS keeps the relay's access
//! token, the room id and who talks to whom away from anyone on the path. Only TLS 1.3 and
//! 1.2 are offered, with ring as the only crypto provider (we already ship it).
#![forbid(unsafe_code)]

mod client;
mod server;
mod spki;

use std::path::PathBuf;
use std::sync::Arc;

pub use client::{ClientTrust, Connector};
pub use server::ServerTls;
pub use spki::{pin_of_certificate, Pin};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{what} {path} holds no {expected}")]
    Empty { what: &'static str, path: PathBuf, expected: &'static str },
    #[error("{what} {path} is not valid PEM: {reason}")]
    Pem { what: &'static str, path: PathBuf, reason: String },
    #[error("{0}")]
    Config(String),
    #[error("invalid key pin {value:?}: {reason}")]
    BadPin { value: String, reason: &'static str },
}

/// A byte stream: plain TCP, or TLS over it.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The one crypto provider: ring, restricted to TLS 1.3 and 1.2.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
