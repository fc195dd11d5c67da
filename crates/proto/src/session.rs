//! Transport sessions: what a finished handshake turns into.
//!
//! Each packet carries its 64-bit counter in the clear; the counter is the AES-GCM nonce, so
//! a nonce is never reused (sealing stops at [`REJECT_AFTER_MESSAGES`]), and the receiver's
//! [`ReplayWindow`] drops replayed, reflected (wrong key direction), reordered-beyond-window
//! and spliced (header is authenticated data) packets.
//!
//! The AEAD here is ring's AES-256-GCM, not the `aes-gcm` crate the handshake uses: on the
//! bulk path that crate's GHASH alone took about a third of a node's CPU, and ring (already
//! built in for the SSH arm) is several times faster. The raw keys we hold zeroize on drop;
//! ring's expanded key schedule is not wiped when a session ends.
//!
//! Time is passed in: the session never reads a clock.

use std::time::{Duration, Instant};

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};

use crate::noise::TransportKeys;
use crate::packet::{TRANSPORT_HEADER_LEN, TYPE_TRANSPORT};
use crate::replay::ReplayWindow;

/// Start a new handshake once a session is this old...
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// ...or has sealed this many messages, whichever comes first.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 32;
/// Refuse to use a session past this age: the rekey had a minute to complete.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// Hard stop for sealing, well below counter wrap.
pub const REJECT_AFTER_MESSAGES: u64 = REKEY_AFTER_MESSAGES + (1 << 24);
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum SessionError {
    #[error("session used up its nonces; a new handshake is required")]
    Exhausted,
    #[error("session expired; a new handshake is required")]
    Expired,
    #[error("packet counter {0} replayed or too old")]
    Replay(u64),
    #[error("packet failed authentication")]
    Decrypt,
}

pub struct Session {
    send: LessSafeKey,
    recv: LessSafeKey,
    next_send: u64,
    replay: ReplayWindow,
    established: Instant,
    /// The index the peer gave for this session; goes in every packet we send.
    remote_index: u32,
    handshake_hash: [u8; 32],
    initiator: bool,
}

impl Session {
    pub fn new(keys: TransportKeys, remote_index: u32, initiator: bool, now: Instant) -> Self {
        Self {
            send: aead_key(&keys.send),
            recv: aead_key(&keys.recv),
            next_send: 0,
            replay: ReplayWindow::default(),
            established: now,
            remote_index,
            handshake_hash: keys.handshake_hash,
            initiator,
        }
    }

    pub fn handshake_hash(&self) -> &[u8; 32] {
        &self.handshake_hash
    }

    pub fn established(&self) -> Instant {
        self.established
    }

    /// The index the peer chose for this session.
    pub fn remote_index(&self) -> u32 {
        self.remote_index
    }

    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// Whether the owner should start a new handshake (only the initiator does, so both
    /// sides do not rekey at once; the responder's session expires if the initiator is gone).
    pub fn needs_rekey(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.established) >= REKEY_AFTER_TIME || self.next_send >= REKEY_AFTER_MESSAGES
    }

    pub fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.established) >= REJECT_AFTER_TIME
    }

    /// Seals `plaintext` into a whole transport packet.
    pub fn seal(&mut self, plaintext: &[u8], now: Instant) -> Result<Vec<u8>, SessionError> {
        self.seal_after(0, plaintext, now)
    }

    /// Like [`Self::seal`], but the packet starts after `headroom` zero bytes that the caller
    /// fills in (a relay `Send` header), saving a copy of every payload.
    pub fn seal_after(&mut self, headroom: usize, plaintext: &[u8], now: Instant) -> Result<Vec<u8>, SessionError> {
        if self.expired(now) {
            return Err(SessionError::Expired);
        }
        if self.next_send >= REJECT_AFTER_MESSAGES {
            return Err(SessionError::Exhausted);
        }
        let counter = self.next_send;
        self.next_send += 1;
        let mut out = Vec::with_capacity(headroom + TRANSPORT_HEADER_LEN + plaintext.len() + TAG_LEN);
        out.resize(headroom, 0);
        out.push(TYPE_TRANSPORT);
        out.extend_from_slice(&self.remote_index.to_be_bytes());
        out.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(plaintext);
        let (header, body) = out[headroom..].split_at_mut(TRANSPORT_HEADER_LEN);
        let tag = self
            .send
            .seal_in_place_separate_tag(nonce(counter), Aad::from(&*header), body)
            .expect("AES-GCM sealing of a bounded message cannot fail");
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Largest plaintext that fits one relay payload once sealed.
    pub const MAX_PLAINTEXT: usize = crate::relay::MAX_PAYLOAD - TRANSPORT_HEADER_LEN - TAG_LEN;

    /// Opens a transport packet's ciphertext. The counter is recorded only once the packet
    /// authenticated.
    pub fn open(
        &mut self,
        counter: u64,
        header: &[u8],
        ciphertext: &[u8],
        now: Instant,
    ) -> Result<Vec<u8>, SessionError> {
        if self.expired(now) {
            return Err(SessionError::Expired);
        }
        if !self.replay.check(counter) {
            return Err(SessionError::Replay(counter));
        }
        let split = ciphertext.len().checked_sub(TAG_LEN).ok_or(SessionError::Decrypt)?;
        let (body, tag) = ciphertext.split_at(split);
        let tag = Tag::try_from(tag).map_err(|_| SessionError::Decrypt)?;
        let mut plaintext = body.to_vec();
        self.recv
            .open_in_place_separate_tag(nonce(counter), Aad::from(header), tag, &mut plaintext, 0..)
            .map_err(|_| SessionError::Decrypt)?;
        if !self.replay.accept(counter) {
            return Err(SessionError::Replay(counter));
        }
        Ok(plaintext)
    }
}

