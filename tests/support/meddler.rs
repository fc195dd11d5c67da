//! A middlebox between nodes and their relay that slips frames the node must not act on into
//! the relay-to-node direction: unknown types, frames in the wrong direction, malformed ones,
//! text frames and `Error` notices. The node-to-relay direction passes untouched. For tests
//! that a node shrugs off what a buggy relay, a newer relay or a meddling proxy sends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tunnel_proto::relay::{ErrorCode, RelayFrame, Speaks};
use tunnel_proto::NodeId;

/// What the meddler did, for the test's assertions.
#[derive(Default)]
pub struct Meddled {
    /// TCP connections made through it: a node that reconnected shows up twice.
    pub connections: AtomicU64,
    /// Frames slipped in.
    pub injected: AtomicU64,
}

/// Listens on loopback and proxies each connection to `relay`; after every `every` frames the
/// relay sends, it slips in one of each kind of junk.
pub async fn start(relay: SocketAddr, every: u64) -> anyhow::Result<(SocketAddr, Arc<Meddled>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let meddled = Arc::new(Meddled::default());
    let counts = meddled.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            counts.connections.fetch_add(1, Relaxed);
            let counts = counts.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(relay).await else { return };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move { tokio::io::copy(&mut cr, &mut sw).await });
                let _ = meddle(&mut sr, &mut cw, every, &counts).await;
                up.abort();
            });
        }
    });
    Ok((addr, meddled))
}

/// The junk: each a whole WebSocket message a relay should never send a joined node.
fn junk() -> Vec<(u8, Vec<u8>)> {
    const BINARY: u8 = 0x82;
    const TEXT: u8 = 0x81;
    let id = NodeId::from_bytes([7; 32]);
    vec![
        (BINARY, vec![0x7f, 1, 2, 3]),
        (BINARY, RelayFrame::Challenge { nonce: [1; 32], relay_key: id, speaks: Speaks::THIS }.encode()),
        (BINARY, RelayFrame::Join { room_id: [2; 32], node_id: id, proof: [3; 32], speaks: Speaks::THIS }.encode()),
        (BINARY, RelayFrame::Welcome { observed_addr: "x".into(), peers: vec![id] }.encode()[..6].to_vec()),
        (BINARY, vec![0x07, 1, 2]),
        (BINARY, RelayFrame::Error { code: ErrorCode::BadFrame, text: "meddled".into() }.encode()),
        (TEXT, b"meddled".to_vec()),
    ]
}

/// Copies the relay's bytes to the node: the HTTP head as is, then frame by frame, with junk
/// after every `every` frames.
async fn meddle(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    every: u64,
    counts: &Meddled,
) -> std::io::Result<()> {
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut head_done = false;
    let mut frames = 0u64;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        pending.extend_from_slice(&buf[..n]);
        if !head_done {
            let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            to.write_all(&pending[..end + 4]).await?;
            pending.drain(..end + 4);
            head_done = true;
        }
        while let Some(len) = whole_frame(&pending) {
            to.write_all(&pending[..len]).await?;
            pending.drain(..len);
            frames += 1;
            // Not before the Welcome (the 2nd frame): junk there is a failed join, by design.
            if frames > 2 && frames.is_multiple_of(every) {
                for (opcode, payload) in junk() {
                    to.write_all(&server_frame(opcode, &payload)).await?;
                    counts.injected.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

/// The length of the whole (unmasked, server-sent) WebSocket frame at the start of `buf`.
fn whole_frame(buf: &[u8]) -> Option<usize> {
    let b1 = *buf.get(1)?;
    let (len, at) = match b1 & 0x7f {
        126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    (buf.len() >= at + len).then_some(at + len)
}

fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![opcode];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}
