//! The MCP handler: a thin layer that parses a tool call, runs it through the node's control
//! protocol, and shapes the answer (structured content that matches the tool's outputSchema,
//! plus a short readable text).
//!
//! Two kinds of failure, on purpose: arguments that do not fit the schema are JSON-RPC
//! invalid-params errors naming the field (the client made a mistake); anything that goes
//! wrong while doing the work (a policy refusal, an unknown peer, a timeout) is a tool result
//! with `isError: true` and a message that says what to do next (the model can act on it).

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::Backend;
use crate::catalogue::{tools, ToolGroup};

/// Hard ceiling on any per-call output cap, whatever a call asks for.
pub const MAX_OUTPUT_CEILING: u64 = 16 * 1024 * 1024;

/// What `tunnel mcp` was started with.
#[derive(Clone)]
pub struct McpOptions {
    pub backend: Backend,
    pub groups: Vec<ToolGroup>,
    /// Default cap, in bytes, on what one tool call returns per output stream.
    pub max_output: u64,
    /// Where this machine's audit log is.
    pub state_dir: std::path::PathBuf,
    /// No relay configured: only this machine can be targeted.
    pub local_only: bool,
    /// How long `exec` waits for a command before it leaves it running as a job (a call may
    /// ask for another time).
    pub job_after: std::time::Duration,
}

/// One MCP session's handler. Cheap to clone; sessions share nothing mutable, so two
/// clients never see each other's results.
#[derive(Clone)]
pub struct TunnelMcp {
    pub(crate) opts: Arc<McpOptions>,
    tools: Arc<Vec<Arc<Tool>>>,
}

impl TunnelMcp {
    pub fn new(opts: McpOptions) -> Self {
        let tools = Arc::new(tools(&opts.groups));
        Self { opts: Arc::new(opts), tools }
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.opts.backend
    }

    /// The cap a call asked for, within the ceiling; the server default otherwise.
    pub(crate) fn cap(&self, asked: Option<u64>) -> u64 {
        asked.unwrap_or(self.opts.max_output).min(MAX_OUTPUT_CEILING)
    }
}

/// Parses a tool's arguments; a mismatch names the field.
pub(crate) fn parse<T: DeserializeOwned>(tool: &str, args: Option<rmcp::model::JsonObject>) -> Result<T, McpError> {
    let value = serde_json::Value::Object(args.unwrap_or_default());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { String::new() } else { format!("field `{path}`: ") };
        invalid(tool, &path, &format!("{at}{}", e.inner()))
    })
}

/// Takes the connect timeout out of a call's arguments (every tool with a `target` has it),
/// checked, before the tool's own parameters are parsed.
fn take_connect_timeout(
    tool: &str,
    args: Option<rmcp::model::JsonObject>,
) -> Result<(Option<rmcp::model::JsonObject>, Option<std::time::Duration>), McpError> {
    let field = crate::catalogue::CONNECT_TIMEOUT_ARG;
    let Some(mut args) = args else { return Ok((None, None)) };
    let Some(value) = args.remove(field) else { return Ok((Some(args), None)) };
    if !args.contains_key("target") {
        return Err(invalid(tool, field, &format!("field `{field}`: this tool reaches no target")));
    }
    let secs = value
        .as_f64()
        .filter(|s| (0.0..=3600.0).contains(s))
        .ok_or_else(|| invalid(tool, field, &format!("field `{field}`: give seconds from 0 to 3600, not {value}")))?;
    Ok((Some(args), Some(std::time::Duration::from_secs_f64(secs))))
}

/// An invalid-params error for `field` of `tool`.
pub(crate) fn invalid(tool: &str, field: &str, message: &str) -> McpError {
    McpError::invalid_params(
        format!("{tool}: {message}"),
        Some(serde_json::json!({ "tool": tool, "field": field.trim_start_matches('.') })),
    )
}

/// Every tool's `target` must name something: a peer name, a node id prefix or `local`.
pub(crate) fn check_target(tool: &str, target: &str) -> Result<(), McpError> {
    if target.trim().is_empty() {
        return Err(invalid(tool, "target", "field `target` is empty; give a peer name, a node id prefix or `local`"));
    }
    Ok(())
}

