//! Direct QUIC paths between endpoints on loopback, with a real relay: the upgrade, the
//! fallback when the path is cut (a switch over the node's UDP socket, no root needed), the
//! modes, and that a stream in flight loses and repeats nothing across path changes.

mod common;

use std::time::{Duration, Instant};

use common::{present, wait_for};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tunnel_net::{DirectConfig, DirectMode, Endpoint, EndpointConfig, NetEvent, Stream, UdpSwitch};
use tunnel_proto::message::{Hello, Op, PeerMessage, StreamKind};
use tunnel_proto::{RoomKeys, SecretKey};
use tunnel_relay::{Relay, RelayConfig};

const TOKEN: &str = "direct-test-token-0123456789";

async fn endpoint(relay: &Relay, name: &str, direct: DirectConfig) -> (Endpoint, mpsc::Receiver<NetEvent>) {
    Endpoint::start(EndpointConfig {
        relay_url: Some(relay.url()),
        access_token: None,
        room: RoomKeys::derive("direct", TOKEN).unwrap(),
        secret: SecretKey::generate(&mut rand::rngs::OsRng),
        hello: Hello::new(name),
        relay_trust: Default::default(),
        fail_fast: true,
        direct,
        peer_idle: tunnel_net::PEER_IDLE_DEFAULT,
    })
    .await
    .unwrap()
}

fn mode(mode: DirectMode) -> DirectConfig {
    DirectConfig { mode, ..Default::default() }
}

/// Says hello so that the peers make a session (and with it, offer direct paths).
async fn ping(from: &Endpoint, to: &Endpoint) {
    let op = Op::Ping { payload: b"hi".to_vec().into() };
    from.send(&to.id(), PeerMessage::Request { id: rand::random(), op }).await.unwrap();
}

