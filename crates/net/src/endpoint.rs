//! The endpoint: a node's handle on the mesh, and the router task behind it.
//!
//! The router turns relay events into per-peer actors and into [`NetEvent`]s for the node.
//! A peer's actor (its sessions and streams) is made on first contact, from either side, not
//! when the peer appears: in a room of thousands, a node pays only for the peers it talks to. It never waits on the node for anything but delivering
//! events, and the node must never wait on a peer actor from its event loop (dispatch work to
//! tasks instead), so there is no cycle of waits.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::warn;
use tunnel_proto::message::{Hello, PeerMessage, StreamKind};
use tunnel_proto::{NodeId, RoomKeys, SecretKey};
use zeroize::Zeroizing;

use crate::direct::{Accepted, Direct, DirectConfig, DirectMode, DirectPath};
use crate::error::{ConnectError, NetError};
use crate::loopback;
use crate::peer::{self, PeerCmd, PeerHandle, PeerInput, PeerShared};
use crate::relay_client::{self, RelayEvent, RelayTarget, RelayUrl};
use crate::sessions::Keys;
use crate::stream::Stream;

pub struct EndpointConfig {
    /// `None`: no mesh, only this node itself (a local-only node: `tunnel mcp` with no relay
    /// configured).
    pub relay_url: Option<String>,
    pub access_token: Option<String>,
    pub room: RoomKeys,
    pub secret: SecretKey,
    /// Sent to every peer on every new session; `instance` is filled in by the endpoint.
    pub hello: Hello,
    /// For `wss://` relays: whom to trust beyond the system's roots.
    pub relay_trust: tunnel_tls::ClientTrust,
    /// `true`: [`Endpoint::start`] fails if the first connection attempt fails (a person at a
    /// terminal wants to know now). `false`: it returns at once and keeps trying in the
    /// background, with the state in [`Endpoint::relay_status`] (a service).
    pub fail_fast: bool,
    /// Direct QUIC paths: whether, on which UDP port, which STUN servers.
    pub direct: DirectConfig,
    /// A peer actor (sessions, path) with no stream and no traffic for this long is reaped;
    /// the next contact makes a new one. [`PEER_IDLE_DEFAULT`] unless a test says otherwise.
    pub peer_idle: std::time::Duration,
}

/// How long a peer that a fresh relay connection did not list stays known: nodes reach a
/// restarted relay within a few seconds of each other (reconnect probes are at most 2 s
/// apart while the relay is away).
const REJOIN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// How long an idle peer's actor lives: a node that talked to 10,000 peers once returns to
/// its idle memory, and a peer talked to every few minutes keeps its session.
pub const PEER_IDLE_DEFAULT: std::time::Duration = std::time::Duration::from_secs(300);

/// How this node reaches one peer now.
#[derive(Debug, Clone, Default)]
pub struct PeerPath {
    /// The direct path in use; `None`: the relay.
    pub direct: Option<DirectPath>,
    /// Why there is no direct path, when an attempt failed or the peer declined.
    pub note: Option<String>,
}

/// Where the relay connection stands, for `tunnel status`.
#[derive(Debug, Clone)]
pub struct RelayStatus {
    pub url: String,
    pub connected: bool,
    /// When `connected` last changed.
    pub since: std::time::SystemTime,
    /// Why the last attempt or connection failed, until the next success.
    pub last_error: Option<String>,
    /// The relay protocol version of the last relay joined.
    pub relay_version: Option<u16>,
    /// Frames from the relay this node dropped because it did not expect them (it never
    /// leaves the room over one).
    pub ignored_frames: u64,
}

