//! How the tools reach the node: this machine's one node, through the control socket of the
//! process that hosts it (`tunnel run`, the service, or another session) or in process when
//! this session hosts it (`crate::shared`). Either way the tools speak the control protocol,
//! so policy and audit live in one place: the node that executes.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use tunnel_node::control::{self, ControlRequest, ControlResponse, ControlStream};

use crate::shared::SharedNode;

/// Why a call failed when the control connection to the node broke: the process hosting the
/// node (another session that ended, `tunnel run` restarting) went away mid-call. Whether the
/// socket said EOF, reset or broken pipe is chance; the caller's next step is the same.
pub(crate) fn node_lost(e: impl std::fmt::Display) -> String {
    format!("the connection to this machine's node closed mid-call ({e}); its host went away: retry")
}

tokio::task_local! {
    /// The tool call's `connect_timeout_secs`, for every control connection it opens.
    pub(crate) static CALL_CONNECT_TIMEOUT: Option<std::time::Duration>;
}

/// A boxed control connection.
pub(crate) type Conn = Box<dyn ControlStream>;

#[derive(Clone)]
pub struct Backend(Arc<SharedNode>);

impl Backend {
    pub fn new(shared: Arc<SharedNode>) -> Self {
        Self(shared)
    }

    /// A control connection that carries `request`, after a preamble that says it serves an
    /// AI agent (so the node holds what it asks of this machine to the secret list; the
    /// operator's own CLI is not) and the call's connect timeout. All in one write: the node
    /// reads the whole of it in one wake-up.
    pub(crate) async fn open(&self, request: &ControlRequest) -> Result<Conn, String> {
        let mut conn = self.0.connect().await?;
        let mut first = control::frame(&ControlRequest::Agent).map_err(node_lost)?;
        if let Ok(Some(bound)) = CALL_CONNECT_TIMEOUT.try_with(|b| *b) {
            let ms = bound.as_millis() as u64;
            first.extend(control::frame(&ControlRequest::ConnectTimeout { ms }).map_err(node_lost)?);
        }
        first.extend(control::frame(request).map_err(node_lost)?);
        conn.write_all(&first).await.map_err(node_lost)?;
        Ok(conn)
    }

    /// Starts a long exchange (a fleet operation, a job): the request, then its input.
    pub(crate) async fn call(
        &self,
        req: &ControlRequest,
        input: Option<&[u8]>,
    ) -> Result<tunnel_node::control::call::Call<Conn>, String> {
        let conn = self.open(req).await?;
        tunnel_node::control::call::Call::sent(conn, input).await.map_err(node_lost)
    }

    /// One request, one answer; `ControlResponse::Error` becomes `Err`.
    pub(crate) async fn request(&self, req: &ControlRequest) -> Result<ControlResponse, String> {
        let mut conn = self.open(req).await?;
        match control::read_frame(&mut conn).await {
            Ok(Some(ControlResponse::Error(e))) => Err(e),
            Ok(Some(resp)) => Ok(resp),
            Ok(None) => Err("the local node closed the connection without answering".into()),
            Err(e) => Err(node_lost(e)),
        }
    }
}
