//! One live direct path to a peer: a QUIC connection whose single bidirectional stream
//! carries peer messages, each prefixed with its length (`u32`, big-endian).
//!
//! No Noise seal here: QUIC's TLS 1.3, pinned through the Noise session, already encrypts
//! end to end. Messages are the same [`PeerMessage`]s as on the relay, and the stream layer's
//! offsets and acks sit above both paths, so a message lost when a path dies is resent on the
//! other.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use tracing::warn;
use tunnel_proto::message::PeerMessage;
use tunnel_proto::session::Session;
use tunnel_proto::NodeId;

use crate::peer::PeerInput;

/// Frames queued per link. Stream data is taken only while more than [`HEADROOM`] are free.
/// Nothing the actor sends ever waits: a frame that finds the queue full waits in `overflow`
/// (control messages only, in practice), because an actor waiting on its link while the peer's
/// actor waits on its own would stop both for good (each waits for the other to read).
const QUEUE: usize = 128;
pub(crate) const HEADROOM: usize = 16;

/// The streams a dialer opens once it is connected.
pub(crate) struct Opened {
    pub(crate) conn: quinn::Connection,
    pub(crate) send: quinn::SendStream,
    pub(crate) recv: quinn::RecvStream,
}

pub(crate) struct Link {
    pub(crate) id: u64,
    pub(crate) conn: quinn::Connection,
    /// This node dialed (the QUIC client), rather than accepted.
    pub(crate) dialed: bool,
    out: mpsc::Sender<Bytes>,
    overflow: std::sync::Mutex<std::collections::VecDeque<Bytes>>,
    _writer: AbortOnDropHandle<()>,
    _reader: AbortOnDropHandle<()>,
}

impl Link {
    /// Starts moving messages: received ones go to the peer actor's `input` as
    /// [`PeerInput::Direct`], then one [`PeerInput::LinkDown`] when the path ends.
    pub(crate) fn start(opened: Opened, dialed: bool, input: mpsc::Sender<PeerInput>) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let (out, rx) = mpsc::channel(QUEUE);
        let writer = AbortOnDropHandle::new(tokio::spawn(write_frames(opened.send, rx)));
        let reader = AbortOnDropHandle::new(tokio::spawn(read_frames(id, opened.recv, input)));
        Self { id, conn: opened.conn, dialed, out, overflow: Default::default(), _writer: writer, _reader: reader }
    }

    pub(crate) fn remote(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Whether stream data may be queued now (control messages always may).
    pub(crate) fn has_room(&self) -> bool {
        self.out.capacity() > HEADROOM && self.overflow.lock().expect("overflow lock").is_empty()
    }

    /// Moves what overflowed into the queue, as far as it has room.
    pub(crate) fn flush(&self) {
        let mut overflow = self.overflow.lock().expect("overflow lock");
        while let Some(frame) = overflow.pop_front() {
            match self.out.try_send(frame) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(frame)) => {
                    overflow.push_front(frame);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    overflow.clear();
                    return;
                }
            }
        }
    }

    /// A handle to wait on for room with.
    pub(crate) fn queue(&self) -> mpsc::Sender<Bytes> {
        self.out.clone()
    }

    /// Queues one message without waiting; `false` if the link is gone (its reader reports
    /// why).
    pub(crate) fn send(&self, msg: &PeerMessage) -> bool {
        let mut frame = msg.encode_after(vec![0; 4]);
        let len = u32::try_from(frame.len() - 4).expect("messages are small");
        frame[..4].copy_from_slice(&len.to_be_bytes());
        let mut overflow = self.overflow.lock().expect("overflow lock");
        if !overflow.is_empty() {
            overflow.push_back(Bytes::from(frame));
            return true;
        }
        match self.out.try_send(Bytes::from(frame)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(frame)) => {
                overflow.push_back(frame);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub(crate) fn close(&self, why: &str) {
        self.conn.close(0u32.into(), why.as_bytes());
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.close("path closed");
    }
}

/// Names the dialer to the listener: the first bytes on the stream.
pub(crate) async fn name_ourselves(send: &mut quinn::SendStream, id: &NodeId) -> Result<(), String> {
    send.write_all(id.as_bytes()).await.map_err(|e| e.to_string())
}

/// Reads the dialer's node id.
pub(crate) async fn read_name(recv: &mut quinn::RecvStream) -> Result<NodeId, String> {
    let mut id = [0; 32];
    recv.read_exact(&mut id).await.map_err(|e| format!("the dialer did not name itself: {e}"))?;
    Ok(NodeId::from_bytes(id))
}

/// The listener's answer once it admitted the dialer: one byte. The dialer uses the path only
/// after it, so nothing is ever sent into a connection the listener has not taken.
const ADMITTED: u8 = 1;

pub(crate) async fn say_admitted(send: &mut quinn::SendStream) -> Result<(), String> {
    send.write_all(&[ADMITTED]).await.map_err(|e| e.to_string())
}

pub(crate) async fn wait_admitted(recv: &mut quinn::RecvStream) -> Result<(), String> {
    let mut answer = [0; 1];
    match recv.read_exact(&mut answer).await {
        Ok(()) if answer[0] == ADMITTED => Ok(()),
        Ok(()) => Err("the peer answered the dial with garbage".into()),
        Err(e) => Err(format!("the peer did not admit the path: {e}")),
    }
}

async fn write_frames(mut send: quinn::SendStream, mut rx: mpsc::Receiver<Bytes>) {
    let mut batch = Vec::with_capacity(32);
    while rx.recv_many(&mut batch, 32).await > 0 {
        if send.write_all_chunks(&mut batch).await.is_err() {
            return;
        }
        batch.clear();
    }
    let _ = send.finish();
}

async fn read_frames(link: u64, mut recv: quinn::RecvStream, input: mpsc::Sender<PeerInput>) {
    let mut buf = BytesMut::new();
    let reason = 'read: loop {
        match recv.read_chunk(256 * 1024, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => break "the peer closed the path".to_owned(),
            Err(e) => break e.to_string(),
        }
        while buf.len() >= 4 {
            let len = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
            if len > Session::MAX_PLAINTEXT {
                break 'read format!("the peer sent a {len}-byte message on the path");
            }
            if buf.len() < 4 + len {
                break;
            }
            let frame = buf.split_to(4 + len);
            match PeerMessage::decode(&frame[4..]) {
                Ok(msg) => {
                    if input.send(PeerInput::Direct(msg)).await.is_err() {
                        return;
                    }
                }
                Err(e) => warn!(error = %e, "dropping an undecodable message from a direct path"),
            }
        }
    };
    let _ = input.send(PeerInput::LinkDown { link, reason }).await;
}