/// What the node hears from the mesh.
#[derive(Debug)]
pub enum NetEvent {
    RelayConnected {
        observed_addr: String,
    },
    RelayDisconnected {
        reason: String,
    },
    RelayConnectFailed(ConnectError),
    PeerPresent(NodeId),
    PeerAbsent(NodeId),
    Message {
        from: NodeId,
        msg: PeerMessage,
    },
    /// A stream the peer opened.
    Stream(Stream),
    /// No session could be made with the peer (the reason is for the user).
    LinkFailed {
        peer: NodeId,
        reason: String,
    },
    /// The direct path to a peer came up (`direct` is its remote address) or went down
    /// (`None`, with the reason); traffic moved without loss either way.
    PathChanged {
        peer: NodeId,
        direct: Option<std::net::SocketAddr>,
        reason: Option<String>,
    },
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("peer", &self.peer).field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// A cheap, cloneable handle. The mesh stops when [`Endpoint::shutdown`] is called or the
/// last handle is dropped.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

/// Present peers, each with its actor's command channel once it has one.
type PeerTable = Arc<Mutex<HashMap<NodeId, Option<mpsc::Sender<PeerCmd>>>>>;
/// Asks the router for a present peer's actor, making it if needed.
type Wake = (NodeId, oneshot::Sender<Option<mpsc::Sender<PeerCmd>>>);

struct Inner {
    id: NodeId,
    peers: PeerTable,
    /// `None` for a node with no relay.
    wake: Option<mpsc::Sender<Wake>>,
    /// Operations addressed to this node itself.
    loopback: mpsc::Sender<PeerCmd>,
    hello: watch::Sender<Hello>,
    /// The relay connection's state, and its count of ignored frames.
    relay_status: Option<(Arc<Mutex<RelayStatus>>, Arc<std::sync::atomic::AtomicU64>)>,
    direct: Option<Arc<Direct>>,
    direct_mode: DirectMode,
    /// Becomes `true` once the relay connection task has ended (its socket is closed).
    relay_done: watch::Receiver<bool>,
    cancel: CancellationToken,
    _tasks: Vec<AbortOnDropHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Endpoint {
    /// Connects to the relay and joins the room. Returns once the first connection succeeded,
    /// or with the error of the first attempt (bad URL, unreachable, refused, ...).
    pub async fn start(config: EndpointConfig) -> Result<(Self, mpsc::Receiver<NetEvent>), ConnectError> {
        let relay = match &config.relay_url {
            Some(url) => {
                let parsed = RelayUrl::parse(url)?;
                if parsed.plain_over_network() {
                    warn!(
                        %url,
                        "plain ws:// to another machine: the relay access token and who talks to whom cross \
                         the network in the clear (peer traffic stays end-to-end encrypted); use wss://"
                    );
                }
                let trust = |e: tunnel_tls::TlsError| ConnectError::Trust { url: url.clone(), reason: e.to_string() };
                let tls = parsed.tls.then(|| config.relay_trust.connector()).transpose().map_err(trust)?;
                Some((parsed, tls))
            }
            None => None,
        };
        let id = config.secret.public();
        let mut hello = config.hello;
        hello.instance = rand::random();
        let (hello_tx, hello_rx) = watch::channel(hello);
        let (relay_out_tx, relay_out_rx) = mpsc::channel(64);
        let (relay_ev_tx, relay_ev_rx) = mpsc::channel(1024);
        let (events_tx, events_rx) = mpsc::channel(1024);
        let cancel = CancellationToken::new();
        let (loopback, loopback_task) = loopback::start(id, events_tx.clone(), cancel.clone());
        let mut tasks = vec![AbortOnDropHandle::new(tokio::spawn(loopback_task))];
        let peers = Arc::new(Mutex::new(HashMap::new()));
        let (Some(relay_url), Some((parsed, tls))) = (config.relay_url, relay) else {
            let inner = Inner {
                id,
                peers,
                wake: None,
                loopback,
                hello: hello_tx,
                relay_status: None,
                direct: None,
                direct_mode: config.direct.mode,
                relay_done: watch::channel(true).1,
                cancel,
                _tasks: tasks,
            };
            return Ok((Self { inner: Arc::new(inner) }, events_rx));
        };
        let relay_status = Arc::new(Mutex::new(RelayStatus {
            url: relay_url.clone(),
            connected: false,
            since: std::time::SystemTime::now(),
            last_error: None,
            relay_version: None,
            ignored_frames: 0,
        }));
        let relay_ignored = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let relay_host = parsed.host.clone();
        let target = RelayTarget {
            url: relay_url,
            access_token: config.access_token,
            room_id: config.room.room_id,
            secret: config.secret.clone(),
            parsed,
            tls,
            ignored: relay_ignored.clone(),
        };
        let (accepted_tx, accepted_rx) = mpsc::channel(16);
        let direct = match config.direct.mode {
            DirectMode::RelayOnly => None,
            _ => {
                let (direct, direct_tasks) = Direct::start(&config.direct, id, Some(&relay_host), accepted_tx, &cancel)
                    .map_err(ConnectError::Direct)?;
                tasks.extend(direct_tasks);
                Some(direct)
            }
        };
        let (idle_tx, idle_rx) = mpsc::channel(256);
        let shared = Arc::new(PeerShared {
            idle_after: config.peer_idle,
            idle: idle_tx,
            keys: Keys { secret: config.secret, id, psk: Zeroizing::new(*config.room.psk) },
            hello: hello_rx,
            relay_out: relay_out_tx,
            events: events_tx,
            direct: direct.clone(),
        });
        let (first_tx, first_rx) = oneshot::channel();
        let (relay_done_tx, relay_done) = watch::channel(false);
        let relay_run = relay_client::run(target, relay_out_rx, relay_ev_tx, cancel.clone());
        let relay_task = tokio::spawn(async move {
            relay_run.await;
            let _ = relay_done_tx.send(true);
        });
        let router = Router {
            shared,
            table: peers.clone(),
            actors: HashMap::new(),
            tasks: JoinSet::new(),
            status: relay_status.clone(),
            fail_fast: config.fail_fast,
            unconfirmed: HashMap::new(),
            cancel: cancel.clone(),
        };
        let (wake_tx, wake_rx) = mpsc::channel(256);
        let router_task = tokio::spawn(router.run(relay_ev_rx, wake_rx, accepted_rx, idle_rx, first_tx));
        tasks.extend([AbortOnDropHandle::new(relay_task), AbortOnDropHandle::new(router_task)]);
        let inner = Inner {
            id,
            peers,
            wake: Some(wake_tx),
            loopback,
            hello: hello_tx,
            relay_status: Some((relay_status, relay_ignored)),
            direct,
            direct_mode: config.direct.mode,
            relay_done,
            cancel,
            _tasks: tasks,
        };
        let endpoint = Self { inner: Arc::new(inner) };
        match first_rx.await {
            Ok(Ok(())) => Ok((endpoint, events_rx)),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                Err(ConnectError::Protocol { url: String::new(), reason: "endpoint stopped while connecting".into() })
            }
        }
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The relay connection's state; `None` for a node with no relay.
    pub fn relay_status(&self) -> Option<RelayStatus> {
        self.inner.relay_status.as_ref().map(|(status, ignored)| RelayStatus {
            ignored_frames: ignored.load(std::sync::atomic::Ordering::Relaxed),
            ..status.lock().expect("relay status lock").clone()
        })
    }

    /// How this node reaches `peer` now: its direct path, or the relay and why.
    pub fn path(&self, peer: &NodeId) -> PeerPath {
        let Some(direct) = &self.inner.direct else { return PeerPath::default() };
        let (direct, note) = direct.table.get(peer);
        PeerPath { direct, note }
    }

    /// The configured direct-path mode, and the UDP port direct paths use (`None`:
    /// relay-only, or no relay).
    pub fn direct(&self) -> (DirectMode, Option<u16>) {
        (self.inner.direct_mode, self.inner.direct.as_ref().and_then(|d| d.local_port()))
    }

    /// Peers this node has an actor (sessions, streams, a path) for now; idle ones are reaped.
    pub fn active_peers(&self) -> usize {
        self.inner.peers.lock().expect("peers lock").values().filter(|actor| actor.is_some()).count()
    }

    /// Whether `peer` is in the room now (this node always is, to itself).
    pub fn is_present(&self, peer: &NodeId) -> bool {
        *peer == self.inner.id || self.inner.peers.lock().expect("peers lock").contains_key(peer)
    }

    /// Peers currently in the room.
    pub fn peers(&self) -> Vec<NodeId> {
        self.inner.peers.lock().expect("peers lock").keys().copied().collect()
    }

    /// Why `peer` cannot be reached: gone from the room, or this node is shutting down (then
    /// the peer list empties first, and "not in the room" would blame the wrong side).
    fn absent(&self, peer: &NodeId) -> NetError {
        if self.inner.cancel.is_cancelled() {
            NetError::Closed
        } else {
            NetError::not_present(peer)
        }
    }

    async fn peer(&self, peer: &NodeId) -> Result<mpsc::Sender<PeerCmd>, NetError> {
        if *peer == self.inner.id {
            return Ok(self.inner.loopback.clone());
        }
        let entry = self.inner.peers.lock().expect("peers lock").get(peer).cloned();
        match entry {
            Some(Some(actor)) => Ok(actor),
            Some(None) => {
                let wake = self.inner.wake.as_ref().ok_or_else(|| self.absent(peer))?;
                let (tx, rx) = oneshot::channel();
                wake.send((*peer, tx)).await.map_err(|_| self.absent(peer))?;
                rx.await.ok().flatten().ok_or_else(|| self.absent(peer))
            }
            None => Err(self.absent(peer)),
        }
    }

    /// Sends one message; a session is made on demand. A message to our own id comes back
    /// as a [`NetEvent::Message`] from ourselves. Delivery is not confirmed: requests
    /// carry ids and time out at the layer above.
    pub async fn send(&self, peer: &NodeId, msg: PeerMessage) -> Result<(), NetError> {
        self.peer(peer).await?.send(PeerCmd::Send(msg)).await.map_err(|_| self.absent(peer))
    }

    /// Opens a stream to `peer`; to our own id, a stream served by this node itself.
    pub async fn open_stream(&self, peer: &NodeId, kind: StreamKind) -> Result<Stream, NetError> {
        let (tx, rx) = oneshot::channel();
        self.peer(peer).await?.send(PeerCmd::Open { kind, reply: tx }).await.map_err(|_| self.absent(peer))?;
        rx.await.map_err(|_| self.absent(peer))
    }

    /// What this node tells peers about itself.
    pub fn hello(&self) -> Hello {
        self.inner.hello.borrow().clone()
    }

    /// Changes what this node tells peers about itself (sent on the next sessions).
    pub fn update_hello(&self, f: impl FnOnce(&mut Hello)) {
        self.inner.hello.send_modify(f);
    }

    /// Leaves the room: peers see us go at once.
    pub fn shutdown(&self) {
        self.inner.cancel.cancel();
    }

    /// Resolves once the relay connection is closed after [`Endpoint::shutdown`], so that
    /// another process may join with the same node id without displacing it.
    pub async fn closed(&self) {
        let mut done = self.inner.relay_done.clone();
        let _ = done.wait_for(|d| *d).await;
    }
}

struct Router {
    shared: Arc<PeerShared>,
    table: PeerTable,
    actors: HashMap<NodeId, PeerHandle>,
    tasks: JoinSet<NodeId>,
    status: Arc<Mutex<RelayStatus>>,
    fail_fast: bool,
    /// Peers a fresh relay connection did not list, each with when to give up on it: kept
    /// (actor, session and streams) until they rejoin, [`REJOIN_GRACE`] passes, or, for one
    /// we reach directly, the direct path is gone too.
    unconfirmed: HashMap<NodeId, tokio::time::Instant>,
    cancel: CancellationToken,
}

impl Router {
    async fn run(
        mut self,
        mut relay: mpsc::Receiver<RelayEvent>,
        mut wake: mpsc::Receiver<Wake>,
        mut accepted: mpsc::Receiver<Accepted>,
        mut idle: mpsc::Receiver<NodeId>,
        first: oneshot::Sender<Result<(), ConnectError>>,
    ) {
        let mut first = Some(first);
        let mut recheck = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => break,
                _ = recheck.tick(), if !self.unconfirmed.is_empty() => {
                    let now = tokio::time::Instant::now();
                    let lost: Vec<NodeId> = self
                        .unconfirmed
                        .iter()
                        .filter(|(id, until)| now >= **until && !self.is_direct(id))
                        .map(|(id, _)| *id)
                        .collect();
                    for id in lost {
                        self.unconfirmed.remove(&id);
                        self.remove(id).await;
                    }
                }
                Some(ended) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    // A reaped actor: forget its handle (a newer actor may already stand in).
                    if let Ok(id) = ended {
                        if self.actors.get(&id).is_some_and(|a| a.cmd.is_closed()) {
                            self.actors.remove(&id);
                            // After talking to thousands, an idle node returns to idle memory.
                            if self.actors.capacity() > 64 && self.actors.len() < self.actors.capacity() / 4 {
                                self.actors.shrink_to(self.actors.len() * 2);
                            }
                        }
                    }
                }
                // An actor idle long enough: new contacts now come through us (and find it, if
                // it turns out busy after all, or a new one); then it is asked to go.
                Some(id) = idle.recv() => {
                    if let Some(actor) = self.actors.get(&id) {
                        if let Some(entry) = self.table.lock().expect("peers lock").get_mut(&id) {
                            *entry = None;
                        }
                        let _ = actor.input.try_send(PeerInput::Reap);
                    }
                }
                Some((id, reply)) = wake.recv() => {
                    let _ = reply.send(self.actor(id).await.map(|a| a.cmd.clone()));
                }
                // A peer dialed us directly and proved who it is: its actor takes the path.
                Some(a) = accepted.recv() => {
                    if let Some(actor) = self.actor(a.peer).await {
                        let _ = actor.input.send(PeerInput::Accepted(a.opened)).await;
                    }
                }
                ev = relay.recv() => match ev {
                    Some(ev) => self.on_event(ev, &mut first).await,
                    None => break,
                },
            }
        }
        // Dropping the handles stops the actors, which fail their streams.
        self.actors.clear();
        self.table.lock().expect("peers lock").clear();
        while tokio::time::timeout(std::time::Duration::from_secs(1), self.tasks.join_next())
            .await
            .is_ok_and(|r| r.is_some())
        {}
    }

    async fn emit(&self, ev: NetEvent) {
        let _ = self.shared.events.send(ev).await;
    }

    fn record(&self, connected: bool, error: Option<String>) {
        let mut status = self.status.lock().expect("relay status lock");
        if status.connected != connected {
            status.connected = connected;
            status.since = std::time::SystemTime::now();
        }
        if connected || error.is_some() {
            status.last_error = error;
        }
    }

    async fn on_event(&mut self, ev: RelayEvent, first: &mut Option<oneshot::Sender<Result<(), ConnectError>>>) {
        match &ev {
            RelayEvent::Connected { relay, .. } => {
                self.record(true, None);
                self.status.lock().expect("relay status lock").relay_version = Some(relay.version);
            }
            RelayEvent::Disconnected { reason } => self.record(false, Some(reason.clone())),
            RelayEvent::ConnectFailed(e) => self.record(false, Some(e.to_string())),
            _ => {}
        }
        match ev {
            RelayEvent::Connected { peers, observed_addr, .. } => {
                let now: HashSet<NodeId> = peers.into_iter().collect();
                self.unconfirmed.retain(|id, _| !now.contains(id));
                let gone: Vec<NodeId> =
                    self.table.lock().expect("peers lock").keys().filter(|id| !now.contains(id)).copied().collect();
                // The table first, waiting on nobody: whoever started the endpoint sees the
                // room as it was on joining, before the node's event loop even runs (which is
                // also why the events below must come after `first`).
                let arrived: Vec<NodeId> = now.iter().copied().filter(|id| self.mark_present(*id)).collect();
                if let Some(f) = first.take() {
                    let _ = f.send(Ok(()));
                }
                self.emit(NetEvent::RelayConnected { observed_addr }).await;
                // Reconnecting peers reach a restarted relay one by one: one not listed yet is
                // most likely on its way. Its actor stays, so the end-to-end session and the
                // streams in flight survive the relay's restart (dropping it made the peer's
                // next packet an unknown session, which fails every stream). One we still
                // reach directly is alive: it stays as long as that path does.
                let until = tokio::time::Instant::now() + REJOIN_GRACE;
                for id in gone {
                    self.unconfirmed.insert(id, until);
                }
                for id in &now {
                    if let Some(a) = self.actors.get(id) {
                        let _ = a.input.send(PeerInput::Reconnected).await;
                    }
                }
                for id in arrived {
                    self.emit(NetEvent::PeerPresent(id)).await;
                }
            }
            RelayEvent::Disconnected { reason } => self.emit(NetEvent::RelayDisconnected { reason }).await,
            RelayEvent::ConnectFailed(e) => match first.take() {
                Some(f) if self.fail_fast || e.is_permanent() => {
                    let _ = f.send(Err(e));
                }
                Some(f) => {
                    let _ = f.send(Ok(()));
                    self.emit(NetEvent::RelayConnectFailed(e)).await;
                }
                None => self.emit(NetEvent::RelayConnectFailed(e)).await,
            },
            RelayEvent::PeerJoined(id) => {
                self.unconfirmed.remove(&id);
                match self.actors.get(&id) {
                    Some(a) => {
                        let _ = a.input.send(PeerInput::Rejoined).await;
                    }
                    None => self.add(id).await,
                }
            }
            RelayEvent::PeerLeft(id) => {
                self.unconfirmed.remove(&id);
                self.remove(id).await
            }
            RelayEvent::Recv { from, payload } => {
                if let Some(a) = self.actor(from).await {
                    let _ = a.input.send(PeerInput::Packet(payload)).await;
                }
            }
            RelayEvent::Dropped { to } => {
                if let Some(a) = self.actors.get(&to) {
                    let _ = a.input.send(PeerInput::Dropped).await;
                }
            }
        }
    }

    fn is_direct(&self, id: &NodeId) -> bool {
        self.shared.direct.as_ref().is_some_and(|d| d.table.get(id).0.is_some())
    }

    /// A peer the relay says is present. Its actor comes on first contact.
    async fn add(&mut self, id: NodeId) {
        if self.mark_present(id) {
            self.emit(NetEvent::PeerPresent(id)).await;
        }
    }

    /// Records a peer as present; true if it was not.
    fn mark_present(&mut self, id: NodeId) -> bool {
        if id == self.shared.keys.id {
            return false;
        }
        let mut table = self.table.lock().expect("peers lock");
        if table.contains_key(&id) {
            return false;
        }
        table.insert(id, None);
        true
    }

    /// The actor of a present peer, made now if it has none; `None` if the peer is not
    /// present (or its key is unusable).
    async fn actor(&mut self, id: NodeId) -> Option<&PeerHandle> {
        if self.actors.get(&id).is_some_and(|a| a.cmd.is_closed()) {
            self.actors.remove(&id);
        }
        if let Some(live) = self.actors.get(&id) {
            // Asked to go while idle but busy again: it stays, reachable as before.
            if let Some(entry @ None) = self.table.lock().expect("peers lock").get_mut(&id) {
                *entry = Some(live.cmd.clone());
            }
        } else {
            if !self.table.lock().expect("peers lock").contains_key(&id) {
                return None;
            }
            if self.shared.keys.secret.dh(&id).is_err() {
                warn!(peer = %id.short(), "relay announced a peer with a weak key; ignoring it");
                self.remove(id).await;
                return None;
            }
            let (handle, actor) = peer::start(self.shared.clone(), id, &self.cancel);
            self.table.lock().expect("peers lock").insert(id, Some(handle.cmd.clone()));
            self.actors.insert(id, handle);
            self.tasks.spawn(actor);
        }
        self.actors.get(&id)
    }

    async fn remove(&mut self, id: NodeId) {
        self.actors.remove(&id);
        if self.table.lock().expect("peers lock").remove(&id).is_some() {
            self.emit(NetEvent::PeerAbsent(id)).await;
        }
    }
}
