//! tunnel-mcp: the node's operations as MCP tools for AI clients (Claude Desktop and Code,
//! Cursor, any MCP client), over stdio or streamable HTTP.
//!
//! ```text
//!   MCP client ──stdio / HTTP (/mcp, bearer token, Host/Origin checked)──> TunnelMcp (rmcp)
//!                                                                             │ control protocol
//!                     control socket of `tunnel run`  or  in-process pipe ◀───┘
//!                                                        to our own node
//! ```
//!
//! The handler is a thin layer: every operation goes through the node's control protocol, so
//! policy and audit are enforced by the node that executes, exactly as for the CLI.

mod backend;
mod catalogue;
mod fence;
mod fleet_text;
pub mod http;
mod ops_exec;
mod ops_files;
mod ops_fleet;
mod ops_forward;
mod ops_git;
mod ops_jobs;
mod ops_node;
mod ops_schedules;
mod ops_ssh;
mod params;
mod params_fleet;
mod params_jobs;
mod progress;
mod schema;
mod server;
pub mod shared;
mod stdio;

pub use backend::Backend;
pub use catalogue::{ToolGroup, DEFAULT_TOOLS};
pub use server::{McpOptions, TunnelMcp, MAX_OUTPUT_CEILING};
pub use stdio::{
    serve_lines, serve_lines_handing_back, serve_lines_resumed, serve_stdio, serve_stdio_resumed, MAX_LINE,
};
