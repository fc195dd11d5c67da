//! The one frame that starts a forward stream's answer ([`ConnectReply`] or [`ListenReply`]),
//! and the raw bytes that may follow it in the same chunk.
//!
//! [`ConnectReply`]: tunnel_proto::forward::ConnectReply
//! [`ListenReply`]: tunnel_proto::forward::ListenReply

use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use tunnel_net::{Stream, StreamReader, StreamWriter};
use tunnel_proto::forward::{ConnectFailure, ConnectReply, REPLY_FRAME_MAX};
use tunnel_proto::NodeId;

/// A `Failed` answer.
pub(super) fn failed(why: ConnectFailure, message: String) -> ConnectReply {
    ConnectReply::Failed { why, message }
}

/// Text a peer chose, cut to a length fit for the audit log.
pub(super) fn clip(text: &str) -> String {
    text.chars().take(128).collect()
}

/// Waits up to `wait` for the answer on a stream just opened to `peer`. A stream that breaks
/// or stays silent is explained with the link's own reason, if it has one.
pub(super) async fn answered<T: DeserializeOwned>(
    node: &crate::Node,
    peer: NodeId,
    mut stream: Stream,
    wait: Duration,
) -> Result<(Stream, T, Bytes), String> {
    match tokio::time::timeout(wait, read_reply::<T>(&mut stream.reader)).await {
        Ok(Ok((reply, first))) => Ok((stream, reply, first)),
        Ok(Err(why)) => Err(node.lost(peer, why).to_string()),
        Err(_) => Err(node.lost(peer, format!("no answer within {} s", wait.as_secs())).to_string()),
    }
}

/// Reads the first frame; returns it with whatever bytes came after it (the destination may
/// speak first, as SSH and SMTP servers do, and those bytes must not be lost).
pub(super) async fn read_reply<T: DeserializeOwned>(reader: &mut StreamReader) -> Result<(T, Bytes), String> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if buf.len() >= 4 {
            let len = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
            if len > REPLY_FRAME_MAX {
                return Err(format!("the peer's reply frame of {len} bytes is over the limit"));
            }
            if buf.len() >= 4 + len {
                let reply =
                    postcard::from_bytes(&buf[4..4 + len]).map_err(|e| format!("bad reply from the peer: {e}"))?;
                return Ok((reply, Bytes::copy_from_slice(&buf[4 + len..])));
            }
        }
        match reader.read().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            Ok(None) => return Err("the peer closed the stream before answering".into()),
            Err(e) => return Err(format!("the stream broke before the peer answered: {e}")),
        }
    }
}

/// Sends the reply frame.
pub(super) async fn send_reply<T: serde::Serialize>(writer: &mut StreamWriter, reply: &T) -> Result<(), String> {
    writer.write_all(&tunnel_proto::framing::encode(reply)).await.map_err(|e| e.to_string())
}
