//! The `ssh` tool group: `ssh_hosts`, the SSH hosts reachable through the mesh. Operations
//! on them are the core and fleet tools with `ssh:HOST` targets.

use rmcp::model::CallToolResult;
use rmcp::ErrorData as McpError;
use schemars::JsonSchema;
use serde::Serialize;
use tunnel_node::control::{ControlRequest, ControlResponse};

use crate::params::NoParams;
use crate::server::{failure, success, TunnelMcp};

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct SshHostOut {
    /// The target for this host: `ssh:NAME`.
    pub(crate) target: String,
    pub(crate) tags: Vec<String>,
    /// The node that reaches it and runs operations on it, under its own policy.
    pub(crate) via: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct SshHostsOut {
    pub(crate) hosts: Vec<SshHostOut>,
    /// Lines of this machine's inventory that could not be loaded, with file and line.
    pub(crate) problems: Vec<String>,
}

pub(crate) async fn ssh_hosts(srv: &TunnelMcp, _: NoParams) -> Result<CallToolResult, McpError> {
    let list = match srv.backend().request(&ControlRequest::SshHosts).await {
        Ok(ControlResponse::SshHosts(list)) => list,
        Ok(ControlResponse::Error(e)) => return failure(e),
        Ok(other) => return failure(format!("unexpected answer from the node: {other:?}")),
        Err(e) => return failure(e),
    };
    let hosts: Vec<SshHostOut> = list
        .hosts
        .into_iter()
        .map(|h| SshHostOut { target: format!("ssh:{}", h.name), tags: h.tags, via: h.via })
        .collect();
    let mut text = if hosts.is_empty() {
        "no SSH hosts: no node announces an inventory\n".to_owned()
    } else {
        format!("{} SSH hosts; target one as ssh:NAME, a tag as ssh:tag:T, all as ssh:all\n", hosts.len())
    };
    for h in &hosts {
        let tags = if h.tags.is_empty() { String::new() } else { format!(" [{}]", h.tags.join(",")) };
        text.push_str(&format!("{}{tags} via {}\n", h.target, h.via));
    }
    for p in &list.problems {
        text.push_str(&format!("inventory problem: {p}\n"));
    }
    success(&SshHostsOut { hosts, problems: list.problems }, text)
}
