//! Commands that ask the running node over its control socket.

use anyhow::bail;
use tunnel_node::control::{ControlClient, ControlRequest, ControlResponse};
use tunnel_node::{load_or_create_identity, PeerInfo, Settings};

use crate::args::{Global, PeersArgs, PingArgs};

async fn client(global: &Global) -> anyhow::Result<(ControlClient, Settings)> {
    let settings = Settings::resolve(global.flags(), |k| std::env::var(k).ok())?;
    Ok((global.control().await?, settings))
}

pub(crate) fn unexpected(resp: ControlResponse) -> anyhow::Error {
    match resp {
        ControlResponse::Error(e) => anyhow::anyhow!(e),
        other => anyhow::anyhow!("unexpected answer from the node: {other:?}"),
    }
}

pub(crate) async fn peers(global: Global, args: PeersArgs) -> anyhow::Result<i32> {
    let (mut client, _) = client(&global).await?;
    let peers = match client.request(&ControlRequest::Peers).await? {
        ControlResponse::Peers(p) => p,
        other => return Err(unexpected(other)),
    };
    if args.json {
        // `addr` and `path_note` only where they mean something (a direct path, a reason).
        let mut list = serde_json::to_value(&peers)?;
        for peer in list.as_array_mut().into_iter().flatten().filter_map(|p| p.as_object_mut()) {
            peer.retain(|key, value| !(matches!(key.as_str(), "addr" | "path_note") && value.is_null()));
        }
        outln!("{}", serde_json::to_string_pretty(&list)?);
    } else if peers.is_empty() {
        outln!("no peers in the room");
    } else {
        print_table(&peers)?;
    }
    Ok(0)
}

fn print_table(peers: &[PeerInfo]) -> anyhow::Result<()> {
    let rows: Vec<[String; 7]> = peers
        .iter()
        .map(|p| {
            let os = [p.os.distro.as_str(), p.os.arch.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            [
                if p.name.is_empty() { "?".into() } else { p.name.clone() },
                p.short_id.clone(),
                p.tags.join(","),
                if os.is_empty() { p.os.family.clone() } else { os },
                p.version.clone(),
                match &p.addr {
                    Some(addr) => format!("{} {addr}", p.path),
                    None => p.path.clone(),
                },
                match (&p.rtt_ms, &p.error) {
                    (_, Some(e)) => format!("error: {e}"),
                    (Some(ms), None) => format!("{ms:.2} ms"),
                    (None, None) => "-".into(),
                },
            ]
        })
        .collect();
    let header = ["NAME", "ID", "TAGS", "OS", "VERSION", "PATH", "RTT"].map(String::from);
    print_columns(&header, &rows)
}

/// Rows under a header, each column as wide as its widest cell.
pub(crate) fn print_columns<const N: usize>(header: &[String; N], rows: &[[String; N]]) -> anyhow::Result<()> {
    let mut widths = header.clone().map(|h| h.len());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(header).chain(rows) {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        outln!("{}", line.join("  ").trim_end());
    }
    Ok(())
}

pub(crate) async fn ssh_hosts(global: Global, args: PeersArgs) -> anyhow::Result<i32> {
    let (mut client, _) = client(&global).await?;
    let list = match client.request(&ControlRequest::SshHosts).await? {
        ControlResponse::SshHosts(list) => list,
        other => return Err(unexpected(other)),
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    for problem in &list.problems {
        eprintln!("inventory: {problem}");
    }
    if list.hosts.is_empty() {
        outln!("no SSH hosts: configure an inventory in the [ssh] section of config.toml (see the README)");
        return Ok(0);
    }
    let rows: Vec<[String; 5]> = list
        .hosts
        .iter()
        .map(|h| {
            [
                format!("ssh:{}", h.name),
                h.tags.join(","),
                h.via.clone(),
                h.address.clone().unwrap_or_else(|| "-".into()),
                h.source.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_columns(&["TARGET", "TAGS", "VIA", "ADDRESS", "SOURCE"].map(String::from), &rows)?;
    Ok(0)
}

pub(crate) async fn id(global: Global) -> anyhow::Result<i32> {
    let settings = Settings::resolve(global.flags(), |k| std::env::var(k).ok())?;
    // The running node answers if there is one; otherwise the key on disk is the id.
    if let Ok(mut client) = ControlClient::connect(&settings.socket_path()).await {
        match client.request(&ControlRequest::Id).await? {
            ControlResponse::Id { id, .. } => outln!("{id}"),
            other => return Err(unexpected(other)),
        }
    } else {
        outln!("{}", load_or_create_identity(&settings.state_dir)?.public());
    }
    Ok(0)
}

pub(crate) async fn ping(global: Global, args: PingArgs) -> anyhow::Result<i32> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let (mut client, _) = client(&global).await?;
    let mut ok = 0;
    let mut last_err = None;
    for _ in 0..args.count {
        match client.request(&ControlRequest::Ping { target: args.peer.clone() }).await? {
            ControlResponse::Pong { name, id, rtt_us } => {
                ok += 1;
                outln!("reply from {name} ({}): time={:.3} ms", &id[..8], rtt_us as f64 / 1000.0);
            }
            ControlResponse::Error(e) => {
                eprintln!("tunnel: {e}");
                last_err = Some(e);
            }
            other => return Err(unexpected(other)),
        }
    }
    // Each failure was printed as it happened.
    Ok(if ok == 0 && last_err.is_some() { 1 } else { 0 })
}
