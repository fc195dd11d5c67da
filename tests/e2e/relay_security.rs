//! What the relay can and cannot do: it never sees plaintext or secrets; tampering with
//! frames never gets altered data delivered; nobody joins as a node id they do not hold.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tunnel_net::{Endpoint, EndpointConfig, NetEvent};
use tunnel_proto::message::{ByteBuf, Hello, Op, PeerMessage, Reply, StreamKind};
use tunnel_proto::relay::{ErrorCode, RelayFrame};
use tunnel_proto::{NodeId, RoomKeys, SecretKey};
use tunnel_relay::{Intercept, Relay, RelayConfig};
use tunnel_tests::inproc::{start_node, wait_named};
use tunnel_tests::{raw, run_async, token};
use zeroize::Zeroizing;

/// Keeps every byte the relay receives (bounded), to search it afterwards.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<u8>>,
}

impl Intercept for Recorder {
    fn received(&self, bytes: &[u8]) {
        let mut seen = self.seen.lock().unwrap();
        if seen.len() < 256 << 20 {
            seen.extend_from_slice(bytes);
            seen.push(0); // frame boundary: no match spans two frames by accident
        }
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).filter(|w| *w == needle).count()
}

#[test]
fn relay_never_sees_plaintext_names_or_the_token() -> anyhow::Result<()> {
    run_async(Duration::from_secs(60), async {
        let recorder = Arc::new(Recorder::default());
        let relay =
            Relay::bind("127.0.0.1:0", RelayConfig { intercept: Some(recorder.clone()), ..Default::default() }).await?;
        let t = token();
        let room = "room-name-kept-from-relay";
        let a = start_node(&relay.url(), room, &t, "alpha-hostname-xyz").await?;
        let b = start_node(&relay.url(), room, &t, "beta-hostname-xyz").await?;
        wait_named(&a, "beta-hostname-xyz", Duration::from_secs(10)).await?;
        let peer = a.resolve("beta-hostname-xyz")?;
        let canary = b"CANARY-7d1e0c5a-plaintext".to_vec();

        // In a request...
        let reply =
            a.request(peer, Op::Ping { payload: ByteBuf::from(canary.clone()) }, Duration::from_secs(5)).await?;
        assert_eq!(reply, Reply::Pong { payload: ByteBuf::from(canary.clone()) });
        // ...and in a stream, both ways.
        let s = a.open_stream(peer, StreamKind::Echo).await?;
        let (mut r, mut w) = (s.reader, s.writer);
        let data: Vec<u8> = canary.iter().copied().cycle().take(1 << 20).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await?;
            w.finish().await
        });
        assert_eq!(r.read_to_end(2 << 20).await?, data);
        writer.await??;

        let seen = recorder.seen.lock().unwrap().clone();
        assert!(seen.len() > 2 << 20, "the recorder saw the traffic ({} bytes)", seen.len());
        assert_eq!(count(&seen, &canary), 0, "plaintext reached the relay");
        assert_eq!(count(&seen, t.as_bytes()), 0, "the room token reached the relay");
        assert_eq!(count(&seen, room.as_bytes()), 0, "the room name reached the relay");
        assert_eq!(count(&seen, b"hostname-xyz"), 0, "peer names reached the relay");
        a.shutdown().await;
        b.shutdown().await;
        Ok(())
    })
}

/// Tampers with every third forwarded frame, rotating through five attacks.
#[derive(Default)]
struct Hostile {
    on: AtomicBool,
    n: AtomicU64,
    held: Mutex<Option<(NodeId, NodeId, Vec<u8>)>>,
    last: Mutex<Vec<u8>>,
    done: [AtomicU64; 5],
}

