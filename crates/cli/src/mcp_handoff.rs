//! `tunnel mcp` over stdio hands its session to a running `tunnel run`, which serves it in its
//! own process: no hop between the client's calls and the node (see
//! `tunnel_node::control::handoff`). Both sides are here: the front-end that hands over, and
//! what `tunnel run` runs for a session it takes.

use std::future::Future;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use rustix::fs::FileType;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tunnel_mcp::shared::SharedNode;
use tunnel_mcp::{Backend, McpOptions, ToolGroup, TunnelMcp};
use tunnel_node::control::handoff::Link;
use tunnel_node::control::{read_frame, write_frame, ControlClient, ControlRequest, ControlResponse};
use tunnel_node::Node;
use tunnel_proto::message::ByteBuf;

/// What a session takes of `tunnel mcp`'s flags, wherever it is served (here, or in the
/// `tunnel run` it is handed to).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SessionOptions {
    pub(crate) tools: String,
    pub(crate) max_output: u64,
    pub(crate) job_after_secs: f64,
    pub(crate) state_dir: PathBuf,
}

impl SessionOptions {
    /// The server these options make, reaching its node through `backend`.
    pub(crate) fn server(&self, backend: Backend, local_only: bool) -> anyhow::Result<TunnelMcp> {
        Ok(TunnelMcp::new(McpOptions {
            backend,
            groups: ToolGroup::parse_list(&self.tools).map_err(anyhow::Error::msg)?,
            max_output: self.max_output,
            state_dir: self.state_dir.clone(),
            local_only,
            job_after: Duration::from_secs_f64(self.job_after_secs),
        }))
    }
}

/// What kind of file a descriptor is.
fn kind(fd: impl AsFd) -> Option<FileType> {
    rustix::fs::fstat(fd).ok().map(|st| FileType::from_raw_mode(st.st_mode))
}

/// Whether a descriptor is one the node can serve a session on: a pipe or a socket (what MCP
/// clients give their servers), not a terminal or a file.
fn servable(fd: BorrowedFd<'_>) -> bool {
    matches!(kind(fd), Some(FileType::Fifo | FileType::Socket))
}

/// How a handed-over session ended.
pub(crate) enum Handed {
    /// With its client, or a signal to this process.
    Ended,
    /// The node's process stopped first and gave it back: serve the rest here. `unread` is
    /// the input it read and did not serve.
    Back { initialize: String, unread: Vec<u8> },
}

/// Hands this process's stdin and stdout to the node behind `socket` and waits until the
/// session ends or comes back. `None` when the node does not take it (none runs, its host
/// serves no sessions, an older node): the caller then serves the session itself.
pub(crate) async fn hand_off(socket: &Path, options: &SessionOptions) -> Option<Handed> {
    let (stdin, stdout) = (std::io::stdin(), std::io::stdout());
    if !servable(stdin.as_fd()) || !servable(stdout.as_fd()) {
        return None;
    }
    let mut stream = ControlClient::connect(socket).await.ok()?.into_stream();
    let options = serde_json::to_string(options).ok()?;
    write_frame(&mut stream, &ControlRequest::McpHandoff { options }).await.ok()?;
    match read_frame::<ControlResponse, _>(&mut stream).await {
        Ok(Some(ControlResponse::Done)) => {}
        _ => return None,
    }
    if let Err(e) = tunnel_node::control::handoff::send_fds(&stream, stdin.as_fd(), stdout.as_fd()) {
        tracing::warn!(error = %e, "could not hand the session to the node; serving it here");
        return None;
    }
    tracing::info!("this session is served by the running node's process");
    // The node closes the connection when the session ends; a signal ends it from here.
    let followed = async {
        let (mut initialize, mut unread) = (None, Vec::new());
        loop {
            match read_frame::<ControlResponse, _>(&mut stream).await {
                Ok(Some(ControlResponse::McpResumable { initialize: init })) => initialize = Some(init),
                Ok(Some(ControlResponse::McpGiveBack { unread: bytes })) => unread = bytes.0.into(),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        // Given back, or the node's process died: with the client's `initialize` the session
        // goes on here (after a crash, a call in flight there is lost). Had the client ended
        // the session, stdin is at its end and the rest ends at once.
        match initialize {
            Some(initialize) => Handed::Back { initialize, unread },
            None => Handed::Ended,
        }
    };
    tokio::select! {
        handed = followed => Some(handed),
        _ = crate::run::shutdown_signal() => Some(Handed::Ended),
    }
}

/// What `tunnel run` runs for a session handed to it.
pub(crate) fn serve(
    node: Node,
    options: String,
    input: OwnedFd,
    output: OwnedFd,
    link: Link,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        if let Err(e) = serve_session(node, &options, input, output, link).await {
            tracing::warn!(error = %format!("{e:#}"), "a handed-over MCP session ended with an error");
        }
    })
}

async fn serve_session(node: Node, options: &str, input: OwnedFd, output: OwnedFd, link: Link) -> anyhow::Result<()> {
    let opts: SessionOptions = serde_json::from_str(options)?;
    let local_only = node.status().relay.is_none();
    let server = opts.server(Backend::new(SharedNode::of(node)), local_only)?;
    let Link { to_front, stopping } = link;
    let tell = to_front.clone();
    let initialized = move |initialize| {
        let _ = tell.send(ControlResponse::McpResumable { initialize });
    };
    let stop = stopping.cancelled_owned();
    let handed =
        tunnel_mcp::serve_lines_handing_back(server, reader(input)?, writer(output)?, stop, initialized).await?;
    if let Some(unread) = handed {
        tracing::info!("this process is stopping: the MCP session goes back to its tunnel mcp");
        let _ = to_front.send(ControlResponse::McpGiveBack { unread: ByteBuf(unread.into()) });
    }
    Ok(())
}

fn reader(fd: OwnedFd) -> std::io::Result<Box<dyn AsyncRead + Unpin + Send>> {
    Ok(match is_socket(&fd) {
        true => Box::new(socket(fd)?),
        false => Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?),
    })
}

fn writer(fd: OwnedFd) -> std::io::Result<Box<dyn AsyncWrite + Unpin + Send>> {
    Ok(match is_socket(&fd) {
        true => Box::new(socket(fd)?),
        false => Box::new(tokio::net::unix::pipe::Sender::from_owned_fd(fd)?),
    })
}

fn is_socket(fd: &OwnedFd) -> bool {
    kind(fd) == Some(FileType::Socket)
}

fn socket(fd: OwnedFd) -> std::io::Result<tokio::net::UnixStream> {
    let stream = std::os::unix::net::UnixStream::from(fd);
    stream.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(stream)
}
