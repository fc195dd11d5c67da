//! The relay's HTTP endpoints and limits: health and metrics, room size, handshake deadline,
//! payload size, and refusals that say what was wrong.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnel_proto::relay::{ErrorCode, RelayFrame};
use tunnel_proto::RoomKeys;
use tunnel_relay::{Relay, RelayConfig};
use tunnel_tests::{raw, run_async, token};

async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

#[test]
fn health_and_metrics_endpoints() -> anyhow::Result<()> {
    run_async(Duration::from_secs(30), async {
        let relay = Relay::bind("127.0.0.1:0", RelayConfig::default()).await?;
        let room = RoomKeys::derive("r", &token())?.room_id;
        let (mut a, _) = raw::joined(&relay.url(), room).await?;
        let (_b, b_key) = raw::joined(&relay.url(), room).await?;
        raw::send(&mut a, &RelayFrame::Send { to: b_key.public(), payload: vec![1; 100] }).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;

        let health = http_get(relay.local_addr(), "/healthz").await?;
        assert!(health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"), "{health}");
        let metrics = http_get(relay.local_addr(), "/metrics").await?;
        for line in [
            "tunnel_relay_rooms 1",
            "tunnel_relay_peers 2",
            "tunnel_relay_frames_forwarded_total 1",
            "tunnel_relay_bytes_forwarded_total 100",
            "tunnel_relay_frames_dropped_total 0",
            "tunnel_relay_auth_failures_total 0",
        ] {
            assert!(metrics.lines().any(|l| l == line), "missing {line:?} in:\n{metrics}");
        }
        let missing = http_get(relay.local_addr(), "/nope").await?;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        // A plain GET on / is told what the endpoint speaks.
        let plain = http_get(relay.local_addr(), "/").await?;
        assert!(plain.starts_with("HTTP/1.1 426") && plain.contains("tunnel-relay.v1"), "{plain}");
        Ok(())
    })
}

#[test]
fn room_size_is_capped() -> anyhow::Result<()> {
    run_async(Duration::from_secs(30), async {
        let relay = Relay::bind("127.0.0.1:0", RelayConfig { max_peers_per_room: 2, ..Default::default() }).await?;
        let room = RoomKeys::derive("r", &token())?.room_id;
        let _a = raw::joined(&relay.url(), room).await?;
        let _b = raw::joined(&relay.url(), room).await?;
        let mut c = raw::connect(&relay.url()).await?;
        let key = tunnel_proto::SecretKey::generate(&mut rand::rngs::OsRng);
        let answer = raw::join_as(&mut c, room, &key, key.public()).await?;
        assert!(matches!(answer, RelayFrame::Error { code: ErrorCode::RoomFull, .. }), "{answer:?}");
        // Another room is unaffected.
        raw::joined(&relay.url(), RoomKeys::derive("other", &token())?.room_id).await?;
        Ok(())
    })
}

#[test]
fn silent_clients_are_cut_off_at_the_handshake_deadline() -> anyhow::Result<()> {
    run_async(Duration::from_secs(30), async {
        let config = RelayConfig { handshake_timeout: Duration::from_millis(300), ..Default::default() };
        let relay = Relay::bind("127.0.0.1:0", config).await?;
        // Upgrades, reads the challenge, never joins.
        let mut ws = raw::connect(&relay.url()).await?;
        assert!(matches!(raw::next_frame(&mut ws).await?, RelayFrame::Challenge { .. }));
        let answer = tokio::time::timeout(Duration::from_secs(5), raw::next_frame(&mut ws)).await??;
        assert!(matches!(answer, RelayFrame::Error { code: ErrorCode::HandshakeTimeout, .. }), "{answer:?}");
        // A TCP connection that never sends an HTTP request is closed too.
        let mut idle = tokio::net::TcpStream::connect(relay.local_addr()).await?;
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await??;
        assert_eq!(n, 0, "closed without a word");
        Ok(())
    })
}

#[test]
fn oversized_payloads_are_refused() -> anyhow::Result<()> {
    run_async(Duration::from_secs(30), async {
        let relay = Relay::bind("127.0.0.1:0", RelayConfig { max_payload: 1024, ..Default::default() }).await?;
        let room = RoomKeys::derive("r", &token())?.room_id;
        let (mut a, _) = raw::joined(&relay.url(), room).await?;
        let (mut b, b_key) = raw::joined(&relay.url(), room).await?;
        raw::send(&mut a, &RelayFrame::Send { to: b_key.public(), payload: vec![0; 2048] }).await?;
        match raw::next_non_presence(&mut a).await? {
            RelayFrame::Error { code: ErrorCode::TooLarge, text } => assert!(text.contains("1024"), "{text}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Refused, not cut off: the next frame within the limit goes through.
        raw::send(&mut a, &RelayFrame::Send { to: b_key.public(), payload: vec![1; 1024] }).await?;
        assert!(
            matches!(raw::next_non_presence(&mut b).await?, RelayFrame::Recv { payload, .. } if payload == vec![1; 1024])
        );
        Ok(())
    })
}

#[test]
fn newest_connection_of_a_node_wins() -> anyhow::Result<()> {
    run_async(Duration::from_secs(30), async {
        let relay = Relay::bind("127.0.0.1:0", RelayConfig::default()).await?;
        let room = RoomKeys::derive("r", &token())?.room_id;
        let (mut watcher, _) = raw::joined(&relay.url(), room).await?;
        let key = tunnel_proto::SecretKey::generate(&mut rand::rngs::OsRng);
        let mut old = raw::connect(&relay.url()).await?;
        assert!(matches!(raw::join_as(&mut old, room, &key, key.public()).await?, RelayFrame::Welcome { .. }));
        let mut new = raw::connect(&relay.url()).await?;
        assert!(matches!(raw::join_as(&mut new, room, &key, key.public()).await?, RelayFrame::Welcome { .. }));
        let told = raw::next_frame(&mut old).await?;
        assert!(matches!(told, RelayFrame::Error { code: ErrorCode::Replaced, .. }), "{told:?}");
        // Traffic for the node now reaches the new connection.
        raw::send(&mut watcher, &RelayFrame::Send { to: key.public(), payload: b"to the newest".to_vec() }).await?;
        match raw::next_non_presence(&mut new).await? {
            RelayFrame::Recv { payload, .. } => assert_eq!(payload, b"to the newest"),
            other => panic!("{other:?}"),
        }
        assert_eq!(relay.metrics().peers, 2);
        Ok(())
    })
}
