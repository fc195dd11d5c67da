//! The control socket: how the CLI (and `tunnel mcp`) use the local node. A Unix socket at
//! `<runtime>/tunnel.sock`, mode 0600 inside a 0700 directory; frames are a `u32` big-endian
//! length and a postcard body. Requests name the same operations peers send each other.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use tunnel_proto::message::Op;

pub use crate::control::fleet::FLEET_WRITE_MAX;
pub use crate::control::job::JOB_INPUT_MAX;
use crate::node::Node;
use crate::with_connect_timeout;

pub mod call;
mod exec;
mod files;
pub(crate) mod fleet;
pub mod handoff;
pub(crate) mod job;
mod protocol;

pub use protocol::{frame, read_frame, write_frame, ControlRequest, ControlResponse, FleetAction, JobInput};

/// How long `peers` waits for peers that have not said who they are.
const PEERS_DISCOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a request/response operation on a peer may take.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The longest connect timeout a caller may ask for.
const CONNECT_TIMEOUT_MAX: std::time::Duration = std::time::Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error("no tunnel node is running here (no control socket at {path}); start one with `tunnel run`")]
    NotRunning { path: PathBuf },
    #[error("cannot use the control socket {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "a tunnel node is already running here (control socket {path}), in `tunnel run`, the service, \
         or a `tunnel mcp` session; stop it first"
    )]
    AlreadyRunning { path: PathBuf },
    #[error("control socket: {0}")]
    Protocol(String),
}

/// What a control connection runs over: the Unix socket, or an in-process pipe when the
/// front-end runs its own node (`tunnel mcp` with no `tunnel run` on the machine).
pub trait ControlStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ControlStream for T {}

/// Serves one control connection over an in-process pipe; returns the client's end.
pub fn connect_in_process(node: &Node) -> tokio::io::DuplexStream {
    let (client, server) = tokio::io::duplex(256 * 1024);
    // The connection ends when either side drops its end; the task does not outlive it.
    tokio::spawn(serve(server, node.clone(), None));
    client
}

/// A connection to the local node.
pub struct ControlClient {
    stream: UnixStream,
    path: PathBuf,
}

impl ControlClient {
    pub async fn connect(path: &Path) -> Result<Self, ControlError> {
        match UnixStream::connect(path).await {
            Ok(stream) => Ok(Self { stream, path: path.to_owned() }),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
                Err(ControlError::NotRunning { path: path.to_owned() })
            }
            Err(source) => Err(ControlError::Io { path: path.to_owned(), source }),
        }
    }

    /// Hands over the connection whole (for [`crate::fleet_call::FleetCall`]).
    pub fn into_stream(self) -> UnixStream {
        self.stream
    }

    /// Hands over the connection, for exchanges longer than one answer (exec).
    pub fn into_split(self) -> (tokio::net::unix::OwnedReadHalf, tokio::net::unix::OwnedWriteHalf) {
        self.stream.into_split()
    }

    /// Tells the node how long the requests on this connection may wait for an unreachable
    /// peer (see [`ControlRequest::ConnectTimeout`]).
    pub async fn set_connect_timeout(&mut self, bound: std::time::Duration) -> Result<(), ControlError> {
        let req = ControlRequest::ConnectTimeout { ms: bound.as_millis().min(u64::MAX as u128) as u64 };
        write_frame(&mut self.stream, &req).await.map_err(|source| ControlError::Io { path: self.path.clone(), source })
    }

    pub async fn request(&mut self, req: &ControlRequest) -> Result<ControlResponse, ControlError> {
        let io = |source| ControlError::Io { path: self.path.clone(), source };
        write_frame(&mut self.stream, req).await.map_err(io)?;
        match read_frame(&mut self.stream).await {
            Ok(Some(resp)) => Ok(resp),
            Ok(None) => Err(ControlError::Protocol("the node closed the connection".into())),
            Err(e) => Err(ControlError::Io { path: self.path.clone(), source: e }),
        }
    }
}

/// A bound control socket, not yet serving. Binding first lets `tunnel run` refuse to start
/// a second node before it joins the room (and knocks the first one off the relay).
///
/// Whoever binds holds `<socket>.lock` (an `flock`) for as long as it serves: one process per
/// machine hosts the node, and the kernel frees the lock the moment that process dies, which
/// is how `tunnel mcp` sessions know to take over.
pub struct BoundControl {
    listener: UnixListener,
    path: PathBuf,
    lock: HostLock,
}

