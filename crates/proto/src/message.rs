//! Peer messages: the plaintext of transport packets, encoded with postcard.
//!
//! The first message each side sends on a new session is `Hello`. Requests and responses are
//! matched by id; streams are bidirectional byte pipes with per-direction credit: a sender may
//! send bytes up to the offset the receiver last granted, so a receiver's memory per stream is
//! bounded and a stalled stream never blocks others. `Data` carries its offset, so a frame
//! lost on the way (a relay dropping under load) is detected, and the stream fails loudly
//! instead of delivering a hole.
//!
//! New variants are added at the end of each enum only: postcard encodes the variant index.

use serde::{Deserialize, Serialize};

use crate::forward::{ConnectSpec, ListenSpec, ReverseSpec};
pub use crate::wire_bytes::{ByteBuf, PathBytes};

/// Largest `Data` chunk a sender puts in one message.
pub const MAX_CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    Hello(Box<Hello>),
    Request {
        id: u64,
        op: Op,
    },
    Response {
        id: u64,
        result: Result<Reply, RemoteError>,
    },
    Cancel {
        id: u64,
    },
    Progress {
        id: u64,
        done: u64,
        total: Option<u64>,
    },
    /// Opens stream `stream` (odd ids from the handshake initiator, even from the responder).
    /// `window` is the credit the opener grants for data flowing to it.
    Open {
        stream: u64,
        kind: StreamKind,
        window: u64,
    },
    Data {
        stream: u64,
        offset: u64,
        bytes: ByteBuf,
    },
    /// The receiver may now be sent bytes up to `max_offset` (absolute, so a lost `Credit`
    /// is repaired by the next one), and has received every byte below `received`: the
    /// sender may forget them (it keeps unacknowledged bytes to resend after a relay drop).
    /// The FIN counts as the byte at `final_offset`: `received = final_offset + 1` acks it.
    Credit {
        stream: u64,
        max_offset: u64,
        received: u64,
    },
    /// The sender's direction is finished at `final_offset`; `error` set means a reset.
    Close {
        stream: u64,
        final_offset: u64,
        error: Option<String>,
    },
    /// How to reach the sender over a direct QUIC path. Sent only inside the Noise session,
    /// so the relay learns nothing and cannot alter it.
    PathOffer(Box<PathOffer>),
}

/// A node's direct-path candidates and the one QUIC certificate it presents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathOffer {
    /// SHA-256 of the sender's QUIC certificate (DER). A direct path is used only when the
    /// certificate on it has this hash: the path is then proven to reach the same node id.
    pub fingerprint: [u8; 32],
    /// Where the sender's UDP socket may be reached, best first. Empty: the sender takes no
    /// direct paths (it runs `relay-only`); stop offering until its next session.
    pub candidates: Vec<Candidate>,
    /// `false`: an invitation, answered with the receiver's own offer so that both sides
    /// probe at once. `true`: that answer.
    pub reply: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub addr: std::net::SocketAddr,
    pub kind: CandidateKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CandidateKind {
    /// A local interface address (loopback included).
    Host,
    /// The address a STUN server saw: the sender's public mapping.
    ServerReflexive,
    /// The address the sender's peers saw on a direct path.
    PeerReflexive,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    /// Random per process: a new value means the peer restarted and lost its streams.
    pub instance: u64,
    pub name: String,
    pub tags: Vec<String>,
    pub os: OsInfo,
    pub tunnel_version: String,
    pub mode: String,
    pub capabilities: Vec<String>,
    /// The SSH hosts this node reaches for the mesh: names and tags only, never addresses or
    /// credentials.
    pub ssh_hosts: Vec<SshHostGroup>,
}

/// SSH hosts that share one set of tags, their names written compactly (`web-[01-20], db`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshHostGroup {
    pub tags: Vec<String>,
    pub names: String,
}

