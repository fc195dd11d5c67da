//! The node's connection to its relay: connect, prove the node id, then pass frames both ways
//! until the connection ends; reconnect with backoff (at once after `Restarting`).
//!
//! Outgoing frames come from a bounded queue of encoded `Send` frames; incoming frames become
//! [`RelayEvent`]s on a bounded channel (a slow consumer slows this reader, and the relay then
//! drops frames for us instead of buffering without bound).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{interval, timeout, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use tunnel_proto::relay::{self, ErrorCode, RelayFrame, Speaks, SUBPROTOCOL_OFFER};
use tunnel_proto::{join, NodeId, SecretKey};
use tunnel_tls::Io;

use crate::backoff;
use crate::error::ConnectError;

/// TCP, or TLS over TCP for `wss://`.
type Ws = WebSocketStream<Box<dyn Io>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const PING_EVERY: Duration = Duration::from_secs(15);
/// No frame at all from the relay for this long means the connection is dead.
const DEAD_AFTER: Duration = Duration::from_secs(45);

#[derive(Clone)]
pub(crate) struct RelayTarget {
    pub(crate) url: String,
    pub(crate) access_token: Option<String>,
    pub(crate) room_id: [u8; 32],
    pub(crate) secret: SecretKey,
    /// `url`, parsed once.
    pub(crate) parsed: RelayUrl,
    /// For `wss://` URLs: whom to trust.
    pub(crate) tls: Option<tunnel_tls::Connector>,
    /// Frames from the relay dropped because this node did not expect them.
    pub(crate) ignored: Arc<AtomicU64>,
}

#[derive(Debug)]
pub(crate) enum RelayEvent {
    Connected {
        peers: Vec<NodeId>,
        observed_addr: String,
        /// The relay's protocol version and features.
        relay: Speaks,
    },
    Disconnected {
        reason: String,
    },
    /// A connection attempt failed; `permanent` ones need a configuration change.
    ConnectFailed(ConnectError),
    PeerJoined(NodeId),
    PeerLeft(NodeId),
    Recv {
        from: NodeId,
        payload: Vec<u8>,
    },
    Dropped {
        to: NodeId,
    },
}

/// A relay URL, checked before any connection is tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelayUrl {
    pub(crate) tls: bool,
    /// Without the brackets of an IPv6 literal.
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl RelayUrl {
    pub(crate) fn parse(url: &str) -> Result<Self, ConnectError> {
        let bad = |reason: &str| ConnectError::BadUrl { url: url.to_owned(), reason: reason.to_owned() };
        let (tls, rest) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err(bad("must start with ws:// or wss://")),
        };
        if rest.split('/').next().unwrap_or_default().is_empty() {
            return Err(bad("no host"));
        }
        let request = url.into_client_request().map_err(|e| bad(&e.to_string()))?;
        let uri = request.uri();
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self { tls, host, port })
    }

    /// Plain WebSocket to another machine shows the access token and the frames' metadata
    /// to the network (peer traffic stays end-to-end encrypted).
    pub(crate) fn plain_over_network(&self) -> bool {
        let loopback =
            self.host == "localhost" || self.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        !self.tls && !loopback
    }
}

