//! Peer packet parsing and the Noise responder reading message 1: no panic on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunnel_proto::noise::{Responder, PROLOGUE};
use tunnel_proto::packet::Packet;
use tunnel_proto::SecretKey;

fuzz_target!(|data: &[u8]| {
    let _ = Packet::parse(data);
    let key = SecretKey::from_bytes([42; 32]);
    if let Ok(responder) = Responder::read(&key, PROLOGUE, data) {
        let _ = responder.reply(&[1; 32], SecretKey::from_bytes([43; 32]), b"");
    }
});
