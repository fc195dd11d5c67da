//! The caller's side of a file stream: the peer's [`FileEvent`] frames, one at a time.

use std::collections::VecDeque;

use tunnel_net::StreamReader;
use tunnel_proto::framing::FrameDecoder;
use tunnel_proto::message::FileEvent;

/// Largest file event frame accepted from a peer.
const FILE_FRAME_MAX: usize = 1 << 20;

pub(crate) struct FileEvents {
    reader: StreamReader,
    decoder: FrameDecoder,
    ready: VecDeque<FileEvent>,
}

impl FileEvents {
    pub(crate) fn new(reader: StreamReader) -> Self {
        Self { reader, decoder: FrameDecoder::new(FILE_FRAME_MAX), ready: VecDeque::new() }
    }

    /// The next event; `Err` says why the stream broke before the peer's last event.
    pub(crate) async fn next(&mut self) -> Result<FileEvent, String> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(event);
            }
            let chunk = match self.reader.read().await {
                Ok(Some(c)) => c,
                Ok(None) => return Err("the transfer ended before the peer said it was done".into()),
                Err(e) => return Err(format!("the transfer broke: {e}")),
            };
            let events: Vec<FileEvent> =
                self.decoder.push(&chunk).map_err(|e| format!("bad frame from the peer: {e}"))?;
            self.ready.extend(events);
        }
    }
}

/// Whether an event is the last one a file stream carries.
pub(crate) fn is_last(event: &FileEvent) -> bool {
    matches!(event, FileEvent::Done { .. } | FileEvent::Refused(_) | FileEvent::Failed(_))
}