impl Hello {
    /// A Hello for this protocol version with nothing but a name; callers fill in the rest.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            version: crate::PROTOCOL_VERSION,
            instance: 0,
            name: name.into(),
            tags: vec![],
            os: OsInfo::default(),
            tunnel_version: String::new(),
            mode: String::new(),
            capabilities: vec![],
            ssh_hosts: vec![],
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsInfo {
    /// `linux`, `macos`, `windows`, ...
    pub family: String,
    /// e.g. `Ubuntu 24.04.1 LTS`.
    pub distro: String,
    pub kernel: String,
    pub arch: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamKind {
    /// Raw bytes for tests, benchmarks and the demo.
    Echo,
    Sink,
    /// Reserved by later services (files, forwards); carries a service name.
    Service(String),
    /// Run a command: stdin flows to the executor, [`ExecEvent`] frames flow back.
    Exec(ExecSpec),
    /// Read a file: [`FileEvent`] frames flow back.
    ReadFile(ReadSpec),
    /// Write a file: its bytes flow to the node, one [`FileEvent`] comes back.
    WriteFile(WriteSpec),
    /// [`StreamKind::Exec`] on an SSH host this node reaches; the same frames flow.
    SshExec {
        host: String,
        spec: ExecSpec,
    },
    /// [`StreamKind::ReadFile`] on an SSH host this node reaches.
    SshRead {
        host: String,
        spec: ReadSpec,
    },
    /// [`StreamKind::WriteFile`] on an SSH host this node reaches.
    SshWrite {
        host: String,
        spec: WriteSpec,
    },
    /// A forwarded TCP connection: the node connects to the destination from its network.
    Connect(ConnectSpec),
    /// [`StreamKind::Connect`] through a `direct-tcpip` channel on an SSH host this node reaches.
    SshConnect {
        host: String,
        spec: ConnectSpec,
    },
    /// A remote forward's listener on the node, alive as long as this stream.
    Listen(ListenSpec),
    /// A connection a [`StreamKind::Listen`] listener accepted, back to the forward's owner.
    Reverse(ReverseSpec),
    /// [`StreamKind::Listen`] on an SSH host this node reaches (`tcpip-forward`).
    SshListen {
        host: String,
        spec: ListenSpec,
    },
    /// [`StreamKind::Exec`] that becomes a job after `job.after_ms`: the same frames flow,
    /// then [`ExecEvent::Detached`] if the command is still running, and it runs on.
    Job {
        spec: ExecSpec,
        job: crate::job::JobStart,
    },
    /// A delegated task: the node's configured AI agent with the prompt, detached as a job at
    /// once; [`ExecEvent`] frames flow back as for [`StreamKind::Job`].
    Task(crate::job::TaskSpec),
    /// [`StreamKind::Job`] on an SSH host this node reaches: the job is this node's (it holds
    /// the SSH channel and keeps the output); the command runs on the host.
    SshJob {
        host: String,
        spec: ExecSpec,
        job: crate::job::JobStart,
    },
}

/// A command to run, as the caller sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecCommand {
    /// Run directly, never through a shell.
    Argv(Vec<String>),
    /// Run as `sh -c STRING` (refused in plan mode).
    Shell(String),
}

impl ExecCommand {
    /// The command on one line, for listings.
    pub fn to_line(&self) -> String {
        match self {
            Self::Argv(a) => a.join(" "),
            Self::Shell(s) => format!("sh -c {s:?}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// Unique per request; a resend with the same id never runs the command twice.
    pub request_id: u64,
    pub command: ExecCommand,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub timeout_ms: Option<u64>,
    /// Bytes of stdout, and separately of stderr, sent back before output is cut.
    pub output_cap: u64,
    /// Whether the caller sends stdin; otherwise the command's stdin is empty.
    pub stdin: bool,
}

/// How much of `n` new output bytes an executor delivers under [`ExecSpec::output_cap`]
/// (`limit`), given `sent` so far; sets `truncated` when some are cut.
pub fn cap_output(sent: &mut u64, n: usize, limit: u64, truncated: &mut bool) -> usize {
    let room = limit.saturating_sub(*sent).min(n as u64) as usize;
    if room < n {
        *truncated = true;
    }
    *sent += room as u64;
    room
}

/// What the executor sends back on an exec stream, each as one frame (see [`crate::framing`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecEvent {
    Stdout(ByteBuf),
    Stderr(ByteBuf),
    /// Policy said no; nothing ran.
    Refused(String),
    /// It could not run (program missing, spawn failed) or was already run for this id.
    Failed(String),
    Exit(ExecExit),
    /// On a [`StreamKind::Job`] stream: the command runs on as this job (`SEQ@NODE`); the
    /// stream ends here, and its output so far is the start of the job's output.
    Detached(crate::job::JobInfo),
}

impl ExecEvent {
    /// Whether the stream ends with this event.
    pub fn is_last(&self) -> bool {
        matches!(self, Self::Exit(_) | Self::Refused(_) | Self::Failed(_) | Self::Detached(_))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub cancelled: bool,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Everything the command wrote to each stream, including what the cap cut.
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Ping {
        payload: ByteBuf,
    },
    Info,
    SetMode {
        mode: String,
    },
    Stat {
        path: PathBytes,
    },
    List {
        path: PathBytes,
        limit: u32,
    },
    /// Creates one directory (its parent must exist); an existing directory is fine.
    Mkdir {
        path: PathBytes,
        mode: Option<u32>,
    },
    /// `op` (stat, list, mkdir or info) on an SSH host the receiving node reaches, under its
    /// policy.
    Ssh {
        host: String,
        op: Box<Op>,
    },
    /// The newest records of the receiving node's audit log, at most `limit`, only events
    /// that start with `event_prefix`; answered to its admins and allow-listed nodes only.
    AuditTail {
        limit: u32,
        event_prefix: String,
    },
    /// The receiving node's jobs, newest first, at most `limit`: the caller's own, and
    /// everyone's for its admins (and allow-listed nodes when an allow list is set).
    Jobs {
        limit: u32,
    },
    /// One job's state, after waiting up to `wait_ms` for it to end.
    JobWait {
        id: u64,
        wait_ms: u32,
    },
    /// Up to `max` bytes of a job's output from `from`, after waiting up to `wait_ms` for
    /// output past it (or the job's end) when there is none yet.
    JobOutput {
        id: u64,
        from: crate::job::OutputFrom,
        max: u32,
        wait_ms: u32,
    },
    /// Stops a job (its whole process group): `SIGTERM`, then `SIGKILL` if it lingers.
    JobCancel {
        id: u64,
    },
    /// Stores a schedule on the receiving node, which runs it from then on.
    ScheduleAdd {
        spec: crate::schedule::ScheduleSpec,
    },
    /// The receiving node's schedules (the caller's own, or all for its overseers).
    Schedules,
    ScheduleRemove {
        name: String,
    },
    /// A schedule's newest runs, at most `limit`, newest first.
    ScheduleRuns {
        name: String,
        limit: u32,
    },
    /// Runs a schedule now, as if it came due.
    ScheduleRunNow {
        name: String,
    },
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ping { .. } => "ping",
            Self::Info => "info",
            Self::SetMode { .. } => "set_mode",
            Self::Stat { .. } => "stat",
            Self::List { .. } => "list",
            Self::Mkdir { .. } => "mkdir",
            Self::Ssh { .. } => "ssh",
            Self::AuditTail { .. } => "audit_tail",
            Self::Jobs { .. } => "jobs",
            Self::JobWait { .. } => "job_wait",
            Self::JobOutput { .. } => "job_output",
            Self::JobCancel { .. } => "job_cancel",
            Self::ScheduleAdd { .. } => "schedule_add",
            Self::Schedules => "schedules",
            Self::ScheduleRemove { .. } => "schedule_remove",
            Self::ScheduleRuns { .. } => "schedule_runs",
            Self::ScheduleRunNow { .. } => "schedule_run_now",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Pong {
        payload: ByteBuf,
    },
    Info(NodeInfo),
    Done,
    Stat(FileStat),
    List {
        entries: Vec<FileStat>,
        truncated: bool,
    },
    /// Audit records as the log's own JSON lines (hash chain included), oldest first;
    /// `truncated` when older matching records were left out to keep the answer small.
    Audit {
        lines: Vec<String>,
        truncated: bool,
    },
    Jobs {
        jobs: Vec<crate::job::JobInfo>,
        truncated: bool,
    },
    Job(crate::job::JobInfo),
    JobOutput(Box<crate::job::JobOutput>),
    Schedule(Box<crate::schedule::ScheduleInfo>),
    Schedules(Vec<crate::schedule::ScheduleInfo>),
    ScheduleRuns(Vec<crate::schedule::ScheduleRun>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub hostname: String,
    pub os: OsInfo,
    pub shell: String,
    pub uptime_secs: u64,
    pub version: String,
    pub mode: String,
    /// One line per policy rule in force.
    pub policy: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    /// The canonical path for `stat`; the entry name for `list`.
    pub name: PathBytes,
    pub kind: FileKind,
    pub size: u64,
    pub mode: u32,
    pub mtime_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadSpec {
    pub request_id: u64,
    pub path: PathBytes,
    pub offset: u64,
    /// `None` reads to the end.
    pub length: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteSpec {
    pub request_id: u64,
    pub path: PathBytes,
    /// The file's size: the write fails unless exactly this many bytes arrive.
    pub size: u64,
    /// Permission bits; `None` keeps an existing file's, or 0644 for a new one.
    pub mode: Option<u32>,
    /// Fail if the file exists.
    pub create_only: bool,
}

/// What the serving side sends back on a file stream, each as one frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FileEvent {
    /// Before the data of a read: what is being read.
    Meta(FileStat),
    Data(ByteBuf),
    /// The end: bytes moved, and where an overwritten file was backed up.
    Done {
        bytes: u64,
        backup: Option<String>,
    },
    Refused(String),
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    pub kind: RemoteErrorKind,
    pub message: String,
}

impl RemoteError {
    pub fn failed(message: impl Into<String>) -> Self {
        Self { kind: RemoteErrorKind::Failed, message: message.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteErrorKind {
    Unsupported,
    Refused,
    Failed,
    Cancelled,
    Busy,
}

#[derive(Debug, thiserror::Error)]
#[error("malformed peer message: {0}")]
pub struct MessageError(#[from] postcard::Error);

impl PeerMessage {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("peer messages always serialize")
    }

    /// Encodes after `prefix` (room for a length on a direct path), with no second copy.
    pub fn encode_after(&self, mut prefix: Vec<u8>) -> Vec<u8> {
        // Sized up front: growing a 64 KiB frame by doubling costs reallocations and page faults.
        if let PeerMessage::Data { bytes, .. } = self {
            prefix.reserve(bytes.len() + DATA_HEADER_MAX);
        }
        postcard::serialize_with_flavor(self, AppendVec(prefix)).expect("peer messages always serialize")
    }

    /// Decodes one whole message; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let (msg, rest) = postcard::take_from_bytes(bytes)?;
        if !rest.is_empty() {
            return Err(MessageError(postcard::Error::DeserializeBadEncoding));
        }
        Ok(msg)
    }
}

/// The most a `Data` message adds to its bytes: a variant index and three varints.
const DATA_HEADER_MAX: usize = 1 + 3 * 10;

/// A postcard output that appends to a `Vec` a slice at a time (`postcard::to_extend` pushes
/// byte by byte: a tenth of a direct path's CPU went there).
struct AppendVec(Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendVec {
    type Output = Vec<u8>;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_compact() {
        let msg = PeerMessage::Data { stream: 1, offset: 0, bytes: vec![7u8; 1000].into() };
        let enc = msg.encode();
        assert!(enc.len() < 1010, "{} bytes", enc.len());
        assert_eq!(PeerMessage::decode(&enc).unwrap(), msg);
    }

    #[test]
    fn encode_after_appends_the_same_encoding() {
        let big = PeerMessage::Data { stream: u64::MAX, offset: u64::MAX, bytes: vec![9u8; MAX_CHUNK].into() };
        for msg in [big, PeerMessage::Close { stream: 3, final_offset: 7, error: Some("why".into()) }] {
            let framed = msg.encode_after(vec![1, 2, 3, 4]);
            assert_eq!(framed[..4], [1, 2, 3, 4]);
            assert_eq!(framed[4..], msg.encode()[..]);
            assert_eq!(PeerMessage::decode(&framed[4..]).unwrap(), msg);
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut enc = PeerMessage::Cancel { id: 4 }.encode();
        enc.push(0);
        assert!(PeerMessage::decode(&enc).is_err());
    }
}
