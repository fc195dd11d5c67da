//! A throwaway PKI for one test: a CA, and leaves it signs (or does not), written as PEM files.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use crate::TempDir;

pub struct Pki {
    pub dir: TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A leaf's files and its key pin (`sha256/...`).
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub pin: String,
}

impl Pki {
    pub fn new(label: &str) -> anyhow::Result<Self> {
        let dir = TempDir::new(label);
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("tunnel test CA {label}"));
        let ca = params.self_signed(&ca_key)?;
        std::fs::write(dir.path().join("ca.pem"), ca.pem())?;
        Ok(Self { dir, ca, ca_key })
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A leaf for `names` (DNS names or IP addresses); `expired` makes it valid only in 2020.
    pub fn leaf(&self, file: &str, names: &[&str], expired: bool) -> anyhow::Result<Leaf> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let cert = params.signed_by(&key, &self.ca, &self.ca_key)?;
        let leaf = Leaf {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}.key")),
            pin: tunnel_tls::pin_of_certificate(cert.der()).expect("a certificate rcgen made parses").to_string(),
        };
        // The chain: leaf, then the CA (what a real server sends).
        std::fs::write(&leaf.cert, format!("{}{}", cert.pem(), self.ca.pem()))?;
        std::fs::write(&leaf.key, key.serialize_pem())?;
        Ok(leaf)
    }
}
