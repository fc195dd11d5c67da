//! The one frame that starts a forward stream's answer ([`ConnectReply`] or [`ListenReply`]),
//! and the raw bytes that may follow it in the same chunk.
//!
//! [`ConnectReply`]: tunnel_proto::forward::ConnectReply
//! [`ListenReply`]: tunnel_proto::forward::ListenReply

use bytes::Bytes;
use serde::de::DeserializeOwned;
use tunnel_net::{StreamReader, StreamWriter};
use tunnel_proto::forward::REPLY_FRAME_MAX;

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
