//! `tunnel mcp`: the MCP server AI clients start. It attaches to this machine's running node
//! (one identity per machine) or, with none running, hosts it for every session on the
//! machine: in the configured room, or local-only (acting on this machine) when no relay is
//! configured. When the hosting session ends another takes over (`tunnel_mcp::shared`).
//! A running `tunnel run` takes a stdio session over and serves it in its own process
//! (`crate::mcp_handoff`). Nothing but MCP messages ever goes to stdout; logs go to stderr.

use tokio_util::sync::CancellationToken;
use tunnel_mcp::http::{HttpOptions, HttpServer};
use tunnel_mcp::shared::SharedNode;
use tunnel_mcp::{Backend, ToolGroup};
use tunnel_node::{NodeConfig, Settings};

use crate::args::{Global, McpArgs, Transport};
use crate::mcp_handoff::{Handed, SessionOptions};

pub(crate) async fn run(global: Global, args: McpArgs) -> anyhow::Result<i32> {
    // Checked here, before a session is handed anywhere.
    ToolGroup::parse_list(&args.tools).map_err(anyhow::Error::msg)?;
    let settings = Settings::resolve(args.node.flags(&global), |k| std::env::var(k).ok())?;
    let socket = settings.socket_path();
    let options = SessionOptions {
        tools: args.tools.clone(),
        max_output: args.max_output,
        job_after_secs: args.job_after,
        state_dir: settings.state_dir.clone(),
    };
    if matches!(args.transport, Transport::Stdio) && !args.no_handoff {
        match crate::mcp_handoff::hand_off(&socket, &options).await {
            None => {}
            Some(Handed::Ended) => return Ok(0),
            Some(Handed::Back { initialize, unread }) => {
                // Attached, never hosting: the node is `tunnel run`'s, coming back. Calls wait
                // for it, bounded.
                let server = options.server(Backend::new(SharedNode::attached(socket)), settings.relay.is_none())?;
                let resumed = tunnel_mcp::serve_stdio_resumed(server, &initialize, unread);
                return tokio::select! {
                    r = resumed => r.map(|()| 0).map_err(anyhow::Error::from),
                    r = crate::run::shutdown_signal() => r.map(|()| 0),
                };
            }
        }
    }
    let for_config = settings.clone();
    let make_config: tunnel_mcp::shared::MakeConfig = Box::new(move || {
        match for_config.relay {
            Some(_) => NodeConfig::from_settings(&for_config),
            None => NodeConfig::local_only(&for_config),
        }
        .map_err(|e| e.to_string())
    });
    let shared = SharedNode::start(socket, make_config).await.map_err(anyhow::Error::msg)?;
    // Whether the node has a relay is the node's to say: an attached session may have none
    // configured itself.
    let local_only = match shared.status().await {
        Some(status) => status.relay.is_none(),
        None => settings.relay.is_none(),
    };
    let server = options.server(Backend::new(shared.clone()), local_only)?;
    let served = match args.transport {
        Transport::Stdio => tokio::select! {
            r = tunnel_mcp::serve_stdio(server) => r.map_err(anyhow::Error::from),
            r = crate::run::shutdown_signal() => r,
        },
        Transport::Http => {
            let tls = tunnel_tls::ServerTls::from_flags(args.tls_cert.as_deref(), args.tls_key.as_deref())?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            let opts =
                HttpOptions { listen: args.listen, auth_token: args.auth_token, allowed_hosts: args.allow_hosts, tls };
            let http = HttpServer::bind(server, opts).await?;
            eprintln!("tunnel: MCP over HTTP at {scheme}://{}/mcp", http.local_addr()?);
            let stop = CancellationToken::new();
            let serving = tokio::spawn(http.run(stop.clone()));
            let signal = crate::run::shutdown_signal().await;
            stop.cancel();
            let _ = serving.await;
            signal
        }
    };
    shared.shutdown().await;
    served.map(|()| 0)
}