/// How long a handover may take before `tunnel run` gives up.
const HANDOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The exclusive lock of the process that hosts the node.
pub struct HostLock(#[allow(dead_code)] std::fs::File);

impl HostLock {
    /// `<socket><suffix>`: the lock and the handover marker sit beside the socket.
    fn beside(socket: &Path, suffix: &str) -> PathBuf {
        let mut name = socket.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    }

    fn open(socket: &Path) -> std::io::Result<std::fs::File> {
        if let Some(dir) = socket.parent() {
            crate::identity::create_private_dir(dir)?;
        }
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(Self::beside(socket, ".lock"))
    }

    /// Says that this process is taking the node over (its pid, in `<socket>.handover`).
    pub fn mark_handover(socket: &Path) -> std::io::Result<()> {
        std::fs::write(Self::beside(socket, ".handover"), std::process::id().to_string())
    }

    pub fn clear_handover(socket: &Path) {
        let _ = std::fs::remove_file(Self::beside(socket, ".handover"));
    }

    /// Whether another live process is taking the node over (then a waiting session lets it).
    pub fn handover_pending(socket: &Path) -> bool {
        let path = Self::beside(socket, ".handover");
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() < HANDOVER_WAIT);
        let pid = std::fs::read_to_string(&path).ok().and_then(|p| p.trim().parse::<u32>().ok());
        fresh && pid.is_some_and(|pid| pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists())
    }

    /// The lock if nobody holds it.
    pub fn try_acquire(socket: &Path) -> std::io::Result<Option<Self>> {
        let file = Self::open(socket)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(Self(file))),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits (on a blocking thread) until the lock is free, then takes it.
    pub async fn acquire(socket: &Path) -> std::io::Result<Self> {
        let file = Self::open(socket)?;
        tokio::task::spawn_blocking(move || {
            rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
            Ok(Self(file))
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

impl BoundControl {
    /// Takes the host lock, asking a `tunnel mcp` session that hosts the node to hand it over.
    pub async fn bind(path: &Path) -> Result<Self, ControlError> {
        let io = |source| ControlError::Io { path: path.to_owned(), source };
        if let Some(lock) = HostLock::try_acquire(path).map_err(io)? {
            return Self::bind_locked(path, lock).await;
        }
        let running = || ControlError::AlreadyRunning { path: path.to_owned() };
        // Waiting sessions see the marker and let this process have the lock.
        HostLock::mark_handover(path).map_err(io)?;
        let asked = async {
            let mut client = ControlClient::connect(path).await.ok()?;
            client.request(&ControlRequest::Yield).await.ok()
        };
        if !matches!(asked.await, Some(ControlResponse::Done)) {
            HostLock::clear_handover(path);
            return Err(running());
        }
        let deadline = tokio::time::Instant::now() + HANDOVER_WAIT;
        let lock = loop {
            if let Some(lock) = HostLock::try_acquire(path).map_err(io)? {
                break lock;
            }
            if tokio::time::Instant::now() > deadline {
                HostLock::clear_handover(path);
                return Err(running());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        HostLock::clear_handover(path);
        Self::bind_locked(path, lock).await
    }

    /// Binds with the host lock already held (a `tunnel mcp` session taking over).
    pub async fn bind_locked(path: &Path, lock: HostLock) -> Result<Self, ControlError> {
        let io = |source| ControlError::Io { path: path.to_owned(), source };
        if let Some(dir) = path.parent() {
            crate::identity::create_private_dir(dir).map_err(io)?;
        }
        // A node from before the host lock existed, still running.
        if UnixStream::connect(path).await.is_ok() {
            return Err(ControlError::AlreadyRunning { path: path.to_owned() });
        }
        // A socket file nobody answers on is left over from a node that died.
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
        Ok(Self { listener, path: path.to_owned(), lock })
    }

    pub fn serve(self, node: Node) -> ControlServer {
        self.serve_with(node, None)
    }

    /// Serves, and tells `yielder` when a starting `tunnel run` asks for the node: what a
    /// `tunnel mcp` session hosting it does.
    pub fn serve_yielding(self, node: Node, yielder: mpsc::Sender<()>) -> ControlServer {
        self.serve_with(node, Some(yielder))
    }

    fn serve_with(self, node: Node, yielder: Yielder) -> ControlServer {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(accept_loop(self.listener, node, cancel.clone(), yielder));
        ControlServer { path: self.path, cancel, task: Some(task), _lock: self.lock }
    }
}

/// Serves the control socket until shut down; removes the socket file on the way out, then
/// frees the host lock (fields drop in order).
pub struct ControlServer {
    path: PathBuf,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    _lock: HostLock,
}

impl ControlServer {
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Told when a `Yield` asks this host to hand the node over.
type Yielder = Option<mpsc::Sender<()>>;

async fn accept_loop(listener: UnixListener, node: Node, cancel: CancellationToken, yielder: Yielder) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve(stream, node.clone(), yielder.clone()));
                }
                Err(e) => {
                    debug!(error = %e, "control accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Serves one control connection (a session handed over comes with descriptors on its Unix
/// socket: see [`handoff`]).
async fn serve<S: ControlStream + handoff::Socket>(mut stream: S, node: Node, yielder: Yielder) {
    let mut operator = true;
    let mut bound = crate::CONNECT_TIMEOUT_DEFAULT;
    loop {
        let req: ControlRequest = match read_frame(&mut stream).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                let _ = write_frame(&mut stream, &ControlResponse::Error(format!("bad control request: {e}"))).await;
                return;
            }
        };
        match req {
            ControlRequest::Agent => {
                operator = false;
                continue;
            }
            ControlRequest::ConnectTimeout { ms } => {
                bound = std::time::Duration::from_millis(ms).min(CONNECT_TIMEOUT_MAX);
                continue;
            }
            ControlRequest::Exec { target, spec } => {
                return with_connect_timeout(bound, exec::serve(stream, node, target, exec::Launch::Exec(spec))).await
            }
            ControlRequest::ExecJob { target, spec, job } => {
                let launch = exec::Launch::Job(crate::JobLaunch::Exec { spec, job });
                return with_connect_timeout(bound, exec::serve(stream, node, target, launch)).await;
            }
            ControlRequest::Task { target, task } => {
                let launch = exec::Launch::Job(crate::JobLaunch::Task(task));
                return with_connect_timeout(bound, exec::serve(stream, node, target, launch)).await;
            }
            ControlRequest::Read { target, spec } => {
                let serve = crate::control::files::serve_read(stream, node, target, spec, operator);
                return with_connect_timeout(bound, serve).await;
            }
            ControlRequest::Write { target, spec } => {
                let serve = crate::control::files::serve_write(stream, node, target, spec, operator);
                return with_connect_timeout(bound, serve).await;
            }
            ControlRequest::Fleet { target, action, options } => {
                let serve = crate::control::fleet::serve(stream, node, target, action, options);
                return with_connect_timeout(bound, serve).await;
            }
            ControlRequest::MapReduce { target, job, input } => {
                return with_connect_timeout(bound, crate::control::job::serve(stream, node, target, job, input)).await
            }
            ControlRequest::ForwardOpen { spec, hold: true } => {
                return with_connect_timeout(bound, hold_forward(stream, node, spec)).await
            }
            ControlRequest::McpHandoff { options } => {
                return handoff::serve(stream, node, options, operator).await;
            }
            ControlRequest::Yield => {
                let resp = match &yielder {
                    Some(tx) if operator && tx.try_send(()).is_ok() => ControlResponse::Done,
                    _ => ControlResponse::Error("this node is hosted by `tunnel run` or the service".into()),
                };
                let _ = write_frame(&mut stream, &resp).await;
                return;
            }
            _ => {}
        }
        let resp = with_connect_timeout(bound, handle(&node, req, operator)).await;
        if write_frame(&mut stream, &resp).await.is_err() {
            return;
        }
    }
}

async fn handle(node: &Node, req: ControlRequest, operator: bool) -> ControlResponse {
    match req {
        ControlRequest::Id => ControlResponse::Id { id: node.id().to_string(), name: node.name().to_owned() },
        ControlRequest::Peers => {
            node.discover(PEERS_DISCOVER_WAIT).await;
            ControlResponse::Peers(node.peers())
        }
        ControlRequest::Ping { target } => match node.ping(&target).await {
            Ok((id, name, rtt)) => ControlResponse::Pong { name, id: id.to_string(), rtt_us: rtt.as_micros() as u64 },
            Err(e) => ControlResponse::Error(e.to_string()),
        },
        // On an SSH host: the node that reaches it answers, under its own policy.
        ControlRequest::Request { target, op } if target.starts_with(crate::fleet::targets::SSH_PREFIX) => {
            if !matches!(op, Op::Stat { .. } | Op::List { .. } | Op::Mkdir { .. } | Op::Info) {
                return ControlResponse::Error(format!(
                    "{target}: an SSH host has no {} of its own; its jump node's governs it",
                    op.name()
                ));
            }
            let dest = match node.find_dest(&target).await {
                Ok(dest) => dest,
                Err(e) => return ControlResponse::Error(e.to_string()),
            };
            let host = dest.ssh.unwrap_or_default();
            match node.request(dest.peer, Op::Ssh { host, op: Box::new(op) }, REQUEST_TIMEOUT).await {
                Ok(reply) => ControlResponse::Reply(reply),
                Err(e) => ControlResponse::Error(e.to_string()),
            }
        }
        ControlRequest::Git(req) => match crate::git::run(node, &req).await {
            Ok(result) => ControlResponse::Git(Box::new(result)),
            Err(e) => ControlResponse::Error(e),
        },
        ControlRequest::SshHosts => {
            node.discover(PEERS_DISCOVER_WAIT).await;
            ControlResponse::SshHosts(node.ssh_hosts())
        }
        ControlRequest::Request { target, op } => match node.find(&target).await {
            Ok(peer) if operator && peer == node.id() => match node.answer_operator(op).await {
                Ok(reply) => ControlResponse::Reply(reply),
                Err(e) => ControlResponse::Error(e.message),
            },
            Ok(peer) => match node.request(peer, op, REQUEST_TIMEOUT).await {
                Ok(reply) => ControlResponse::Reply(reply),
                Err(e) => ControlResponse::Error(e.to_string()),
            },
            Err(e) => ControlResponse::Error(e.to_string()),
        },
        ControlRequest::Select { target } => match node.select(&target).await {
            Ok(targets) => ControlResponse::Targets(targets),
            Err(e) => ControlResponse::Error(e.to_string()),
        },
        ControlRequest::ForwardOpen { spec, .. } => match node.forwards().open(node, spec, false).await {
            Ok(info) => ControlResponse::Forward(info),
            Err(e) => ControlResponse::Error(e.to_string()),
        },
        ControlRequest::ForwardList => ControlResponse::Forwards(node.forwards().list()),
        ControlRequest::Status => ControlResponse::Status(Box::new(node.status())),
        ControlRequest::ForwardClose { id } => match node.forwards().close(id).await {
            Ok(info) => ControlResponse::Forward(info),
            Err(e) => ControlResponse::Error(e.to_string()),
        },
        ControlRequest::LocalMode { mode } => match mode.parse::<crate::policy::Mode>() {
            Ok(mode) => match node.set_mode(mode, None) {
                Ok(()) => ControlResponse::Done,
                Err(e) => ControlResponse::Error(e.to_string()),
            },
            Err(e) => ControlResponse::Error(e),
        },
        ControlRequest::Exec { .. }
        | ControlRequest::ExecJob { .. }
        | ControlRequest::Task { .. }
        | ControlRequest::Read { .. }
        | ControlRequest::Write { .. }
        | ControlRequest::Fleet { .. }
        | ControlRequest::MapReduce { .. }
        | ControlRequest::Agent
        | ControlRequest::ConnectTimeout { .. }
        | ControlRequest::Yield
        | ControlRequest::McpHandoff { .. }
        | ControlRequest::Input(_)
        | ControlRequest::InputEnd => ControlResponse::Error("input without an operation under way".into()),
    }
}

/// A `--foreground` forward: open, answer, and close it when the client goes.
async fn hold_forward<S: ControlStream>(mut stream: S, node: Node, spec: crate::forward::ForwardSpec) {
    let info = match node.forwards().open(&node, spec, true).await {
        Ok(info) => info,
        Err(e) => {
            let _ = write_frame(&mut stream, &ControlResponse::Error(e.to_string())).await;
            return;
        }
    };
    let closed = node.forwards().closed(info.id).unwrap_or_default();
    if write_frame(&mut stream, &ControlResponse::Forward(info.clone())).await.is_ok() {
        // The client sends nothing more; the end of its connection ends the forward, and a
        // `tunnel forward close` elsewhere ends the connection (the client then says so).
        let client_gone = async { while let Ok(Some(_)) = read_frame::<ControlRequest, _>(&mut stream).await {} };
        tokio::select! {
            _ = client_gone => {}
            _ = closed.cancelled() => return,
        }
    }
    let _ = node.forwards().close(info.id).await;
}
