//! tunnel-net: how a node reaches its peers.
//!
//! ```text
//!   node ──Endpoint (handle)──> router task ──> one PeerActor per present peer
//!                                   ▲               │ Noise sessions, streams, retransmits
//!                                   │ RelayEvent    ▼
//!                               RelayClient <── sealed packets (Send frames)
//!                               (WebSocket, reconnects)
//!
//!                         PeerActor ⇄ direct QUIC links (direct/): one UDP socket per node,
//!                                     candidates, dials, the link in use
//! ```
//!
//! Callers see peers and streams, never paths: a peer actor sends on its direct link when one
//! is up and through the relay otherwise, and its streams carry their own offsets and acks,
//! so a path change loses and repeats nothing.
#![forbid(unsafe_code)]

mod backoff;
mod direct;
mod endpoint;
mod error;
mod loopback;
mod peer;
mod relay_client;
mod sessions;
mod stream;

pub use direct::{DirectConfig, DirectMode, DirectPath, UdpSwitch};
pub use endpoint::{Endpoint, EndpointConfig, NetEvent, PeerPath, RelayStatus, PEER_IDLE_DEFAULT};
pub use error::{ConnectError, NetError, StreamError};
pub use stream::{Stream, StreamReader, StreamWriter};
pub use tunnel_tls::{ClientTrust, Pin, TlsError};
