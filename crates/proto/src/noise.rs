//! `Noise_IKpsk2_25519_AESGCM_SHA256`, written on x25519-dalek, hkdf/hmac/sha2 and aes-gcm.
//!
//! ```text
//! IKpsk2:
//!   <- s                              responder's static key is known (the node id)
//!   ...
//!   -> e, es, s, ss                   message 1: no application payload in tunnel's use
//!   <- e, ee, se, psk                 message 2: the psk (room secret) is mixed in here
//! ```
//!
//! Message 1 proves the initiator holds its static key; message 2 proves the responder holds
//! its key *and* the room psk. A node with the wrong room token fails to read message 2.
//! `tests/noise_vs_snow.rs` checks every byte against the `snow` crate.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::keys::{NodeId, SecretKey, WeakKey};

pub const PROTOCOL_NAME: &[u8; 32] = b"Noise_IKpsk2_25519_AESGCM_SHA256";
/// Prologue of every tunnel peer handshake; changing the peer protocol changes it.
pub const PROLOGUE: &[u8] = b"tunnel peer session v1";
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
/// Length of message 1 with an empty payload.
pub const MSG1_LEN: usize = KEY_LEN + KEY_LEN + TAG_LEN + TAG_LEN;
/// Length of message 2 with an empty payload.
pub const MSG2_LEN: usize = KEY_LEN + TAG_LEN;

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum HandshakeError {
    #[error("handshake message too short ({len} bytes)")]
    TooShort { len: usize },
    #[error(
        "handshake message failed authentication: the peer holds a different room token, or the message was altered"
    )]
    Decrypt,
    #[error(transparent)]
    WeakKey(#[from] WeakKey),
}

/// Keys of a finished handshake, from this side's point of view.
pub struct TransportKeys {
    pub send: Zeroizing<[u8; 32]>,
    pub recv: Zeroizing<[u8; 32]>,
    /// The final handshake hash `h`: a unique, public name for this session.
    pub handshake_hash: [u8; 32],
}

/// The Noise SymmetricState with its CipherState inlined.
struct Symmetric {
    ck: Zeroizing<[u8; 32]>,
    h: [u8; 32],
    k: Option<Zeroizing<[u8; 32]>>,
    n: u64,
}

impl Symmetric {
    fn new(prologue: &[u8]) -> Self {
        // The protocol name is exactly HASHLEN bytes, so it is used as is, unhashed.
        let mut s = Self { ck: Zeroizing::new(*PROTOCOL_NAME), h: *PROTOCOL_NAME, k: None, n: 0 };
        s.mix_hash(prologue);
        s
    }

    fn mix_hash(&mut self, data: &[u8]) {
        self.h = Sha256::new().chain_update(self.h).chain_update(data).finalize().into();
    }

    /// Noise's HKDF is HKDF-SHA256 with `ck` as salt and empty info; three outputs.
    fn hkdf(&self, ikm: &[u8]) -> Zeroizing<[u8; 96]> {
        let mut out = Zeroizing::new([0u8; 96]);
        Hkdf::<Sha256>::new(Some(self.ck.as_ref()), ikm)
            .expand(&[], out.as_mut())
            .expect("96 bytes is a valid HKDF-SHA256 length");
        out
    }

    fn mix_key(&mut self, ikm: &[u8]) {
        let out = self.hkdf(ikm);
        self.ck.copy_from_slice(&out[..32]);
        self.k = Some(Zeroizing::new(out[32..64].try_into().expect("32 bytes")));
        self.n = 0;
    }

    fn mix_key_and_hash(&mut self, ikm: &[u8]) {
        let out = self.hkdf(ikm);
        self.ck.copy_from_slice(&out[..32]);
        self.mix_hash(&out[32..64]);
        self.k = Some(Zeroizing::new(out[64..96].try_into().expect("32 bytes")));
        self.n = 0;
    }

