//! Carries one connection's bytes between a socket (TCP, or an SSH channel) and a stream,
//! both ways, until both directions have ended. Half-closes pass through (a client that
//! shuts down its sending side still gets the whole answer); a failure on either side ends
//! both. Each direction is flow-controlled end to end: a reader that stalls stops only its
//! own stream's credit, so it slows nobody else.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tunnel_net::{StreamReader, StreamWriter};

/// Bytes read from the socket at once.
const READ_CHUNK: usize = 64 * 1024;

/// Where a pipe counts what it moves, live, for `tunnel forward list`.
#[derive(Clone, Copy)]
pub(super) struct Counters<'a> {
    /// Socket to stream.
    pub(super) sent: &'a AtomicU64,
    /// Stream to socket.
    pub(super) received: &'a AtomicU64,
}

/// Where connections no forward of this node owns count: nobody reads it.
static UNCOUNTED: AtomicU64 = AtomicU64::new(0);

impl Counters<'static> {
    /// For the far side of someone else's forward (an exit, a `-R` listener).
    pub(super) fn uncounted() -> Self {
        Self { sent: &UNCOUNTED, received: &UNCOUNTED }
    }
}

/// Runs until both directions end; `Err` says which side failed first. `first` are bytes
/// that already arrived from the stream (after its reply frame).
pub(super) async fn pipe<S: AsyncRead + AsyncWrite>(
    socket: S,
    first: Bytes,
    mut reader: StreamReader,
    writer: StreamWriter,
    counters: Counters<'_>,
) -> Result<(), String> {
    let (mut rd, mut wr) = tokio::io::split(socket);
    let up = async move {
        let mut writer = writer;
        // Read straight into what the stream sends and keeps until acknowledged: no copy.
        let mut buf = BytesMut::new();
        loop {
            buf.reserve(READ_CHUNK);
            match rd.read_buf(&mut buf).await {
                Ok(0) => return writer.finish().await.map_err(|e| format!("stream: {e}")),
                Ok(n) => {
                    writer.write_bytes(buf.split().freeze()).await.map_err(|e| format!("stream: {e}"))?;
                    counters.sent.fetch_add(n as u64, Relaxed);
                }
                Err(e) => {
                    let why = format!("socket read failed: {e}");
                    writer.reset(&why);
                    return Err(why);
                }
            }
        }
    };
    let down = async move {
        if !first.is_empty() {
            wr.write_all(&first).await.map_err(|e| format!("socket write failed: {e}"))?;
            counters.received.fetch_add(first.len() as u64, Relaxed);
        }
        loop {
            match reader.read().await {
                Ok(Some(chunk)) => {
                    wr.write_all(&chunk).await.map_err(|e| format!("socket write failed: {e}"))?;
                    counters.received.fetch_add(chunk.len() as u64, Relaxed);
                }
                Ok(None) => {
                    // The other side finished sending: pass the half-close on.
                    let _ = wr.shutdown().await;
                    return Ok(());
                }
                Err(e) => return Err(format!("stream: {e}")),
            }
        }
    };
    // The first failure drops the other direction, which resets the stream and closes the
    // socket: a broken connection never lingers half alive.
    tokio::try_join!(up, down).map(|_| ())
}
