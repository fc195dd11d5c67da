//! The `forward` tool group: `tunnel_open`, `tunnel_list`, `tunnel_close`. Forwards run in the
//! node (they outlive a tool call); the exit node's policy decides each connection.

use rmcp::model::CallToolResult;
use rmcp::ErrorData as McpError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tunnel_node::control::{ControlRequest, ControlResponse};
use tunnel_node::forward::{ForwardInfo, ForwardKind, ForwardSpec, SocksAuth};

use crate::params::NoParams;
use crate::server::{failure, success, TunnelMcp};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum KindParam {
    /// listen here, connect from `target` (ssh -L)
    Local,
    /// listen on `target`, connect from here (ssh -R)
    Remote,
    /// SOCKS5 here, exit at `target` (ssh -D)
    Socks,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OpenParams {
    /// Peer, or `ssh:HOST` (local and socks).
    pub(crate) target: String,
    pub(crate) kind: KindParam,
    /// `PORT` or `BIND:PORT` (default bind 127.0.0.1; port 0 picks one).
    pub(crate) listen: String,
    /// `HOST:PORT` seen from the exit (not for socks).
    #[serde(default)]
    pub(crate) to: Option<String>,
    /// Allow a non-loopback listen address.
    #[serde(default)]
    pub(crate) public: bool,
    /// SOCKS5 username (RFC 1929), with `socks_password`.
    #[serde(default)]
    pub(crate) socks_user: Option<String>,
    #[serde(default)]
    pub(crate) socks_password: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CloseParams {
    /// From `tunnel_open` or `tunnel_list`.
    pub(crate) id: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ForwardOut {
    pub(crate) id: u64,
    /// `local`, `remote` or `socks`.
    pub(crate) kind: String,
    /// The peer or `ssh:HOST` it goes through.
    pub(crate) via: String,
    /// The address it listens on: on this machine, or on `via` for a remote forward.
    pub(crate) listen: String,
    /// Where connections go; absent for socks (each client names its own).
    pub(crate) to: Option<String>,
    /// `listening`, `waiting for PEER: why`, or `closed`.
    pub(crate) state: String,
    pub(crate) connections_active: u64,
    pub(crate) connections_total: u64,
    /// Bytes toward the destination and back from it.
    pub(crate) bytes_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) errors: u64,
    pub(crate) last_error: Option<String>,
}

impl From<ForwardInfo> for ForwardOut {
    fn from(f: ForwardInfo) -> Self {
        Self {
            id: f.id,
            kind: f.kind.to_string(),
            via: f.via,
            listen: f.listen,
            to: f.to,
            state: f.state,
            connections_active: f.active,
            connections_total: f.total,
            bytes_out: f.bytes_out,
            bytes_in: f.bytes_in,
            errors: f.errors,
            last_error: f.last_error,
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct ForwardsOut {
    pub(crate) forwards: Vec<ForwardOut>,
}

fn line(f: &ForwardOut) -> String {
    let to = f.to.as_deref().unwrap_or("any destination (SOCKS5)");
    let at = if f.kind == "remote" { format!("{} on {}", f.listen, f.via) } else { format!("{} here", f.listen) };
    format!(
        "forward {} ({}): listening at {at}, to {to} via {}; {}; {} active / {} connections, {} B out, {} B in, {} errors\n",
        f.id, f.kind, f.via, f.state, f.connections_active, f.connections_total, f.bytes_out, f.bytes_in, f.errors
    )
}

fn spec(p: OpenParams) -> Result<ForwardSpec, String> {
    let kind = match p.kind {
        KindParam::Local => ForwardKind::Local,
        KindParam::Remote => ForwardKind::Remote,
        KindParam::Socks => ForwardKind::Socks,
    };
    let text = match (kind, p.to) {
        (ForwardKind::Socks, None) => p.listen,
        (ForwardKind::Socks, Some(_)) => return Err("`to` is not for socks forwards: each client names its own".into()),
        (_, None) => return Err(format!("a {kind} forward needs `to` (HOST:PORT)")),
        (_, Some(to)) => format!("{}:{to}", p.listen),
    };
    let socks_auth = match (p.socks_user, p.socks_password) {
        (Some(user), Some(password)) => Some(SocksAuth { user, password }),
        (None, None) => None,
        _ => return Err("give both socks_user and socks_password, or neither".into()),
    };
    // The node checks the rest of the spec.
    ForwardSpec::parse(&p.target, kind, &text, p.public, socks_auth)
}

pub(crate) async fn tunnel_open(srv: &TunnelMcp, p: OpenParams) -> Result<CallToolResult, McpError> {
    let spec = match spec(p) {
        Ok(spec) => spec,
        Err(e) => return failure(e),
    };
    answer(srv.backend().request(&ControlRequest::ForwardOpen { spec, hold: false }).await, "opened")
}

/// One forward's figures as the tool's result; `done` says what happened to it.
fn answer(resp: Result<ControlResponse, String>, done: &str) -> Result<CallToolResult, McpError> {
    match resp {
        Ok(ControlResponse::Forward(info)) => {
            let out = ForwardOut::from(info);
            let text = format!("{done} {}", line(&out));
            success(&out, text)
        }
        Ok(other) => failure(format!("unexpected answer from the node: {other:?}")),
        Err(e) => failure(e),
    }
}

pub(crate) async fn tunnel_list(srv: &TunnelMcp, _: NoParams) -> Result<CallToolResult, McpError> {
    match srv.backend().request(&ControlRequest::ForwardList).await {
        Ok(ControlResponse::Forwards(list)) => {
            let forwards: Vec<ForwardOut> = list.into_iter().map(ForwardOut::from).collect();
            let mut text = format!("{} forwards\n", forwards.len());
            forwards.iter().for_each(|f| text.push_str(&line(f)));
            success(&ForwardsOut { forwards }, text)
        }
        Ok(other) => failure(format!("unexpected answer from the node: {other:?}")),
        Err(e) => failure(e),
    }
}

pub(crate) async fn tunnel_close(srv: &TunnelMcp, p: CloseParams) -> Result<CallToolResult, McpError> {
    answer(srv.backend().request(&ControlRequest::ForwardClose { id: p.id }).await, "closed")
}
