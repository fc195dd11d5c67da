//! The Noise sessions one node keeps with one peer, and when to make new ones.
//!
//! - Handshakes start on demand (something to send), are retried, and give up after
//!   [`GIVE_UP_AFTER`] with the last reason seen.
//! - Rekey: the session's initiator starts a new handshake after
//!   [`tunnel_proto::session::REKEY_AFTER_TIME`]; the old session stays as `previous` so packets
//!   in flight still open.
//! - Both sides initiating at once: the node with the smaller id keeps its own handshake and
//!   ignores the other's; the larger answers.
//! - Key confirmation: a responder does not send on a new session until a packet from the
//!   initiator opened on it. A replayed message 1 therefore cannot make a node switch to a
//!   session nobody can read.
//!
//! No I/O here: the peer actor passes packets and `Instant`s in and sends what comes out.

use std::time::{Duration, Instant};

use rand::Rng;
use tunnel_proto::noise::{HandshakeError, Initiator, Responder, PROLOGUE};
use tunnel_proto::packet::{self, Packet, RejectReason};
use tunnel_proto::relay::SEND_HEADER_LEN;
use tunnel_proto::session::{Session, REKEY_AFTER_TIME};
use tunnel_proto::{NodeId, SecretKey};
use zeroize::Zeroizing;

const RETRY_EVERY: Duration = Duration::from_millis(1000);
pub(crate) const GIVE_UP_AFTER: Duration = Duration::from_secs(6);
/// A responder starts a rekey itself if the initiator has not, this long after it was due.
const RESPONDER_REKEY_GRACE: Duration = Duration::from_secs(15);

pub(crate) struct Keys {
    pub(crate) secret: SecretKey,
    pub(crate) id: NodeId,
    pub(crate) psk: Zeroizing<[u8; 32]>,
}

struct Live {
    session: Session,
    local_index: u32,
}

struct Pending {
    /// `None` after a response failed to authenticate: the next retry makes a fresh one.
    initiator: Option<Initiator>,
    local_index: u32,
    started: Instant,
    last_sent: Instant,
    last_error: Option<String>,
}

/// What a received packet means for the actor.
pub(crate) enum Incoming {
    Ignored,
    /// Send this packet back (a handshake response or a reject).
    Reply(Vec<u8>),
    /// A plaintext peer message; `new_session` when it opened a session that just became
    /// usable (the actor then sends `Hello` and flushes its queue).
    Plain {
        bytes: Vec<u8>,
        new_session: bool,
    },
    /// Our handshake completed: the session is usable now.
    Established,
}

pub(crate) enum Timer {
    Nothing,
    /// Send this (re)tried handshake message.
    Send(Vec<u8>),
    /// The handshake could not complete; the reason is for the user.
    GaveUp(String),
}

pub(crate) struct Sessions {
    peer: NodeId,
    current: Option<Live>,
    previous: Option<Live>,
    next: Option<Live>,
    pending: Option<Pending>,
}

impl Sessions {
    pub(crate) fn new(peer: NodeId) -> Self {
        Self {
            peer,
            current: None,
            previous: None,
            next: None,
            pending: None,
        }
    }

    /// Forgets everything (the peer restarted or left).
    pub(crate) fn reset(&mut self) {
        *self = Self::new(self.peer);
    }

    /// Whether [`Self::seal`] would work now.
    pub(crate) fn is_usable(&self) -> bool {
        self.current.is_some()
    }

    /// Seals a message into a relay `Send` payload with room for the frame header in front.
    /// `None` when there is no usable session (the caller queues and calls `ensure_handshake`).
    pub(crate) fn seal(&mut self, plaintext: &[u8], now: Instant) -> Option<Vec<u8>> {
        let live = self.current.as_mut()?;
        live.session
            .seal_after(SEND_HEADER_LEN, plaintext, now)
            .ok()
    }

    /// Starts a handshake unless one is under way. Returns the packet to send.
    pub(crate) fn ensure_handshake(&mut self, keys: &Keys, now: Instant) -> Option<Vec<u8>> {
        if self.pending.is_some() {
            return None;
        }
        Some(self.start(keys, now))
    }