/// Runs until cancelled. Reports every state change on `events`.
pub(crate) async fn run(
    target: RelayTarget,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<RelayEvent>,
    cancel: CancellationToken,
) {
    let mut attempt: u32 = 0;
    loop {
        let connected = tokio::select! {
            _ = cancel.cancelled() => return,
            r = connect(&target) => r,
        };
        let wait = match connected {
            Ok(Joined { ws, peers, observed_addr, relay }) => {
                attempt = 0;
                info!(url = %target.url, peers = peers.len(), version = relay.version, "connected to relay");
                if events.send(RelayEvent::Connected { peers, observed_addr, relay }).await.is_err() {
                    return;
                }
                let end = pump(ws, &mut outgoing, &events, &target.ignored, &cancel).await;
                if cancel.is_cancelled() {
                    return;
                }
                let wait = match &end {
                    End::Restarting(hint) => *hint,
                    _ => backoff::delay(0),
                };
                warn!(reason = %end, "relay connection lost; reconnecting");
                if events.send(RelayEvent::Disconnected { reason: end.to_string() }).await.is_err() {
                    return;
                }
                wait
            }
            Err(e) => {
                debug!(error = %e, "relay connect failed");
                // Nothing answering at all is probed at a short cap (see `backoff`); a relay
                // that answers and refuses gets the full backoff.
                let wait = match &e {
                    ConnectError::Unreachable { .. } => backoff::probe_delay(attempt),
                    _ => backoff::delay(attempt),
                };
                attempt = attempt.saturating_add(1);
                if events.send(RelayEvent::ConnectFailed(e)).await.is_err() {
                    return;
                }
                wait
            }
        };
        // Frames queued while disconnected were sealed for sessions the relay would have
        // dropped anyway; streams retransmit and requests retry.
        while outgoing.try_recv().is_ok() {}
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// A connection that has joined the room.
struct Joined {
    ws: Ws,
    peers: Vec<NodeId>,
    observed_addr: String,
    relay: Speaks,
}

async fn connect(target: &RelayTarget) -> Result<Joined, ConnectError> {
    let url = &target.url;
    let secs = CONNECT_TIMEOUT.as_secs();
    timeout(CONNECT_TIMEOUT, connect_inner(target))
        .await
        .map_err(|_| ConnectError::Timeout { url: url.clone(), secs })?
}

/// TCP, then TLS for `wss://`, with every certificate problem named.
async fn open_transport(target: &RelayTarget) -> Result<Box<dyn Io>, ConnectError> {
    let (url, host) = (&target.url, &target.parsed.host);
    let tcp = TcpStream::connect((host.as_str(), target.parsed.port))
        .await
        .map_err(|e| ConnectError::Unreachable { url: url.clone(), reason: e.to_string() })?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &target.tls else { return Ok(Box::new(tcp)) };
    tls.connect(host, tcp).await.map_err(|reason| ConnectError::Tls { url: url.clone(), reason })
}

async fn connect_inner(target: &RelayTarget) -> Result<Joined, ConnectError> {
    let url = target.url.clone();
    let mut request = room_url(&url, &target.room_id)
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::BadUrl { url: url.clone(), reason: e.to_string() })?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(SUBPROTOCOL_OFFER));
    if let Some(token) = &target.access_token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ConnectError::BadUrl {
            url: url.clone(),
            reason: "access token has characters not allowed in a header".into(),
        })?;
        request.headers_mut().insert("Authorization", value);
    }
    let config = WebSocketConfig {
        max_message_size: Some(relay::MAX_FRAME),
        max_frame_size: Some(relay::MAX_FRAME),
        write_buffer_size: 0,
        ..Default::default()
    };
    let transport = open_transport(target).await?;
    let (mut ws, response) =
        tokio_tungstenite::client_async_with_config(request, transport, Some(config)).await.map_err(|e| match e {
            tungstenite::Error::Http(resp) if resp.status().as_u16() == 401 => {
                ConnectError::AccessDenied { url: url.clone() }
            }
            tungstenite::Error::Http(resp) => ConnectError::Http {
                url: url.clone(),
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(b).trim().chars().take(200).collect())
                    .unwrap_or_default(),
            },
            tungstenite::Error::Url(e) => ConnectError::BadUrl { url: url.clone(), reason: e.to_string() },
            other => ConnectError::Unreachable { url: url.clone(), reason: other.to_string() },
        })?;
    let protocol = |reason: String| ConnectError::Protocol { url: url.clone(), reason };
    // The relay answers with the newest subprotocol of our offer it speaks; that decides the
    // join frames' layout. A relay that names none predates versions: v1.
    let agreed = match response.headers().get("Sec-WebSocket-Protocol").map(|v| v.to_str().unwrap_or("?")) {
        None => Speaks::V1,
        Some(p) => Speaks::for_subprotocol(p)
            .ok_or_else(|| protocol(format!("relay chose subprotocol {p:?}, which this node does not speak")))?,
    };
    let (nonce, relay_key, relay) = match next_frame(&mut ws).await.map_err(protocol)? {
        RelayFrame::Challenge { nonce, relay_key, speaks } => (nonce, relay_key, speaks),
        other => return Err(protocol(format!("expected Challenge, got {}", other.name()))),
    };
    let proof =
        join::prove(&target.secret, &nonce, &relay_key, &target.room_id).map_err(|e| protocol(e.to_string()))?;
    let speaks = if agreed.version >= 2 { Speaks::THIS } else { Speaks::V1 };
    let join = RelayFrame::Join { room_id: target.room_id, node_id: target.secret.public(), proof, speaks };
    ws.send(Message::Binary(join.encode())).await.map_err(|e| protocol(e.to_string()))?;
    match next_frame(&mut ws).await.map_err(protocol)? {
        RelayFrame::Welcome { peers, observed_addr } => Ok(Joined { ws, peers, observed_addr, relay }),
        RelayFrame::Error { code, text } => Err(ConnectError::Refused { url, reason: format!("{text} ({code:?})") }),
        other => Err(protocol(format!("expected Welcome, got {}", other.name()))),
    }
}