fn aead_key(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte key is an AES-256 key"))
}

/// Noise's AES-GCM nonce for `counter` (a counter is never sealed twice).
fn nonce(counter: u64) -> Nonce {
    Nonce::assume_unique_for_key(crate::noise::nonce_bytes(counter))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use crate::noise::{Initiator, Responder, PROLOGUE};
    use crate::packet::Packet;
    use rand::rngs::OsRng;

    pub(crate) fn pair(now: Instant) -> (Session, Session) {
        let key = || SecretKey::generate(&mut OsRng);
        let (a, b, psk) = (key(), key(), [3u8; 32]);
        let (init, m1) = Initiator::start(&a, &b.public(), &psk, PROLOGUE, key(), b"").unwrap();
        let (kb, m2) = Responder::read(&b, PROLOGUE, &m1).unwrap().reply(&psk, key(), b"").unwrap();
        let (ka, _) = init.finish(&m2).unwrap();
        (Session::new(ka, 2, true, now), Session::new(kb, 1, false, now))
    }

    fn open(s: &mut Session, pkt: &[u8], now: Instant) -> Result<Vec<u8>, SessionError> {
        let Packet::Transport { counter, header, ciphertext, .. } = Packet::parse(pkt).unwrap() else { panic!() };
        s.open(counter, header, ciphertext, now)
    }

    #[test]
    fn seal_open_and_tamper() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let p1 = a.seal(b"one", now).unwrap();
        let p2 = a.seal(b"two", now).unwrap();
        assert_eq!(open(&mut b, &p2, now).unwrap(), b"two");
        assert_eq!(open(&mut b, &p1, now).unwrap(), b"one", "reordering is fine");
        assert_eq!(open(&mut b, &p1, now), Err(SessionError::Replay(0)));
        // Reflection: a's own packet back to a fails (keys differ per direction).
        let p3 = a.seal(b"three", now).unwrap();
        assert_eq!(open(&mut a, &p3, now), Err(SessionError::Decrypt));
        // Every single bit flip is caught.
        for i in 0..p3.len() * 8 {
            let mut bad = p3.clone();
            bad[i / 8] ^= 1 << (i % 8);
            if let Ok(Packet::Transport { counter, header, ciphertext, .. }) = Packet::parse(&bad) {
                assert!(b.open(counter, header, ciphertext, now).is_err(), "bit {i}");
            }
        }
        assert_eq!(open(&mut b, &p3, now).unwrap(), b"three", "forgeries did not burn the counter");
    }

    #[test]
    fn rekey_and_expiry_follow_the_clock() {
        let now = Instant::now();
        let (mut a, _) = pair(now);
        assert!(!a.needs_rekey(now));
        assert!(a.needs_rekey(now + REKEY_AFTER_TIME));
        assert!(a.seal(b"x", now + REKEY_AFTER_TIME).is_ok());
        assert_eq!(a.seal(b"x", now + REJECT_AFTER_TIME), Err(SessionError::Expired));
        a.next_send = REKEY_AFTER_MESSAGES;
        assert!(a.needs_rekey(now));
        a.next_send = REJECT_AFTER_MESSAGES;
        assert_eq!(a.seal(b"x", now), Err(SessionError::Exhausted));
    }
}
