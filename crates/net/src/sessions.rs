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
    /// The peer does not know the session we send on: it lost its state, and with it every
    /// stream. `handshake` is a new message 1 to send; `usable` says a session the peer made
    /// took over at once (the actor then sends `Hello` and flushes its queue).
    PeerLostSession {
        handshake: Option<Vec<u8>>,
        usable: bool,
    },
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
        Self { peer, current: None, previous: None, next: None, pending: None }
    }

    /// Whether [`Self::seal`] would work now.
    pub(crate) fn is_usable(&self) -> bool {
        self.current.is_some()
    }

    /// Seals a message into a relay `Send` payload with room for the frame header in front.
    /// `None` when there is no usable session (the caller queues and calls `ensure_handshake`).
    pub(crate) fn seal(&mut self, plaintext: &[u8], now: Instant) -> Option<Vec<u8>> {
        let live = self.current.as_mut()?;
        live.session.seal_after(SEND_HEADER_LEN, plaintext, now).ok()
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
        let (initiator, msg) = Initiator::start(&keys.secret, &self.peer, &keys.psk, PROLOGUE, eph, b"")
            .expect("peer ids are checked for weak keys before a link exists");
        let (started, last_error) = self.pending.take().map_or((now, None), |p| (p.started, p.last_error));
        self.pending = Some(Pending { initiator: Some(initiator), local_index, started, last_sent: now, last_error });
        packet::handshake_init(local_index, &msg)
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let retry = self.pending.as_ref().map(|p| p.last_sent + RETRY_EVERY);
        let rekey = self.current.as_ref().map(|l| l.session.established() + REKEY_AFTER_TIME);
        match (retry, rekey) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn on_timer(&mut self, keys: &Keys, now: Instant) -> Timer {
        if self.previous.as_ref().is_some_and(|l| l.session.expired(now)) {
            self.previous = None;
        }
        if let Some(p) = &self.pending {
            if now.duration_since(p.started) >= GIVE_UP_AFTER {
                let reason = p
                    .last_error
                    .clone()
                    .unwrap_or_else(|| format!("no handshake answer within {} s", GIVE_UP_AFTER.as_secs()));
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
            if due && (live.session.is_initiator() || age >= REKEY_AFTER_TIME + RESPONDER_REKEY_GRACE) {
                return Timer::Send(self.start(keys, now));
            }
        }
        Timer::Nothing
    }

    pub(crate) fn on_packet(&mut self, keys: &Keys, bytes: &[u8], now: Instant) -> Incoming {
        let Ok(pkt) = Packet::parse(bytes) else {
            return Incoming::Ignored;
        };
        match pkt {
            Packet::HandshakeInit { sender, noise } => self.on_init(keys, sender, noise, now),
            Packet::HandshakeResp { sender, receiver, noise } => self.on_resp(sender, receiver, noise, now),
            Packet::Transport { receiver, counter, header, ciphertext } => {
                self.on_transport(receiver, counter, header, ciphertext, now)
            }
            Packet::Reject { receiver, reason: RejectReason::UnknownSession } => {
                self.on_unknown_session(keys, receiver, now)
            }
            Packet::Reject { receiver, reason } => self.on_reject(receiver, reason),
        }
    }

    fn on_init(&mut self, keys: &Keys, sender: u32, noise: &[u8], now: Instant) -> Incoming {
        let responder = match Responder::read(&keys.secret, PROLOGUE, noise) {
            Ok(r) => r,
            Err(_) => return Incoming::Reply(packet::reject(sender, RejectReason::HandshakeFailed)),
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
        self.next = Some(Live { session: Session::new(transport, sender, false, now), local_index });
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
                self.current = Some(Live { session: Session::new(transport, sender, true, now), local_index });
                Incoming::Established
            }
            Err(e) => {
                // Keep retrying until the deadline (a forged answer must not end a real
                // handshake), but remember why this one failed, for the user.
                pending.last_error = Some(match e {
                    HandshakeError::Decrypt => {
                        "handshake failed: the peer holds a different room token (or the relay altered the handshake)"
                            .to_string()
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
            return Incoming::Plain { bytes, new_session: false };
        }
        if let Some(bytes) = open(&mut self.next) {
            // The initiator used the new session: it is confirmed; switch to it.
            self.previous = self.current.take();
            self.current = self.next.take();
            return Incoming::Plain { bytes, new_session: true };
        }
        if let Some(bytes) = open(&mut self.previous) {
            return Incoming::Plain { bytes, new_session: false };
        }
        let known =
            [&self.current, &self.next, &self.previous].into_iter().flatten().any(|l| l.local_index == receiver);
        if known {
            // A session we have, but the packet did not open: tampered or replayed. Drop it.
            return Incoming::Ignored;
        }
        Incoming::Reply(packet::reject(receiver, RejectReason::UnknownSession))
    }

    /// The peer says it has no session `remote_index`. If that is the one we send on, the peer
    /// lost its state. Only that session goes: a session the peer started and we have not yet
    /// used (`next`) is one it surely knows, so it takes over; otherwise a handshake starts
    /// (unless one is under way). Dropping more (say, every session) would also drop the one
    /// the peer is building with us right now, and two nodes would knock each other's new
    /// sessions down forever. (Rejects are unauthenticated; a forger gains a new handshake,
    /// which a relay could force by dropping frames anyway.)
    fn on_unknown_session(&mut self, keys: &Keys, remote_index: u32, now: Instant) -> Incoming {
        if self.current.as_ref().is_none_or(|l| l.session.remote_index() != remote_index) {
            return Incoming::Ignored;
        }
        self.current = self.next.take();
        let handshake = match (&self.current, &self.pending) {
            (None, None) => Some(self.start(keys, now)),
            _ => None,
        };
        Incoming::PeerLostSession { handshake, usable: self.current.is_some() }
    }

    /// A reject is unauthenticated: it never ends a handshake early, it only explains a
    /// failure that the deadline then reports.
    fn on_reject(&mut self, receiver: u32, reason: RejectReason) -> Incoming {
        if let Some(p) = self.pending.as_mut().filter(|p| p.local_index == receiver) {
            p.last_error = Some(match reason {
                RejectReason::HandshakeFailed => "the peer could not authenticate our handshake".into(),
                RejectReason::NotAllowed => "the peer does not accept sessions from this node".into(),
                RejectReason::IdentityMismatch => "the relay delivered our handshake under another node's id".into(),
                RejectReason::UnknownSession => "the peer lost our session".into(),
                RejectReason::Unknown(c) => format!("the peer rejected our handshake (reason {c})"),
            });
        }
        Incoming::Ignored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        let secret = SecretKey::generate(&mut rand::rngs::OsRng);
        Keys { id: secret.public(), secret, psk: Zeroizing::new([7; 32]) }
    }

    /// Two nodes passing packets in memory, delivered in a seeded random order.
    struct Pair {
        keys: [Keys; 2],
        s: [Sessions; 2],
        wire: Vec<(usize, Vec<u8>)>,
        got: [usize; 2],
        lost_events: usize,
        rng: u64,
        now: Instant,
    }

    impl Pair {
        fn new(seed: u64) -> Self {
            let keys = [keys(), keys()];
            let s = [Sessions::new(keys[1].id), Sessions::new(keys[0].id)];
            Self { keys, s, wire: Vec::new(), got: [0, 0], lost_events: 0, rng: seed | 1, now: Instant::now() }
        }

        fn random(&mut self, n: usize) -> usize {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            (self.rng % n as u64) as usize
        }

        /// Talks both ways until each side has received a message.
        fn establish(&mut self) {
            while self.got[0] < 1 || self.got[1] < 1 {
                self.talk(0);
                self.talk(1);
                while !self.wire.is_empty() {
                    self.deliver_one();
                }
            }
        }

        /// Side `i` sends a message, or starts a handshake to be able to.
        fn talk(&mut self, i: usize) {
            match self.s[i].seal(b"hello", self.now) {
                Some(mut frame) => self.wire.push((1 - i, frame.split_off(SEND_HEADER_LEN))),
                None => {
                    if let Some(p) = self.s[i].ensure_handshake(&self.keys[i], self.now) {
                        self.wire.push((1 - i, p));
                    }
                }
            }
        }

        fn deliver_one(&mut self) {
            if self.wire.is_empty() {
                return;
            }
            let pick = self.random(self.wire.len());
            let (to, pkt) = self.wire.swap_remove(pick);
            match self.s[to].on_packet(&self.keys[to], &pkt, self.now) {
                Incoming::Reply(p) => self.wire.push((1 - to, p)),
                Incoming::PeerLostSession { handshake, .. } => {
                    self.lost_events += 1;
                    if let Some(p) = handshake {
                        self.wire.push((1 - to, p));
                    }
                }
                Incoming::Plain { bytes, .. } => {
                    assert_eq!(bytes, b"hello");
                    self.got[to] += 1;
                }
                _ => {}
            }
        }
    }

    /// The exact order that made two nodes knock down each other's new sessions forever after
    /// a relay restart: the reject for the stale session arrives after the node has already
    /// answered the forgetful peer's new handshake. That new session must survive.
    #[test]
    fn regression_reject_after_answering_keeps_the_new_session() {
        let mut p = Pair::new(1);
        p.establish();
        p.s[1] = Sessions::new(p.keys[0].id); // B forgets; A still sends on the old session.
        let (a, b) = (0, 1);
        let stale = p.s[a].seal(b"hello", p.now).unwrap().split_off(SEND_HEADER_LEN);
        let init = p.s[b].ensure_handshake(&p.keys[b], p.now).unwrap();
        let Incoming::Reply(reject) = p.s[b].on_packet(&p.keys[b], &stale, p.now) else { panic!("B rejects") };
        let Incoming::Reply(resp) = p.s[a].on_packet(&p.keys[a], &init, p.now) else { panic!("A answers") };
        match p.s[a].on_packet(&p.keys[a], &reject, p.now) {
            Incoming::PeerLostSession { usable: true, .. } => {}
            _ => panic!("A should switch to the session B just made"),
        }
        assert!(matches!(p.s[b].on_packet(&p.keys[b], &resp, p.now), Incoming::Established));
        let from_b = p.s[b].seal(b"hello", p.now).unwrap().split_off(SEND_HEADER_LEN);
        assert!(matches!(p.s[a].on_packet(&p.keys[a], &from_b, p.now), Incoming::Plain { .. }), "A knows B's session");
        let from_a = p.s[a].seal(b"hello", p.now).unwrap().split_off(SEND_HEADER_LEN);
        assert!(matches!(p.s[b].on_packet(&p.keys[b], &from_a, p.now), Incoming::Plain { .. }), "B knows A's session");
    }

    /// A relay replays a handshake initiation: the responder may answer it, but keeps sending
    /// on the confirmed session, which the peer still reads; nothing the peers use changes.
    #[test]
    fn a_replayed_initiation_changes_nothing_the_peers_use() {
        let mut p = Pair::new(3);
        let (a, b) = (0, 1);
        let init = p.s[a].ensure_handshake(&p.keys[a], p.now).unwrap();
        let Incoming::Reply(resp) = p.s[b].on_packet(&p.keys[b], &init, p.now) else { panic!("B answers") };
        assert!(matches!(p.s[a].on_packet(&p.keys[a], &resp, p.now), Incoming::Established));
        let first = p.s[a].seal(b"hello", p.now).unwrap().split_off(SEND_HEADER_LEN);
        assert!(matches!(p.s[b].on_packet(&p.keys[b], &first, p.now), Incoming::Plain { .. }));
        for replay in 0..3 {
            let _ = p.s[b].on_packet(&p.keys[b], &init, p.now);
            let from_b = p.s[b].seal(b"hello", p.now).unwrap().split_off(SEND_HEADER_LEN);
            let got = p.s[a].on_packet(&p.keys[a], &from_b, p.now);
            assert!(matches!(got, Incoming::Plain { .. }), "replay {replay}: B moved off the session A has");
            let from_a = p.s[a].seal(b"hello", p.now).unwrap().split_off(SEND_HEADER_LEN);
            let got = p.s[b].on_packet(&p.keys[b], &from_a, p.now);
            assert!(matches!(got, Incoming::Plain { .. }), "replay {replay}: B no longer reads A");
        }
    }

    #[test]
    fn stale_and_forgetful_peers_converge_under_random_delivery() {
        let mut worst = 0;
        let mut total = 0;
        for trial in 0..300u64 {
            let mut p = Pair::new(0x9e37_79b9_7f4a_7c15 ^ trial.wrapping_mul(0x2545_f491_4f6c_dd1d));
            while p.got[0] < 5 || p.got[1] < 5 {
                p.talk(0);
                p.talk(1);
                p.deliver_one();
                p.deliver_one();
            }
            // Side 1 forgets everything (its actor was recreated); side 0 keeps the old session.
            p.s[1] = Sessions::new(p.keys[0].id);
            p.got = [0, 0];
            let mut steps = 0;
            while (p.got[0] < 5 || p.got[1] < 5) && steps < 500 {
                p.talk(0);
                p.talk(1);
                p.deliver_one();
                p.deliver_one();
                steps += 1;
            }
            assert!(steps < 500, "trial {trial}: no convergence after 500 steps, got {:?}", p.got);
            worst = worst.max(p.lost_events);
            total += p.lost_events;
        }
        assert!(total < 300 * 3, "{total} lost-session events over 300 recoveries");
        // Recovering from one lost peer takes a few rejects, not an endless exchange of them.
        assert!(worst <= 12, "as many as {worst} lost-session events in one recovery");
    }

    #[test]
    fn initiator_rekeys_on_time_and_packets_in_flight_still_open() {
        let mut p = Pair::new(7);
        p.establish();
        let initiator = if p.s[0].current.as_ref().unwrap().session.is_initiator() { 0 } else { 1 };
        let responder = 1 - initiator;
        let old_hash = *p.s[0].current.as_ref().unwrap().session.handshake_hash();
        // A packet sealed on the old session, still in flight during the rekey.
        let in_flight = p.s[responder].seal(b"hello", p.now).unwrap().split_off(SEND_HEADER_LEN);

        p.now += REKEY_AFTER_TIME;
        assert!(
            matches!(p.s[responder].on_timer(&p.keys[responder], p.now), Timer::Nothing),
            "only the initiator rekeys"
        );
        let Timer::Send(init) = p.s[initiator].on_timer(&p.keys[initiator], p.now) else { panic!("initiator rekeys") };
        let Incoming::Reply(resp) = p.s[responder].on_packet(&p.keys[responder], &init, p.now) else { panic!() };
        assert!(matches!(p.s[initiator].on_packet(&p.keys[initiator], &resp, p.now), Incoming::Established));
        let confirm = p.s[initiator].seal(b"hello", p.now).unwrap().split_off(SEND_HEADER_LEN);
        assert!(matches!(
            p.s[responder].on_packet(&p.keys[responder], &confirm, p.now),
            Incoming::Plain { new_session: true, .. }
        ));
        for side in [0, 1] {
            assert_ne!(*p.s[side].current.as_ref().unwrap().session.handshake_hash(), old_hash, "new keys");
        }
        assert!(
            matches!(p.s[initiator].on_packet(&p.keys[initiator], &in_flight, p.now), Incoming::Plain { .. }),
            "a packet sealed before the rekey still opens"
        );
        // The old session is gone once it expires.
        p.now += tunnel_proto::session::REJECT_AFTER_TIME;
        p.s[initiator].on_timer(&p.keys[initiator], p.now);
        assert!(p.s[initiator].previous.is_none());
    }

    #[test]
    fn a_handshake_nobody_answers_gives_up_with_a_reason() {
        let mut p = Pair::new(9);
        let first = p.s[0].ensure_handshake(&p.keys[0], p.now).unwrap();
        assert!(p.s[0].ensure_handshake(&p.keys[0], p.now).is_none(), "one handshake at a time");
        // The peer answers with a response that fails to authenticate (wrong room token).
        let mut wrong = Keys { psk: Zeroizing::new([8; 32]), ..keys() };
        wrong.secret = p.keys[1].secret.clone();
        wrong.id = p.keys[1].id;
        let Incoming::Reply(resp) = p.s[1].on_packet(&wrong, &first, p.now) else { panic!() };
        assert!(matches!(p.s[0].on_packet(&p.keys[0], &resp, p.now), Incoming::Ignored));
        let mut retries = 0;
        loop {
            p.now += Duration::from_millis(500);
            match p.s[0].on_timer(&p.keys[0], p.now) {
                Timer::Send(_) => retries += 1,
                Timer::Nothing => {}
                Timer::GaveUp(reason) => {
                    assert!(reason.contains("different room token"), "{reason}");
                    break;
                }
            }
            assert!(p.now.duration_since(Instant::now()) < GIVE_UP_AFTER * 2, "gave up in time");
        }
        assert!(retries >= 3, "retried {retries} times");
    }
}