/// How long until `f` holds, polled every 20 ms, at most `within`.
async fn until(within: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if f() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

fn is_direct(a: &Endpoint, b: &Endpoint) -> bool {
    a.path(&b.id()).direct.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_endpoints_go_direct_within_five_seconds_and_the_relay_stops_carrying_data() {
    let relay = Relay::bind("127.0.0.1:0", RelayConfig::default()).await.unwrap();
    let (a, mut a_rx) = endpoint(&relay, "a", DirectConfig::default()).await;
    let (b, mut b_rx) = endpoint(&relay, "b", DirectConfig::default()).await;
    present(&mut a_rx, b.id()).await;
    ping(&a, &b).await;
    let took = until(Duration::from_secs(5), || is_direct(&a, &b) && is_direct(&b, &a)).await;
    assert!(took.is_some(), "no direct path within 5 s: a sees {:?}, b sees {:?}", a.path(&b.id()), b.path(&a.id()));
    let path = a.path(&b.id()).direct.unwrap();
    assert!(path.addr.ip().is_loopback() || path.addr.port() != 0, "{path:?}");

    // 20 MB over the direct path; the relay carries next to none of it.
    let before = relay.metrics().bytes_forwarded;
    let digest = transfer(&a, &b, &mut b_rx, 20 << 20, |_| None).await;
    assert_eq!(digest.0, digest.1, "bytes arrived intact");
    let carried = relay.metrics().bytes_forwarded - before;
    assert!(carried < 200_000, "the relay carried {carried} bytes of a 20 MB direct transfer");
}

/// Streams `len` bytes from `a` to `b` (a Sink stream), calling `during(tenths)` at each
/// tenth of the way; when it returns a receiver, writing pauses until that fires. Returns the
/// sent and received digests.
async fn transfer(
    a: &Endpoint,
    b: &Endpoint,
    b_rx: &mut mpsc::Receiver<NetEvent>,
    len: usize,
    mut during: impl FnMut(usize) -> Option<tokio::sync::oneshot::Receiver<()>>,
) -> (Vec<u8>, Vec<u8>) {
    let stream = a.open_stream(&b.id(), StreamKind::Sink).await.unwrap();
    let accepted = wait_for(b_rx, Duration::from_secs(10), |e| match e {
        NetEvent::Stream(s) => Some(s),
        _ => None,
    })
    .await;
    let Stream { reader: mut r, .. } = accepted;
    let receiver = tokio::spawn(async move {
        let mut h = Sha256::new();
        let mut n = 0;
        while let Some(chunk) = r.read().await.expect("stream intact") {
            n += chunk.len();
            h.update(&chunk);
        }
        (n, h.finalize().to_vec())
    });
    let Stream { writer: mut w, .. } = stream;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut h = Sha256::new();
    let block = 256 * 1024;
    let mut buf = vec![0u8; block];
    let mut sent = 0;
    while sent < len {
        for chunk in buf.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
        }
        let n = block.min(len - sent);
        w.write_all(&buf[..n]).await.unwrap();
        h.update(&buf[..n]);
        let before = sent * 10 / len;
        sent += n;
        if sent * 10 / len != before {
            if let Some(resume) = during(sent * 10 / len) {
                let _ = resume.await;
            }
        }
    }
    w.finish().await.unwrap();
    let (n, got) = tokio::time::timeout(Duration::from_secs(120), receiver).await.expect("transfer ends").unwrap();
    assert_eq!(n, len, "byte count");
    (h.finalize().to_vec(), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_mid_transfer_falls_back_to_the_relay_and_comes_back_losing_nothing() {
    let relay = Relay::bind("127.0.0.1:0", RelayConfig::default()).await.unwrap();
    let switch = UdpSwitch::default();
    let (a, mut a_rx) = endpoint(&relay, "a", DirectConfig { switch: switch.clone(), ..Default::default() }).await;
    let (b, mut b_rx) = endpoint(&relay, "b", DirectConfig::default()).await;
    present(&mut a_rx, b.id()).await;
    ping(&a, &b).await;
    assert!(until(Duration::from_secs(5), || is_direct(&a, &b)).await.is_some(), "direct first");

    // 200 MB: the first tenth goes direct; then the path is cut and the writer goes on over
    // the relay; at half way the writer waits until the path is back, and the rest goes
    // direct again. Every byte must arrive once, in order, with no error.
    let (back_tx, back_rx) = tokio::sync::oneshot::channel();
    let (mut back_tx, mut back_rx) = (Some(back_tx), Some(back_rx));
    let mut watcher = None;
    let started = Instant::now();
    let (sent, got) = transfer(&a, &b, &mut b_rx, 200 << 20, |tenths| {
        if tenths == 1 {
            switch.set_blocked(true);
            let (a, b, switch, back_tx) = (a.clone(), b.clone(), switch.clone(), back_tx.take().unwrap());
            watcher = Some(tokio::spawn(async move {
                let fell_back = until(Duration::from_secs(8), || !is_direct(&a, &b)).await;
                switch.set_blocked(false);
                let back = until(Duration::from_secs(20), || is_direct(&a, &b)).await;
                let _ = back_tx.send(());
                (fell_back, back)
            }));
        }
        // Half way: wait until the watcher saw the path come back.
        (tenths == 5).then(|| back_rx.take()).flatten()
    })
    .await;
    assert_eq!(sent, got, "200 MB intact across the cut and the restore");
    let (fell_back, back) = tokio::time::timeout(Duration::from_secs(40), watcher.unwrap()).await.unwrap().unwrap();
    eprintln!(
        "fell back after {fell_back:?}, direct again {back:?} after the restore, all done in {:?}",
        started.elapsed()
    );
    let fell_back = fell_back.expect("fell back to the relay within 8 s of the cut");
    assert!(fell_back < Duration::from_secs(6), "fallback took {fell_back:?}");
    assert!(back.is_some(), "direct again after the path came back: {:?}", a.path(&b.id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_opens_no_udp_and_its_peers_stay_on_the_relay() {
    let relay = Relay::bind("127.0.0.1:0", RelayConfig::default()).await.unwrap();
    let (a, mut a_rx) = endpoint(&relay, "a", DirectConfig::default()).await;
    let (b, mut b_rx) = endpoint(&relay, "b", mode(DirectMode::RelayOnly)).await;
    assert_eq!(b.direct(), (DirectMode::RelayOnly, None), "no UDP socket");
    assert!(a.direct().1.is_some());
    present(&mut a_rx, b.id()).await;
    ping(&a, &b).await;
    wait_for(&mut b_rx, Duration::from_secs(10), |e| matches!(e, NetEvent::Message { .. }).then_some(())).await;
    let declined =
        until(Duration::from_secs(5), || a.path(&b.id()).note.is_some_and(|n| n.contains("relay-only"))).await;
    assert!(declined.is_some(), "a learns that b declines: {:?}", a.path(&b.id()));
    assert!(!is_direct(&a, &b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_only_with_udp_blocked_fails_with_a_clear_reason() {
    let relay = Relay::bind("127.0.0.1:0", RelayConfig::default()).await.unwrap();
    let switch = UdpSwitch::default();
    switch.set_blocked(true);
    let (a, mut a_rx) =
        endpoint(&relay, "a", DirectConfig { mode: DirectMode::DirectOnly, switch, ..Default::default() }).await;
    let (b, mut b_rx) = endpoint(&relay, "b", DirectConfig::default()).await;
    present(&mut a_rx, b.id()).await;
    ping(&a, &b).await;
    let reason = wait_for(&mut a_rx, Duration::from_secs(15), |e| match e {
        NetEvent::LinkFailed { peer, reason } if peer == b.id() => Some(reason),
        _ => None,
    })
    .await;
    assert!(reason.contains("no direct path") && reason.contains("direct-only"), "{reason}");
    // Nothing but signalling went through the relay: b never got the ping.
    let got = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            if let Some(NetEvent::Message { msg: PeerMessage::Request { .. }, .. }) = b_rx.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(got.is_err(), "a direct-only node sent a request through the relay");
}
