//! Two endpoints through a real relay on loopback: messages and streams.

mod common;

use std::time::Duration;

use common::{present, wait_for};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tunnel_net::{Endpoint, EndpointConfig, NetEvent, Stream};
use tunnel_proto::message::{Hello, Op, PeerMessage, StreamKind};
use tunnel_proto::{NodeId, RoomKeys, SecretKey};
use tunnel_relay::{Relay, RelayConfig};

const TOKEN: &str = "mesh-test-token-0123456789";

async fn endpoint(relay: &Relay, name: &str) -> (Endpoint, mpsc::Receiver<NetEvent>) {
    endpoint_idle(relay, name, tunnel_net::PEER_IDLE_DEFAULT).await
}

async fn endpoint_idle(relay: &Relay, name: &str, peer_idle: Duration) -> (Endpoint, mpsc::Receiver<NetEvent>) {
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
        peer_idle,
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

/// A node that talked to many peers keeps no actor (sessions, buffers) for those that went
/// quiet, and talks to them again as if nothing happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_peer_actors_are_reaped_and_come_back_on_contact() {
    const PEERS: usize = 60;
    let idle = Duration::from_millis(1500);
    let relay = Relay::bind("127.0.0.1:0", RelayConfig::default()).await.unwrap();
    let (hub, mut hub_rx) = endpoint_idle(&relay, "hub", idle).await;
    let mut spokes = Vec::new();
    for i in 0..PEERS {
        let (spoke, rx) = endpoint_idle(&relay, &format!("spoke-{i}"), Duration::from_secs(600)).await;
        present(&mut hub_rx, spoke.id()).await;
        spokes.push((spoke, rx));
    }
    // The hub sends each spoke a message, and the spokes answer over a stream.
    let talk = |hub: Endpoint, spokes: Vec<NodeId>| async move {
        for id in spokes {
            let Stream { mut reader, mut writer, .. } = hub.open_stream(&id, StreamKind::Echo).await.unwrap();
            writer.write_all(b"ping").await.unwrap();
            writer.finish().await.unwrap();
            assert_eq!(reader.read_to_end(1024).await.unwrap(), b"ping");
        }
    };
    let ids: Vec<NodeId> = spokes.iter().map(|(s, _)| s.id()).collect();
    for (spoke, mut rx) in std::mem::take(&mut spokes) {
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if let NetEvent::Stream(Stream { mut reader, mut writer, .. }) = ev {
                    tokio::spawn(async move {
                        let buf = reader.read_to_end(1024).await.unwrap();
                        writer.write_all(&buf).await.unwrap();
                        writer.finish().await.unwrap();
                    });
                }
            }
            drop(spoke);
        });
    }
    talk(hub.clone(), ids.clone()).await;
    assert_eq!(hub.active_peers(), PEERS, "one actor per peer talked to");
    // Quiet for longer than the idle time: every actor goes.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while hub.active_peers() > 0 {
        assert!(std::time::Instant::now() < deadline, "{} actors left", hub.active_peers());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every peer is still there, and talking again works (a new session is made).
    assert_eq!(hub.peers().len(), PEERS);
    talk(hub.clone(), ids).await;
    assert_eq!(hub.active_peers(), PEERS);
}

/// A relay restart is a transport hiccup: the end-to-end session and a stream in flight
/// survive it, whichever node reaches the new relay first (the first one's room snapshot does
/// not list the other yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_in_flight_survives_a_relay_restart() {
    let relay = Relay::bind("127.0.0.1:0", RelayConfig::default()).await.unwrap();
    let addr = relay.local_addr().to_string();
    let (a, mut a_rx) = endpoint(&relay, "a").await;
    let (b, mut b_rx) = endpoint(&relay, "b").await;
    present(&mut a_rx, b.id()).await;
    let Stream { mut reader, mut writer, .. } = a.open_stream(&b.id(), StreamKind::Echo).await.unwrap();
    writer.write_all(b"before ").await.unwrap();
    let Stream { reader: mut echo_r, writer: mut echo_w, .. } =
        wait_for(&mut b_rx, Duration::from_secs(10), |e| match e {
            NetEvent::Stream(s) => Some(s),
            _ => None,
        })
        .await;
    let echo = tokio::spawn(async move {
        let got = echo_r.read_to_end(1024).await.unwrap();
        echo_w.write_all(&got).await.unwrap();
        echo_w.finish().await.unwrap();
    });

    relay.shutdown().await;
    for _ in 0..2 {
        relay_restart_gap(&addr).await;
    }
    let relay = Relay::bind(&addr, RelayConfig::default()).await.unwrap();
    writer.write_all(b"after").await.unwrap();
    writer.finish().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(1024)).await.unwrap().unwrap();
    assert_eq!(got, b"before after");
    echo.await.unwrap();
    drop(relay);
}

/// Brings a relay up on `addr` long enough for some node to join it, then kills it, so that
/// nodes come back in some order and see each other missing from their first snapshot.
async fn relay_restart_gap(addr: &str) {
    let relay = Relay::bind(addr, RelayConfig::default()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while relay.metrics().peers == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    relay.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
}
