//! Serving TLS: a PEM certificate chain and key, reloaded on `SIGHUP` so a renewed
//! certificate takes effect without a restart. Connections already open keep the
//! certificate they were made with; each new one gets whatever is current.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::client::read_certificates;
use crate::{provider, Io, TlsError, VERSIONS};

/// A certificate and key from files, swapped in place by [`ServerTls::reload`].
pub struct ServerTls {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

impl ServerTls {
    /// Loads the chain and key (PKCS#8, PKCS#1 RSA or SEC1 EC, in PEM).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let config = build(cert_path, key_path)?;
        Ok(Arc::new(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(config),
        }))
    }

    /// From a `--tls-cert`/`--tls-key` pair: `None` when neither is given; loaded, and reloaded
    /// on every SIGHUP, when both are.
    pub fn from_flags(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<Arc<Self>>, TlsError> {
        let (Some(cert), Some(key)) = (cert, key) else { return Ok(None) };
        let tls = Self::load(cert, key)?;
        tls.reload_on_sighup().map_err(|e| TlsError::Config(format!("installing the SIGHUP handler: {e}")))?;
        Ok(Some(tls))
    }

    /// Reads the files again; on any error the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build(&self.cert_path, &self.key_path)?;
        *self.current.write().expect("tls config lock") = config;
        Ok(())
    }

    /// Reloads on every `SIGHUP` until the process ends, logging the outcome.
    pub fn reload_on_sighup(self: &Arc<Self>) -> std::io::Result<()> {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let Some(tls) = me.upgrade() else { return };
                match tls.reload() {
                    Ok(()) => info!(cert = %tls.cert_path.display(), "TLS certificate reloaded"),
                    Err(e) => warn!(error = %e, "TLS certificate not reloaded; keeping the current one"),
                }
            }
        });
        Ok(())
    }

    /// Completes the TLS handshake. A client that speaks plain text (an `http://` or `ws://`
    /// URL pointed at this port) is answered in plain HTTP with `plain_hint`, so the person
    /// sees what to change. `Err` says why the connection is done.
    pub async fn accept(&self, tcp: TcpStream, plain_hint: &str) -> Result<Box<dyn Io>, String> {
        let mut first = [0u8; 1];
        match tcp.peek(&mut first).await {
            Ok(0) => return Err("closed before the TLS handshake".into()),
            Ok(_) if first[0] != TLS_HANDSHAKE => {
                answer_plain(tcp, plain_hint).await;
                return Err("a plain-text client on the TLS port".into());
            }
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        let config = self.current.read().expect("tls config lock").clone();
        match TlsAcceptor::from(config).accept(tcp).await {
            Ok(stream) => Ok(Box::new(stream)),
            Err(e) => Err(format!("TLS handshake failed: {e}")),
        }
    }
}

/// Reads a plain client's request head (up to 8 KiB) and replies `400` with `message`.
async fn answer_plain(mut tcp: TcpStream, message: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8 * 1024 {
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let body = format!("{message}\n");
    let reply = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.write_all(reply.as_bytes()).await;
    let _ = tcp.shutdown().await;
}

/// Both servers (the relay, MCP over HTTP) speak HTTP/1.1.
fn build(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certificates(cert_path, "certificate file")?;
    let key_bytes = std::fs::read(key_path).map_err(|source| TlsError::Read {
        what: "key file",
        path: key_path.to_owned(),
        source,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what: "key file",
            path: key_path.to_owned(),
            expected: "PEM private key (PKCS#8, RSA or EC)",
        },
        other => TlsError::Pem { what: "key file", path: key_path.to_owned(), reason: other.to_string() },
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsError::Config(format!(
                "certificate {} and key {} do not make a usable pair: {e}",
                cert_path.display(),
                key_path.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
