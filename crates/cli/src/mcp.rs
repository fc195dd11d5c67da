//! `tunnel mcp`: the MCP server AI clients start. It attaches to this machine's running node
//! (one identity per machine) or, with none running, runs its own: in the configured room, or
//! local-only (acting on this machine) when no relay is configured. Nothing but MCP messages
//! ever goes to stdout; logs go to stderr.

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tunnel_mcp::http::{HttpOptions, HttpServer};
use tunnel_mcp::{Backend, McpOptions, ToolGroup, TunnelMcp};
use tunnel_node::{Node, NodeConfig, Settings};

use crate::args::{Global, McpArgs, Transport};

pub(crate) async fn run(global: Global, args: McpArgs) -> anyhow::Result<i32> {
    let groups = ToolGroup::parse_list(&args.tools).map_err(anyhow::Error::msg)?;
    let settings = Settings::resolve(args.node.flags(&global), |k| std::env::var(k).ok())?;
    let socket = settings.socket_path();
    let (backend, own_node, local_only) = if tokio::net::UnixStream::connect(&socket).await.is_ok() {
        tracing::info!(socket = %socket.display(), "attached to the running node");
        (Backend::Socket(socket), None, false)
    } else {
        let (config, local_only) = match settings.relay {
            Some(_) => (NodeConfig::from_settings(&settings)?, false),
            None => (NodeConfig::local_only(&settings)?, true),
        };
        let node = Node::start(config).await.context("starting this machine's node")?;
        (Backend::InProcess(node.clone()), Some(node), local_only)
    };
    let server = TunnelMcp::new(McpOptions {
        backend,
        groups,
        max_output: args.max_output,
        state_dir: settings.state_dir.clone(),
        local_only,
    });
    let served = match args.transport {
        Transport::Stdio => tokio::select! {
            r = tunnel_mcp::serve_stdio(server) => r.map_err(anyhow::Error::from),
            r = crate::run::shutdown_signal() => r,
        },
        Transport::Http => {
            let tls = match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => {
                    let tls = tunnel_tls::ServerTls::load(cert, key, &[b"http/1.1"])?;
                    tls.reload_on_sighup().context("installing the SIGHUP handler")?;
                    Some(tls)
                }
                _ => None,
            };
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
    if let Some(node) = own_node {
        node.shutdown().await;
    }
    served.map(|()| 0)
}
