//! tunnel-proto: everything two tunnel programs must agree on, with no I/O.
//!
//! Data flow, outermost first:
//!
//! ```text
//! WebSocket message  = one RelayFrame            (relay.rs: fixed binary layout)
//!   Send/Recv payload = one Packet               (packet.rs: handshake or transport)
//!     Transport plaintext = one PeerMessage      (message.rs: postcard)
//! ```
//!
//! Identities (`keys`), room secrets (`room`), the relay join proof (`join`), the Noise
//! handshake (`noise`) and transport sessions (`session`, `replay`) live here too. Nothing in
//! this crate reads a clock, a socket or a file: callers pass in bytes, `Instant`s and RNGs.
#![forbid(unsafe_code)]

mod base32;
pub mod forward;
pub mod framing;
pub mod job;
pub mod join;
pub mod keys;
pub mod message;
pub mod noise;
pub mod packet;
pub mod relay;
pub mod replay;
pub mod room;
pub mod schedule;
pub mod session;
pub mod stun;
mod wire_bytes;

pub use keys::{NodeId, ParseNodeIdError, SecretKey};
pub use room::RoomKeys;

/// Version of the peer message protocol, sent in every `Hello`.
pub const PROTOCOL_VERSION: u32 = 2;
