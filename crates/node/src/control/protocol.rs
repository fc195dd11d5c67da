//! The control protocol: what a client asks of its node and what the node answers, each a
//! postcard frame after its length.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tunnel_proto::message::{ByteBuf, ExecEvent, ExecSpec, FileEvent, Op, ReadSpec, Reply, WriteSpec};

use crate::fleet::targets::Target;
use crate::fleet::{FleetOptions, TargetResult};
use crate::mapreduce::{JobProgress, JobReport, JobSpec};
use crate::node::membership::PeerInfo;

const MAX_FRAME: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlRequest {
    Id,
    Peers,
    Ping {
        target: String,
    },
    /// Runs a command on a peer. The connection then carries `Input`/`InputEnd` (stdin) from
    /// the client and `Exec` events back, and closes after the last event. Closing it early
    /// cancels the command.
    Exec {
        target: String,
        spec: ExecSpec,
    },
    /// Bytes for the operation under way (exec stdin, an upload).
    Input(ByteBuf),
    InputEnd,
    /// Any request/response operation on a peer (info, stat, list, set_mode).
    Request {
        target: String,
        op: Op,
    },
    /// Changes this node's own mode (the local operator may always).
    LocalMode {
        mode: String,
    },
    /// Reads a file from a peer: `File` events follow, ending with `Done`/`Refused`/`Failed`.
    Read {
        target: String,
        spec: ReadSpec,
    },
    /// Writes a file on a peer: the client sends `Input` then `InputEnd`, one `File` event answers.
    Write {
        target: String,
        spec: WriteSpec,
    },
    /// Which peers a target expression selects: one `Targets` answer.
    Select {
        target: String,
    },
    /// One operation on every selected peer: `Targets` answers first, then a `FleetResult`
    /// per target as each finishes, then `Done`. For a write the client first sends the
    /// file's bytes (`Input`, then `InputEnd`). Closing the connection cancels what runs.
    Fleet {
        target: String,
        action: FleetAction,
        options: FleetOptions,
    },
    /// A mapreduce job over the selected peers: `Targets` answers first, then `JobProgress`
    /// reports, the answer as `JobOutput` chunks, and `JobDone`. An inline input's bytes
    /// follow the request (`Input`, then `InputEnd`).
    MapReduce {
        target: String,
        job: JobSpec,
        input: JobInput,
    },
    /// The SSH hosts this node and its peers announce: one `SshHosts` answer.
    SshHosts,
    /// Opens a port forward in the node: one `Forward` answer. With `hold`, the forward
    /// lives only as long as this connection (`tunnel forward --foreground`).
    ForwardOpen {
        spec: crate::forward::ForwardSpec,
        hold: bool,
    },
    /// The node's forwards: one `Forwards` answer.
    ForwardList,
    /// Closes a forward: one `Forward` answer with its final figures.
    ForwardClose {
        id: u64,
    },
    /// The node's state for `tunnel status`: one `Status` answer.
    Status,
    /// From `tunnel run` starting while a `tunnel mcp` session hosts the node: hand it over.
    /// `Done` (the host is stopping; its lock frees shortly) or `Error` (a `tunnel run` or the
    /// service hosts it, and keeps it).
    Yield,
    /// Sent first by a front-end that serves an AI agent (`tunnel mcp`), not the operator at
    /// this machine: no answer. Its requests are then held to the secret list even here.
    Agent,
    /// Sent before a request: how long it may wait for an unreachable peer (relay down, peer
    /// away) before failing with the reason. No answer. Default: 15 s.
    ConnectTimeout {
        ms: u64,
    },
    /// `Exec` that becomes a job on the node that runs it after `job.after_ms`; its last
    /// event is then `Detached` with the job.
    ExecJob {
        target: String,
        spec: ExecSpec,
        job: tunnel_proto::job::JobStart,
    },
    /// git on a peer or SSH host: one `Git` answer.
    Git(crate::git::GitRequest),
    /// A delegated task on a peer: `Exec` events as for `ExecJob`, the last `Detached`.
    Task {
        target: String,
        task: tunnel_proto::job::TaskSpec,
    },
    /// From `tunnel mcp` over stdio: the node's process serves the session itself. `Done`,
    /// then the front-end sends its stdin and stdout (see [`handoff`]); or `Error`, and the
    /// front-end relays calls itself. `options` are the front-end's, for the process that
    /// serves them.
    McpHandoff {
        options: String,
    },
}

/// Where a job's input comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobInput {
    /// `size` bytes follow as `Input` frames.
    Inline { size: u64 },
    /// A file on a peer (or `local`), read through its read service and policy.
    File { target: String, path: String },
}

/// A fleet operation as the control protocol carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FleetAction {
    Exec(ExecSpec),
    /// `Exec` that goes on as a job on each target still running it after `after_ms`; if any
    /// does, a `FleetJob` (this node's job standing for them all) comes before `Done`.
    ExecJob {
        spec: ExecSpec,
        after_ms: u64,
    },
    Read {
        path: String,
        max_bytes: u64,
    },
    /// `size` bytes of content follow as `Input` frames.
    Write {
        path: String,
        mode: Option<u32>,
        size: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlResponse {
    Id {
        id: String,
        name: String,
    },
    Peers(Vec<PeerInfo>),
    Pong {
        name: String,
        id: String,
        rtt_us: u64,
    },
    Exec(ExecEvent),
    Reply(Reply),
    File(FileEvent),
    Done,
    Error(String),
    Targets(Vec<Target>),
    FleetResult(TargetResult),
    /// The fleet job following the targets that run on as jobs (see [`FleetAction::ExecJob`]).
    FleetJob(Box<tunnel_proto::job::JobInfo>),
    JobProgress(JobProgress),
    JobOutput(ByteBuf),
    JobDone(JobReport),
    SshHosts(crate::ssh::SshHostList),
    Forward(crate::forward::ForwardInfo),
    Forwards(Vec<crate::forward::ForwardInfo>),
    Status(Box<crate::node::NodeStatus>),
    Git(Box<crate::git::GitResult>),
    /// To the `tunnel mcp` whose session this process serves: the client's `initialize`
    /// params (JSON), with which it can serve the rest of the session if this process stops.
    McpResumable {
        initialize: String,
    },
    /// To the same, when this process stops before the client is done: the input it read and
    /// did not serve. `tunnel mcp` serves the rest of the session.
    McpGiveBack {
        unread: ByteBuf,
    },
}

pub async fn write_frame<T: Serialize, W: AsyncWrite + Unpin>(stream: &mut W, value: &T) -> std::io::Result<()> {
    stream.write_all(&frame(value)?).await
}

/// One frame, length first, as one buffer: one write, so the reader wakes once per frame.
pub fn frame<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    let mut out = postcard::to_extend(value, vec![0u8; 4]).map_err(std::io::Error::other)?;
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<T: for<'de> Deserialize<'de>, R: AsyncRead + Unpin>(
    stream: &mut R,
) -> std::io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("control frame of {len} bytes is over the limit"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    postcard::from_bytes(&body).map(Some).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
