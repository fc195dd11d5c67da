//! Peer packets: what one node puts in a relay `Send` payload (or a direct-path datagram)
//! for another. Handshake messages travel in the clear (they protect themselves); everything
//! else is a transport packet sealed by a [`crate::session::Session`].
//!
//! | type | packet        | fields (big-endian)                                  |
//! |------|---------------|------------------------------------------------------|
//! | 0x01 | HandshakeInit | sender index `u32`, Noise message 1                   |
//! | 0x02 | HandshakeResp | sender index `u32`, receiver index `u32`, Noise msg 2 |
//! | 0x03 | Transport     | receiver index `u32`, counter `u64`, AES-GCM ciphertext + tag |
//! | 0x04 | Reject        | receiver index `u32`, reason `u8`                     |
//!
//! Indexes name a session on the receiving side, so a rekey can overlap the old session.
//! `Reject` is an unauthenticated hint ("your handshake failed here") that lets the initiator
//! report a room token mismatch at once instead of timing out; it never changes any state
//! beyond ending a pending handshake.

pub const TYPE_HANDSHAKE_INIT: u8 = 0x01;
pub const TYPE_HANDSHAKE_RESP: u8 = 0x02;
pub const TYPE_TRANSPORT: u8 = 0x03;
pub const TYPE_REJECT: u8 = 0x04;
/// Bytes of a transport packet before the ciphertext; also its AEAD associated data.
pub const TRANSPORT_HEADER_LEN: usize = 1 + 4 + 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The handshake did not authenticate (wrong room token, or altered in transit).
    HandshakeFailed,
    /// The responder does not accept sessions from this node.
    NotAllowed,
    /// The source the relay stamped differs from the key in the handshake.
    IdentityMismatch,
    /// A transport packet named a session the receiver does not have (it lost its state,
    /// for instance by leaving and rejoining the room). `receiver` then carries the unknown
    /// index, which is the sender's remote index for that session.
    UnknownSession,
    Unknown(u8),
}

impl RejectReason {
    fn to_u8(self) -> u8 {
        match self {
            Self::HandshakeFailed => 1,
            Self::NotAllowed => 2,
            Self::IdentityMismatch => 3,
            Self::UnknownSession => 4,
            Self::Unknown(v) => v,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::HandshakeFailed,
            2 => Self::NotAllowed,
            3 => Self::IdentityMismatch,
            4 => Self::UnknownSession,
            v => Self::Unknown(v),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    HandshakeInit {
        sender: u32,
        noise: &'a [u8],
    },
    HandshakeResp {
        sender: u32,
        receiver: u32,
        noise: &'a [u8],
    },
    /// `header` is the first [`TRANSPORT_HEADER_LEN`] bytes, authenticated as associated data.
    Transport {
        receiver: u32,
        counter: u64,
        header: &'a [u8],
        ciphertext: &'a [u8],
    },
    Reject {
        receiver: u32,
        reason: RejectReason,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum PacketError {
    #[error("empty peer packet")]
    Empty,
    #[error("unknown peer packet type 0x{0:02x}")]
    UnknownType(u8),
    #[error("peer packet of type 0x{ty:02x} truncated ({len} bytes)")]
    Truncated { ty: u8, len: usize },
    #[error("reject packet has trailing bytes")]
    Trailing,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl<'a> Packet<'a> {
    pub fn parse(b: &'a [u8]) -> Result<Self, PacketError> {
        let ty = *b.first().ok_or(PacketError::Empty)?;
        let min = match ty {
            TYPE_HANDSHAKE_INIT => 5,
            TYPE_HANDSHAKE_RESP => 9,
            TYPE_TRANSPORT => TRANSPORT_HEADER_LEN + 16,
            TYPE_REJECT => 6,
            other => return Err(PacketError::UnknownType(other)),
        };
        if b.len() < min {
            return Err(PacketError::Truncated { ty, len: b.len() });
        }
        Ok(match ty {
            TYPE_HANDSHAKE_INIT => Self::HandshakeInit { sender: u32_at(b, 1), noise: &b[5..] },
            TYPE_HANDSHAKE_RESP => Self::HandshakeResp { sender: u32_at(b, 1), receiver: u32_at(b, 5), noise: &b[9..] },
            TYPE_TRANSPORT => Self::Transport {
                receiver: u32_at(b, 1),
                counter: u64::from_be_bytes(b[5..13].try_into().expect("8 bytes")),
                header: &b[..TRANSPORT_HEADER_LEN],
                ciphertext: &b[TRANSPORT_HEADER_LEN..],
            },
            _ => {
                if b.len() != 6 {
                    return Err(PacketError::Trailing);
                }
                Self::Reject { receiver: u32_at(b, 1), reason: RejectReason::from_u8(b[5]) }
            }
        })
    }
}

pub fn handshake_init(sender: u32, noise: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + noise.len());
    out.push(TYPE_HANDSHAKE_INIT);
    out.extend_from_slice(&sender.to_be_bytes());
    out.extend_from_slice(noise);
    out
}

pub fn handshake_resp(sender: u32, receiver: u32, noise: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + noise.len());
    out.push(TYPE_HANDSHAKE_RESP);
    out.extend_from_slice(&sender.to_be_bytes());
    out.extend_from_slice(&receiver.to_be_bytes());
    out.extend_from_slice(noise);
    out
}

pub fn reject(receiver: u32, reason: RejectReason) -> Vec<u8> {
    let mut out = vec![TYPE_REJECT];
    out.extend_from_slice(&receiver.to_be_bytes());
    out.push(reason.to_u8());
    out
}
