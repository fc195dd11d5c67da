//! Callers' conveniences on top of the streaming operations: a command's events gathered
//! into buffers, and a whole file read chunk by chunk. Fleet operations and mapreduce use them.

use tokio::sync::mpsc;
use tunnel_proto::message::{ExecEvent, ExecSpec, FileEvent, ReadSpec};

use super::Node;
use crate::node::rpc::RpcError;
use crate::services::file_client::FileEvents;

/// A command's output and its last event (`Exit`, `Refused` or `Failed`; `None` if the
/// stream ended without one).
pub(crate) struct Gathered {
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) last: Option<ExecEvent>,
}

/// How a whole-file read ended, when it did not end well.
pub(crate) enum ReadEnd {
    Refused(String),
    Failed(String),
    /// The peer could not be reached, or the stream broke.
    Lost(String),
}

impl Node {
    /// [`Node::exec`] with the events gathered; stderr beyond `stderr_max` bytes is dropped.
    pub(crate) async fn exec_gathered(
        &self,
        peer: impl Into<super::Dest>,
        spec: ExecSpec,
        stdin: Option<mpsc::Receiver<Vec<u8>>>,
        stderr_max: usize,
    ) -> Result<Gathered, RpcError> {
        let peer = peer.into();
        gathered(stderr_max, |tx| self.exec(peer, spec, stdin, tx)).await
    }

    /// [`Node::exec_as_job`] with the events gathered, up to its end or its `Detached`.
    pub(crate) async fn exec_job_gathered(
        &self,
        dest: super::Dest,
        launch: super::JobLaunch,
        stderr_max: usize,
    ) -> Result<Gathered, RpcError> {
        gathered(stderr_max, |tx| self.exec_as_job(dest, launch, None, tx)).await
    }

    /// Reads a whole file on `peer`, handing each chunk to `on_data`; an `Err` from it stops
    /// the read and is reported as `Failed`.
    pub(crate) async fn read_whole(
        &self,
        dest: impl Into<super::Dest>,
        path: String,
        mut on_data: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), ReadEnd> {
        let spec = ReadSpec { request_id: rand::random(), path: path.into(), offset: 0, length: None };
        let dest = dest.into();
        let stream =
            self.open_stream(dest.peer, dest.read_kind(spec)).await.map_err(|e| ReadEnd::Lost(e.to_string()))?;
        let mut events = FileEvents::new(stream.reader);
        loop {
            match events.next().await.map_err(ReadEnd::Lost)? {
                FileEvent::Meta(_) => {}
                FileEvent::Data(bytes) => on_data(&bytes.0).map_err(ReadEnd::Failed)?,
                FileEvent::Done { .. } => return Ok(()),
                FileEvent::Refused(why) => return Err(ReadEnd::Refused(why)),
                FileEvent::Failed(why) => return Err(ReadEnd::Failed(why)),
            }
        }
    }
}

/// Runs `exec` with an event channel, gathering what comes.
async fn gathered<F>(stderr_max: usize, exec: impl FnOnce(mpsc::Sender<ExecEvent>) -> F) -> Result<Gathered, RpcError>
where
    F: std::future::Future<Output = Result<(), RpcError>>,
{
    let (tx, mut events) = mpsc::channel(64);
    let gather = async {
        let mut out = Gathered { stdout: Vec::new(), stderr: Vec::new(), last: None };
        while let Some(event) = events.recv().await {
            match event {
                ExecEvent::Stdout(b) => out.stdout.extend_from_slice(&b.0),
                ExecEvent::Stderr(b) if out.stderr.len() < stderr_max => out.stderr.extend_from_slice(&b.0),
                ExecEvent::Stderr(_) => {}
                other => out.last = Some(other),
            }
        }
        out
    };
    let (ran, gathered) = tokio::join!(exec(tx), gather);
    ran.map(|()| gathered)
}
