//! Two endpoints through a real relay on loopback: messages and streams.

mod common;

use std::time::Duration;

use common::{present, wait_for};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tunnel_net::{Endpoint, EndpointConfig, NetEvent, Stream};
use tunnel_proto::message::{Hello, Op, PeerMessage, StreamKind};
use tunnel_proto::{RoomKeys, SecretKey};
use tunnel_relay::{Relay, RelayConfig};

const TOKEN: &str = "mesh-test-token-0123456789";

async fn endpoint(relay: &Relay, name: &str) -> (Endpoint, mpsc::Receiver<NetEvent>) {
    Endpoint::start(EndpointConfig {
        relay_url: Some(relay.url()),
        access_token: None,
        room: RoomKeys::derive("mesh", TOKEN).unwrap(),
        secret: SecretKey::generate(&mut rand::rngs::OsRng),
        hello: Hello::new(name),
        relay_trust: Default::default(),
        fail_fast: true,
        // These tests are about the relay path.
        direct: tunnel_net::DirectConfig { mode: tunnel_net::DirectMode::RelayOnly, ..Default::default() },
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_and_parallel_streams_cross_the_relay() {
    let relay = Relay::bind("127.0.0.1:0", RelayConfig::default()).await.unwrap();
    let (a, mut a_rx) = endpoint(&relay, "a").await;
    let (b, mut b_rx) = endpoint(&relay, "b").await;
    present(&mut a_rx, b.id()).await;

    a.send(&b.id(), PeerMessage::Request { id: 1, op: Op::Ping { payload: b"hi".to_vec().into() } }).await.unwrap();
    let got = wait_for(&mut b_rx, Duration::from_secs(10), |e| match e {
        NetEvent::Message { from, msg: PeerMessage::Request { id, .. } } => Some((from, id)),
        _ => None,
    })
    .await;
    assert_eq!(got, (a.id(), 1));

    // A stalled stream (never read) and a flowing one on the same link.
    let stalled = a.open_stream(&b.id(), StreamKind::Sink).await.unwrap();
    let flowing = a.open_stream(&b.id(), StreamKind::Sink).await.unwrap();
    let mut accepted: Vec<Stream> = Vec::new();
    while accepted.len() < 2 {
        accepted.push(
            wait_for(&mut b_rx, Duration::from_secs(10), |e| match e {
                NetEvent::Stream(s) => Some(s),
                _ => None,
            })
            .await,
        );
    }
    let Stream { writer: mut stalled_w, .. } = stalled;
    let stall_task = tokio::spawn(async move {
        // Fills the window and then blocks: nobody reads the other end.
        let _ = stalled_w.write_all(&vec![1u8; 4 * 1024 * 1024]).await;
    });
    let data: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let want = Sha256::digest(&data);
    let Stream { writer: mut w, .. } = flowing;
    let send = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.finish().await.unwrap();
    });
    let mut reader = accepted.pop().unwrap().reader;
    let got = tokio::time::timeout(Duration::from_secs(60), reader.read_to_end(64 << 20)).await.unwrap().unwrap();
    assert_eq!(Sha256::digest(&got), want);
    send.await.unwrap();
    assert!(!stall_task.is_finished(), "the stalled stream is still waiting for credit");
    stall_task.abort();
}