impl Intercept for Hostile {
    fn forward(&self, from: NodeId, to: NodeId, payload: Vec<u8>) -> Vec<(NodeId, NodeId, Vec<u8>)> {
        if !self.on.load(Relaxed) {
            return vec![(to, from, payload)];
        }
        let n = self.n.fetch_add(1, Relaxed);
        let previous = std::mem::replace(&mut *self.last.lock().unwrap(), payload.clone());
        let mut out = Vec::new();
        if let Some(held) = self.held.lock().unwrap().take() {
            out.push(held);
        }
        if !n.is_multiple_of(3) {
            out.push((to, from, payload));
            return out;
        }
        let attack = ((n / 3) % 5) as usize;
        self.done[attack].fetch_add(1, Relaxed);
        match attack {
            0 => {
                let mut p = payload;
                let bit = (n as usize * 7919) % (p.len() * 8);
                p[bit / 8] ^= 1 << (bit % 8);
                out.push((to, from, p));
            }
            1 => {
                out.push((to, from, payload.clone()));
                out.push((to, from, payload)); // replay
            }
            2 => *self.held.lock().unwrap() = Some((to, from, payload)), // reorder: deliver later
            3 => {
                out.push((from, to, payload.clone())); // reflect back to the sender, "from" the target
                out.push((to, from, payload));
            }
            _ => {
                let mut p = payload;
                let end = p.len().min(previous.len());
                p[end / 2..end].copy_from_slice(&previous[end / 2..end]);
                out.push((to, from, p)); // splice: head of this frame, tail of the last
            }
        }
        out
    }
}

#[test]
fn hostile_relay_cannot_get_altered_data_delivered() -> anyhow::Result<()> {
    run_async(Duration::from_secs(120), async {
        let hostile = Arc::new(Hostile::default());
        let relay =
            Relay::bind("127.0.0.1:0", RelayConfig { intercept: Some(hostile.clone()), ..Default::default() }).await?;
        let t = token();
        let a = start_node(&relay.url(), "r", &t, "a").await?;
        let b = start_node(&relay.url(), "r", &t, "b").await?;
        wait_named(&a, "b", Duration::from_secs(10)).await?;
        wait_named(&b, "a", Duration::from_secs(10)).await?;
        let peer = a.resolve("b")?;

        hostile.on.store(true, Relaxed);
        // Requests: every answer that arrives carries exactly the payload sent.
        let mut answered = 0;
        for i in 0..12u8 {
            let payload = vec![i; 200];
            if let Ok(reply) =
                a.request(peer, Op::Ping { payload: ByteBuf::from(payload.clone()) }, Duration::from_secs(3)).await
            {
                assert_eq!(reply, Reply::Pong { payload: ByteBuf::from(payload) }, "an altered answer was delivered");
                answered += 1;
            }
        }
        // A stream through the tampering: it arrives intact (resent as needed), or not at all.
        let s = a.open_stream(peer, StreamKind::Echo).await?;
        let (mut r, mut w) = (s.reader, s.writer);
        let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await?;
            w.finish().await
        });
        let echoed = tokio::time::timeout(Duration::from_secs(60), r.read_to_end(2 << 20)).await;
        writer.abort();
        match echoed {
            Ok(Ok(bytes)) => assert_eq!(bytes, data, "altered stream data was delivered"),
            Ok(Err(e)) => eprintln!("stream failed loudly under attack (acceptable): {e}"),
            Err(_) => eprintln!("stream did not finish under attack (acceptable)"),
        }
        hostile.on.store(false, Relaxed);
        let attacks: Vec<u64> = hostile.done.iter().map(|c| c.load(Relaxed)).collect();
        eprintln!("attacks (flip, replay, reorder, reflect, splice): {attacks:?}; {answered}/12 requests answered");
        assert!(attacks.iter().all(|&c| c > 0), "every attack ran: {attacks:?}");
        assert!(answered > 0, "requests get through a relay that tampers with a third of the frames");

        // After the attack the peers work normally.
        let (_, _, rtt) = a.ping("b").await?;
        assert!(rtt < Duration::from_secs(2));
        let s = a.open_stream(peer, StreamKind::Echo).await?;
        let (mut r, mut w) = (s.reader, s.writer);
        w.write_all(b"after the storm").await?;
        w.finish().await?;
        assert_eq!(r.read_to_end(1024).await?, b"after the storm");
        a.shutdown().await;
        b.shutdown().await;
        Ok(())
    })
}

