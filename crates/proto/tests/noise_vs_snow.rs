//! Our IKpsk2 against `snow`, byte for byte: same static and ephemeral keys, prologue, psk
//! and payloads must give identical handshake messages, handshake hash and transport keys.

use tunnel_proto::noise::{Initiator, Responder, PROTOCOL_NAME};
use tunnel_proto::SecretKey;

fn fixed(seed: u8) -> [u8; 32] {
    std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
}

fn run(prologue: &[u8], psk: &[u8; 32], p1: &[u8], p2: &[u8]) {
    let (si, sr, ei, er) = (fixed(1), fixed(2), fixed(3), fixed(4));
    let (s_i, s_r) = (SecretKey::from_bytes(si), SecretKey::from_bytes(sr));
    let params: snow::params::NoiseParams = std::str::from_utf8(PROTOCOL_NAME).unwrap().parse().unwrap();
    let rs = s_r.public();

    let mut snow_i = snow::Builder::new(params.clone())
        .local_private_key(&si)
        .remote_public_key(rs.as_bytes())
        .prologue(prologue)
        .psk(2, psk)
        .fixed_ephemeral_key_for_testing_only(&ei)
        .build_initiator()
        .unwrap();
    let mut snow_r = snow::Builder::new(params)
        .local_private_key(&sr)
        .prologue(prologue)
        .psk(2, psk)
        .fixed_ephemeral_key_for_testing_only(&er)
        .build_responder()
        .unwrap();

    // Message 1.
    let (ours_i, m1) = Initiator::start(&s_i, &rs, psk, prologue, SecretKey::from_bytes(ei), p1).unwrap();
    let mut buf = vec![0u8; 65535];
    let n = snow_i.write_message(p1, &mut buf).unwrap();
    assert_eq!(m1, buf[..n], "message 1 differs from snow");
    let mut out = vec![0u8; 65535];
    let n = snow_r.read_message(&m1, &mut out).unwrap();
    assert_eq!(&out[..n], p1);

    // Message 2.
    let ours_r = Responder::read(&s_r, prologue, &m1).unwrap();
    assert_eq!(ours_r.remote(), s_i.public());
    assert_eq!(ours_r.payload(), p1);
    let (keys_r, m2) = ours_r.reply(psk, SecretKey::from_bytes(er), p2).unwrap();
    let n = snow_r.write_message(p2, &mut buf).unwrap();
    assert_eq!(m2, buf[..n], "message 2 differs from snow");
    let n = snow_i.read_message(&m2, &mut out).unwrap();
    assert_eq!(&out[..n], p2);
    let (keys_i, got_p2) = ours_i.finish(&m2).unwrap();
    assert_eq!(got_p2, p2);

    // Handshake hash and split keys.
    assert_eq!(&keys_i.handshake_hash[..], snow_i.get_handshake_hash());
    assert_eq!(&keys_r.handshake_hash[..], snow_r.get_handshake_hash());
    let (k1, k2) = snow_i.dangerously_get_raw_split();
    assert_eq!(*keys_i.send, k1);
    assert_eq!(*keys_i.recv, k2);
    assert_eq!(*keys_r.send, k2);
    assert_eq!(*keys_r.recv, k1);
}

#[test]
fn handshake_matches_snow_with_empty_payloads() {
    run(tunnel_proto::noise::PROLOGUE, &fixed(9), b"", b"");
}

#[test]
fn handshake_matches_snow_with_payloads_and_other_prologue() {
    run(b"another prologue", &fixed(10), b"first payload", &[0xab; 300]);
}
