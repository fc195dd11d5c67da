//! An MCP session handed to the process that hosts the node. `tunnel mcp`, started by an AI
//! client, passes its stdin and stdout over the control socket (`SCM_RIGHTS`), and `tunnel
//! run` serves the session itself, in process: an attached session then costs no hop more
//! than one with its own node. The control connection stays open for the session's life:
//! the node ends the session when `tunnel mcp` goes away, and tells `tunnel mcp` over it the
//! client's `initialize` and, when this process stops first ([`give_back_sessions`]), the
//! session itself: the input read and not served. `tunnel mcp` then serves the rest,
//! relaying calls to the node once it is back, so a restart of `tunnel run` ends no session.
//!
//! Only a process that registered [`host_mcp_sessions`] (`tunnel run`) takes sessions; any
//! other host answers with an error, and `tunnel mcp` relays calls over the socket instead.

use std::future::Future;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ControlResponse;
use crate::Node;

/// What the hosting process runs for a handed-off session: the node, the session's options
/// (the front-end's own, as it sent them), its input and output. Resolves when it ends.
pub type McpHost =
    Arc<dyn Fn(Node, String, OwnedFd, OwnedFd, Link) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What a session served here has of the `tunnel mcp` that handed it over.
pub struct Link {
    /// Frames for the front-end: [`ControlResponse::McpResumable`], then
    /// [`ControlResponse::McpGiveBack`] if this process stops before the client is done.
    pub to_front: mpsc::UnboundedSender<ControlResponse>,
    /// Cancelled when this process is stopping: the session is to be handed back.
    pub stopping: CancellationToken,
}

/// Cancelled by [`give_back_sessions`].
static STOPPING: LazyLock<CancellationToken> = LazyLock::new(CancellationToken::new);
/// The sessions being served here.
static SESSIONS: LazyLock<TaskTracker> = LazyLock::new(TaskTracker::new);

/// Asks every session served here to go back to its `tunnel mcp` (this process is stopping)
/// and waits, up to `within`, until all have.
pub async fn give_back_sessions(within: Duration) {
    STOPPING.cancel();
    SESSIONS.close();
    if tokio::time::timeout(within, SESSIONS.wait()).await.is_err() {
        tracing::warn!(sessions = SESSIONS.len(), "MCP sessions not handed back in time; they end here");
    }
}

static HOST: OnceLock<McpHost> = OnceLock::new();
/// Sessions taken so far (`tunnel status`).
static SERVED: AtomicU64 = AtomicU64::new(0);

/// How many `tunnel mcp` sessions this process has served for the front-end.
pub fn sessions_served() -> u64 {
    SERVED.load(Ordering::Relaxed)
}

/// Makes this process serve handed-off MCP sessions (once; later calls change nothing).
pub fn host_mcp_sessions(host: McpHost) {
    let _ = HOST.set(host);
}

pub(crate) fn host() -> Option<McpHost> {
    HOST.get().cloned()
}

/// How long the node waits for the descriptors after it said it takes the session.
const FDS_WAIT: Duration = Duration::from_secs(5);

/// Receives the two descriptors `tunnel mcp` sends on `socket` (with one byte), polling the
/// non-blocking socket: they follow the node's `Done` at once.
async fn receive_fds(socket: BorrowedFd<'_>) -> Result<(OwnedFd, OwnedFd), String> {
    use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let deadline = tokio::time::Instant::now() + FDS_WAIT;
    loop {
        let mut byte = [0u8; 1];
        let mut space = [0u8; rustix::cmsg_space!(ScmRights(2))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [std::io::IoSliceMut::new(&mut byte)];
        match recvmsg(socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for message in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(got) = message {
                        fds.extend(got);
                    }
                }
                if msg.bytes == 0 {
                    return Err("the front-end went away before sending its stdio".into());
                }
                let mut fds = fds.into_iter();
                return match (fds.next(), fds.next(), fds.next()) {
                    (Some(input), Some(output), None) => Ok((input, output)),
                    _ => Err("expected exactly two descriptors (stdin, stdout)".into()),
                };
            }
            Err(rustix::io::Errno::AGAIN) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(rustix::io::Errno::AGAIN) => return Err("the front-end did not send its stdio in time".into()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(format!("receiving the front-end's stdio: {e}")),
        }
    }
}

/// The front-end's side: sends `input` and `output` on the control socket, with one byte.
pub fn send_fds(socket: impl AsFd, input: BorrowedFd<'_>, output: BorrowedFd<'_>) -> std::io::Result<()> {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let fds = [input, output];
    let mut space = [0u8; rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("no room for two descriptors"));
    }
    let byte = [1u8];
    loop {
        match sendmsg(&socket, &[IoSlice::new(&byte)], &mut control, SendFlags::empty()) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// What a control connection offers a handed-over session: its Unix socket, if it is one.
pub(crate) trait Socket {
    fn socket(&self) -> Option<BorrowedFd<'_>>;
}

impl Socket for tokio::net::UnixStream {
    fn socket(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}

impl Socket for tokio::io::DuplexStream {
    fn socket(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// Serves a `McpHandoff` request: takes the session if this process hosts sessions and the
/// connection is the Unix socket, else says no (the front-end then relays calls itself).
/// `operator`: the connection is the machine's operator's (a front-end serving an agent may not
/// hand sessions on).
pub(crate) async fn serve<S: super::ControlStream + Socket>(
    mut stream: S,
    node: Node,
    options: String,
    operator: bool,
) {
    use tokio::io::AsyncReadExt;
    let host = match (host(), stream.socket().is_some()) {
        _ if !operator => Err("an agent's connection cannot hand over a session"),
        (Some(host), true) => Ok(host),
        _ => Err("this node's host does not serve MCP sessions itself"),
    };
    let host = match host {
        Ok(host) => host,
        Err(why) => {
            let _ = super::write_frame(&mut stream, &super::ControlResponse::Error(why.into())).await;
            return;
        }
    };
    if super::write_frame(&mut stream, &super::ControlResponse::Done).await.is_err() {
        return;
    }
    let received = match stream.socket() {
        Some(socket) => receive_fds(socket).await,
        None => Err("not a Unix socket".into()),
    };
    let (input, output) = match received {
        Ok(fds) => fds,
        Err(e) => return tracing::warn!(error = %e, "an MCP session handed to this node did not arrive"),
    };
    SERVED.fetch_add(1, Ordering::Relaxed);
    let _serving = SESSIONS.token();
    tracing::info!("serving an MCP session handed over by tunnel mcp");
    let (to_front, mut frames) = mpsc::unbounded_channel();
    let session = host(node, options, input, output, Link { to_front, stopping: STOPPING.child_token() });
    tokio::pin!(session);
    let (mut from_front, mut to_front) = tokio::io::split(stream);
    let mut byte = [0u8; 1];
    loop {
        tokio::select! {
            () = &mut session => break,
            Some(frame) = frames.recv() => {
                if super::write_frame(&mut to_front, &frame).await.is_err() {
                    return tracing::info!("the tunnel mcp that handed over a session is gone; the session ends");
                }
            }
            _ = from_front.read(&mut byte) => {
                return tracing::info!("the tunnel mcp that handed over a session exited; the session ends");
            }
        }
    }
    // The session's last words (its hand-back) go before the connection closes.
    while let Ok(frame) = frames.try_recv() {
        if super::write_frame(&mut to_front, &frame).await.is_err() {
            break;
        }
    }
}