    fn encrypt_and_hash(&mut self, plaintext: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        match &self.k {
            Some(k) => {
                let ct = Aes256Gcm::new(k.as_ref().into())
                    .encrypt(&nonce(self.n), Payload { msg: plaintext, aad: &self.h })
                    .expect("AES-GCM encryption of a bounded message cannot fail");
                self.n += 1;
                out.extend_from_slice(&ct);
            }
            None => out.extend_from_slice(plaintext),
        }
        self.mix_hash(&out[start..]);
    }

    fn decrypt_and_hash(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        let plaintext = match &self.k {
            Some(k) => {
                let pt = Aes256Gcm::new(k.as_ref().into())
                    .decrypt(&nonce(self.n), Payload { msg: ciphertext, aad: &self.h })
                    .map_err(|_| HandshakeError::Decrypt)?;
                self.n += 1;
                pt
            }
            None => ciphertext.to_vec(),
        };
        self.mix_hash(ciphertext);
        Ok(plaintext)
    }

    fn split(&self, initiator: bool) -> TransportKeys {
        let out = self.hkdf(&[]);
        let k1 = Zeroizing::new(out[..32].try_into().expect("32 bytes"));
        let k2 = Zeroizing::new(out[32..64].try_into().expect("32 bytes"));
        let (send, recv) = if initiator { (k1, k2) } else { (k2, k1) };
        TransportKeys { send, recv, handshake_hash: self.h }
    }
}

impl Drop for Symmetric {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.h);
    }
}

/// The Noise AESGCM nonce: 32 zero bits then the counter, big-endian.
pub(crate) fn nonce_bytes(n: u64) -> [u8; 12] {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&n.to_be_bytes());
    bytes
}

fn nonce(n: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    nonce_bytes(n).into()
}

/// An initiator waiting for message 2.
pub struct Initiator {
    sym: Symmetric,
    e: SecretKey,
    s: SecretKey,
    psk: Zeroizing<[u8; 32]>,
}

impl Initiator {
    /// Writes message 1 to responder `rs`. `e` is the fresh ephemeral key.
    pub fn start(
        s: &SecretKey,
        rs: &NodeId,
        psk: &[u8; 32],
        prologue: &[u8],
        e: SecretKey,
        payload: &[u8],
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let mut sym = Symmetric::new(prologue);
        sym.mix_hash(rs.as_bytes());
        let mut msg = Vec::with_capacity(MSG1_LEN + payload.len());
        let e_pub = e.public();
        msg.extend_from_slice(e_pub.as_bytes());
        sym.mix_hash(e_pub.as_bytes());
        sym.mix_key(e_pub.as_bytes()); // psk handshakes also mix `e` into the key
        sym.mix_key(e.dh(rs)?.as_ref()); // es
        sym.encrypt_and_hash(s.public().as_bytes(), &mut msg); // s
        sym.mix_key(s.dh(rs)?.as_ref()); // ss
        sym.encrypt_and_hash(payload, &mut msg);
        Ok((Self { sym, e, s: s.clone(), psk: Zeroizing::new(*psk) }, msg))
    }

    /// Reads message 2; returns the transport keys and the responder's payload.
    pub fn finish(mut self, msg: &[u8]) -> Result<(TransportKeys, Vec<u8>), HandshakeError> {
        if msg.len() < MSG2_LEN {
            return Err(HandshakeError::TooShort { len: msg.len() });
        }
        let re = NodeId::from_bytes(msg[..32].try_into().expect("32 bytes"));
        self.sym.mix_hash(re.as_bytes());
        self.sym.mix_key(re.as_bytes());
        self.sym.mix_key(self.e.dh(&re)?.as_ref()); // ee
        self.sym.mix_key(self.s.dh(&re)?.as_ref()); // se
        self.sym.mix_key_and_hash(self.psk.as_ref()); // psk
        let payload = self.sym.decrypt_and_hash(&msg[32..])?;
        Ok((self.sym.split(true), payload))
    }
}

/// A responder that has read message 1 and knows who is calling.
pub struct Responder {
    sym: Symmetric,
    re: NodeId,
    rs: NodeId,
    payload: Vec<u8>,
}

