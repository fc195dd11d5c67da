//! Node identities: one x25519 static key per machine; the public key is the node id.

use std::fmt;
use std::str::FromStr;

use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::base32;

/// A node's public key and therefore its identity. Shown as 52 lowercase base32 characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId([u8; 32]);

/// Length of the short form used in logs and tables.
pub const SHORT_LEN: usize = 8;

impl NodeId {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first eight characters of the full form, for logs and tables.
    pub fn short(&self) -> String {
        let mut s = self.to_string();
        s.truncate(SHORT_LEN);
        s
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&base32::encode(&self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a node id: expected 52 base32 characters (a-z, 2-7), got {got:?}")]
pub struct ParseNodeIdError {
    got: String,
}

impl FromStr for NodeId {
    type Err = ParseNodeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        base32::decode::<32>(s).map(NodeId).ok_or_else(|| ParseNodeIdError { got: s.chars().take(64).collect() })
    }
}

/// A Diffie-Hellman result that was all zeros: the other key had low order. Contributes
/// nothing secret, so every user of `dh` refuses it.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
#[error("the peer's public key is weak (low order); refusing it")]
pub struct WeakKey;

/// A node's static secret. Zeroized on drop; never printed.
pub struct SecretKey(StaticSecret);

impl SecretKey {
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self(StaticSecret::random_from_rng(rng))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(StaticSecret::from(bytes))
    }

    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public(&self) -> NodeId {
        NodeId(PublicKey::from(&self.0).to_bytes())
    }

    /// x25519 with `peer`; refuses low-order peer keys.
    pub fn dh(&self, peer: &NodeId) -> Result<Zeroizing<[u8; 32]>, WeakKey> {
        let shared = self.0.diffie_hellman(&PublicKey::from(peer.0));
        if !shared.was_contributory() {
            return Err(WeakKey);
        }
        Ok(Zeroizing::new(shared.to_bytes()))
    }
}

impl Clone for SecretKey {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_round_trips_through_text() {
        let key = SecretKey::generate(&mut rand::rngs::OsRng);
        let id = key.public();
        let text = id.to_string();
        assert_eq!(text.len(), 52);
        assert!(text.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
        assert_eq!(text.parse::<NodeId>().unwrap(), id);
        assert_eq!(id.short(), text[..8]);
    }

    #[test]
    fn parse_errors_name_the_input() {
        let err = "hello".parse::<NodeId>().unwrap_err();
        assert!(err.to_string().contains("\"hello\""), "{err}");
    }

    #[test]
    fn secret_never_prints() {
        let key = SecretKey::from_bytes([7; 32]);
        assert_eq!(format!("{key:?}"), "SecretKey(..)");
    }

    #[test]
    fn low_order_keys_are_refused() {
        let key = SecretKey::generate(&mut rand::rngs::OsRng);
        // The all-zero point and the point of order 2 (u = 1) yield an all-zero secret.
        assert_eq!(key.dh(&NodeId::from_bytes([0; 32])), Err(WeakKey));
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(key.dh(&NodeId::from_bytes(one)), Err(WeakKey));
        // A low-order point of order 8 from the x25519 literature.
        let order8 = [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09,
            0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
        ];
        assert_eq!(key.dh(&NodeId::from_bytes(order8)), Err(WeakKey));
    }
}
