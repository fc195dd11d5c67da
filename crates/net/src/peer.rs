//! One actor per present peer: owns the Noise sessions and streams with that peer.
//!
//! Inputs, in priority order: stream control (credits, resets), packets from the relay,
//! commands from the endpoint (messages, stream opens), then stream data (only while a
//! session is usable, so writers wait on a bounded channel instead of filling a queue).
//! Messages sent without a session wait in a bounded outbox while a handshake runs.
//!
//! With a direct path up (see `direct::PathState`), every message goes on it instead, unsealed
//! (QUIC encrypts); messages from both paths are handled alike, and when the direct path dies
//! the unacknowledged stream data is resent through the relay at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use tunnel_proto::message::{Hello, PeerMessage, StreamKind};
use tunnel_proto::relay::{write_send_header, RelayFrame};
use tunnel_proto::session::Session;
use tunnel_proto::NodeId;

use crate::direct::{Direct, Opened, PathEvent, PathState};
use crate::endpoint::NetEvent;
use crate::sessions::{Incoming, Keys, Sessions, Timer};
use crate::stream::{Stream, StreamCmd, StreamPorts, StreamTable};

const OUTBOX_MESSAGES: usize = 1024;
const OUTBOX_BYTES: usize = 8 * 1024 * 1024;
const RESEND_FIRST: Duration = Duration::from_millis(20);
const RESEND_MAX: Duration = Duration::from_secs(1);
/// With data unacknowledged and no ack for this long, resend it: frames can vanish without a
/// `Dropped` (a relay reconnect, a hostile relay).
const RTO_FIRST: Duration = Duration::from_millis(400);
const RTO_MAX: Duration = Duration::from_secs(5);

/// What every peer actor of one endpoint shares.
pub(crate) struct PeerShared {
    pub(crate) keys: Keys,
    pub(crate) hello: watch::Receiver<Hello>,
    pub(crate) relay_out: mpsc::Sender<Vec<u8>>,
    pub(crate) events: mpsc::Sender<NetEvent>,
    /// `None`: relay-only.
    pub(crate) direct: Option<Arc<Direct>>,
    /// An actor with nothing open and no traffic for this long offers itself for reaping.
    pub(crate) idle_after: Duration,
    /// Where an idle actor says so (the router then sends it [`PeerInput::Reap`]).
    pub(crate) idle: mpsc::Sender<NodeId>,
}

/// From the router.
pub(crate) enum PeerInput {
    Packet(Vec<u8>),
    /// The relay dropped a frame we sent to this peer.
    Dropped,
    /// The peer's relay connection was replaced: its sessions may be gone.
    Rejoined,
    /// Our relay connection came back: frames in flight may be lost.
    Reconnected,
    /// A message that came on a direct path.
    Direct(PeerMessage),
    /// A direct link ended.
    LinkDown {
        link: u64,
        reason: String,
    },
    /// Our dial (number `attempt`) to the peer's candidates finished.
    Dialed {
        attempt: u64,
        result: Result<Opened, String>,
    },
    /// The peer dialed us and proved who it is.
    Accepted(Opened),
    /// Go, if still idle (the router no longer hands out this actor).
    Reap,
}

/// From the endpoint.
pub(crate) enum PeerCmd {
    Send(PeerMessage),
    Open { kind: StreamKind, reply: oneshot::Sender<Stream> },
}

pub(crate) struct PeerHandle {
    pub(crate) input: mpsc::Sender<PeerInput>,
    pub(crate) cmd: mpsc::Sender<PeerCmd>,
    /// Cancelling (on drop) ends the actor, which fails its streams first.
    _stop: tokio_util::sync::DropGuard,
}

/// Creates the actor; the caller spawns the returned future in its supervisor.
pub(crate) fn start(
    shared: Arc<PeerShared>,
    peer: NodeId,
    parent: &CancellationToken,
) -> (PeerHandle, impl std::future::Future<Output = NodeId>) {
    let (input_tx, input) = mpsc::channel(256);
    let (cmd_tx, cmd) = mpsc::channel(64);
    let (data_tx, data) = mpsc::channel(16);
    let (ctl_tx, ctl) = mpsc::unbounded_channel();
    let stop = parent.child_token();
    let path = shared.direct.clone().map(|d| PathState::new(d, peer, input_tx.clone()));
    let actor = PeerActor {
        path,
        waiting_direct: VecDeque::new(),
        endpoint_stop: parent.clone(),
        streams: StreamTable::new(shared.keys.id, peer),
        shared,
        peer,
        sessions: Sessions::new(peer),
        ports: StreamPorts::new(data_tx, ctl_tx),
        outbox: VecDeque::new(),
        outbox_bytes: 0,
        resend_at: None,
        resend_backoff: RESEND_FIRST,
        last_ack: Instant::now(),
        rto: RTO_FIRST,
        peer_instance: None,
        last_active: Instant::now(),
        offered_reap: false,
    };
    let hello = actor.shared.hello.clone();
    let handle = PeerHandle { input: input_tx, cmd: cmd_tx, _stop: stop.clone().drop_guard() };
    (handle, actor.run(input, cmd, data, ctl, hello, stop))
}