    /// Sends a new message 1, keeping the start time and last error of a retried handshake.
    fn start(&mut self, keys: &Keys, now: Instant) -> Vec<u8> {
        let local_index = rand::thread_rng().gen();
        let eph = SecretKey::generate(&mut rand::rngs::OsRng);
        let (initiator, msg) =
            Initiator::start(&keys.secret, &self.peer, &keys.psk, PROLOGUE, eph, b"")
                .expect("peer ids are checked for weak keys before a link exists");
        let (started, last_error) = self
            .pending
            .take()
            .map_or((now, None), |p| (p.started, p.last_error));
        self.pending = Some(Pending {
            initiator: Some(initiator),
            local_index,
            started,
            last_sent: now,
            last_error,
        });
        packet::handshake_init(local_index, &msg)
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let retry = self.pending.as_ref().map(|p| p.last_sent + RETRY_EVERY);
        let rekey = self
            .current
            .as_ref()
            .map(|l| l.session.established() + REKEY_AFTER_TIME);
        match (retry, rekey) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn on_timer(&mut self, keys: &Keys, now: Instant) -> Timer {
        if let Some(p) = &self.pending {
            if now.duration_since(p.started) >= GIVE_UP_AFTER {
                let reason = p.last_error.clone().unwrap_or_else(|| {
                    format!("no handshake answer within {} s", GIVE_UP_AFTER.as_secs())
                });
                self.pending = None;
                return Timer::GaveUp(reason);
            }
            if now.duration_since(p.last_sent) >= RETRY_EVERY {
                return Timer::Send(self.start(keys, now));
            }
            return Timer::Nothing;
        }
        if let Some(live) = &self.current {
            let age = now.saturating_duration_since(live.session.established());
            let due = live.session.needs_rekey(now);
            if due
                && (live.session.is_initiator() || age >= REKEY_AFTER_TIME + RESPONDER_REKEY_GRACE)
            {
                return Timer::Send(self.start(keys, now));
            }
        }
        if self
            .previous
            .as_ref()
            .is_some_and(|l| l.session.expired(now))
        {
            self.previous = None;
        }
        Timer::Nothing
    }

    pub(crate) fn on_packet(&mut self, keys: &Keys, bytes: &[u8], now: Instant) -> Incoming {
        let Ok(pkt) = Packet::parse(bytes) else {
            return Incoming::Ignored;
        };
        match pkt {
            Packet::HandshakeInit { sender, noise } => self.on_init(keys, sender, noise, now),
            Packet::HandshakeResp {
                sender,
                receiver,
                noise,
            } => self.on_resp(sender, receiver, noise, now),
            Packet::Transport {
                receiver,
                counter,
                header,
                ciphertext,
            } => self.on_transport(receiver, counter, header, ciphertext, now),
            Packet::Reject { receiver, reason } => self.on_reject(receiver, reason),
        }
    }

    fn on_init(&mut self, keys: &Keys, sender: u32, noise: &[u8], now: Instant) -> Incoming {
        let responder = match Responder::read(&keys.secret, PROLOGUE, noise) {
            Ok(r) => r,
            Err(_) => {
                return Incoming::Reply(packet::reject(sender, RejectReason::HandshakeFailed))
            }
        };
        if responder.remote() != self.peer {
            // The relay stamped one source, the handshake proves another: refuse it.
            return Incoming::Reply(packet::reject(sender, RejectReason::IdentityMismatch));
        }
        if self.pending.is_some() && keys.id < self.peer {
            return Incoming::Ignored;
        }
        let eph = SecretKey::generate(&mut rand::rngs::OsRng);
        let Ok((transport, msg)) = responder.reply(&keys.psk, eph, b"") else {
            return Incoming::Ignored;
        };
        let local_index = rand::thread_rng().gen();
        self.pending = None;
        self.next = Some(Live {
            session: Session::new(transport, sender, false, now),
            local_index,
        });
        Incoming::Reply(packet::handshake_resp(local_index, sender, &msg))
    }

    fn on_resp(&mut self, sender: u32, receiver: u32, noise: &[u8], now: Instant) -> Incoming {
        let Some(pending) = self.pending.as_mut().filter(|p| p.local_index == receiver) else {
            return Incoming::Ignored;
        };
        let Some(initiator) = pending.initiator.take() else {
            return Incoming::Ignored;
        };
        match initiator.finish(noise) {
            Ok((transport, _)) => {
                let local_index = pending.local_index;
                self.pending = None;
                self.previous = self.current.take();
                self.current = Some(Live {
                    session: Session::new(transport, sender, true, now),
                    local_index,
                });
                Incoming::Established
            }
            Err(e) => {
                // Keep retrying until the deadline (a forged answer must not end a real
                // handshake), but remember why this one failed, for the user.
                pending.last_error = Some(match e {
                    HandshakeError::Decrypt => {
                        "handshake failed: the peer holds a different room token (or the relay altered the handshake)".to_string()
                    }
                    other => format!("handshake failed: {other}"),
                });
                Incoming::Ignored
            }
        }
    }

    fn on_transport(
        &mut self,
        receiver: u32,
        counter: u64,
        header: &[u8],
        ciphertext: &[u8],
        now: Instant,
    ) -> Incoming {
        let open = |live: &mut Option<Live>| -> Option<Vec<u8>> {
            let l = live.as_mut().filter(|l| l.local_index == receiver)?;
            l.session.open(counter, header, ciphertext, now).ok()
        };
        if let Some(bytes) = open(&mut self.current) {
            return Incoming::Plain {
                bytes,
                new_session: false,
            };
        }
        if let Some(bytes) = open(&mut self.next) {
            // The initiator used the new session: it is confirmed; switch to it.
            self.previous = self.current.take();
            self.current = self.next.take();
            return Incoming::Plain {
                bytes,
                new_session: true,
            };
        }
        match open(&mut self.previous) {
            Some(bytes) => Incoming::Plain {
                bytes,
                new_session: false,
            },
            None => Incoming::Ignored,
        }
    }

    /// A reject is unauthenticated: it never ends a handshake early, it only explains a
    /// failure that the deadline then reports.
    fn on_reject(&mut self, receiver: u32, reason: RejectReason) -> Incoming {
        if let Some(p) = self.pending.as_mut().filter(|p| p.local_index == receiver) {
            p.last_error = Some(match reason {
                RejectReason::HandshakeFailed => {
                    "the peer could not authenticate our handshake".into()
                }
                RejectReason::NotAllowed => {
                    "the peer does not accept sessions from this node".into()
                }
                RejectReason::IdentityMismatch => {
                    "the relay delivered our handshake under another node's id".into()
                }
                RejectReason::Unknown(c) => format!("the peer rejected our handshake (reason {c})"),
            });
        }
        Incoming::Ignored
    }
}
