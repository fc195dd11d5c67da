//! Every decoder round-trips what its encoder wrote and never panics on random, truncated or
//! bit-flipped input.

use proptest::prelude::*;
use tunnel_proto::message::{ByteBuf, Hello, Op, OsInfo, PeerMessage, RemoteError, RemoteErrorKind, Reply, StreamKind};
use tunnel_proto::noise::{Responder, PROLOGUE};
use tunnel_proto::packet::Packet;
use tunnel_proto::relay::{send_to_recv_in_place, ErrorCode, RelayFrame, Speaks};
use tunnel_proto::{NodeId, SecretKey};

fn node_id() -> impl Strategy<Value = NodeId> {
    any::<[u8; 32]>().prop_map(NodeId::from_bytes)
}

/// v1 (no fields on the wire) or any later version with any feature bits.
fn speaks() -> impl Strategy<Value = Speaks> {
    prop_oneof![Just(Speaks::V1), (2u16.., any::<u64>()).prop_map(|(version, features)| Speaks { version, features }),]
}

fn relay_frame() -> impl Strategy<Value = RelayFrame> {
    let bytes = || proptest::collection::vec(any::<u8>(), 0..2048);
    prop_oneof![
        (any::<[u8; 32]>(), node_id(), speaks()).prop_map(|(nonce, relay_key, speaks)| RelayFrame::Challenge {
            nonce,
            relay_key,
            speaks
        }),
        (any::<[u8; 32]>(), node_id(), any::<[u8; 32]>(), speaks())
            .prop_map(|(room_id, node_id, proof, speaks)| { RelayFrame::Join { room_id, node_id, proof, speaks } }),
        (".{0,64}", proptest::collection::vec(node_id(), 0..20))
            .prop_map(|(observed_addr, peers)| RelayFrame::Welcome { observed_addr, peers }),
        node_id().prop_map(|node_id| RelayFrame::PeerJoined { node_id }),
        node_id().prop_map(|node_id| RelayFrame::PeerLeft { node_id }),
        (node_id(), bytes()).prop_map(|(to, payload)| RelayFrame::Send { to, payload }),
        (node_id(), bytes()).prop_map(|(from, payload)| RelayFrame::Recv { from, payload }),
        node_id().prop_map(|to| RelayFrame::Dropped { to }),
        any::<u64>().prop_map(|data| RelayFrame::Ping { data }),
        any::<u64>().prop_map(|data| RelayFrame::Pong { data }),
        any::<u32>().prop_map(|reconnect_in_ms| RelayFrame::Restarting { reconnect_in_ms }),
        (any::<u16>(), ".{0,64}").prop_map(|(c, text)| RelayFrame::Error { code: ErrorCode::from_u16(c), text }),
    ]
}

fn peer_message() -> impl Strategy<Value = PeerMessage> {
    let text = || ".{0,24}";
    let buf = || proptest::collection::vec(any::<u8>(), 0..512).prop_map(ByteBuf::from);
    prop_oneof![
        (text(), proptest::collection::vec(text(), 0..4), text()).prop_map(|(name, tags, distro)| {
            PeerMessage::Hello(Box::new(Hello {
                version: 1,
                instance: 7,
                name,
                tags,
                os: OsInfo { family: "linux".into(), distro, kernel: "6.1".into(), arch: "x86_64".into() },
                tunnel_version: "0.1.0".into(),
                mode: "plan".into(),
                capabilities: vec![],
                ssh_hosts: vec![],
            }))
        }),
        (any::<u64>(), buf()).prop_map(|(id, payload)| PeerMessage::Request { id, op: Op::Ping { payload } }),
        (any::<u64>(), buf())
            .prop_map(|(id, payload)| PeerMessage::Response { id, result: Ok(Reply::Pong { payload }) }),
        (any::<u64>(), text()).prop_map(|(id, message)| PeerMessage::Response {
            id,
            result: Err(RemoteError { kind: RemoteErrorKind::Refused, message }),
        }),
        any::<u64>().prop_map(|id| PeerMessage::Cancel { id }),
        (any::<u64>(), any::<u64>(), any::<Option<u64>>()).prop_map(|(id, done, total)| PeerMessage::Progress {
            id,
            done,
            total
        }),
        (any::<u64>(), any::<u64>(), text()).prop_map(|(stream, window, s)| PeerMessage::Open {
            stream,
            kind: StreamKind::Service(s),
            window
        }),
        (any::<u64>(), any::<u64>(), buf()).prop_map(|(stream, offset, bytes)| PeerMessage::Data {
            stream,
            offset,
            bytes
        }),
        (any::<u64>(), any::<u64>(), any::<u64>())
            .prop_map(|(stream, max_offset, received)| { PeerMessage::Credit { stream, max_offset, received } }),
        (any::<u64>(), any::<u64>(), proptest::option::of(text()))
            .prop_map(|(stream, final_offset, error)| { PeerMessage::Close { stream, final_offset, error } }),
    ]
}

