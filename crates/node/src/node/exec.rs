//! The caller's side of a command: a stream to the node that runs it, stdin fed as it comes,
//! its events handed on until the last one (`Exit`, `Refused`, `Failed`, or `Detached` when it
//! went on as a job).

use tokio::sync::mpsc;
use tunnel_net::Stream;
use tunnel_proto::framing::FrameDecoder;
use tunnel_proto::message::{ExecEvent, ExecSpec, StreamKind};
use tunnel_proto::NodeId;

use super::{Dest, JobLaunch, Node, EXEC_FRAME_MAX};
use crate::node::rpc::RpcError;

impl Node {
    /// Runs a command on `peer`. Output and the outcome arrive on `events`, ending with an
    /// `Exit`, `Refused` or `Failed` event; if the peer is lost first, the error says so
    /// (and no last event comes). `stdin` chunks are forwarded as they come; the
    /// channel closing ends the command's input. Dropping the `events` receiver cancels the
    /// command (the peer kills its process group).
    pub async fn exec(
        &self,
        dest: impl Into<Dest>,
        spec: ExecSpec,
        stdin: Option<mpsc::Receiver<Vec<u8>>>,
        events: mpsc::Sender<ExecEvent>,
    ) -> Result<(), RpcError> {
        let dest = dest.into();
        self.exec_stream(dest.peer, dest.exec_kind(spec), stdin, events).await
    }

    /// [`Node::exec`] that becomes a job on the node that runs it (a command after
    /// `job.after_ms`, a task at once): the last event is then `Detached`, and it runs on.
    pub async fn exec_as_job(
        &self,
        dest: impl Into<Dest>,
        launch: JobLaunch,
        stdin: Option<mpsc::Receiver<Vec<u8>>>,
        events: mpsc::Sender<ExecEvent>,
    ) -> Result<(), RpcError> {
        let dest = dest.into();
        let kind = dest.job_kind(launch).map_err(|reason| RpcError::Lost { peer: dest.peer.short(), reason })?;
        self.exec_stream(dest.peer, kind, stdin, events).await
    }

    async fn exec_stream(
        &self,
        peer: NodeId,
        kind: StreamKind,
        stdin: Option<mpsc::Receiver<Vec<u8>>>,
        events: mpsc::Sender<ExecEvent>,
    ) -> Result<(), RpcError> {
        let stream = self.open_stream(peer, kind).await?;
        let Stream { mut reader, mut writer, .. } = stream;
        let feeder = tokio::spawn(async move {
            if let Some(mut stdin) = stdin {
                while let Some(chunk) = stdin.recv().await {
                    if writer.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                let _ = writer.finish().await;
            }
        });
        let _feeder = tokio_util::task::AbortOnDropHandle::new(feeder);
        let mut decoder = FrameDecoder::new(EXEC_FRAME_MAX);
        loop {
            tokio::select! {
                chunk = reader.read() => {
                    let chunk = match chunk {
                        Ok(Some(c)) => c,
                        Ok(None) => {
                            let why = "the exec stream ended before the command's exit status arrived";
                            return Err(self.lost(peer, why.into()));
                        }
                        Err(e) => {
                            let why = format!("the exec stream broke before the command's exit status arrived ({e})");
                            return Err(self.lost(peer, why));
                        }
                    };
                    let batch: Vec<ExecEvent> = match decoder.push(&chunk) {
                        Ok(b) => b,
                        Err(e) => return Err(self.lost(peer, format!("bad exec frame from the peer: {e}"))),
                    };
                    for event in batch {
                        let last = event.is_last();
                        if events.send(event).await.is_err() {
                            return Ok(()); // the caller went away: dropping the reader cancels
                        }
                        if last {
                            return Ok(());
                        }
                    }
                }
                _ = events.closed() => return Ok(()),
            }
        }
    }
}
