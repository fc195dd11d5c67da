//! tunnel-relay: WebSocket rooms that route ciphertext between peers.
//!
//! ```text
//! TcpListener ──accept──> conn task (one per connection; owns the WebSocket)
//!                            │ HTTP head: /healthz, /metrics, or upgrade to tunnel-relay.v1
//!                            │ Challenge -> Join (proof of node id) -> Welcome
//!                            │ Send{to} ──rewrite in place──> Recv{from} ──> mailbox of `to`
//!                            ▼
//!                         Rooms: room_id -> { node_id -> Mailbox }   (bounded in bytes)
//! ```
//!
//! The relay never sees a room token (only `room_id`, a hash of it) nor any plaintext: peer
//! payloads are Noise ciphertext it cannot open. Every queue is bounded in bytes: when the
//! destination's mailbox is full, the frame is dropped, counted, and the sender gets
//! `Dropped{to}`; the slow peer never holds anyone else up.
//!
//! Beside it, optionally, a STUN binding server on UDP (`stun`), which tells nodes their
//! public address for direct paths; it never amplifies and limits each source.
#![forbid(unsafe_code)]

mod config;
mod conn;
mod http;
mod limiter;
pub mod logging;
mod metrics;
mod rooms;
mod server;
mod stun;

pub use config::{Intercept, RelayConfig};
pub use metrics::{Metrics, Snapshot};
pub use server::{Relay, RelayError};
pub use stun::{StunServer, StunStats};
