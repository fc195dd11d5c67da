//! `tunnel run`: the long-lived peer.

use anyhow::Context;
use tunnel_node::control::BoundControl;
use tunnel_node::{Node, NodeConfig, Settings};

use crate::args::{Global, RunArgs};

/// How long a stop waits for the MCP sessions served here to go back to their `tunnel mcp`
/// (each waits up to 5 s for the calls in flight).
const GIVE_BACK_WAIT: std::time::Duration = std::time::Duration::from_secs(8);

pub(crate) async fn run(global: Global, args: RunArgs) -> anyhow::Result<i32> {
    let flags = args.node.flags(&global);
    let settings = Settings::resolve(flags, |k| std::env::var(k).ok())?;
    let mut config = NodeConfig::from_settings(&settings)?;
    config.agent = !args.no_agent;
    config.fail_fast = !args.keep_trying;
    config.runs_as = runs_as("tunnel run (foreground)");
    let room = config.room.clone();
    let relay = config.relay_url.clone().unwrap_or_default();
    let control = BoundControl::bind(&settings.socket_path()).await?;
    let node = Node::start(config).await.context("joining the room")?;
    // `tunnel mcp` sessions on this machine are served here, with no hop to the node.
    tunnel_node::control::handoff::host_mcp_sessions(std::sync::Arc::new(crate::mcp_handoff::serve));
    let control = control.serve(node.clone());
    outln!("tunnel: {} ({}) joined room {room:?} on {relay}", node.name(), node.id());
    outln!("tunnel: control socket {}", settings.socket_path().display());
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            stopped = &mut stop => {
                stopped?;
                break;
            }
            // SIGHUP: the SSH inventory again (the files are also watched).
            _ = hangup.recv() => match node.reload_ssh_inventory().await {
                Some((hosts, problems)) => outln!("tunnel: SSH inventory reloaded: {hosts} hosts, {problems} problems"),
                None => outln!("tunnel: SIGHUP: this node has no SSH inventory to reload"),
            },
        }
    }
    // MCP sessions served here go back to their `tunnel mcp` first, their calls answered.
    tunnel_node::control::handoff::give_back_sessions(GIVE_BACK_WAIT).await;
    eprintln!("tunnel: leaving the room");
    control.shutdown().await;
    node.shutdown().await;
    Ok(0)
}

/// A service says so through the environment our units set (`TUNNEL_SERVICE`); else `foreground`.
pub(crate) fn runs_as(foreground: &str) -> String {
    match std::env::var("TUNNEL_SERVICE").ok().as_deref() {
        Some("systemd") => "systemd service".into(),
        Some("launchd") => "launchd service".into(),
        _ => foreground.into(),
    }
}

pub(crate) async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for ctrl-c")?,
        _ = term.recv() => {}
    }
    Ok(())
}
