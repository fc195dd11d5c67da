//! Relay frame test vectors shared with the Cloudflare worker (`tests/vectors/relay_frames.json`).
//! Each vector names a frame, gives its fields and its exact bytes in hex; both implementations
//! must encode the fields to those bytes and decode the bytes back to the fields.
//! `TUNNEL_WRITE_VECTORS=1 cargo test -p tunnel-proto --test vectors` rewrites the file.

use serde_json::{json, Value};
use tunnel_proto::relay::{ErrorCode, RelayFrame, Speaks};
use tunnel_proto::NodeId;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/relay_frames.json");

fn id(b: u8) -> NodeId {
    NodeId::from_bytes(std::array::from_fn(|i| b.wrapping_add(i as u8)))
}

fn cases() -> Vec<(&'static str, RelayFrame, Value)> {
    let h = |b: &[u8]| hex::encode(b);
    vec![
        (
            "challenge",
            RelayFrame::Challenge { nonce: [0x11; 32], relay_key: id(0x20), speaks: Speaks::V1 },
            json!({"nonce": h(&[0x11; 32]), "relay_key": h(id(0x20).as_bytes())}),
        ),
        (
            "challenge_v2",
            RelayFrame::Challenge {
                nonce: [0x12; 32],
                relay_key: id(0x21),
                speaks: Speaks { version: 2, features: 0x8000_0000_0000_0001 },
            },
            json!({"nonce": h(&[0x12; 32]), "relay_key": h(id(0x21).as_bytes()), "version": 2, "features": "8000000000000001"}),
        ),
        (
            "join",
            RelayFrame::Join { room_id: [0x22; 32], node_id: id(0x40), proof: [0x33; 32], speaks: Speaks::V1 },
            json!({"room_id": h(&[0x22; 32]), "node_id": h(id(0x40).as_bytes()), "proof": h(&[0x33; 32])}),
        ),
        (
            "join_v2",
            RelayFrame::Join { room_id: [0x23; 32], node_id: id(0x41), proof: [0x34; 32], speaks: Speaks::THIS },
            json!({"room_id": h(&[0x23; 32]), "node_id": h(id(0x41).as_bytes()), "proof": h(&[0x34; 32]), "version": 2, "features": "0000000000000000"}),
        ),
        (
            "welcome",
            RelayFrame::Welcome { observed_addr: "127.0.0.1:40000".into(), peers: vec![id(1), id(2)] },
            json!({"observed_addr": "127.0.0.1:40000", "peers": [h(id(1).as_bytes()), h(id(2).as_bytes())]}),
        ),
        (
            "welcome_empty",
            RelayFrame::Welcome { observed_addr: String::new(), peers: vec![] },
            json!({"observed_addr": "", "peers": []}),
        ),
        ("peer_joined", RelayFrame::PeerJoined { node_id: id(3) }, json!({"node_id": h(id(3).as_bytes())})),
        ("peer_left", RelayFrame::PeerLeft { node_id: id(4) }, json!({"node_id": h(id(4).as_bytes())})),
        (
            "send",
            RelayFrame::Send { to: id(5), payload: b"ciphertext".to_vec() },
            json!({"to": h(id(5).as_bytes()), "payload": h(b"ciphertext")}),
        ),
        (
            "recv",
            RelayFrame::Recv { from: id(6), payload: vec![] },
            json!({"from": h(id(6).as_bytes()), "payload": ""}),
        ),
        ("dropped", RelayFrame::Dropped { to: id(7) }, json!({"to": h(id(7).as_bytes())})),
        ("ping", RelayFrame::Ping { data: 0x0102030405060708 }, json!({"data": "0102030405060708"})),
        ("pong", RelayFrame::Pong { data: 1 }, json!({"data": "0000000000000001"})),
        ("restarting", RelayFrame::Restarting { reconnect_in_ms: 1500 }, json!({"reconnect_in_ms": 1500})),
        (
            "error_replaced",
            RelayFrame::Error { code: ErrorCode::Replaced, text: "replaced by a newer connection".into() },
            json!({"code": 3, "text": "replaced by a newer connection"}),
        ),
    ]
}

#[test]
fn relay_frames_match_the_shared_vectors() {
    let vectors: Vec<Value> = cases()
        .into_iter()
        .map(|(name, frame, fields)| json!({"name": name, "frame": frame.name(), "fields": fields, "hex": hex::encode(frame.encode())}))
        .collect();
    let doc = json!({
        "about": "tunnel-relay frames (v1, and v2 where marked): each encodes to `hex`; see crates/proto/src/relay.rs for the layout",
        "vectors": vectors,
    });
    if std::env::var_os("TUNNEL_WRITE_VECTORS").is_some() {
        std::fs::write(PATH, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    }
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(PATH).expect("vectors file present")).unwrap();
    assert_eq!(on_disk, doc, "encoder output differs from {PATH}");
    for ((name, frame, _), v) in cases().into_iter().zip(on_disk["vectors"].as_array().unwrap()) {
        let bytes = hex::decode(v["hex"].as_str().unwrap()).unwrap();
        assert_eq!(RelayFrame::decode(&bytes).unwrap(), frame, "vector {name}");
    }
}
