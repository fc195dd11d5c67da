//! tunnel-net: how a node reaches its peers.
//!
//! ```text
//!   node ──Endpoint (handle)──> router task ──> one PeerActor per present peer
//!                                   ▲               │ Noise sessions, streams, retransmits
//!                                   │ RelayEvent    ▼
//!                               RelayClient <── sealed packets (Send frames)
//!                               (WebSocket, reconnects)
//! ```
//!
//! Callers see peers and streams, never paths: today every packet goes through the relay;
//! a direct QUIC path will slot in under `PeerActor` without changing the `Endpoint` API.
#![forbid(unsafe_code)]

mod backoff;
mod endpoint;
mod error;
mod loopback;
mod peer;
mod relay_client;
mod sessions;
mod stream;

pub use endpoint::{Endpoint, EndpointConfig, NetEvent, RelayStatus};
pub use error::{ConnectError, NetError, StreamError};
pub use stream::{Stream, StreamReader, StreamWriter};
pub use tunnel_tls::{ClientTrust, Pin, TlsError};
