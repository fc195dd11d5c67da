//! Direct paths: QUIC between two peers over UDP, punched through NAT, the relay kept as the
//! meeting place and the fallback.
//!
//! ```text
//!  Direct (one per endpoint)                      PathState (one per peer actor)
//!   one UDP socket ── PathSocket ── quinn          offers ⇄ peer (inside Noise, via relay)
//!   candidates: interfaces + STUN                  dials every candidate of the peer at once
//!   accepts dialers that name a peer whose         Links: the live QUIC connections; the
//!   announced certificate they present             actor sends on the preferred one
//! ```
//!
//! Both peers dial each other at once (each dial's packets open its own NAT for the other's),
//! and the listener answers from whatever address a dial came from (the peer-reflexive
//! address), which is what gets a symmetric NAT through to a cone. A path is used only after
//! its certificate matches the hash the peer announced through Noise.

mod candidates;
mod link;
mod path;
mod socket;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::VarInt;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::debug;
use tunnel_proto::message::{Candidate, PathOffer};
use tunnel_proto::NodeId;

pub(crate) use link::{Opened, HEADROOM as LINK_HEADROOM};
pub(crate) use path::{PathEvent, PathState};
pub use socket::UdpSwitch;
use tls::{Fingerprint, LocalCert};

/// When a path that stopped answering is given up: keepalives every second, so four missed
/// in a row. Fallback to the relay follows at once.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
const KEEPALIVE: Duration = Duration::from_secs(1);
/// A dial to all of a peer's candidates gives up after this.
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes from dialers in progress at once; more are refused (strangers can knock).
const MAX_PENDING_ACCEPTS: usize = 64;
/// How long a dialer may take to name itself, and we wait for its offer to arrive by relay.
const NAME_WAIT: Duration = Duration::from_secs(3);
/// The largest datagram we take, and the ceiling of path MTU discovery: packets as large as
/// the path allows (jumbo frames on a LAN, 64 KiB on loopback) cost far less CPU per byte
/// than 1,452-byte ones; on an ordinary internet path discovery settles near 1,452 anyway.
const MAX_UDP_PAYLOAD: u16 = 65_527;
/// Bytes of UDP socket buffer asked for, each way.
const SOCKET_BUFFER: usize = 8 << 20;

/// Whether to use direct paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DirectMode {
    /// Direct when it can be had, the relay otherwise (and while it is being set up).
    #[default]
    Auto,
    /// Never open a UDP socket: everything through the relay.
    RelayOnly,
    /// Peer traffic only over direct paths; the relay carries signalling only. A peer that
    /// cannot be reached directly is an error.
    DirectOnly,
}

impl std::str::FromStr for DirectMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "relay-only" => Ok(Self::RelayOnly),
            "direct-only" => Ok(Self::DirectOnly),
            other => Err(format!("direct must be auto, relay-only or direct-only, not {other:?}")),
        }
    }
}

impl std::fmt::Display for DirectMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::RelayOnly => "relay-only",
            Self::DirectOnly => "direct-only",
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct DirectConfig {
    pub mode: DirectMode,
    /// Local UDP port; 0 picks any.
    pub udp_port: u16,
    /// STUN servers (`host:port`); empty means the relay's host on port 3478.
    pub stun: Vec<String>,
    /// Drops all UDP while on (tests, drills).
    pub switch: UdpSwitch,
}

/// The direct path to one peer, as `tunnel peers` shows it.
#[derive(Debug, Clone)]
pub struct DirectPath {
    pub addr: SocketAddr,
    pub rtt: Duration,
}

/// What the endpoint knows about each peer's direct path: the live connection, or why
/// there is none.
#[derive(Default)]
pub(crate) struct PathTable(Mutex<HashMap<NodeId, PathEntry>>);

#[derive(Default, Clone)]
pub(crate) struct PathEntry {
    pub(crate) conn: Option<quinn::Connection>,
    pub(crate) note: Option<String>,
}

impl PathTable {
    pub(crate) fn set(&self, peer: NodeId, entry: PathEntry) {
        self.0.lock().expect("path table lock").insert(peer, entry);
    }

    pub(crate) fn forget(&self, peer: &NodeId) {
        self.0.lock().expect("path table lock").remove(peer);
    }

    pub(crate) fn get(&self, peer: &NodeId) -> (Option<DirectPath>, Option<String>) {
        let table = self.0.lock().expect("path table lock");
        let Some(entry) = table.get(peer) else { return (None, None) };
        let path = entry.conn.as_ref().map(|c| DirectPath { addr: c.remote_address(), rtt: c.rtt() });
        (path, entry.note.clone())
    }
}

/// A dialer that proved who it is, for its peer's actor.
pub(crate) struct Accepted {
    pub(crate) peer: NodeId,
    pub(crate) opened: Opened,
}

