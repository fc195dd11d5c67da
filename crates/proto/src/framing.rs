//! Length-prefixed frames on a byte stream: a `u32` big-endian length, then a postcard body.
//! Streams do not keep message boundaries; services that send messages over them (exec
//! events) use this. [`FrameDecoder`] takes bytes as they come and yields whole frames;
//! a length over the limit is an error before anything is allocated.

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("stream ended inside a frame ({0} bytes left over)")]
    Truncated(usize),
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let body = postcard::to_allocvec(value).expect("frames always serialize");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

pub struct FrameDecoder {
    buf: Vec<u8>,
    max: usize,
}

impl FrameDecoder {
    pub fn new(max: usize) -> Self {
        Self { buf: Vec::new(), max }
    }

    /// Adds bytes; returns every frame now complete, in order.
    pub fn push<T: DeserializeOwned>(&mut self, bytes: &[u8]) -> Result<Vec<T>, FrameError> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut at = 0;
        while self.buf.len() - at >= 4 {
            let len = u32::from_be_bytes(self.buf[at..at + 4].try_into().expect("4 bytes")) as usize;
            if len > self.max {
                return Err(FrameError::TooLarge { len, max: self.max });
            }
            if self.buf.len() - at - 4 < len {
                break;
            }
            let body = &self.buf[at + 4..at + 4 + len];
            out.push(postcard::from_bytes(body).map_err(|e| FrameError::Malformed(e.to_string()))?);
            at += 4 + len;
        }
        self.buf.drain(..at);
        Ok(out)
    }

    /// Call at the end of the stream: leftover bytes mean a cut-off frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated(self.buf.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ByteBuf, ExecEvent, ExecExit};

    #[test]
    fn frames_survive_any_split() {
        let events = vec![
            ExecEvent::Stdout(ByteBuf::copy_from(b"hello")),
            ExecEvent::Stderr(ByteBuf::from(vec![0; 3000])),
            ExecEvent::Exit(ExecExit { code: Some(3), ..Default::default() }),
        ];
        let bytes: Vec<u8> = events.iter().flat_map(encode).collect();
        for split in [1, 2, 3, 5, 7, 64, 4096] {
            let mut d = FrameDecoder::new(1 << 20);
            let mut got: Vec<ExecEvent> = Vec::new();
            for chunk in bytes.chunks(split) {
                got.extend(d.push::<ExecEvent>(chunk).unwrap());
            }
            d.finish().unwrap();
            assert_eq!(got, events, "split {split}");
        }
    }

    #[test]
    fn oversized_and_cut_frames_are_errors() {
        let mut d = FrameDecoder::new(10);
        assert_eq!(d.push::<ExecEvent>(&[0, 0, 1, 0]).unwrap_err(), FrameError::TooLarge { len: 256, max: 10 });
        let mut d = FrameDecoder::new(100);
        assert!(d.push::<ExecEvent>(&[0, 0, 0, 5, 1]).unwrap().is_empty());
        assert_eq!(d.finish(), Err(FrameError::Truncated(5)));
    }
}
