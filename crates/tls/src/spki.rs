//! Key pins: `sha256/BASE64` of a certificate's SubjectPublicKeyInfo (the form HPKP and curl's
//! `--pinnedpubkey` use). A pin survives certificate renewal as long as the key is kept.
//!
//! Finding the SPKI needs only a walk over the outer DER structure of the certificate, so it
//! is done here instead of pulling in an X.509 parser.

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::TlsError;

/// A parsed `sha256/BASE64` pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin([u8; 32]);

impl std::str::FromStr for Pin {
    type Err = TlsError;

    fn from_str(value: &str) -> Result<Self, TlsError> {
        let bad = |reason| TlsError::BadPin { value: value.to_owned(), reason };
        let b64 = value.trim().strip_prefix("sha256/").ok_or_else(|| bad("must start with sha256/"))?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| bad("not base64"))?;
        let hash: [u8; 32] = bytes.try_into().map_err(|_| bad("not a SHA-256 hash (32 bytes)"))?;
        Ok(Self(hash))
    }
}

impl std::fmt::Display for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256/{}", base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

/// The pin of a DER certificate, or `None` if it is not a well-formed certificate.
pub fn pin_of_certificate(der: &[u8]) -> Option<Pin> {
    spki_of_certificate(der).map(|spki| Pin(Sha256::digest(spki).into()))
}

/// The whole DER SubjectPublicKeyInfo of a certificate:
/// `Certificate ::= SEQUENCE { tbs SEQUENCE { [0] version OPTIONAL, serial, signature,
/// issuer, validity, subject, subjectPublicKeyInfo, ... }, ... }`.
fn spki_of_certificate(der: &[u8]) -> Option<&[u8]> {
    let (cert, _) = element(der, SEQUENCE)?;
    let (tbs, _) = element(cert.content, SEQUENCE)?;
    let mut rest = tbs.content;
    if rest.first() == Some(&VERSION) {
        rest = element(rest, VERSION)?.1;
    }
    for tag in [INTEGER, SEQUENCE, SEQUENCE, SEQUENCE, SEQUENCE] {
        rest = element(rest, tag)?.1;
    }
    Some(element(rest, SEQUENCE)?.0.whole)
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT`, constructed.
const VERSION: u8 = 0xa0;

struct Element<'a> {
    whole: &'a [u8],
    content: &'a [u8],
}

/// The first DER element of `input` if it has tag `tag`, and what follows it.
fn element(input: &[u8], tag: u8) -> Option<(Element<'_>, &[u8])> {
    let (&first, after_tag) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len_byte, after_len) = after_tag.split_first()?;
    let (len, body) = if len_byte < 0x80 {
        (usize::from(len_byte), after_len)
    } else {
        let count = usize::from(len_byte & 0x7f);
        if count == 0 || count > 4 || after_len.len() < count {
            return None;
        }
        let len = after_len[..count].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &after_len[count..])
    };
    if body.len() < len {
        return None;
    }
    let header = input.len() - body.len();
    Some((Element { whole: &input[..header + len], content: &body[..len] }, &body[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_is_the_hash_of_the_certificate_key() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["relay.test".into()]).unwrap().self_signed(&key).unwrap();
        let expected = Pin(Sha256::digest(key.public_key_der()).into());
        assert_eq!(pin_of_certificate(cert.der()), Some(expected.clone()));
        assert_eq!(expected.to_string().parse::<Pin>().unwrap(), expected);
    }

    #[test]
    fn malformed_input_gives_none_or_a_clear_error() {
        for bad in [&b""[..], b"\x30", b"\x30\x84\xff\xff\xff\xff", b"\x30\x03\x02\x01"] {
            assert_eq!(pin_of_certificate(bad), None);
        }
        for (value, why) in [("md5/AAAA", "sha256/"), ("sha256/%%%", "base64"), ("sha256/AAAA", "32 bytes")] {
            let err = value.parse::<Pin>().unwrap_err().to_string();
            assert!(err.contains(why), "{value}: {err}");
        }
    }
}
