//! Proof of node id when joining a relay room.
//!
//! The relay sends a fresh nonce and an ephemeral x25519 key. The node answers with
//! `HMAC-SHA256(K, transcript)` where `K` comes from `DH(node static, relay ephemeral)` and the
//! transcript binds the nonce, the relay key, the room id and the claimed node id. Only the
//! holder of the node's secret key can compute `K`, so nobody joins as a node id they do not
//! hold, and a proof cannot be replayed into another connection (fresh nonce and key).

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::keys::{NodeId, SecretKey, WeakKey};

const KEY_SALT: &[u8] = b"tunnel-relay.v1 join key";
const TRANSCRIPT_LABEL: &[u8] = b"tunnel-relay.v1 join proof";

fn proof_with(shared: &[u8; 32], nonce: &[u8; 32], relay_key: &NodeId, room_id: &[u8; 32], node: &NodeId) -> [u8; 32] {
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(KEY_SALT), shared)
        .expand(b"", key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 length");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_ref()).expect("HMAC takes any key length");
    for part in [TRANSCRIPT_LABEL, nonce, relay_key.as_bytes(), room_id, node.as_bytes()] {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The node's answer to a `Challenge`.
pub fn prove(node: &SecretKey, nonce: &[u8; 32], relay_key: &NodeId, room_id: &[u8; 32]) -> Result<[u8; 32], WeakKey> {
    let shared = node.dh(relay_key)?;
    Ok(proof_with(&shared, nonce, relay_key, room_id, &node.public()))
}

/// The relay's check of a `Join`. Constant time in the proof.
pub fn verify(relay_secret: &SecretKey, nonce: &[u8; 32], room_id: &[u8; 32], node: &NodeId, proof: &[u8; 32]) -> bool {
    let Ok(shared) = relay_secret.dh(node) else {
        return false;
    };
    let expected = proof_with(&shared, nonce, &relay_secret.public(), room_id, node);
    expected.ct_eq(proof).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    #[test]
    fn proof_binds_everything() {
        let node = SecretKey::generate(&mut OsRng);
        let relay = SecretKey::generate(&mut OsRng);
        let (nonce, room) = ([1u8; 32], [2u8; 32]);
        let proof = prove(&node, &nonce, &relay.public(), &room).unwrap();
        assert!(verify(&relay, &nonce, &room, &node.public(), &proof));
        assert!(!verify(&relay, &[9; 32], &room, &node.public(), &proof));
        assert!(!verify(&relay, &nonce, &[9; 32], &node.public(), &proof));
        let other = SecretKey::generate(&mut OsRng);
        // Claiming another node's id with our own proof fails.
        assert!(!verify(&relay, &nonce, &room, &other.public(), &proof));
        let fresh_relay = SecretKey::generate(&mut OsRng);
        assert!(!verify(&fresh_relay, &nonce, &room, &node.public(), &proof));
    }

    #[test]
    fn weak_ids_never_verify() {
        let relay = SecretKey::generate(&mut OsRng);
        assert!(!verify(&relay, &[0; 32], &[0; 32], &NodeId::from_bytes([0; 32]), &[0; 32]));
        let node = SecretKey::generate(&mut OsRng);
        assert_eq!(prove(&node, &[0; 32], &NodeId::from_bytes([0; 32]), &[0; 32]), Err(WeakKey));
    }
}
