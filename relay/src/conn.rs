//! One relay connection: HTTP head, upgrade, proof of node id, then forwarding until close.
//!
//! `run` logs and cleans up; `run_inner` returns why the connection ended.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rand::RngCore;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{interval, Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use tunnel_proto::relay::{self, ErrorCode, RelayFrame, Speaks};
use tunnel_proto::{join, NodeId, SecretKey};

use tunnel_tls::Io;

use crate::http::{self, accept_upgrade};
use crate::limiter::TokenBucket;
use crate::metrics::Metrics;
use crate::rooms::{Mailbox, Outgoing, Room};
use crate::server::Shared;

type Ws = WebSocketStream<Box<dyn Io>>;

/// Why a connection ended, for the log.
enum End {
    Closed,
    Shutdown,
    Refused(&'static str),
    Replaced,
    Error(String),
}

pub(crate) async fn run(
    tcp: TcpStream,
    addr: SocketAddr,
    conn_id: u64,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let plain_hint = "this relay serves TLS: use a wss:// URL (https:// for /healthz and /metrics)";
    let stream: Box<dyn Io> = match &shared.config.tls {
        None => Box::new(tcp),
        Some(tls) => match tokio::time::timeout_at(deadline, tls.accept(tcp, plain_hint)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(why)) => {
                Metrics::inc(&shared.metrics.rejected_connections);
                return debug!(%addr, why, "connection refused");
            }
            Err(_) => return Metrics::inc(&shared.metrics.handshake_timeouts),
        },
    };
    match run_inner(stream, addr, conn_id, &shared, &shutdown, deadline).await {
        End::Closed | End::Shutdown | End::Replaced => {}
        End::Refused(why) => debug!(%addr, why, "connection refused"),
        End::Error(e) => debug!(%addr, error = %e, "connection ended"),
    }
}

async fn run_inner(
    mut stream: Box<dyn Io>,
    addr: SocketAddr,
    conn_id: u64,
    shared: &Shared,
    shutdown: &CancellationToken,
    deadline: Instant,
) -> End {
    let cfg = &shared.config;
    let (head, rest) = match tokio::time::timeout_at(deadline, http::read_head(&mut stream)).await {
        Ok(Ok(h)) => h,
        Ok(Err(why)) => {
            Metrics::inc(&shared.metrics.rejected_connections);
            http::respond(&mut stream, "400 Bad Request", "text/plain", &format!("{why}\n")).await;
            return End::Refused(why);
        }
        Err(_) => {
            Metrics::inc(&shared.metrics.handshake_timeouts);
            return End::Refused("request head timed out");
        }
    };
    if let Some(tap) = &cfg.intercept {
        tap.received(head.path.as_bytes());
        for name in ["Authorization", "Sec-WebSocket-Protocol", "Host"] {
            tap.received(head.header(name).unwrap_or_default().as_bytes());
        }
    }
    let path_room = relay::parse_room_path(&head.path);
    match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/healthz") => {
            http::respond(&mut stream, "200 OK", "text/plain", "ok\n").await;
            return End::Closed;
        }
        ("GET", "/metrics") => {
            let (rooms, peers) = shared.rooms.counts();
            http::respond(&mut stream, "200 OK", "text/plain; version=0.0.4", &shared.metrics.render(rooms, peers))
                .await;
            return End::Closed;
        }
        (_, "/") => {}
        _ if path_room.is_some() => {}
        _ => {
            http::respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                "not found: the relay serves /r/<room id> (WebSocket), /healthz and /metrics\n",
            )
            .await;
            return End::Refused("unknown path");
        }
    }
    let (response, agreed) = match accept_upgrade(&head, cfg.access_token.as_deref(), cfg.newest_protocol) {
        Ok(r) => r,
        Err(refusal) => {
            if refusal.auth {
                Metrics::inc(&shared.metrics.auth_failures);
            }
            Metrics::inc(&shared.metrics.rejected_connections);
            http::respond(&mut stream, refusal.status, "text/plain", &format!("{}\n", refusal.reason)).await;
            return End::Refused(refusal.reason);
        }
    };
    if let Err(e) = stream.write_all(response.as_bytes()).await {
        return End::Error(e.to_string());
    }
    Metrics::inc(&shared.metrics.connections_total);
    let ws_config = WebSocketConfig {
        max_message_size: Some(relay::MAX_FRAME),
        max_frame_size: Some(relay::MAX_FRAME),
        write_buffer_size: 0,
        ..Default::default()
    };
    let mut ws = WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(ws_config)).await;

    let (node, room_id) = match await_join(&mut ws, shared, agreed, deadline).await {
        Ok(joined) => joined,
        Err(end) => return end,
    };
    if path_room.is_some_and(|path_room| path_room != room_id) {
        let text = "the Join names another room than the URL path".to_owned();
        return bad_frame(&mut ws, shared, text).await;
    }
    let mailbox = Mailbox::new(cfg.mailbox_bytes, conn_id);
    let Some(joined) = shared.rooms.join(room_id, node, mailbox.clone(), cfg.max_peers_per_room) else {
        let _ = send(
            &mut ws,
            &RelayFrame::Error {
                code: ErrorCode::RoomFull,
                text: format!("room is full ({} peers)", cfg.max_peers_per_room),
            },
        )
        .await;
        return End::Refused("room full");
    };
    debug!(%addr, node = %node.short(), "joined");
    if joined.replaced {
        Metrics::inc(&shared.metrics.replaced_connections);
        info!(%addr, node = %node.short(), "replaced a live connection of the same node");
    }
    let welcome = RelayFrame::Welcome { observed_addr: addr.to_string(), peers: joined.others };
    let end = match send(&mut ws, &welcome).await {
        Ok(()) => forward(&mut ws, node, agreed, &joined.room, &mailbox, shared, shutdown).await,
        Err(e) => End::Error(e),
    };
    shared.rooms.leave(&joined.room, &node, conn_id);
    if let End::Shutdown = end {
        info!(node = %node.short(), "told to reconnect (relay restarting)");
    }
    end
}

