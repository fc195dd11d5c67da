//! File transfers over the control socket: the CLI's side of `tunnel cp`. Each takes over
//! its control connection; the client closing it early abandons the transfer (the peer
//! discards a partial upload, a download stops).

use crate::control::ControlStream;
use tunnel_net::Stream;
use tunnel_proto::message::{FileEvent, ReadSpec, StreamKind, WriteSpec};

use crate::control::{read_frame, write_frame, ControlRequest, ControlResponse};
use crate::services::file_client::{is_last, FileEvents};
use crate::Node;

/// Opens the stream `kind` makes for where `target` runs (a peer, or an SSH host through one).
/// The local operator's stream to this node is marked as theirs (see `node/operator.rs`).
async fn open(
    node: &Node,
    target: &str,
    operator: Option<u64>,
    kind: impl FnOnce(&crate::Dest) -> StreamKind,
) -> Result<Stream, String> {
    let dest = node.find_dest(target).await.map_err(|e| e.to_string())?;
    if let Some(request_id) = operator.filter(|_| dest.peer == node.id()) {
        node.mark_operator(request_id);
    }
    node.open_stream(dest.peer, kind(&dest)).await.map_err(|e| e.to_string())
}

/// Relays `FileEvent`s from the peer's stream to the client until the last one.
async fn relay_events<W: tokio::io::AsyncWrite + Unpin>(reader: tunnel_net::StreamReader, wr: &mut W) {
    let mut events = FileEvents::new(reader);
    loop {
        let event = events.next().await.unwrap_or_else(FileEvent::Failed);
        let last = is_last(&event);
        if write_frame(wr, &ControlResponse::File(event)).await.is_err() || last {
            return;
        }
    }
}

pub(crate) async fn serve_read<S: ControlStream>(
    stream: S,
    node: Node,
    target: String,
    spec: ReadSpec,
    operator: bool,
) {
    let (_rd, mut wr) = tokio::io::split(stream);
    let mark = operator.then_some(spec.request_id);
    match open(&node, &target, mark, |d| d.read_kind(spec)).await {
        Ok(Stream { reader, .. }) => relay_events(reader, &mut wr).await,
        Err(e) => {
            let _ = write_frame(&mut wr, &ControlResponse::Error(e)).await;
        }
    }
}

pub(crate) async fn serve_write<S: ControlStream>(
    stream: S,
    node: Node,
    target: String,
    spec: WriteSpec,
    operator: bool,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mark = operator.then_some(spec.request_id);
    let Stream { reader, mut writer, .. } = match open(&node, &target, mark, |d| d.write_kind(spec)).await {
        Ok(s) => s,
        Err(e) => {
            let _ = write_frame(&mut wr, &ControlResponse::Error(e)).await;
            return;
        }
    };
    // The upload runs on its own, so that relaying the peer's answer is never cut short: the
    // answer may come early (a refusal), and then the client must hear it.
    let upload = tokio::spawn(async move {
        loop {
            match read_frame::<ControlRequest, _>(&mut rd).await {
                Ok(Some(ControlRequest::Input(bytes))) => {
                    if writer.write_all(&bytes.0).await.is_err() {
                        return;
                    }
                }
                Ok(Some(ControlRequest::InputEnd)) => {
                    let _ = writer.finish().await;
                    // Keep reading: the client closing now means it gave up waiting.
                    while let Ok(Some(_)) = read_frame::<ControlRequest, _>(&mut rd).await {}
                    return;
                }
                // The client went away mid-upload: dropping the writer resets the stream and
                // the peer discards what it got.
                _ => return,
            }
        }
    });
    let _upload = tokio_util::task::AbortOnDropHandle::new(upload);
    relay_events(reader, &mut wr).await;
}
