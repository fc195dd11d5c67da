//! Every relay behaviour the nodes depend on, run against both relays: `tunnel-relay` (the
//! library, in process) and the Cloudflare Worker relay (`worker/`, under a bare workerd). A
//! node cannot tell them apart. Without `npm ci` in `worker/` the Worker half is skipped with
//! a message; under CI that is a failure.

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::SinkExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tunnel_proto::relay::{ErrorCode, RelayFrame, MAX_PAYLOAD, SUBPROTOCOL_V1};
use tunnel_proto::SecretKey;
use tunnel_relay::{Relay, RelayConfig};
use tunnel_tests::raw::{connect, join_as, joined_offering, next_frame, next_non_presence, room_url, send, Ws};
use tunnel_tests::worker::{self, WorkerRelay};

/// One relay under test, kept alive while it is used.
enum Under {
    Rust(Relay),
    Worker(WorkerRelay),
}

impl Under {
    fn base(&self) -> String {
        match self {
            Under::Rust(r) => r.url(),
            Under::Worker(w) => w.url.clone(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Under::Rust(_) => "tunnel-relay",
            Under::Worker(_) => "worker",
        }
    }
}

/// Limits both relays are given for a run.
#[derive(Default, Clone, Copy)]
struct Limits {
    access_token: Option<&'static str>,
    /// A tiny mailbox that never drains by itself: the first frames past it are dropped.
    tiny_mailbox: bool,
}

async fn relays(limits: Limits) -> Vec<Under> {
    let mut config = RelayConfig { access_token: limits.access_token.map(str::to_owned), ..Default::default() };
    if limits.tiny_mailbox {
        config.mailbox_bytes = tunnel_proto::relay::MAX_FRAME;
    }
    let mut out = vec![Under::Rust(Relay::bind("127.0.0.1:0", config).await.expect("relay"))];
    match worker::unavailable() {
        Some(why) => eprintln!("skipping the Worker relay: {why}"),
        None => {
            let mailbox = tunnel_proto::relay::MAX_FRAME.to_string();
            let mut env = vec![];
            if let Some(token) = limits.access_token {
                env.push(("TUNNEL_WORKER_ACCESS_TOKEN", token));
            }
            if limits.tiny_mailbox {
                env.push(("TUNNEL_WORKER_MAILBOX_BYTES", mailbox.as_str()));
                env.push(("TUNNEL_WORKER_DRAIN_BYTES_PER_SEC", "1"));
            }
            out.push(Under::Worker(WorkerRelay::start(&env).expect("workerd")));
        }
    }
    out
}

/// Runs `check` against every relay, naming the relay in a failure.
async fn each<F, Fut>(limits: Limits, check: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    for relay in relays(limits).await {
        let run = tokio::time::timeout(Duration::from_secs(30), check(relay.base())).await;
        match run {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{}: {e:#}", relay.name()),
            Err(_) => panic!("{}: timed out", relay.name()),
        }
    }
}

fn room() -> [u8; 32] {
    rand::random()
}

async fn join(base: &str, room: [u8; 32]) -> anyhow::Result<(Ws, SecretKey, Vec<tunnel_proto::NodeId>)> {
    let mut ws = connect(&room_url(base, &room)).await?;
    let key = SecretKey::generate(&mut rand::rngs::OsRng);
    match join_as(&mut ws, room, &key, key.public()).await? {
        RelayFrame::Welcome { peers, .. } => Ok((ws, key, peers)),
        other => bail!("join refused: {other:?}"),
    }
}

/// One plain HTTP request; returns the status code and body.
async fn http(base: &str, request: &str) -> anyhow::Result<(u16, String)> {
    let addr = base.trim_start_matches("ws://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.write_all(request.replace("HOST", addr).as_bytes()).await?;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).context(text.clone())?;
    Ok((status, text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()))
}

/// The relay ends the connection: at most an `Error` frame, then nothing.
async fn ends(ws: &mut Ws) -> anyhow::Result<Option<ErrorCode>> {
    let mut code = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), next_frame(ws)).await {
            Err(_) => bail!("the connection is still open"),
            Ok(Err(_)) => return Ok(code),
            Ok(Ok(RelayFrame::Error { code: c, .. })) => code = Some(c),
            Ok(Ok(other)) => bail!("expected the end, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_paths_and_upgrade_refusals() {
    each(Limits::default(), |base| async move {
        let (status, body) = http(&base, "GET /healthz HTTP/1.1\r\nHost: HOST\r\nConnection: close\r\n\r\n").await?;
        assert_eq!((status, body.trim()), (200, "ok"));
        let (status, body) = http(&base, "GET /nowhere HTTP/1.1\r\nHost: HOST\r\nConnection: close\r\n\r\n").await?;
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("/r/<room id>"), "{body}");
        let path = tunnel_proto::relay::room_path(&room());
        let upgrade = format!(
            "GET {path} HTTP/1.1\r\nHost: HOST\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        let (status, body) = http(&base, &upgrade).await?;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("tunnel-relay.v1"), "{body}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn welcome_lists_the_room_and_presence_follows_joins_and_leaves() {
    each(Limits::default(), |base| async move {
        let room = room();
        let (mut a, a_key, peers) = join(&base, room).await?;
        assert!(peers.is_empty(), "{peers:?}");
        let (b, b_key, peers) = join(&base, room).await?;
        assert_eq!(peers, vec![a_key.public()]);
        assert_eq!(next_frame(&mut a).await?, RelayFrame::PeerJoined { node_id: b_key.public() });
        // Another room is another world.
        let (_c, _, peers) = join(&base, self::room()).await?;
        assert!(peers.is_empty());
        drop(b);
        assert_eq!(next_frame(&mut a).await?, RelayFrame::PeerLeft { node_id: b_key.public() });
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn send_arrives_as_recv_stamped_with_the_sender_and_absent_peers_are_dropped() {
    each(Limits::default(), |base| async move {
        let room = room();
        let (mut a, a_key, _) = join(&base, room).await?;
        let (mut b, b_key, _) = join(&base, room).await?;
        let payload: Vec<u8> = (0..MAX_PAYLOAD).map(|i| (i * 31) as u8).collect();
        send(&mut a, &RelayFrame::Send { to: b_key.public(), payload: payload.clone() }).await?;
        assert_eq!(next_non_presence(&mut b).await?, RelayFrame::Recv { from: a_key.public(), payload });
        let nobody = SecretKey::generate(&mut rand::rngs::OsRng).public();
        send(&mut a, &RelayFrame::Send { to: nobody, payload: b"hello?".to_vec() }).await?;
        assert_eq!(next_non_presence(&mut a).await?, RelayFrame::Dropped { to: nobody });
        send(&mut b, &RelayFrame::Ping { data: 0xdead_beef_0123 }).await?;
        assert_eq!(next_non_presence(&mut b).await?, RelayFrame::Pong { data: 0xdead_beef_0123 });
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_join_that_proves_nothing_or_names_another_room_is_refused() {
    each(Limits::default(), |base| async move {
        let room = room();
        let (_a, a_key, _) = join(&base, room).await?;
        // Claiming a's id with another key.
        let mut ws = connect(&room_url(&base, &room)).await?;
        let mallory = SecretKey::generate(&mut rand::rngs::OsRng);
        match join_as(&mut ws, room, &mallory, a_key.public()).await? {
            RelayFrame::Error { code: ErrorCode::AuthFailed, .. } => {}
            other => bail!("a forged join got {other:?}"),
        }
        // A valid proof for one room on another room's path.
        let mut ws = connect(&room_url(&base, &room)).await?;
        match join_as(&mut ws, self::room(), &mallory, mallory.public()).await? {
            RelayFrame::Error { code: ErrorCode::BadFrame, text } => assert!(text.contains("room"), "{text}"),
            other => bail!("a join for another room got {other:?}"),
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_newest_connection_of_a_node_wins() {
    each(Limits::default(), |base| async move {
        let room = room();
        let (mut old, key, _) = join(&base, room).await?;
        let (mut b, b_key, _) = join(&base, room).await?;
        assert_eq!(next_frame(&mut old).await?, RelayFrame::PeerJoined { node_id: b_key.public() });
        let mut new = connect(&room_url(&base, &room)).await?;
        let RelayFrame::Welcome { peers, .. } = join_as(&mut new, room, &key, key.public()).await? else {
            bail!("the second connection was refused");
        };
        assert_eq!(peers, vec![b_key.public()]);
        assert_eq!(ends(&mut old).await?, Some(ErrorCode::Replaced));
        // b hears the node again (it may have restarted) and never that it left.
        assert_eq!(next_frame(&mut b).await?, RelayFrame::PeerJoined { node_id: key.public() });
        send(&mut b, &RelayFrame::Send { to: key.public(), payload: b"to the new one".to_vec() }).await?;
        assert_eq!(
            next_non_presence(&mut new).await?,
            RelayFrame::Recv { from: b_key.public(), payload: b"to the new one".to_vec() }
        );
        send(&mut b, &RelayFrame::Ping { data: 1 }).await?;
        assert_eq!(next_frame(&mut b).await?, RelayFrame::Pong { data: 1 }, "no PeerLeft for the replaced one");
        Ok(())
    })
    .await;
}

/// Frames a relay should never get from a node, each as bytes.
fn out_of_place_frames() -> Vec<Message> {
    vec![
        // A relay-to-node frame sent by a node.
        Message::Binary(RelayFrame::Welcome { observed_addr: "x".into(), peers: vec![] }.encode()),
        // A type this protocol does not have (a newer node's, say).
        Message::Binary(vec![0x7f, 1, 2, 3]),
        // A `Send` cut short.
        Message::Binary(vec![0x06, 1, 2]),
        Message::Text("hello".into()),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn frames_out_of_place_are_dropped_and_the_connection_stays() {
    each(Limits::default(), |base| async move {
        let room = room();
        let (mut a, _, _) = join(&base, room).await?;
        let (mut b, b_key, _) = join(&base, room).await?;
        // A v2 node is told why, once per frame, and carries on.
        for frame in out_of_place_frames() {
            a.send(frame).await?;
            match next_non_presence(&mut a).await? {
                RelayFrame::Error { code: ErrorCode::BadFrame, .. } => {}
                other => bail!("expected a BadFrame notice, got {other:?}"),
            }
        }
        send(&mut a, &RelayFrame::Ping { data: 7 }).await?;
        assert_eq!(next_non_presence(&mut a).await?, RelayFrame::Pong { data: 7 });
        send(&mut a, &RelayFrame::Send { to: b_key.public(), payload: b"still routed".to_vec() }).await?;
        match next_non_presence(&mut b).await? {
            RelayFrame::Recv { payload, .. } => assert_eq!(payload, b"still routed"),
            other => bail!("expected the frame, got {other:?}"),
        }
        // A v1 node (it would take any Error as the end) hears nothing about them.
        let (mut old, _) = joined_offering(&base, room, SUBPROTOCOL_V1).await?;
        for frame in out_of_place_frames() {
            old.send(frame).await?;
        }
        send(&mut old, &RelayFrame::Ping { data: 8 }).await?;
        assert_eq!(next_non_presence(&mut old).await?, RelayFrame::Pong { data: 8 });
        // A message over the WebSocket limit breaks the WebSocket: that one ends it (header
        // hand-made: the encoder refuses it).
        let (mut ws, key, _) = join(&base, room).await?;
        let mut frame = vec![0x06];
        frame.extend_from_slice(key.public().as_bytes());
        frame.extend_from_slice(&((MAX_PAYLOAD + 1) as u32).to_be_bytes());
        frame.resize(frame.len() + MAX_PAYLOAD + 1, 0);
        ws.send(Message::Binary(frame)).await?;
        ends(&mut ws).await?;
        // The relay is fine afterwards.
        join(&base, room).await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn old_and_new_nodes_share_a_room() {
    each(Limits::default(), |base| async move {
        let room = room();
        let (mut old, old_key) = joined_offering(&base, room, SUBPROTOCOL_V1).await?;
        let (mut new, new_key, _) = join(&base, room).await?;
        for old_sends in [true, false] {
            let (from, to, to_key) =
                if old_sends { (&mut old, &mut new, &new_key) } else { (&mut new, &mut old, &old_key) };
            send(from, &RelayFrame::Send { to: to_key.public(), payload: b"across versions".to_vec() }).await?;
            match next_non_presence(to).await? {
                RelayFrame::Recv { payload, .. } => assert_eq!(payload, b"across versions"),
                other => bail!("expected the frame, got {other:?}"),
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_access_token_is_required_when_set() {
    each(Limits { access_token: Some("s3cret-relay-token"), ..Default::default() }, |base| async move {
        let room = room();
        match connect(&room_url(&base, &room)).await {
            Err(e) => assert!(e.to_string().contains("401"), "{e}"),
            Ok(_) => bail!("a client without the token got in"),
        }
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(room_url(&base, &room))?;
        let headers = req.headers_mut();
        headers.insert("Sec-WebSocket-Protocol", tunnel_proto::relay::SUBPROTOCOL.parse()?);
        headers.insert("Authorization", "Bearer s3cret-relay-token".parse()?);
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
        let key = SecretKey::generate(&mut rand::rngs::OsRng);
        assert!(matches!(join_as(&mut ws, room, &key, key.public()).await?, RelayFrame::Welcome { .. }));
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_does_not_read_costs_the_sender_dropped_frames_not_relay_memory() {
    each(Limits { tiny_mailbox: true, ..Default::default() }, |base| async move {
        let room = room();
        let (mut a, _, _) = join(&base, room).await?;
        let (_b, b_key, _) = join(&base, room).await?; // never reads
        let payload = vec![7u8; MAX_PAYLOAD];
        // The kernel's socket buffers toward `b` absorb several megabytes before the relay's
        // mailbox fills (how many depends on the machine's TCP autotuning), so keep sending,
        // bounded, until the relay says it dropped one.
        for _ in 0..256 {
            send(&mut a, &RelayFrame::Send { to: b_key.public(), payload: payload.clone() }).await?;
            // `next_frame` only awaits `ws.next()`, which is cancel-safe: polling it briefly
            // loses nothing.
            while let Ok(frame) = tokio::time::timeout(Duration::from_millis(2), next_frame(&mut a)).await {
                match frame? {
                    RelayFrame::Dropped { to } if to == b_key.public() => return Ok(()),
                    RelayFrame::PeerJoined { .. } => continue,
                    other => bail!("expected Dropped, got {other:?}"),
                }
            }
        }
        bail!("256 frames of {MAX_PAYLOAD} bytes to a peer that never reads, and none was dropped")
    })
    .await;
}

#[test]
fn worker_config_and_wrangler_config_agree() {
    let capnp = std::fs::read_to_string(worker::dir().join("relay.capnp")).unwrap();
    let wrangler = std::fs::read_to_string(worker::dir().join("wrangler.jsonc")).unwrap();
    let date = wrangler.split("\"compatibility_date\": \"").nth(1).and_then(|s| s.split('"').next()).unwrap();
    assert!(capnp.contains(&format!("compatibilityDate = \"{date}\"")), "compatibility dates differ");
    assert!(wrangler.contains("\"name\": \"ROOMS\", \"class_name\": \"Room\""));
    assert!(capnp.contains("(name = \"ROOMS\", durableObjectNamespace = \"Room\")"));
    assert!(capnp.contains("className = \"Room\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_shrugs_off_frames_a_relay_should_never_send() {
    each(Limits::default(), |base| async move {
        let relay: std::net::SocketAddr = base.trim_start_matches("ws://").parse()?;
        let (via, meddled) = tunnel_tests::meddler::start(relay, 3).await?;
        let url = format!("ws://{via}");
        let t = tunnel_tests::token();
        let a = tunnel_tests::inproc::start_node(&url, "meddled", &t, "a").await?;
        let b = tunnel_tests::inproc::start_node(&url, "meddled", &t, "b").await?;
        tunnel_tests::inproc::wait_named(&a, "b", Duration::from_secs(10)).await?;
        let peer = a.resolve("b")?;
        for i in 0..100u32 {
            let payload = tunnel_proto::message::ByteBuf::from(i.to_be_bytes().repeat(256));
            let op = tunnel_proto::message::Op::Ping { payload };
            a.request(peer, op, Duration::from_secs(5)).await.with_context(|| format!("ping {i}"))?;
        }
        let injected = meddled.injected.load(std::sync::atomic::Ordering::Relaxed);
        assert!(injected >= 7 * 20, "the meddler slipped in only {injected} frames");
        // Every node stayed on its first connection: nothing it was sent made it leave.
        assert_eq!(meddled.connections.load(std::sync::atomic::Ordering::Relaxed), 2, "a node reconnected");
        // The Error notices are heard, not ignored; the rest is counted (the last junk may
        // still be on its way to a node: wait for it, bounded).
        let ignored = || -> u64 { [&a, &b].iter().map(|n| n.status().relay.expect("relay").ignored_frames).sum() };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while ignored() < injected / 7 * 6 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let now_injected = meddled.injected.load(std::sync::atomic::Ordering::Relaxed);
        let counted = ignored();
        assert!(
            (injected / 7 * 6..=now_injected / 7 * 6).contains(&counted),
            "ignored frames counted: {counted} for {injected}..{now_injected} injected"
        );
        assert_eq!(a.status().relay.expect("relay").version, Some(2));
        a.shutdown().await;
        b.shutdown().await;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_node_joins_a_v1_relay() {
    let relay = Relay::bind("127.0.0.1:0", RelayConfig { newest_protocol: 1, ..Default::default() }).await.unwrap();
    let t = tunnel_tests::token();
    let a = tunnel_tests::inproc::start_node(&relay.url(), "old", &t, "a").await.unwrap();
    let b = tunnel_tests::inproc::start_node(&relay.url(), "old", &t, "b").await.unwrap();
    tunnel_tests::inproc::wait_named(&a, "b", Duration::from_secs(10)).await.unwrap();
    let op = tunnel_proto::message::Op::Ping { payload: vec![1; 1024].into() };
    a.request(a.resolve("b").unwrap(), op, Duration::from_secs(5)).await.unwrap();
    assert_eq!(a.status().relay.expect("relay").version, Some(1));
    // And an old node: it offers v1 only and is answered in v1 by a new relay (checked in
    // `raw::connect_offering`), in `old_and_new_nodes_share_a_room`.
    a.shutdown().await;
    b.shutdown().await;
}