/// Sends the challenge and checks the `Join` that answers it.
async fn await_join(
    ws: &mut Ws,
    shared: &Shared,
    agreed: Speaks,
    deadline: Instant,
) -> Result<(NodeId, [u8; 32]), End> {
    let relay_key = SecretKey::generate(&mut rand::rngs::OsRng);
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let challenge = RelayFrame::Challenge { nonce, relay_key: relay_key.public(), speaks: agreed };
    send(ws, &challenge).await.map_err(End::Error)?;
    let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
        Ok(Some(Ok(msg))) => msg,
        Ok(_) => return Err(End::Closed),
        Err(_) => {
            Metrics::inc(&shared.metrics.handshake_timeouts);
            let _ = send(ws, &RelayFrame::Error { code: ErrorCode::HandshakeTimeout, text: "no Join in time".into() })
                .await;
            return Err(End::Refused("join timed out"));
        }
    };
    let bytes = msg.into_data();
    if let Some(tap) = &shared.config.intercept {
        tap.received(&bytes);
    }
    match RelayFrame::decode(&bytes) {
        Ok(RelayFrame::Join { room_id, node_id, proof, .. }) => {
            if join::verify(&relay_key, &nonce, &room_id, &node_id, &proof) {
                Ok((node_id, room_id))
            } else {
                Metrics::inc(&shared.metrics.auth_failures);
                let text = "join refused: the proof does not match the node id (wrong key, or a weak key)".into();
                let _ = send(ws, &RelayFrame::Error { code: ErrorCode::AuthFailed, text }).await;
                Err(End::Refused("bad join proof"))
            }
        }
        Ok(other) => Err(bad_frame(ws, shared, format!("expected Join, got {}", other.name())).await),
        Err(e) => Err(bad_frame(ws, shared, e.to_string()).await),
    }
}

async fn bad_frame(ws: &mut Ws, shared: &Shared, text: String) -> End {
    Metrics::inc(&shared.metrics.bad_frames);
    let _ = send(ws, &RelayFrame::Error { code: ErrorCode::BadFrame, text }).await;
    let _ = ws.close(None).await;
    End::Refused("bad frame")
}

async fn send(ws: &mut Ws, frame: &RelayFrame) -> Result<(), String> {
    ws.send(Message::Binary(frame.encode())).await.map_err(|e| e.to_string())
}

/// Why a connection's reading side stopped.
enum ReadEnd {
    Closed,
    Error(String),
    Idle,
}