/// The endpoint's direct-path machinery: the socket, the QUIC endpoint and the candidates.
pub(crate) struct Direct {
    pub(crate) id: NodeId,
    pub(crate) mode: DirectMode,
    endpoint: quinn::Endpoint,
    cert: LocalCert,
    transport: Arc<quinn::TransportConfig>,
    candidates: watch::Receiver<Vec<Candidate>>,
    /// The certificate hash each peer announced through Noise: who may dial us as whom.
    announced: Mutex<HashMap<NodeId, Fingerprint>>,
    announced_changed: Notify,
    pub(crate) table: PathTable,
}

impl Direct {
    /// Binds the socket and starts accepting and gathering; `relay_host` names the default
    /// STUN server. Returns the tasks to keep alive.
    pub(crate) fn start(
        config: &DirectConfig,
        id: NodeId,
        relay_host: Option<&str>,
        accepted: mpsc::Sender<Accepted>,
        cancel: &CancellationToken,
    ) -> Result<(Arc<Self>, Vec<AbortOnDropHandle<()>>), String> {
        let udp = std::net::UdpSocket::bind(("0.0.0.0", config.udp_port))
            .map_err(|e| format!("cannot open UDP port {} for direct paths: {e}", config.udp_port))?;
        // The default (about 200 KiB) overflows under a fast transfer, and every datagram the
        // kernel drops there costs a QUIC loss recovery. The kernel caps this at rmem_max.
        for (what, result) in [
            ("receive", nix::sys::socket::setsockopt(&udp, nix::sys::socket::sockopt::RcvBuf, &SOCKET_BUFFER)),
            ("send", nix::sys::socket::setsockopt(&udp, nix::sys::socket::sockopt::SndBuf, &SOCKET_BUFFER)),
        ] {
            if let Err(e) = result {
                debug!(error = %e, "could not enlarge the UDP {what} buffer");
            }
        }
        let runtime: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
        let inner = runtime.wrap_udp_socket(udp).map_err(|e| format!("UDP socket: {e}"))?;
        let (socket, stun_replies) = socket::PathSocket::new(inner, config.switch.clone());
        let port = quinn::AsyncUdpSocket::local_addr(&*socket).map_err(|e| format!("UDP socket: {e}"))?.port();
        let cert = LocalCert::generate()?;
        let transport = Arc::new(transport());
        let server = cert.server_config(transport.clone())?;
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config.max_udp_payload_size(MAX_UDP_PAYLOAD).expect("a valid payload size");
        let endpoint =
            quinn::Endpoint::new_with_abstract_socket(endpoint_config, Some(server), socket.clone(), runtime)
                .map_err(|e| format!("QUIC endpoint: {e}"))?;
        let servers = if config.stun.is_empty() {
            relay_host.map(|h| vec![stun_default(h)]).unwrap_or_default()
        } else {
            config.stun.clone()
        };
        let (publish, candidates) = watch::channel(candidates::merge(&candidates::host(port), &[]));
        let direct = Arc::new(Self {
            id,
            mode: config.mode,
            endpoint,
            cert,
            transport,
            candidates,
            announced: Mutex::new(HashMap::new()),
            announced_changed: Notify::new(),
            table: PathTable::default(),
        });
        debug!(port, mode = %config.mode, "direct paths: listening on UDP");
        let tasks = vec![
            AbortOnDropHandle::new(tokio::spawn(candidates::keep_fresh(
                socket,
                port,
                servers,
                stun_replies,
                publish,
                cancel.clone(),
            ))),
            AbortOnDropHandle::new(tokio::spawn(accept_loop(direct.clone(), accepted, cancel.clone()))),
        ];
        Ok((direct, tasks))
    }

    pub(crate) fn local_port(&self) -> Option<u16> {
        self.endpoint.local_addr().ok().map(|a| a.port())
    }

    /// This node's offer as it stands now.
    pub(crate) fn offer(&self, reply: bool) -> PathOffer {
        let candidates = if self.mode == DirectMode::RelayOnly { vec![] } else { self.candidates.borrow().clone() };
        PathOffer { fingerprint: self.cert.fingerprint, candidates, reply }
    }

    /// Changes when the candidates do: a peer actor re-offers then.
    pub(crate) fn watch_candidates(&self) -> watch::Receiver<Vec<Candidate>> {
        self.candidates.clone()
    }

    /// Our own host addresses, to tell whether a peer is on this machine.
    pub(crate) fn host_ips(&self) -> Vec<std::net::IpAddr> {
        self.candidates
            .borrow()
            .iter()
            .filter(|c| c.kind == tunnel_proto::message::CandidateKind::Host)
            .map(|c| c.addr.ip())
            .collect()
    }

