//! Streams: bidirectional, flow-controlled byte pipes between two peers.
//!
//! Per direction the receiver grants credit (`Credit.max_offset`), so at most [`WINDOW`]
//! bytes ([`DIRECT_WINDOW`] on a direct path) are ever buffered for one stream at the
//! receiver, and a stalled stream stops only its own sender. `Credit.received` acknowledges bytes; the sender keeps unacknowledged
//! bytes (at most one window) and resends them when the relay reports `Dropped`, so a frame
//! the relay dropped under load costs a retransmit, never a hole. Data carries its offset:
//! duplicates are trimmed, out-of-order data waits for the resend.
//!
//! [`StreamTable`] (in `table`) is the actor-side state; [`Stream`], [`StreamReader`],
//! [`StreamWriter`] are what callers hold.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tunnel_proto::message::{StreamKind, MAX_CHUNK};
use tunnel_proto::NodeId;

use crate::error::StreamError;

/// Receive window per stream direction.
pub(crate) const WINDOW: u64 = 512 * 1024;
/// The receive window while the peer is on a direct path: QUIC's deeper pipeline needs more
/// bytes in flight to fill it, and no relay mailbox has to hold them.
pub(crate) const DIRECT_WINDOW: u64 = 2 * 1024 * 1024;
/// Resets remembered so a lost one can be sent again.
const RECENT_RESETS: usize = 64;
/// Skipped-over remote stream ids remembered (their `Open` was lost and may be resent).
const MAX_MISSING: usize = 4096;

/// Sent by stream handles to their peer actor.
#[derive(Debug)]
pub(crate) enum StreamCmd {
    Data { stream: u64, offset: u64, bytes: Bytes },
    Finish { stream: u64, final_offset: u64 },
    Reset { stream: u64, reason: String },
    Consumed { stream: u64, max_offset: u64 },
}

enum Chunk {
    Data(Bytes),
    Fin,
    Failed(StreamError),
}

#[derive(Clone, Default)]
struct Credit {
    max: u64,
    failed: Option<StreamError>,
}

/// Both halves of a stream.
pub struct Stream {
    pub peer: NodeId,
    pub kind: StreamKind,
    pub reader: StreamReader,
    pub writer: StreamWriter,
}

/// The receiving half. Dropping it before the end resets the stream.
pub struct StreamReader {
    id: u64,
    rx: mpsc::UnboundedReceiver<Chunk>,
    consumed: u64,
    granted: u64,
    /// The window to grant now ([`WINDOW`], or [`DIRECT_WINDOW`] on a direct path); shared
    /// by every stream of one peer, set by its actor.
    window: Arc<AtomicU64>,
    ctl: mpsc::UnboundedSender<StreamCmd>,
    done: bool,
}

impl StreamReader {
    /// The next chunk, `None` at the end of the stream.
    pub async fn read(&mut self) -> Result<Option<Bytes>, StreamError> {
        if self.done {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(Chunk::Data(bytes)) => {
                self.consumed += bytes.len() as u64;
                let window = self.window.load(Ordering::Relaxed);
                if self.granted.saturating_sub(self.consumed) <= window / 2 {
                    self.granted = self.granted.max(self.consumed + window);
                    let _ = self.ctl.send(StreamCmd::Consumed { stream: self.id, max_offset: self.granted });
                }
                Ok(Some(bytes))
            }
            Some(Chunk::Fin) => {
                self.done = true;
                Ok(None)
            }
            Some(Chunk::Failed(e)) => {
                self.done = true;
                Err(e)
            }
            None => {
                self.done = true;
                Err(StreamError::Closed)
            }
        }
    }

    /// Reads to the end.
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, StreamError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.read().await? {
            if out.len() + chunk.len() > limit {
                return Err(StreamError::Lost(format!("stream longer than the {limit}-byte limit")));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.ctl.send(StreamCmd::Reset { stream: self.id, reason: "receiver closed the stream".into() });
        }
    }
}

/// The sending half. Call [`StreamWriter::finish`] to end it cleanly. Dropping it after
/// writing resets the stream; dropping it unused ends this direction cleanly.
pub struct StreamWriter {
    id: u64,
    offset: u64,
    credit: watch::Receiver<Credit>,
    data: mpsc::Sender<StreamCmd>,
    ctl: mpsc::UnboundedSender<StreamCmd>,
    finished: bool,
}

impl StreamWriter {
    /// Writes all of `data`, waiting for credit as needed.
    pub async fn write_all(&mut self, data: &[u8]) -> Result<(), StreamError> {
        self.write_bytes(Bytes::copy_from_slice(data)).await
    }

    /// Writes all of `data` without copying it (the stream keeps it until the peer has it).
    pub async fn write_bytes(&mut self, mut data: Bytes) -> Result<(), StreamError> {
        while !data.is_empty() {
            let allowed = self.wait_credit().await?;
            let n = data.len().min(MAX_CHUNK).min(usize::try_from(allowed).unwrap_or(usize::MAX));
            let cmd = StreamCmd::Data { stream: self.id, offset: self.offset, bytes: data.split_to(n) };
            self.data.send(cmd).await.map_err(|_| StreamError::Closed)?;
            self.offset += n as u64;
        }
        Ok(())
    }

    async fn wait_credit(&mut self) -> Result<u64, StreamError> {
        loop {
            {
                let credit = self.credit.borrow_and_update();
                if let Some(e) = &credit.failed {
                    return Err(e.clone());
                }
                if credit.max > self.offset {
                    return Ok(credit.max - self.offset);
                }
            }
            self.credit.changed().await.map_err(|_| StreamError::Closed)?;
        }
    }

    /// Resolves when the stream fails (the peer reset it, the peer left): how a sender that
    /// has nothing to write learns that nobody is listening any more.
    pub fn stopped(&self) -> impl std::future::Future<Output = StreamError> + 'static {
        let mut credit = self.credit.clone();
        async move {
            match credit.wait_for(|c| c.failed.is_some()).await {
                Ok(c) => c.failed.clone().unwrap_or(StreamError::Closed),
                Err(_) => StreamError::Closed,
            }
        }
    }

    /// Ends this direction after everything written so far.
    pub async fn finish(mut self) -> Result<(), StreamError> {
        self.finished = true;
        if let Some(e) = &self.credit.borrow().failed {
            return Err(e.clone());
        }
        let cmd = StreamCmd::Finish { stream: self.id, final_offset: self.offset };
        self.data.send(cmd).await.map_err(|_| StreamError::Closed)
    }

    /// Abandons the stream; the peer's reader gets `reason`.
    pub fn reset(mut self, reason: &str) {
        self.finished = true;
        let _ = self.ctl.send(StreamCmd::Reset { stream: self.id, reason: reason.to_owned() });
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // A writer that never wrote cannot truncate anything: end its direction cleanly, so
        // one-way streams need no ceremony. One dropped mid-way must not look complete.
        let cmd = if self.offset == 0 {
            StreamCmd::Finish { stream: self.id, final_offset: 0 }
        } else {
            StreamCmd::Reset { stream: self.id, reason: "sender dropped the stream before finishing".into() }
        };
        let _ = self.ctl.send(cmd);
    }
}

mod table;

pub(crate) use table::{StreamPorts, StreamTable};