struct PeerActor {
    shared: Arc<PeerShared>,
    peer: NodeId,
    sessions: Sessions,
    streams: StreamTable,
    ports: StreamPorts,
    outbox: VecDeque<Vec<u8>>,
    outbox_bytes: usize,
    resend_at: Option<Instant>,
    resend_backoff: Duration,
    /// When the peer last acknowledged stream data, and the current retransmission timeout.
    last_ack: Instant,
    rto: Duration,
    peer_instance: Option<u64>,
    /// The direct path; `None` when relay-only.
    path: Option<PathState>,
    /// `direct-only`: messages waiting for a direct path (never sent through the relay).
    waiting_direct: VecDeque<PeerMessage>,
    /// The endpoint's own stop: set when this node shuts down, not when the peer leaves.
    endpoint_stop: CancellationToken,
    /// The last input, command or stream event: idle time counts from here.
    last_active: Instant,
    /// Whether this actor has said it is idle since it last was not.
    offered_reap: bool,
}

impl PeerActor {
    async fn run(
        mut self,
        mut input: mpsc::Receiver<PeerInput>,
        mut cmd: mpsc::Receiver<PeerCmd>,
        mut data: mpsc::Receiver<StreamCmd>,
        mut ctl: mpsc::UnboundedReceiver<StreamCmd>,
        mut hello: watch::Receiver<Hello>,
        stop: CancellationToken,
    ) -> NodeId {
        hello.mark_unchanged();
        let mut local = self.shared.direct.as_ref().map(|d| d.watch_candidates());
        loop {
            let deadline = self.next_deadline();
            let link = self.path.as_ref().and_then(PathState::active);
            let usable = link.is_some() || self.sessions.is_usable();
            // Stream data goes where it can go now: the direct link while it has room, else
            // the relay's session (never the relay in direct-only).
            let data_ok = match link {
                Some(l) => l.has_room(),
                None => !self.direct_only() && usable,
            };
            let full_link = link.filter(|l| !l.has_room()).map(|l| l.queue());
            let idle_at = (!self.offered_reap && self.is_idle()).then(|| self.last_active + self.shared.idle_after);
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                // Nothing anyone waits on: offer to go (the router decides, see `Reap`).
                _ = tokio::time::sleep_until(idle_at.unwrap_or_else(Instant::now)), if idle_at.is_some() => {
                    self.offered_reap = self.shared.idle.try_send(self.peer).is_ok();
                    continue;
                }
                Some(c) = ctl.recv() => {
                    self.touch();
                    if matches!(c, StreamCmd::Reset { .. }) {
                        // A reset must not overtake data its stream queued before it (a
                        // service that writes its answer and returns drops its reader).
                        while let Ok(queued) = data.try_recv() {
                            self.on_stream_cmd(queued).await;
                        }
                    }
                    self.on_stream_cmd(c).await
                }
                i = input.recv() => match i {
                    Some(PeerInput::Reap) => {
                        // Only if nothing came in since the offer, and nothing waits to.
                        if self.offered_reap && self.is_idle() && cmd.is_empty() && data.is_empty() && ctl.is_empty() && input.is_empty() {
                            debug!(peer = %self.peer.short(), "idle peer actor reaped");
                            return self.peer;
                        }
                    }
                    Some(i) => {
                        self.touch();
                        self.on_input(i).await
                    }
                    None => break,
                },
                Some(c) = cmd.recv() => {
                    self.touch();
                    self.on_cmd(c).await
                }
                Some(c) = data.recv(), if data_ok => {
                    self.touch();
                    self.on_stream_cmd(c).await
                }
                _ = room(&full_link), if full_link.is_some() => {
                    if let Some(link) = self.path.as_ref().and_then(PathState::active) {
                        link.flush();
                    }
                }
                Ok(()) = changed(&mut local), if local.is_some() => {
                    if let Some(invite) = self.path.as_mut().and_then(PathState::on_candidates_changed) {
                        self.send_relay(&invite).await;
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => self.on_timer().await,
                // What this node says about itself changed (its mode): tell the peer now,
                // not at the next rekey.
                Ok(()) = hello.changed(), if usable => {
                    let msg = PeerMessage::Hello(Box::new(hello.borrow_and_update().clone()));
                    self.send(&msg).await;
                }
            }
        }
        // Say which side ended: a caller whose node is going away should retry elsewhere,
        // not wonder where the peer went.
        let why = if self.endpoint_stop.is_cancelled() { "this node is shutting down" } else { "peer left the room" };
        self.streams.fail_all(why);
        self.peer
    }

    /// Something happened with the peer: the idle clock starts again.
    fn touch(&mut self) {
        self.last_active = Instant::now();
        self.offered_reap = false;
    }

    /// Nothing open, queued or in flight with the peer: reaping loses nothing.
    fn is_idle(&self) -> bool {
        self.streams.is_empty()
            && self.outbox.is_empty()
            && self.waiting_direct.is_empty()
            && self.resend_at.is_none()
            && !self.streams.has_unacked()
    }

    fn next_deadline(&self) -> Option<Instant> {
        let rto = self.streams.has_unacked().then(|| self.last_ack + self.rto);
        let path = self.path.as_ref().and_then(PathState::deadline);
        [self.sessions.next_deadline().map(Instant::from_std), self.resend_at, rto, path].into_iter().flatten().min()
    }

    async fn on_input(&mut self, input: PeerInput) {
        match input {
            PeerInput::Packet(bytes) => self.on_packet(&bytes).await,
            // Handled in the loop; one that arrives after activity resumed is stale.
            PeerInput::Reap => {}
            PeerInput::Dropped => {
                if self.resend_at.is_none() {
                    self.resend_at = Some(Instant::now() + self.resend_backoff);
                }
                self.resend_backoff = (self.resend_backoff * 2).min(RESEND_MAX);
            }
            // The peer's relay connection was replaced; if it lost its state too, our next
            // packet is rejected as an unknown session and we recover from that.
            PeerInput::Rejoined => self.resend_at = Some(Instant::now()),
            PeerInput::Reconnected => self.resend_at = Some(Instant::now()),
            PeerInput::Direct(msg) => self.on_message(msg).await,
            PeerInput::LinkDown { link, reason } => {
                if let Some(ev) = self.path.as_mut().map(|p| p.on_link_down(link, &reason)) {
                    self.on_path_event(ev).await;
                }
            }
            PeerInput::Dialed { attempt, result } => {
                if let Some(ev) = self.path.as_mut().map(|p| p.on_dialed(attempt, result)) {
                    self.on_path_event(ev).await;
                }
            }
            PeerInput::Accepted(opened) => {
                if let Some(ev) = self.path.as_mut().map(|p| p.on_accepted(opened)) {
                    self.on_path_event(ev).await;
                }
            }
        }
    }

    fn direct_only(&self) -> bool {
        self.path.as_ref().is_some_and(PathState::direct_only)
    }

    async fn on_path_event(&mut self, ev: PathEvent) {
        match ev {
            PathEvent::Nothing => {}
            PathEvent::Up(addr) => {
                self.ports.set_window(crate::stream::DIRECT_WINDOW);
                let _ = self
                    .shared
                    .events
                    .send(NetEvent::PathChanged { peer: self.peer, direct: Some(addr), reason: None })
                    .await;
                while let Some(msg) = self.waiting_direct.pop_front() {
                    self.send(&msg).await;
                }
            }
            // What was in flight on the dead path goes again, through the relay, now.
            PathEvent::Down(reason) => {
                self.ports.set_window(crate::stream::WINDOW);
                self.resend_at = Some(Instant::now());
                let _ = self
                    .shared
                    .events
                    .send(NetEvent::PathChanged { peer: self.peer, direct: None, reason: Some(reason) })
                    .await;
            }
            PathEvent::Failed(reason) => {
                warn!(peer = %self.peer.short(), %reason, "no direct path");
                self.waiting_direct.clear();
                self.streams.fail_all(&reason);
                let _ = self.shared.events.send(NetEvent::LinkFailed { peer: self.peer, reason }).await;
            }
        }
    }

    async fn on_packet(&mut self, bytes: &[u8]) {
        let now = std::time::Instant::now();
        match self.sessions.on_packet(&self.shared.keys, bytes, now) {
            Incoming::Ignored => {}
            Incoming::Reply(pkt) => self.send_packet(pkt).await,
            Incoming::Established => self.on_new_session().await,
            Incoming::PeerLostSession { handshake, usable } => {
                debug!(peer = %self.peer.short(), "peer lost our session; starting over");
                // Every stream fails, even one whose Open the peer never acknowledged: if the
                // peer restarted, its old life may have run it, and the new one has no memory of
                // request ids; sending it again could run a command twice.
                self.streams.fail_all("the peer lost its session with this node (it left and rejoined the room)");
                if let Some(packet) = handshake {
                    self.send_packet(packet).await;
                }
                if usable {
                    self.on_new_session().await;
                }
            }
            Incoming::Plain { bytes, new_session } => {
                if new_session {
                    self.on_new_session().await;
                }
                match PeerMessage::decode(&bytes) {
                    Ok(msg) => self.on_message(msg).await,
                    Err(e) => {
                        warn!(peer = %self.peer.short(), error = %e, "dropping an undecodable message")
                    }
                }
            }
        }
    }

    /// A session became usable: introduce ourselves, then send what waited.
    async fn on_new_session(&mut self) {
        let hello = PeerMessage::Hello(Box::new(self.shared.hello.borrow().clone()));
        self.send(&hello).await;
        if let Some(offer) = self.path.as_mut().and_then(PathState::on_session) {
            self.send_relay(&offer).await;
        }
        while let Some(plain) = self.outbox.pop_front() {
            self.outbox_bytes -= plain.len();
            self.send_plain(plain).await;
        }
    }

    async fn on_message(&mut self, msg: PeerMessage) {
        let to_send = match msg {
            PeerMessage::Open { stream, kind, window } => {
                let (accepted, replies) = self.streams.on_open(stream, kind, window, &self.ports);
                if let Some(stream) = accepted {
                    let _ = self.shared.events.send(NetEvent::Stream(stream)).await;
                }
                replies
            }
            PeerMessage::Data { stream, offset, bytes } => self.streams.on_data(stream, offset, bytes.0),
            PeerMessage::Credit { stream, max_offset, received } => {
                let resend = self.streams.on_credit(stream, max_offset, received);
                self.resend_backoff = RESEND_FIRST;
                self.last_ack = Instant::now();
                self.rto = RTO_FIRST;
                resend.into_iter().collect()
            }
            PeerMessage::Close { stream, final_offset, error } => self.streams.on_close(stream, final_offset, error),
            PeerMessage::Hello(hello) => {
                if self.peer_instance.is_some_and(|i| i != hello.instance) {
                    debug!(peer = %self.peer.short(), "peer restarted; its streams are gone");
                    self.streams.fail_all("peer restarted");
                    if let Some(ev) = self.path.as_mut().map(|p| p.reset("the peer restarted")) {
                        self.on_path_event(ev).await;
                    }
                }
                self.peer_instance = Some(hello.instance);
                let _ = self
                    .shared
                    .events
                    .send(NetEvent::Message { from: self.peer, msg: PeerMessage::Hello(hello) })
                    .await;
                vec![]
            }
            PeerMessage::PathOffer(offer) => {
                match self.path.as_mut() {
                    Some(path) => {
                        let (reply, ev) = path.on_offer(*offer);
                        if let Some(reply) = reply {
                            self.send(&reply).await;
                        }
                        self.on_path_event(ev).await;
                    }
                    // Relay-only: say so once, so the peer stops offering.
                    None if !offer.reply => {
                        let decline =
                            tunnel_proto::message::PathOffer { fingerprint: [0; 32], candidates: vec![], reply: true };
                        self.send(&PeerMessage::PathOffer(Box::new(decline))).await;
                    }
                    None => {}
                }
                vec![]
            }
            other => {
                let _ = self.shared.events.send(NetEvent::Message { from: self.peer, msg: other }).await;
                vec![]
            }
        };
        for m in to_send {
            self.send(&m).await;
        }
    }

    async fn on_cmd(&mut self, cmd: PeerCmd) {
        match cmd {
            PeerCmd::Send(msg) => self.send(&msg).await,
            PeerCmd::Open { kind, reply } => {
                self.restart_rto_if_idle();
                let (stream, open) = self.streams.open(kind, &self.ports);
                let _ = reply.send(stream);
                self.send(&open).await;
            }
        }
    }

    async fn on_stream_cmd(&mut self, cmd: StreamCmd) {
        self.restart_rto_if_idle();
        let msgs = self.streams.local_cmd(cmd);
        for m in msgs {
            self.send(&m).await;
        }
    }

    /// The retransmission clock runs from the first unacknowledged send, not from an ack
    /// long ago.
    fn restart_rto_if_idle(&mut self) {
        if !self.streams.has_unacked() {
            self.last_ack = Instant::now();
            self.rto = RTO_FIRST;
        }
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        let timed_out = self.streams.has_unacked() && now >= self.last_ack + self.rto;
        if timed_out || self.resend_at.is_some_and(|t| t <= now) {
            if timed_out {
                self.last_ack = now;
                self.rto = (self.rto * 2).min(RTO_MAX);
            }
            self.resend_at = None;
            for m in self.streams.resend() {
                self.send(&m).await;
            }
        }
        if let Some(invite) = self.path.as_mut().and_then(PathState::on_timer) {
            self.send_relay(&invite).await;
        }
        match self.sessions.on_timer(&self.shared.keys, now.into_std()) {
            Timer::Nothing => {}
            Timer::Send(pkt) => self.send_packet(pkt).await,
            Timer::GaveUp(reason) => {
                warn!(peer = %self.peer.short(), %reason, "no session with peer");
                self.outbox.clear();
                self.outbox_bytes = 0;
                self.streams.fail_all(&reason);
                let _ = self.shared.events.send(NetEvent::LinkFailed { peer: self.peer, reason }).await;
            }
        }
    }

    /// Sends on the direct link when one is up, else through the relay; in direct-only,
    /// everything but signalling waits for a direct path.
    async fn send(&mut self, msg: &PeerMessage) {
        if let Some(link) = self.path.as_ref().and_then(PathState::active) {
            if link.send(msg) {
                return;
            }
            // The link just died; its reader reports it. This message takes the relay.
        }
        let signalling = matches!(msg, PeerMessage::Hello(_) | PeerMessage::PathOffer(_));
        if !signalling && self.direct_only() {
            if self.waiting_direct.len() >= OUTBOX_MESSAGES {
                warn!(peer = %self.peer.short(), "too much waiting for a direct path; message dropped");
            } else {
                self.waiting_direct.push_back(msg.clone());
            }
            if let Some(invite) = self.path.as_mut().and_then(PathState::want) {
                self.send_relay(&invite).await;
            }
            return;
        }
        self.send_relay(msg).await;
    }

    async fn send_relay(&mut self, msg: &PeerMessage) {
        let plain = msg.encode();
        if plain.len() > Session::MAX_PLAINTEXT {
            warn!(peer = %self.peer.short(), len = plain.len(), "message too large to send; dropped");
            return;
        }
        self.send_plain(plain).await;
    }

    async fn send_plain(&mut self, plain: Vec<u8>) {
        if let Some(mut frame) = self.sessions.seal(&plain, std::time::Instant::now()) {
            write_send_header(&mut frame, &self.peer);
            let _ = self.shared.relay_out.send(frame).await;
            return;
        }
        if self.outbox.len() >= OUTBOX_MESSAGES || self.outbox_bytes + plain.len() > OUTBOX_BYTES {
            warn!(peer = %self.peer.short(), "outbox full while the handshake runs; message dropped");
        } else {
            self.outbox_bytes += plain.len();
            self.outbox.push_back(plain);
        }
        if let Some(pkt) = self.sessions.ensure_handshake(&self.shared.keys, std::time::Instant::now()) {
            self.send_packet(pkt).await;
        }
    }

    async fn send_packet(&mut self, packet: Vec<u8>) {
        let frame = RelayFrame::Send { to: self.peer, payload: packet }.encode();
        let _ = self.shared.relay_out.send(frame).await;
    }
}

/// Resolves when the link queue has room for stream data again (more than its headroom
/// free), or the link is gone.
async fn room(queue: &Option<mpsc::Sender<bytes::Bytes>>) {
    if let Some(q) = queue {
        let _ = q.reserve_many(crate::direct::LINK_HEADROOM + 1).await;
    }
}

/// The next change of our candidates.
async fn changed<T>(w: &mut Option<watch::Receiver<T>>) -> Result<(), watch::error::RecvError> {
    match w {
        Some(w) => w.changed().await,
        None => std::future::pending().await,
    }
}
