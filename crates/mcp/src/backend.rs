//! How the tools reach the node: the control socket of a `tunnel run` on this machine (one
//! identity per machine), or an in-process pipe to a node `tunnel mcp` runs itself. Either
//! way the tools speak the control protocol, so policy and audit live in one place: the node
//! that executes.

use std::path::PathBuf;

use tunnel_node::control::{self, ControlRequest, ControlResponse, ControlStream};
use tunnel_node::Node;

/// A boxed control connection.
pub(crate) type Conn = Box<dyn ControlStream>;

#[derive(Clone)]
pub enum Backend {
    /// A node running on this machine, reached through its control socket.
    Socket(PathBuf),
    /// A node this process runs.
    InProcess(Node),
    /// This machine's node, hosted by whichever `tunnel mcp` session (or `tunnel run`) holds
    /// the host lock; this session takes over when the host goes.
    Shared(std::sync::Arc<crate::shared::SharedNode>),
}

impl Backend {
    /// A control connection that says first it serves an AI agent, so the node holds what it
    /// asks of this machine to the secret list (the operator's own CLI is not).
    pub(crate) async fn connect(&self) -> Result<Conn, String> {
        let mut conn = self.connect_raw().await?;
        control::write_frame(&mut conn, &ControlRequest::Agent)
            .await
            .map_err(|e| format!("talking to the local node: {e}"))?;
        Ok(conn)
    }

    async fn connect_raw(&self) -> Result<Conn, String> {
        match self {
            Backend::Socket(path) => match tokio::net::UnixStream::connect(path).await {
                Ok(s) => Ok(Box::new(s)),
                Err(e) => Err(format!(
                    "the local tunnel node is not answering on {} ({e}); is `tunnel run` still running?",
                    path.display()
                )),
            },
            Backend::InProcess(node) => Ok(Box::new(control::connect_in_process(node))),
            Backend::Shared(shared) => shared.connect().await,
        }
    }

    /// Starts a long exchange (a fleet operation, a job): the request, then its input.
    pub(crate) async fn call(
        &self,
        req: &ControlRequest,
        input: Option<&[u8]>,
    ) -> Result<tunnel_node::call::Call<Conn>, String> {
        let conn = self.connect().await?;
        tunnel_node::call::Call::start(conn, req, input).await.map_err(|e| format!("talking to the local node: {e}"))
    }

    /// One request, one answer; `ControlResponse::Error` becomes `Err`.
    pub(crate) async fn request(&self, req: &ControlRequest) -> Result<ControlResponse, String> {
        let mut conn = self.connect().await?;
        control::write_frame(&mut conn, req).await.map_err(|e| format!("talking to the local node: {e}"))?;
        match control::read_frame(&mut conn).await {
            Ok(Some(ControlResponse::Error(e))) => Err(e),
            Ok(Some(resp)) => Ok(resp),
            Ok(None) => Err("the local node closed the connection without answering".into()),
            Err(e) => Err(format!("talking to the local node: {e}")),
        }
    }
}