    pub(crate) fn announce(&self, peer: NodeId, fingerprint: Fingerprint) {
        self.announced.lock().expect("announced lock").insert(peer, fingerprint);
        self.announced_changed.notify_waiters();
    }

    pub(crate) fn forget(&self, peer: &NodeId) {
        self.announced.lock().expect("announced lock").remove(peer);
        self.table.forget(peer);
    }

    /// Dials every address at once; the first handshake to complete with the certificate
    /// `pin` wins, and only on that connection do we name ourselves and wait to be admitted
    /// (the others are dropped unnamed, so the listener never holds a duplicate path). The
    /// error says what each address did.
    pub(crate) async fn dial(&self, addrs: Vec<SocketAddr>, pin: Fingerprint) -> Result<Opened, String> {
        use futures_util::stream::{FuturesUnordered, StreamExt};
        let config = self.cert.client_config(pin, self.transport.clone())?;
        let mut dials: FuturesUnordered<_> = addrs
            .iter()
            .map(|&addr| {
                let config = config.clone();
                async move {
                    let connecting =
                        self.endpoint.connect_with(config, addr, "tunnel").map_err(|e| (addr, e.to_string()))?;
                    connecting.await.map_err(|e| (addr, describe(&e)))
                }
            })
            .collect();
        let mut errors = Vec::new();
        let first = async {
            while let Some(result) = dials.next().await {
                match result {
                    Ok(conn) => return Some(conn),
                    Err((addr, e)) => errors.push(format!("{addr}: {e}")),
                }
            }
            None
        };
        let conn = match tokio::time::timeout(DIAL_TIMEOUT, first).await {
            Ok(Some(conn)) => conn,
            Ok(None) => return Err(format!("no candidate answered ({})", errors.join("; "))),
            Err(_) => {
                return Err(format!(
                    "no answer from {} within {}s{}",
                    addrs.iter().map(SocketAddr::to_string).collect::<Vec<_>>().join(", "),
                    DIAL_TIMEOUT.as_secs(),
                    if errors.is_empty() { String::new() } else { format!(" ({})", errors.join("; ")) }
                ))
            }
        };
        drop(dials);
        let admitted = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| describe(&e))?;
            link::name_ourselves(&mut send, &self.id).await?;
            link::wait_admitted(&mut recv).await.map_err(|e| {
                // The listener's close says why it refused (a pin mismatch, say).
                conn.close_reason().map_or(e, |r| format!("the peer did not admit the path: {r}"))
            })?;
            Ok::<_, String>((send, recv))
        };
        let remote = conn.remote_address();
        match tokio::time::timeout(NAME_WAIT + IDLE_TIMEOUT, admitted).await {
            Ok(Ok((send, recv))) => Ok(Opened { conn, send, recv }),
            Ok(Err(e)) => Err(format!("{remote}: {e}")),
            Err(_) => Err(format!("{remote}: the peer did not admit the path in time")),
        }
    }

    /// A dialer's connection, once it named itself and its certificate is the one that node
    /// announced.
    async fn admit(&self, incoming: quinn::Incoming) -> Result<Accepted, String> {
        let conn = incoming.accept().map_err(|e| e.to_string())?.await.map_err(|e| describe(&e))?;
        let (send, mut recv) = conn.accept_bi().await.map_err(|e| describe(&e))?;
        let peer = link::read_name(&mut recv).await?;
        let presented = tls::fingerprint_of(&conn).ok_or("the dialer presented no certificate")?;
        // Its offer may still be on its way through the relay: the path can be faster.
        let announced = loop {
            let notified = self.announced_changed.notified();
            if let Some(fp) = self.announced.lock().expect("announced lock").get(&peer).copied() {
                break fp;
            }
            notified.await;
        };
        if announced != presented {
            conn.close(1u32.into(), tls::PIN_MISMATCH.as_bytes());
            return Err(format!(
                "{} dialed with a certificate it never announced ({})",
                peer.short(),
                tls::PIN_MISMATCH
            ));
        }
        let mut send = send;
        link::say_admitted(&mut send).await?;
        Ok(Accepted { peer, opened: Opened { conn, send, recv } })
    }
}

fn describe(e: &quinn::ConnectionError) -> String {
    match e {
        quinn::ConnectionError::TimedOut => "no answer".into(),
        quinn::ConnectionError::TransportError(t) if t.to_string().contains(tls::PIN_MISMATCH) => {
            tls::PIN_MISMATCH.into()
        }
        other => other.to_string(),
    }
}

fn stun_default(relay_host: &str) -> String {
    if relay_host.contains(':') && !relay_host.starts_with('[') {
        format!("[{relay_host}]:3478")
    } else {
        format!("{relay_host}:3478")
    }
}