#[test]
fn nobody_joins_as_a_node_id_they_do_not_hold() -> anyhow::Result<()> {
    run_async(Duration::from_secs(30), async {
        let relay = Relay::bind("127.0.0.1:0", RelayConfig::default()).await?;
        let room = RoomKeys::derive("r", &token())?.room_id;
        let (mut victim, victim_key) = raw::joined(&relay.url(), room).await?;

        // An attacker claims the victim's id, proving with its own key.
        let mut attacker = raw::connect(&relay.url()).await?;
        let attacker_key = SecretKey::generate(&mut rand::rngs::OsRng);
        let answer = raw::join_as(&mut attacker, room, &attacker_key, victim_key.public()).await?;
        assert!(matches!(answer, RelayFrame::Error { code: ErrorCode::AuthFailed, .. }), "{answer:?}");

        // Weak ids: all zeros and a low-order point; never admitted, and the relay lives on.
        let mut order8 = [0u8; 32];
        order8[0] = 1;
        for weak in [NodeId::from_bytes([0; 32]), NodeId::from_bytes(order8)] {
            let mut ws = raw::connect(&relay.url()).await?;
            let answer = raw::join_as(&mut ws, room, &attacker_key, weak).await?;
            assert!(matches!(answer, RelayFrame::Error { code: ErrorCode::AuthFailed, .. }), "{answer:?}");
        }
        // Garbage instead of a Join.
        let mut ws = raw::connect(&relay.url()).await?;
        raw::next_frame(&mut ws).await?;
        futures_util::SinkExt::send(&mut ws, tokio_tungstenite::tungstenite::Message::Binary(vec![0xff, 1, 2])).await?;
        assert!(matches!(raw::next_frame(&mut ws).await?, RelayFrame::Error { code: ErrorCode::BadFrame, .. }));

        // The victim was never replaced and still gets traffic from a real peer.
        let (mut friend, _) = raw::joined(&relay.url(), room).await?;
        raw::send(&mut friend, &RelayFrame::Send { to: victim_key.public(), payload: b"still here".to_vec() }).await?;
        match raw::next_non_presence(&mut victim).await? {
            RelayFrame::Recv { payload, .. } => assert_eq!(payload, b"still here"),
            other => panic!("victim got {other:?}"),
        }
        assert_eq!(relay.metrics().auth_failures, 3);
        Ok(())
    })
}

/// Two nodes a relay put in one room although their tokens differ (a relay can do that: it
/// only sees room ids). No session forms, and the error says why.
#[test]
fn mismatched_room_secrets_make_no_session_and_say_why() -> anyhow::Result<()> {
    run_async(Duration::from_secs(30), async {
        let relay = Relay::bind("127.0.0.1:0", RelayConfig::default()).await?;
        let room_id = [9u8; 32];
        let start = |psk: u8| {
            let url = relay.url();
            async move {
                Endpoint::start(EndpointConfig {
                    relay_url: Some(url),
                    access_token: None,
                    room: RoomKeys { room_id, psk: Zeroizing::new([psk; 32]) },
                    secret: SecretKey::generate(&mut rand::rngs::OsRng),
                    hello: Hello::new("n"),
                    relay_trust: Default::default(),
                    fail_fast: true,
                    // This test is about the relay path.
                    direct: tunnel_net::DirectConfig { mode: tunnel_net::DirectMode::RelayOnly, ..Default::default() },
                    peer_idle: tunnel_net::PEER_IDLE_DEFAULT,
                })
                .await
            }
        };
        let (a, mut a_rx) = start(1).await?;
        let (b, mut b_rx) = start(2).await?;
        let reason = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match a_rx.recv().await {
                    Some(NetEvent::PeerPresent(p)) if p == b.id() => {
                        a.send(&b.id(), PeerMessage::Cancel { id: 1 }).await.unwrap();
                    }
                    Some(NetEvent::LinkFailed { reason, .. }) => return reason,
                    Some(NetEvent::Message { msg, .. }) => panic!("a message crossed without the room secret: {msg:?}"),
                    Some(_) => {}
                    None => panic!("events closed"),
                }
            }
        })
        .await?;
        assert!(reason.contains("different room token"), "{reason}");
        while let Ok(ev) = b_rx.try_recv() {
            assert!(!matches!(ev, NetEvent::Message { .. }), "b got a message: {ev:?}");
        }
        Ok(())
    })
}