/// The relay URL with the room's path (`/r/<room id>`) in place of whatever path it had.
fn room_url(base: &str, room_id: &[u8; 32]) -> String {
    let (scheme, rest) = base.split_once("://").unwrap_or(("ws", base));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    format!("{scheme}://{authority}{}", relay::room_path(room_id))
}

async fn next_frame(ws: &mut Ws) -> Result<RelayFrame, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => return RelayFrame::decode(&b).map_err(|e| e.to_string()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => return Err(format!("unexpected WebSocket message {other:?}")),
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("connection closed".into()),
        }
    }
}

enum End {
    Restarting(Duration),
    Closed(String),
    Dead,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Restarting(d) => {
                write!(f, "relay restarting (reconnect in {} ms)", d.as_millis())
            }
            Self::Closed(why) => f.write_str(why),
            Self::Dead => write!(f, "no traffic from the relay for {} s", DEAD_AFTER.as_secs()),
        }
    }
}

/// Moves frames both ways until the connection ends. Reading and writing are separate
/// loops: a reader waiting for the node to take an event must never stop the writer, or the
/// node (waiting to send) and this task (waiting to deliver) would wait on each other.
async fn pump(
    ws: Ws,
    outgoing: &mut mpsc::Receiver<Vec<u8>>,
    events: &mpsc::Sender<RelayEvent>,
    ignored: &AtomicU64,
    cancel: &CancellationToken,
) -> End {
    let (mut sink, mut stream) = ws.split();
    let mut ignore_log = RateLimitedLog::new(Duration::from_secs(10));
    let start = Instant::now();
    let last_rx_ms = AtomicU64::new(0);
    let read = async {
        // The relay's last `Error`: the reason, should it close the connection next.
        let mut notice: Option<String> = None;
        let closed =
            |notice: &Option<String>, what: &str| End::Closed(notice.clone().unwrap_or_else(|| what.to_owned()));
        loop {
            let msg = stream.next().await;
            last_rx_ms.store(start.elapsed().as_millis() as u64, Relaxed);
            let bytes = match msg {
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(Message::Close(_))) | None => return closed(&notice, "relay closed the connection"),
                Some(Ok(_)) => {
                    ignored.fetch_add(1, Relaxed);
                    ignore_log.note(|n| warn!(count = n, "ignored WebSocket text frames from the relay"));
                    continue;
                }
                Some(Err(e)) => return closed(&notice, &e.to_string()),
            };
            let event = match RelayFrame::decode(&bytes) {
                Ok(RelayFrame::Recv { from, payload }) => RelayEvent::Recv { from, payload },
                Ok(RelayFrame::PeerJoined { node_id }) => RelayEvent::PeerJoined(node_id),
                Ok(RelayFrame::PeerLeft { node_id }) => RelayEvent::PeerLeft(node_id),
                Ok(RelayFrame::Dropped { to }) => RelayEvent::Dropped { to },
                Ok(RelayFrame::Pong { .. } | RelayFrame::Ping { .. }) => continue,
                Ok(RelayFrame::Restarting { reconnect_in_ms }) => {
                    return End::Restarting(Duration::from_millis(u64::from(reconnect_in_ms).min(30_000)));
                }
                // A notice: the relay closes the connection itself when it means to end it.
                Ok(RelayFrame::Error { code, text }) => {
                    if code == ErrorCode::Replaced {
                        warn!("another process joined the relay with this node's key; this one was disconnected");
                    } else {
                        ignore_log.note(|n| warn!(count = n, ?code, %text, "the relay refused a frame"));
                    }
                    notice = Some(format!("relay error {code:?}: {text}"));
                    continue;
                }
                // A relay bug, a middlebox, or a newer relay: never a reason to leave the room.
                Ok(other) => {
                    ignored.fetch_add(1, Relaxed);
                    let what = other.name();
                    ignore_log.note(|n| warn!(count = n, last = what, "ignored frames the relay should not send"));
                    continue;
                }
                Err(e) => {
                    ignored.fetch_add(1, Relaxed);
                    ignore_log
                        .note(|n| warn!(count = n, last = %e, "ignored frames from the relay this node cannot read"));
                    continue;
                }
            };
            if events.send(event).await.is_err() {
                return End::Closed("node stopped".into());
            }
        }
    };
    let write = async {
        let mut ping = interval(PING_EVERY);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ping_seq = 0u64;
        loop {
            tokio::select! {
                frame = outgoing.recv() => {
                    let Some(frame) = frame else { return End::Closed("node stopped".into()) };
                    if let Err(e) = sink.send(Message::Binary(frame)).await {
                        return End::Closed(e.to_string());
                    }
                }
                _ = ping.tick() => {
                    let idle = start.elapsed().saturating_sub(Duration::from_millis(last_rx_ms.load(Relaxed)));
                    if idle > DEAD_AFTER {
                        return End::Dead;
                    }
                    ping_seq += 1;
                    if let Err(e) = sink.send(Message::Binary(RelayFrame::Ping { data: ping_seq }.encode())).await {
                        return End::Closed(e.to_string());
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = cancel.cancelled() => End::Closed("node shutting down".into()),
        end = read => end,
        end = write => end,
    }
}

/// Logs a recurring event at most once per period, with how many happened since the last line.
struct RateLimitedLog {
    every: Duration,
    last: Option<Instant>,
    unlogged: u64,
}

impl RateLimitedLog {
    fn new(every: Duration) -> Self {
        Self { every, last: None, unlogged: 0 }
    }

    fn note(&mut self, log: impl FnOnce(u64)) {
        self.unlogged += 1;
        if self.last.is_none_or(|t| t.elapsed() >= self.every) {
            log(self.unlogged);
            self.unlogged = 0;
            self.last = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_room_path_replaces_the_urls_path() {
        let id = [0xab; 32];
        let hex = "ab".repeat(32);
        for base in ["ws://h:1", "ws://h:1/", "ws://h:1/old/path?x=1"] {
            assert_eq!(room_url(base, &id), format!("ws://h:1/r/{hex}"), "{base}");
        }
        assert_eq!(room_url("wss://[::1]:443", &id), format!("wss://[::1]:443/r/{hex}"));
    }

    #[test]
    fn urls_are_checked_with_clear_reasons() {
        let ok = |url: &str| RelayUrl::parse(url).unwrap();
        assert_eq!(ok("ws://127.0.0.1:8080"), RelayUrl { tls: false, host: "127.0.0.1".into(), port: 8080 });
        assert_eq!(ok("wss://relay.example/x"), RelayUrl { tls: true, host: "relay.example".into(), port: 443 });
        assert_eq!(ok("wss://[::1]:9").host, "::1");
        for (url, needle) in [("http://x", "ws://"), ("ws://", "no host"), ("relay:8080", "ws://")] {
            let err = RelayUrl::parse(url).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn plain_websocket_is_flagged_only_off_this_machine() {
        for (url, flagged) in [
            ("ws://127.0.0.1:1", false),
            ("ws://localhost:1", false),
            ("ws://[::1]:1", false),
            ("ws://10.0.0.1:1", true),
            ("ws://relay.example", true),
            ("wss://relay.example", false),
        ] {
            assert_eq!(RelayUrl::parse(url).unwrap().plain_over_network(), flagged, "{url}");
        }
    }
}