impl Responder {
    /// Reads message 1.
    pub fn read(s: &SecretKey, prologue: &[u8], msg: &[u8]) -> Result<Self, HandshakeError> {
        if msg.len() < MSG1_LEN - TAG_LEN {
            return Err(HandshakeError::TooShort { len: msg.len() });
        }
        let mut sym = Symmetric::new(prologue);
        sym.mix_hash(s.public().as_bytes());
        let re = NodeId::from_bytes(msg[..32].try_into().expect("32 bytes"));
        sym.mix_hash(re.as_bytes());
        sym.mix_key(re.as_bytes());
        sym.mix_key(s.dh(&re)?.as_ref()); // es
        let rs_bytes = sym.decrypt_and_hash(&msg[32..32 + KEY_LEN + TAG_LEN])?;
        let rs = NodeId::from_bytes(rs_bytes.try_into().map_err(|_| HandshakeError::Decrypt)?);
        sym.mix_key(s.dh(&rs)?.as_ref()); // ss
        let payload = sym.decrypt_and_hash(&msg[32 + KEY_LEN + TAG_LEN..])?;
        Ok(Self { sym, re, rs, payload })
    }

    /// The initiator's static key (its node id), authenticated by message 1.
    pub fn remote(&self) -> NodeId {
        self.rs
    }

    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Writes message 2 with the fresh ephemeral key `e`.
    pub fn reply(
        mut self,
        psk: &[u8; 32],
        e: SecretKey,
        payload: &[u8],
    ) -> Result<(TransportKeys, Vec<u8>), HandshakeError> {
        let mut msg = Vec::with_capacity(MSG2_LEN + payload.len());
        let e_pub = e.public();
        msg.extend_from_slice(e_pub.as_bytes());
        self.sym.mix_hash(e_pub.as_bytes());
        self.sym.mix_key(e_pub.as_bytes());
        self.sym.mix_key(e.dh(&self.re)?.as_ref()); // ee
        self.sym.mix_key(e.dh(&self.rs)?.as_ref()); // se
        self.sym.mix_key_and_hash(psk); // psk
        self.sym.encrypt_and_hash(payload, &mut msg);
        Ok((self.sym.split(false), msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    fn key() -> SecretKey {
        SecretKey::generate(&mut OsRng)
    }

    #[test]
    fn both_sides_agree() {
        let (a, b, psk) = (key(), key(), [5u8; 32]);
        let (init, m1) = Initiator::start(&a, &b.public(), &psk, PROLOGUE, key(), b"").unwrap();
        assert_eq!(m1.len(), MSG1_LEN);
        let resp = Responder::read(&b, PROLOGUE, &m1).unwrap();
        assert_eq!(resp.remote(), a.public());
        let (kb, m2) = resp.reply(&psk, key(), b"hi").unwrap();
        let (ka, payload) = init.finish(&m2).unwrap();
        assert_eq!(payload, b"hi");
        assert_eq!(*ka.send, *kb.recv);
        assert_eq!(*ka.recv, *kb.send);
        assert_eq!(ka.handshake_hash, kb.handshake_hash);
        assert_ne!(*ka.send, *ka.recv);
    }

    #[test]
    fn wrong_psk_fails_at_the_initiator() {
        let (a, b) = (key(), key());
        let (init, m1) = Initiator::start(&a, &b.public(), &[1; 32], PROLOGUE, key(), b"").unwrap();
        let (_, m2) = Responder::read(&b, PROLOGUE, &m1).unwrap().reply(&[2; 32], key(), b"").unwrap();
        assert!(matches!(init.finish(&m2), Err(HandshakeError::Decrypt)));
    }

    #[test]
    fn low_order_ephemeral_is_refused() {
        let (a, b) = (key(), key());
        let (_, mut m1) = Initiator::start(&a, &b.public(), &[1; 32], PROLOGUE, key(), b"").unwrap();
        m1[..32].fill(0);
        assert!(matches!(Responder::read(&b, PROLOGUE, &m1), Err(HandshakeError::WeakKey(_))));
    }
}