/// Carries frames for a joined node until the connection ends. Reading and writing run side
/// by side: a node slow to read what we send must never stop us reading what it sends (it may
/// be waiting for exactly that to read again, and both sides would stall for good).
async fn forward(
    ws: &mut Ws,
    node: NodeId,
    speaks: Speaks,
    room: &Arc<Room>,
    mailbox: &Mailbox,
    shared: &Shared,
    shutdown: &CancellationToken,
) -> End {
    let cfg = &shared.config;
    let (mut sink, mut stream) = (&mut *ws).split();
    let read = async {
        let mut bucket = TokenBucket::new(cfg.rate_bytes_per_sec, cfg.rate_burst_bytes);
        let mut idle_check = interval(cfg.idle_timeout / 3);
        idle_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_rx = Instant::now();
        loop {
            let msg = tokio::select! {
                msg = stream.next() => msg,
                _ = idle_check.tick() => {
                    if last_rx.elapsed() > cfg.idle_timeout {
                        return ReadEnd::Idle;
                    }
                    continue;
                }
            };
            let bytes = match msg {
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(Message::Close(_))) | None => return ReadEnd::Closed,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                    last_rx = Instant::now();
                    continue;
                }
                Some(Ok(Message::Text(_) | Message::Frame(_))) => {
                    last_rx = Instant::now();
                    ignore(
                        mailbox,
                        speaks,
                        shared,
                        ErrorCode::BadFrame,
                        "text frames are not part of the relay protocol",
                    );
                    continue;
                }
                Some(Err(e)) => return ReadEnd::Error(e.to_string()),
            };
            last_rx = Instant::now();
            if let Some(tap) = &cfg.intercept {
                tap.received(&bytes);
            }
            let wait = bucket.take(bytes.len());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            if let Err((code, text)) = on_frame(bytes, node, room, mailbox, shared) {
                ignore(mailbox, speaks, shared, code, &text);
            }
        }
    };
    let write = async {
        loop {
            match mailbox.next().await {
                Outgoing::Frame(bytes) => {
                    if let Err(e) = sink.send(Message::Binary(bytes)).await {
                        return End::Error(e.to_string());
                    }
                }
                Outgoing::Close(error) => {
                    let _ = sink.send(Message::Binary(error)).await;
                    let _ = sink.close().await;
                    return End::Replaced;
                }
            }
        }
    };
    let ended = tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        end = write => Some(Ok(end)),
        end = read => Some(Err(end)),
    };
    drop((sink, stream));
    match ended {
        None => {
            let hint = RelayFrame::Restarting { reconnect_in_ms: cfg.reconnect_hint.as_millis() as u32 };
            let _ = send(ws, &hint).await;
            let _ = ws.close(None).await;
            End::Shutdown
        }
        Some(Ok(end)) => end,
        Some(Err(ReadEnd::Closed)) => End::Closed,
        Some(Err(ReadEnd::Error(e))) => End::Error(e),
        Some(Err(ReadEnd::Idle)) => {
            let _ = ws.close(None).await;
            End::Refused("idle timeout")
        }
    }
}

/// A frame from a joined node that the relay does not act on: dropped and counted, never a
/// reason to end the connection. A v2 node is told why (an `Error` it logs and carries on
/// after); a v1 node is not, since it would take any `Error` as the end of the connection.
fn ignore(mailbox: &Mailbox, speaks: Speaks, shared: &Shared, code: ErrorCode, text: &str) {
    Metrics::inc(&shared.metrics.bad_frames);
    if speaks.version >= 2 {
        mailbox.push_presence(&RelayFrame::Error { code, text: text.to_owned() });
    }
}

/// Handles one frame from a joined node; a frame it cannot act on comes back as the notice
/// to give.
fn on_frame(
    mut bytes: Vec<u8>,
    node: NodeId,
    room: &Room,
    mailbox: &Mailbox,
    shared: &Shared,
) -> Result<(), (ErrorCode, String)> {
    let metrics = &shared.metrics;
    let bad = |text: String| (ErrorCode::BadFrame, text);
    if relay::frame_type(&bytes) == Some(relay::TYPE_SEND) {
        if bytes.len() > 1 + 32 + 4 + shared.config.max_payload {
            Metrics::inc(&metrics.frames_dropped);
            let text = format!("payload over this relay's limit of {} bytes; dropped", shared.config.max_payload);
            return Err((ErrorCode::TooLarge, text));
        }
        let to = relay::send_to_recv_in_place(&mut bytes, &node).map_err(|e| bad(e.to_string()))?;
        let deliveries = match &shared.config.intercept {
            None => vec![(to, bytes)],
            Some(hook) => {
                let payload = bytes[37..].to_vec();
                hook.forward(node, to, payload)
                    .into_iter()
                    .map(|(to, from, payload)| (to, RelayFrame::Recv { from, payload }.encode()))
                    .collect()
            }
        };
        for (to, frame) in deliveries {
            let len = frame.len() as u64 - 37;
            if room.mailbox(&to).is_some_and(|mb| mb.push(frame)) {
                metrics.frames_forwarded.fetch_add(1, Relaxed);
                metrics.bytes_forwarded.fetch_add(len, Relaxed);
            } else {
                Metrics::inc(&metrics.frames_dropped);
                mailbox.push_presence(&RelayFrame::Dropped { to });
            }
        }
        return Ok(());
    }
    match RelayFrame::decode(&bytes) {
        Ok(RelayFrame::Ping { data }) => {
            mailbox.push_presence(&RelayFrame::Pong { data });
            Ok(())
        }
        Ok(RelayFrame::Pong { .. }) => Ok(()),
        Ok(other) => Err(bad(format!("unexpected {} frame after Join; ignored", other.name()))),
        Err(e) => Err(bad(format!("{e}; ignored"))),
    }
}
