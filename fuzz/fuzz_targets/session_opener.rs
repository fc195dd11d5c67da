//! A live transport session fed arbitrary packets, then peer-message decoding of anything
//! that opens: no panic, and no forged packet ever opens.
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use tunnel_proto::message::PeerMessage;
use tunnel_proto::noise::{Initiator, Responder, TransportKeys, PROLOGUE};
use tunnel_proto::packet::Packet;
use tunnel_proto::session::Session;
use tunnel_proto::SecretKey;
use zeroize::Zeroizing;

/// The receiving side's keys of one real handshake, made once.
fn receiver_keys() -> &'static ([u8; 32], [u8; 32], [u8; 32]) {
    static KEYS: OnceLock<([u8; 32], [u8; 32], [u8; 32])> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (a, b) = (SecretKey::from_bytes([1; 32]), SecretKey::from_bytes([2; 32]));
        let psk = [3u8; 32];
        let (init, m1) = Initiator::start(&a, &b.public(), &psk, PROLOGUE, SecretKey::from_bytes([4; 32]), b"").unwrap();
        let (kb, m2) = Responder::read(&b, PROLOGUE, &m1).unwrap().reply(&psk, SecretKey::from_bytes([5; 32]), b"").unwrap();
        init.finish(&m2).unwrap();
        (*kb.send, *kb.recv, kb.handshake_hash)
    })
}

fuzz_target!(|data: &[u8]| {
    let (send, recv, handshake_hash) = receiver_keys();
    let keys = TransportKeys { send: Zeroizing::new(*send), recv: Zeroizing::new(*recv), handshake_hash: *handshake_hash };
    let now = Instant::now();
    let mut receiver = Session::new(keys, 1, false, now);
    if let Ok(Packet::Transport { counter, header, ciphertext, .. }) = Packet::parse(data) {
        // Nothing but the peer holding the key can produce an opening packet.
        assert!(receiver.open(counter, header, ciphertext, now).is_err());
    }
    let _ = PeerMessage::decode(data);
});
