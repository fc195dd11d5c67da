//! How a node decides to trust a relay: the system's root store (which honours
//! `SSL_CERT_FILE` and `SSL_CERT_DIR`), plus an operator's private CA, plus, if given, a pin on
//! the leaf's public key that must match in addition to the chain.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, Error, OtherError, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tracing::debug;

use crate::spki::{pin_of_certificate, Pin};
use crate::{provider, Io, TlsError, VERSIONS};

/// What a client trusts beyond the system's roots.
#[derive(Debug, Clone, Default)]
pub struct ClientTrust {
    /// PEM file with one or more CA certificates (a private CA).
    pub ca_file: Option<PathBuf>,
    /// The leaf's key must hash to this, on top of a valid chain.
    pub pin: Option<Pin>,
}

/// A client side ready to connect: whom it trusts, built once.
#[derive(Clone)]
pub struct Connector(Arc<ClientConfig>);

impl Connector {
    /// TLS over `tcp` to `host` (a DNS name or an IP address); `Err` is one line saying why not.
    pub async fn connect(&self, host: &str, tcp: TcpStream) -> Result<Box<dyn Io>, String> {
        let name =
            ServerName::try_from(host.to_owned()).map_err(|e| format!("{host} is not a TLS server name: {e}"))?;
        match tokio_rustls::TlsConnector::from(self.0.clone()).connect(name, tcp).await {
            Ok(stream) => Ok(Box::new(stream)),
            Err(e) => Err(describe_failure(&e, host)),
        }
    }
}

impl ClientTrust {
    /// System roots plus the CA file, checked against the pin.
    pub fn connector(&self) -> Result<Connector, TlsError> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            debug!(error = %e, "skipping part of the system's root store");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        debug!(added, ignored, "system root certificates");
        if let Some(path) = &self.ca_file {
            for cert in read_certificates(path, "CA file")? {
                roots.add(cert).map_err(|e| TlsError::Config(format!("CA file {}: {e}", path.display())))?;
            }
        }
        if roots.is_empty() {
            return Err(TlsError::Config(
                "no trusted root certificates: the system store is empty (install ca-certificates or set \
                 SSL_CERT_FILE) and no relay CA is given"
                    .into(),
            ));
        }
        let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError::Config(format!("building the certificate verifier: {e}")))?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let config = match &self.pin {
            None => builder.with_webpki_verifier(chain).with_no_client_auth(),
            Some(pin) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned { chain, pin: pin.clone() }))
                .with_no_client_auth(),
        };
        Ok(Connector(Arc::new(config)))
    }
}

/// Reads every certificate in a PEM file.
pub(crate) fn read_certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })?;
    let certs = CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(|e| TlsError::Pem {
        what,
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Empty { what, path: path.to_owned(), expected: "PEM certificate" });
    }
    Ok(certs)
}

/// The chain check, then the pin: a pin never replaces the chain, it narrows it.
#[derive(Debug)]
struct Pinned {
    chain: Arc<WebPkiServerVerifier>,
    pin: Pin,
}

#[derive(Debug, thiserror::Error)]
#[error("the relay's key pin does not match: expected {expected}, the certificate has {actual}")]
struct PinMismatch {
    expected: Pin,
    actual: String,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verified = self.chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        match pin_of_certificate(end_entity) {
            Some(actual) if actual == self.pin => Ok(verified),
            actual => Err(Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(PinMismatch {
                expected: self.pin.clone(),
                actual: actual.map_or_else(|| "an unreadable key".to_owned(), |p| p.to_string()),
            }))))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// One line saying why a TLS handshake with `host` failed, in the operator's terms.
fn describe_failure(err: &std::io::Error, host: &str) -> String {
    let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return format!("TLS handshake failed: {err}");
    };
    let ca_hint = "add its CA with --relay-ca, TUNNEL_RELAY_CA or relay_ca";
    match tls {
        Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => {
                format!("certificate for {host} is signed by an unknown issuer ({ca_hint})")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("certificate name mismatch: it is not valid for {host}")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("certificate for {host} has expired")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("certificate for {host} is not valid yet (check this machine's clock)")
            }
            CertificateError::Revoked => format!("certificate for {host} is revoked"),
            CertificateError::Other(other) => other.to_string(),
            other => format!("certificate for {host} is not acceptable: {other:?}"),
        },
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } | Error::InappropriateHandshakeMessage { .. } => {
            format!("{host} did not answer with TLS (a plain ws:// relay? then use ws://)")
        }
        Error::AlertReceived(alert) => format!("{host} refused the TLS handshake ({alert:?})"),
        Error::PeerIncompatible(why) => format!("{host} offers no TLS 1.3 or 1.2 we accept ({why:?})"),
        other => format!("TLS handshake with {host} failed: {other}"),
    }
}
