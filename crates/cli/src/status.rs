//! `tunnel status`: the node's own account of itself, or, when none answers, whether a
//! service is installed and what its manager says. Exit code 0 when the node runs and is
//! connected (or local-only), 1 when it runs but cannot reach the relay, 3 when no node
//! answers (as `systemctl status` does).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tunnel_node::control::{ControlClient, ControlError, ControlRequest, ControlResponse};
use tunnel_node::{NodeStatus, Settings};

use crate::args::{Global, StatusArgs};

pub(crate) async fn run(global: Global, args: StatusArgs) -> anyhow::Result<i32> {
    let settings = Settings::resolve(global.flags(), |k| std::env::var(k).ok())?;
    let socket = settings.socket_path();
    let status = match ControlClient::connect(&socket).await {
        Ok(mut client) => match client.request(&ControlRequest::Status).await? {
            ControlResponse::Status(s) => Some(*s),
            other => return Err(crate::query::unexpected(other)),
        },
        Err(ControlError::NotRunning { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let service = installed_service();
    let Some(status) = status else {
        if args.json {
            let doc = serde_json::json!({ "running": false, "control_socket": socket, "service": service });
            outln!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            outln!("tunnel: no node is running here (nothing answers on {})", socket.display());
            match &service {
                Some(s) => outln!("service:  {} ({}): {}", s.unit, s.path.display(), s.state),
                None => outln!("service:  not installed (`tunnel install`), or start one with `tunnel run`"),
            }
        }
        return Ok(3);
    };
    let code = match &status.relay {
        Some(relay) if !relay.connected => 1,
        _ => 0,
    };
    if args.json {
        let mut doc = serde_json::to_value(&status)?;
        doc["running"] = true.into();
        doc["control_socket"] = serde_json::json!(socket);
        doc["service"] = serde_json::json!(service);
        outln!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_text(&status, &socket)?;
    }
    Ok(code)
}

fn print_text(s: &NodeStatus, socket: &Path) -> anyhow::Result<()> {
    outln!("node:     {} ({})", s.name, s.id);
    outln!("runs as:  {}, pid {}, up {}", s.runs_as, s.pid, duration(s.uptime_secs));
    outln!("version:  {}", s.version);
    match (&s.relay, &s.room) {
        (Some(relay), room) => {
            let ago = duration(now().saturating_sub(relay.since_unix));
            let state = if relay.connected {
                format!("connected for {ago}")
            } else {
                format!("NOT connected for {ago}; retrying")
            };
            let version = relay.version.map(|v| format!(", protocol v{v}")).unwrap_or_default();
            outln!("relay:    {} ({state}{version})", relay.url);
            if let Some(err) = &relay.last_error {
                outln!("          last error: {err}");
            }
            if relay.ignored_frames > 0 {
                outln!("          ignored {} unexpected frames from the relay", relay.ignored_frames);
            }
            outln!("room:     {}", room.as_deref().unwrap_or("?"));
        }
        (None, _) => outln!("relay:    none (local-only: acts on this machine only)"),
    }
    outln!("mode:     {}", s.mode);
    let paths: Vec<String> = s.peers_by_path.iter().map(|(path, n)| format!("{n} via {path}")).collect();
    let by_path = if paths.is_empty() { String::new() } else { format!(" ({})", paths.join(", ")) };
    outln!("peers:    {} present{by_path}", s.peers_present);
    if s.relay.is_some() {
        match s.udp_port {
            Some(port) => outln!("direct:   {} (UDP port {port})", s.direct),
            None => outln!("direct:   {} (no UDP socket)", s.direct),
        }
    }
    outln!("forwards: {}", s.forwards);
    outln!("ssh:      {} hosts", s.ssh_hosts);
    if s.mcp_sessions > 0 {
        outln!("mcp:      {} tunnel mcp sessions served in this process", s.mcp_sessions);
    }
    outln!("control:  {}", socket.display());
    Ok(())
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

#[derive(serde::Serialize)]
struct Service {
    unit: String,
    path: PathBuf,
    state: String,
}

/// The node's unit, if `tunnel install` put one on this machine, and its manager's word on it.
fn installed_service() -> Option<Service> {
    let home = tunnel_service::home().unwrap_or_default();
    let manager = tunnel_service::Manager::native();
    [tunnel_service::Scope::User, tunnel_service::Scope::System].into_iter().find_map(|scope| {
        let spec = crate::install::node_spec(scope, PathBuf::new(), std::path::Path::new(""), &home);
        let path = spec.unit_path(manager, &home);
        path.exists().then(|| Service {
            unit: format!("{} ({})", spec.name, if scope == tunnel_service::Scope::User { "user" } else { "system" }),
            state: tunnel_service::query_state(&spec, manager),
            path,
        })
    })
}