/// A successful result: `out` as structured content, `text` for people.
pub(crate) fn success<T: Serialize>(out: &T, text: String) -> Result<CallToolResult, McpError> {
    let value =
        serde_json::to_value(out).map_err(|e| McpError::internal_error(format!("encoding a result: {e}"), None))?;
    let mut result = CallToolResult::structured(value);
    result.content = vec![ContentBlock::text(text)];
    Ok(result)
}

/// A failure the model should read and act on.
pub(crate) fn failure(message: impl Into<String>) -> Result<CallToolResult, McpError> {
    Ok(CallToolResult::error(vec![ContentBlock::text(message.into())]))
}

impl ServerHandler for TunnelMcp {
    fn get_info(&self) -> ServerConfig {
        let where_ = if self.opts.local_only {
            "No relay is configured, so the tools act on this machine only (target `local`)."
        } else {
            "Call `peers` first to see the nodes; target this machine as `local`."
        };
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("tunnel", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "tunnel runs commands and file operations on machines of an end-to-end encrypted mesh. {where_} \
                 Each node enforces its own safety mode (disabled, plan = read-only, edit, bypass) and audits \
                 everything; a refusal names the rule that refused."
            ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools.iter().map(|t| (**t).clone()).collect()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools.iter().find(|t| t.name == name).map(|t| (**t).clone())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.as_ref();
        if !self.tools.iter().any(|t| t.name == name) {
            let known: Vec<&str> = self.tools.iter().map(|t| t.name.as_ref()).collect();
            return Err(McpError::invalid_params(
                format!("no tool {name:?}; this server has: {}", known.join(", ")),
                None,
            ));
        }
        let (args, connect_timeout) = take_connect_timeout(name, request.arguments)?;
        let call = async {
            match name {
                "peers" => crate::ops_node::peers(self, parse(name, args)?).await,
                "get_info" => crate::ops_node::get_info(self, parse(name, args)?).await,
                "set_mode" => crate::ops_node::set_mode(self, parse(name, args)?).await,
                "audit_tail" => crate::ops_node::audit_tail(self, parse(name, args)?).await,
                "exec" => crate::ops_exec::exec(self, parse(name, args)?, &context).await,
                "jobs" => crate::ops_jobs::jobs(self, parse(name, args)?).await,
                "job_status" => crate::ops_jobs::job_status(self, parse(name, args)?).await,
                "job_output" => crate::ops_jobs::job_output(self, parse(name, args)?).await,
                "job_wait" => crate::ops_jobs::job_wait(self, parse(name, args)?, &context).await,
                "job_cancel" => crate::ops_jobs::job_cancel(self, parse(name, args)?).await,
                "schedules" => crate::ops_schedules::schedules(self, parse(name, args)?).await,
                "git" => crate::ops_git::git(self, parse(name, args)?).await,
                "task" => crate::ops_jobs::task(self, parse(name, args)?).await,
                "read_file" => crate::ops_files::read_file(self, parse(name, args)?, &context).await,
                "write_file" => crate::ops_files::write_file(self, parse(name, args)?, &context).await,
                "list_dir" => crate::ops_files::list_dir(self, parse(name, args)?).await,
                "fleet_exec" => crate::ops_fleet::fleet_exec(self, parse(name, args)?, &context).await,
                "fleet_read" => crate::ops_fleet::fleet_read(self, parse(name, args)?, &context).await,
                "fleet_write" => crate::ops_fleet::fleet_write(self, parse(name, args)?, &context).await,
                "mapreduce" => crate::ops_fleet::mapreduce(self, parse(name, args)?, &context).await,
                "ssh_hosts" => crate::ops_ssh::ssh_hosts(self, parse(name, args)?).await,
                "tunnel_open" => crate::ops_forward::tunnel_open(self, parse(name, args)?).await,
                "tunnel_list" => crate::ops_forward::tunnel_list(self, parse(name, args)?).await,
                "tunnel_close" => crate::ops_forward::tunnel_close(self, parse(name, args)?).await,
                _ => Err(McpError::internal_error(format!("tool {name:?} is listed but has no handler"), None)),
            }
        };
        let result = crate::backend::CALL_CONNECT_TIMEOUT.scope(connect_timeout, call).await?;
        Ok(result.into())
    }
}