fn transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEPALIVE));
    t.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("small timeout")));
    // Punching loses the first packets by design; retry Initials sooner than the 333 ms
    // default would.
    t.initial_rtt(Duration::from_millis(100));
    t.max_concurrent_bidi_streams(VarInt::from_u32(1));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.stream_receive_window(VarInt::from_u32(16 << 20));
    t.receive_window(VarInt::from_u32(32 << 20));
    t.send_window(32 << 20);
    t.datagram_receive_buffer_size(None);
    // An ack for every tenth packet rather than every second: acks cost the sender as much
    // CPU as data, and both ends are quinn (the ACK frequency extension).
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(VarInt::from_u32(10)).max_ack_delay(Some(Duration::from_millis(5)));
    t.ack_frequency_config(Some(acks));
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    t.mtu_discovery_config(Some(mtu));
    t
}

async fn accept_loop(direct: Arc<Direct>, accepted: mpsc::Sender<Accepted>, cancel: CancellationToken) {
    let mut pending = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            _ = cancel.cancelled() => return,
            Some(_) = pending.join_next(), if !pending.is_empty() => continue,
            incoming = direct.endpoint.accept() => match incoming {
                Some(i) => i,
                None => return,
            },
        };
        if pending.len() >= MAX_PENDING_ACCEPTS {
            incoming.refuse();
            continue;
        }
        let (direct, accepted) = (direct.clone(), accepted.clone());
        pending.spawn(async move {
            let from = incoming.remote_address();
            match tokio::time::timeout(NAME_WAIT + IDLE_TIMEOUT, direct.admit(incoming)).await {
                Ok(Ok(a)) => {
                    let _ = accepted.send(a).await;
                }
                Ok(Err(e)) => debug!(%from, error = %e, "refused a direct-path dialer"),
                Err(_) => debug!(%from, "a direct-path dialer did not finish in time"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(switch: UdpSwitch) -> (Arc<Direct>, mpsc::Receiver<Accepted>, Vec<AbortOnDropHandle<()>>) {
        let id = tunnel_proto::SecretKey::generate(&mut rand::rngs::OsRng).public();
        let (tx, rx) = mpsc::channel(4);
        let config = DirectConfig { switch, ..Default::default() };
        let (direct, tasks) = Direct::start(&config, id, None, tx, &CancellationToken::new()).unwrap();
        (direct, rx, tasks)
    }

    fn loopback(d: &Direct) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], d.local_port().unwrap()))
    }

    #[tokio::test]
    async fn a_listener_with_another_certificate_is_refused() {
        let (a, _a_rx, _a_tasks) = start(UdpSwitch::default());
        let (b, mut b_rx, _b_tasks) = start(UdpSwitch::default());
        a.announce(b.id, b.cert.fingerprint);
        b.announce(a.id, a.cert.fingerprint);
        let err = a.dial(vec![loopback(&b)], [9; 32]).await.err().expect("a wrong pin fails");
        assert!(err.contains(tls::PIN_MISMATCH), "{err}");
        // The right pin works, and b learns who dialed.
        let _kept =
            a.dial(vec![loopback(&b)], b.cert.fingerprint).await.expect("the announced certificate is accepted");
        let accepted = tokio::time::timeout(Duration::from_secs(5), b_rx.recv()).await.unwrap().unwrap();
        assert_eq!(accepted.peer, a.id);
    }

    #[tokio::test]
    async fn a_dialer_naming_a_peer_whose_certificate_it_lacks_is_refused() {
        let (a, _a_rx, _a_tasks) = start(UdpSwitch::default());
        let (b, mut b_rx, _b_tasks) = start(UdpSwitch::default());
        // b heard (through Noise) that a's certificate is another one: a is an impostor here.
        b.announce(a.id, [7; 32]);
        // TLS completes (a holds the certificate it presents), but b never admits the path.
        let err = a.dial(vec![loopback(&b)], b.cert.fingerprint).await.err().expect("b refuses the path");
        assert!(err.contains(tls::PIN_MISMATCH), "{err}");
        assert!(b_rx.try_recv().is_err(), "no path was handed to a peer actor");
    }

    #[tokio::test]
    async fn a_blocked_socket_answers_nothing() {
        let switch = UdpSwitch::default();
        let (a, _a_rx, _a_tasks) = start(UdpSwitch::default());
        let (b, _b_rx, _b_tasks) = start(switch.clone());
        b.announce(a.id, a.cert.fingerprint);
        switch.set_blocked(true);
        let err = a.dial(vec![loopback(&b)], b.cert.fingerprint).await.err().expect("no answer");
        assert!(err.contains("no answer") || err.contains("within"), "{err}");
    }
}
