//! A peer whose reader stalls costs only itself: the relay drops frames to it (and says so to
//! the sender) instead of buffering or slowing anyone else's traffic.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tunnel_proto::relay::RelayFrame;
use tunnel_proto::RoomKeys;
use tunnel_relay::{Relay, RelayConfig};
use tunnel_tests::inproc::{start_node, wait_named};
use tunnel_tests::{raw, run_async, token};

#[test]
fn stalled_reader_does_not_slow_other_peers() -> anyhow::Result<()> {
    run_async(Duration::from_secs(60), async {
        let config = RelayConfig { mailbox_bytes: 256 * 1024, ..Default::default() };
        let relay = Relay::bind("127.0.0.1:0", config).await?;
        let t = token();
        let room_id = RoomKeys::derive("r", &t)?.room_id;
        let a = start_node(&relay.url(), "r", &t, "a").await?;
        let b = start_node(&relay.url(), "r", &t, "b").await?;
        wait_named(&a, "b", Duration::from_secs(10)).await?;

        // Baseline round trips.
        let mut baseline = Vec::new();
        for _ in 0..50 {
            baseline.push(a.ping("b").await?.2);
        }

        // A peer that joins and then never reads its socket again.
        let (stalled, stalled_key) = raw::joined(&relay.url(), room_id).await?;
        let stalled_id = stalled_key.public();
        // A flooder sends it 64 KiB frames as fast as it can for three seconds.
        let (flooder, _) = raw::joined(&relay.url(), room_id).await?;
        let (mut sink, mut stream) = flooder.split();
        let dropped_notices = Arc::new(AtomicU64::new(0));
        let notices = dropped_notices.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(Message::Binary(b))) = stream.next().await {
                if matches!(RelayFrame::decode(&b), Ok(RelayFrame::Dropped { to }) if to == stalled_id) {
                    notices.fetch_add(1, Relaxed);
                }
            }
        });
        let flood = tokio::spawn(async move {
            let frame = RelayFrame::Send { to: stalled_id, payload: vec![0xaa; 64 * 1024] }.encode();
            let until = Instant::now() + Duration::from_secs(3);
            let mut sent = 0u64;
            while Instant::now() < until {
                sink.send(Message::Binary(frame.clone())).await?;
                sent += 1;
            }
            anyhow::Ok(sent)
        });

        // Meanwhile a and b keep talking through the same relay.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut during = Vec::new();
        while !flood.is_finished() {
            during.push(a.ping("b").await?.2);
        }
        let sent = flood.await??;
        during.sort();
        baseline.sort();
        let p50 = during[during.len() / 2];
        let p99 = during[during.len() * 99 / 100];
        eprintln!(
            "flooded a stalled peer with {sent} x 64 KiB; a->b ping p50 {:?} (baseline {:?}), p99 {p99:?}, {} pings; \
             relay dropped {} frames, flooder told {} times",
            p50,
            baseline[baseline.len() / 2],
            during.len(),
            relay.metrics().frames_dropped,
            dropped_notices.load(Relaxed)
        );
        assert!(sent > 100, "the flood ran");
        assert!(relay.metrics().frames_dropped > 0, "the stalled peer's mailbox overflowed");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(dropped_notices.load(Relaxed) > 0, "the sender heard about the drops");
        assert!(during.len() >= 20, "only {} pings completed during the flood", during.len());
        assert!(p99 < Duration::from_millis(250), "a->b p99 {p99:?} while another peer stalled");
        drop(stalled);
        reader.abort();
        a.shutdown().await;
        b.shutdown().await;
        Ok(())
    })
}

/// A peer that stops reading is still heard. The relay once wrote to a connection and read
/// from it in one loop: a node busy sending (and so not reading for a while) filled its
/// socket, the relay blocked writing to it and stopped reading it, and the node blocked
/// sending: both waited forever (found by 100 forwarded connections echoing at once).
#[test]
fn regression_a_peer_that_stops_reading_is_still_heard() -> anyhow::Result<()> {
    run_async(Duration::from_secs(60), async {
        let config = RelayConfig { mailbox_bytes: 256 * 1024, ..Default::default() };
        let relay = Relay::bind("127.0.0.1:0", config).await?;
        let room_id = RoomKeys::derive("r", &token())?.room_id;
        let (mut deaf, deaf_key) = raw::joined(&relay.url(), room_id).await?;
        let (listener, listener_key) = raw::joined(&relay.url(), room_id).await?;
        // Fill every buffer between the relay and the peer that never reads.
        let (mut flooder, _) = raw::joined(&relay.url(), room_id).await?;
        let flood = RelayFrame::Send { to: deaf_key.public(), payload: vec![0x55; 64 * 1024] };
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            raw::send(&mut flooder, &flood).await?;
        }
        // The deaf peer talks; what it sends must still get through.
        let (_, mut heard) = listener.split();
        let counted = tokio::spawn(async move {
            let mut got = 0u32;
            while got < 200 {
                match heard.next().await {
                    Some(Ok(Message::Binary(b))) if matches!(RelayFrame::decode(&b), Ok(RelayFrame::Recv { .. })) => {
                        got += 1
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            got
        });
        let hello = RelayFrame::Send { to: listener_key.public(), payload: vec![0x11; 1024] };
        for _ in 0..200 {
            raw::send(&mut deaf, &hello).await?;
        }
        let got = tokio::time::timeout(Duration::from_secs(10), counted).await.unwrap_or(Ok(0))?;
        assert_eq!(got, 200, "the relay stopped reading a peer it could not write to");
        Ok(())
    })
}