/// Applies one of: truncate, flip a bit, or append bytes.
fn mangle(mut bytes: Vec<u8>, how: u8, at: usize, bit: u8) -> Vec<u8> {
    match how % 3 {
        0 => bytes.truncate(at % (bytes.len() + 1)),
        1 if !bytes.is_empty() => {
            let i = at % bytes.len();
            bytes[i] ^= 1 << (bit % 8);
        }
        _ => bytes.extend_from_slice(&[bit; 3]),
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn relay_frames_round_trip(frame in relay_frame()) {
        let enc = frame.encode();
        prop_assert_eq!(RelayFrame::decode(&enc).unwrap(), frame);
    }

    #[test]
    fn relay_decoder_survives_mangling(frame in relay_frame(), how in any::<u8>(), at in any::<usize>(), bit in any::<u8>()) {
        let bad = mangle(frame.encode(), how, at, bit);
        if let Ok(again) = RelayFrame::decode(&bad) {
            // Whatever decodes must re-encode to exactly the same bytes (one spelling per frame),
            // except the later versions' extensions at the end of Challenge and Join, dropped.
            let re = again.encode();
            if matches!(again, RelayFrame::Challenge { .. } | RelayFrame::Join { .. }) {
                prop_assert_eq!(&bad[..re.len()], &re[..]);
            } else {
                prop_assert_eq!(re, bad);
            }
        }
    }

    #[test]
    fn relay_decoder_survives_noise(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = RelayFrame::decode(&bytes);
        let mut copy = bytes.clone();
        let _ = send_to_recv_in_place(&mut copy, &NodeId::from_bytes([1; 32]));
    }

    #[test]
    fn send_rewrites_to_matching_recv(to in node_id(), from in node_id(), payload in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let mut buf = RelayFrame::Send { to, payload: payload.clone() }.encode();
        prop_assert_eq!(send_to_recv_in_place(&mut buf, &from).unwrap(), to);
        prop_assert_eq!(RelayFrame::decode(&buf).unwrap(), RelayFrame::Recv { from, payload });
    }

    #[test]
    fn peer_messages_round_trip(msg in peer_message()) {
        prop_assert_eq!(PeerMessage::decode(&msg.encode()).unwrap(), msg);
    }

    #[test]
    fn peer_message_decoder_survives_mangling(msg in peer_message(), how in any::<u8>(), at in any::<usize>(), bit in any::<u8>()) {
        let _ = PeerMessage::decode(&mangle(msg.encode(), how, at, bit));
    }

    #[test]
    fn packet_and_handshake_readers_survive_noise(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Packet::parse(&bytes);
        let key = SecretKey::from_bytes([42; 32]);
        let _ = Responder::read(&key, PROLOGUE, &bytes);
    }
}

#[test]
fn send_header_helper_matches_the_encoder() {
    let to = NodeId::from_bytes([9; 32]);
    let mut frame = vec![0u8; tunnel_proto::relay::SEND_HEADER_LEN];
    frame.extend_from_slice(b"payload");
    tunnel_proto::relay::write_send_header(&mut frame, &to);
    assert_eq!(frame, RelayFrame::Send { to, payload: b"payload".to_vec() }.encode());
}
