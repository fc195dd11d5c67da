use std::sync::Arc;

use std::time::Duration;
use tunnel_proto::NodeId;

/// Limits and options of one relay. `Default` suits a public relay on a small machine.
#[derive(Clone)]
pub struct RelayConfig {
    /// When set, WebSocket upgrades must carry `Authorization: Bearer <token>`.
    pub access_token: Option<String>,
    /// Largest peer payload accepted in a `Send`.
    pub max_payload: usize,
    /// Bytes that may wait in one connection's outgoing mailbox before frames to it drop.
    pub mailbox_bytes: usize,
    /// Sustained bytes per second one connection may send (token bucket refill).
    pub rate_bytes_per_sec: u64,
    /// Token bucket size: the burst a connection may send at once.
    pub rate_burst_bytes: u64,
    pub max_peers_per_room: usize,
    pub max_connections: usize,
    /// Time allowed from TCP accept to a verified `Join`.
    pub handshake_timeout: Duration,
    /// A connection that sends nothing (not even a ping) for this long is closed.
    pub idle_timeout: Duration,
    /// Told to peers in `Restarting` on graceful shutdown.
    pub reconnect_hint: Duration,
    /// Serve TLS (`wss://`) with this certificate; `None`: plain, for use behind a proxy
    /// that terminates TLS.
    pub tls: Option<Arc<tunnel_tls::ServerTls>>,
    /// The newest relay protocol version this relay agrees to (see `tunnel_proto::relay`).
    /// 1 makes it answer every node as a v1 relay did (for staged rollouts and tests of old
    /// and new pairings).
    pub newest_protocol: u16,
    /// Test hook; `None` in production.
    pub intercept: Option<Arc<dyn Intercept>>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            access_token: None,
            newest_protocol: tunnel_proto::relay::Speaks::THIS.version,
            max_payload: tunnel_proto::relay::MAX_PAYLOAD,
            mailbox_bytes: 4 * 1024 * 1024,
            // About 8.6 Gbit/s: a cap on one peer hogging a fast relay, not a throttle on
            // forwarded bulk traffic (a 256 MiB/s cap halved port-forward throughput).
            rate_bytes_per_sec: 1024 * 1024 * 1024,
            rate_burst_bytes: 32 * 1024 * 1024,
            max_peers_per_room: 4096,
            max_connections: 100_000,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            reconnect_hint: Duration::from_millis(250),
            tls: None,
            intercept: None,
        }
    }
}

impl std::fmt::Debug for RelayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayConfig")
            .field("access_token", &self.access_token.as_ref().map(|_| ".."))
            .field("max_payload", &self.max_payload)
            .field("mailbox_bytes", &self.mailbox_bytes)
            .field("rate_bytes_per_sec", &self.rate_bytes_per_sec)
            .field("max_peers_per_room", &self.max_peers_per_room)
            .field("max_connections", &self.max_connections)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A look inside the relay, for tests: what it receives and what it forwards. Production
/// relays have none. Tests build a relay that records every byte it could read (to prove it
/// never sees plaintext) or a hostile relay that tampers with traffic.
pub trait Intercept: Send + Sync + 'static {
    /// Every WebSocket message payload the relay receives, and every HTTP request head.
    fn received(&self, _bytes: &[u8]) {}

    /// What to deliver for one `Send` from `from` to `to`: a list of (deliver to, stamped
    /// source, payload). The default delivers it unchanged.
    fn forward(&self, from: NodeId, to: NodeId, payload: Vec<u8>) -> Vec<(NodeId, NodeId, Vec<u8>)> {
        vec![(to, from, payload)]
    }
}
