//! Room secrets. The token never leaves the node: the relay sees only `room_id`, and the Noise
//! handshakes mix in `psk`, both derived with HKDF-SHA256 under distinct labels.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Shortest room token accepted. The relay sees `room_id`, a hash of the token, and could
/// guess short tokens offline; `tunnel token` makes 32 random bytes.
pub const MIN_TOKEN_LEN: usize = 16;

const SALT: &[u8] = b"tunnel room v1";
const ROOM_ID_LABEL: &[u8] = b"tunnel/relay-room-id/v1";
const PSK_LABEL: &[u8] = b"tunnel/noise-psk/v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoomError {
    #[error("room token is too short ({len} characters; need at least {MIN_TOKEN_LEN}): make one with `tunnel token`")]
    TokenTooShort { len: usize },
    #[error("room name is empty")]
    EmptyName,
}

/// A new random room token: 32 bytes from `rng`, as 52 base32 characters.
pub fn generate_token<R: rand::RngCore + rand::CryptoRng>(rng: &mut R) -> String {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(bytes.as_mut());
    crate::base32::encode(bytes.as_ref())
}

/// What a room token gives a node.
pub struct RoomKeys {
    /// What the relay routes by; reveals nothing usable about the token.
    pub room_id: [u8; 32],
    /// Noise pre-shared key: only token holders complete a handshake.
    pub psk: Zeroizing<[u8; 32]>,
}

impl RoomKeys {
    pub fn derive(room_name: &str, token: &str) -> Result<Self, RoomError> {
        if room_name.is_empty() {
            return Err(RoomError::EmptyName);
        }
        if token.chars().count() < MIN_TOKEN_LEN {
            return Err(RoomError::TokenTooShort { len: token.chars().count() });
        }
        let hk = Hkdf::<Sha256>::new(Some(SALT), token.as_bytes());
        let mut room_id = [0u8; 32];
        let mut psk = Zeroizing::new([0u8; 32]);
        let expand = |label: &[u8], out: &mut [u8; 32]| {
            let info = [label, b"\0", room_name.as_bytes()].concat();
            hk.expand(&info, out).expect("32 bytes is a valid HKDF-SHA256 length");
        };
        expand(ROOM_ID_LABEL, &mut room_id);
        expand(PSK_LABEL, &mut psk);
        Ok(Self { room_id, psk })
    }
}

impl std::fmt::Debug for RoomKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomKeys").field("room_id", &"..").field("psk", &"..").finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivations_are_distinct_and_bound_to_name_and_token() {
        let a = RoomKeys::derive("ops", "0123456789abcdef").unwrap();
        let b = RoomKeys::derive("ops", "0123456789abcdeX").unwrap();
        let c = RoomKeys::derive("ops2", "0123456789abcdef").unwrap();
        assert_ne!(a.room_id, *a.psk);
        assert_ne!(a.room_id, b.room_id);
        assert_ne!(a.room_id, c.room_id);
        assert_ne!(*a.psk, *b.psk);
        let again = RoomKeys::derive("ops", "0123456789abcdef").unwrap();
        assert_eq!(a.room_id, again.room_id);
    }

    #[test]
    fn token_is_not_in_room_id() {
        let token = "0123456789abcdef0123";
        let keys = RoomKeys::derive("ops", token).unwrap();
        assert!(!keys.room_id.windows(4).any(|w| token.as_bytes().windows(4).any(|t| t == w)));
        assert!(!format!("{keys:?}").contains(token));
    }

    #[test]
    fn generated_tokens_are_long_and_distinct() {
        let a = generate_token(&mut rand::rngs::OsRng);
        assert_eq!(a.len(), 52);
        assert_ne!(a, generate_token(&mut rand::rngs::OsRng));
        assert!(RoomKeys::derive("r", &a).is_ok());
    }

    #[test]
    fn short_tokens_are_refused_clearly() {
        let err = RoomKeys::derive("ops", "short").unwrap_err();
        assert_eq!(err, RoomError::TokenTooShort { len: 5 });
        assert!(err.to_string().contains("tunnel token"));
    }
}
