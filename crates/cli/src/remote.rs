//! `tunnel info`, `tunnel ls` and `tunnel mode`: request/response operations on a peer.

use anyhow::bail;
use tunnel_node::control::{ControlClient, ControlRequest, ControlResponse};
use tunnel_proto::message::{FileKind, Op, Reply};

use crate::args::{Global, InfoArgs, LsArgs, ModeArgs};

pub(crate) async fn client(global: &Global) -> anyhow::Result<ControlClient> {
    global.control().await
}

pub(crate) use tunnel_node::fleet::targets::split_remote;

pub(crate) async fn request(global: &Global, target: &str, op: Op) -> anyhow::Result<Reply> {
    match client(global).await?.request(&ControlRequest::Request { target: target.to_owned(), op }).await? {
        ControlResponse::Reply(r) => Ok(r),
        ControlResponse::Error(e) => bail!(e),
        other => bail!("unexpected answer from the node: {other:?}"),
    }
}

/// `op` on every peer `target` selects (SSH hosts left out), in parallel, each answer handed
/// to `take` in the selection's order; `take` gives back an answer it did not expect. Peers
/// that failed or answered otherwise are reported on stderr; returns how many there were.
pub(crate) async fn ask_each(
    global: &Global,
    target: &str,
    op: Op,
    mut take: impl FnMut(&str, Reply) -> Option<Reply>,
) -> anyhow::Result<usize> {
    let targets = match client(global).await?.request(&ControlRequest::Select { target: target.to_owned() }).await? {
        ControlResponse::Targets(t) => t,
        other => return Err(crate::query::unexpected(other)),
    };
    let mut asks = tokio::task::JoinSet::new();
    for (i, t) in targets.into_iter().filter(|t| t.ssh.is_none()).enumerate() {
        let (global, op) = (global.clone(), op.clone());
        asks.spawn(async move { (i, t.name, request(&global, &t.id, op).await) });
    }
    let mut answers = asks.join_all().await;
    answers.sort_by_key(|(i, ..)| *i);
    let mut failed = 0;
    for (_, name, answer) in answers {
        let why = match answer.map(|reply| take(&name, reply)) {
            Ok(None) => continue,
            Ok(Some(other)) => format!("unexpected answer {other:?}"),
            Err(e) => format!("{e:#}"),
        };
        failed += 1;
        eprintln!("{name}: {why}");
    }
    Ok(failed)
}

pub(crate) async fn info(global: Global, args: InfoArgs) -> anyhow::Result<i32> {
    let Reply::Info(info) = request(&global, &args.peer, Op::Info).await? else { bail!("unexpected answer") };
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "hostname": info.hostname, "os": info.os, "shell": info.shell, "uptime_secs": info.uptime_secs,
                "version": info.version, "mode": info.mode, "policy": info.policy,
            }))?
        );
        return Ok(0);
    }
    outln!("host     {}", info.hostname);
    outln!("os       {} ({} {}, kernel {})", info.os.distro, info.os.family, info.os.arch, info.os.kernel);
    outln!("shell    {}", info.shell);
    outln!("uptime   {} h {} min", info.uptime_secs / 3600, info.uptime_secs / 60 % 60);
    outln!("tunnel   {}", info.version);
    outln!("mode     {}", info.mode);
    for rule in info.policy {
        outln!("policy   {rule}");
    }
    Ok(0)
}

pub(crate) async fn ls(global: Global, args: LsArgs) -> anyhow::Result<i32> {
    let target = std::os::unix::ffi::OsStrExt::as_bytes(args.target.as_os_str());
    let Some((peer, path)) = tunnel_node::fleet::targets::split_remote_bytes(target) else {
        bail!("give the directory as PEER:PATH")
    };
    let path = tunnel_proto::message::PathBytes(path.to_vec());
    let Reply::List { entries, truncated } = request(&global, peer, Op::List { path, limit: args.limit }).await? else {
        bail!("unexpected answer")
    };
    for e in entries {
        let kind = match e.kind {
            FileKind::Dir => 'd',
            FileKind::Symlink => 'l',
            FileKind::File => '-',
            FileKind::Other => '?',
        };
        outln!("{kind}{:04o} {:>12} {}", e.mode, e.size, e.name);
    }
    if truncated {
        eprintln!("tunnel: listing cut at {} entries (--limit)", args.limit);
    }
    Ok(0)
}

pub(crate) async fn mode(global: Global, args: ModeArgs) -> anyhow::Result<i32> {
    if args.peer == "local" {
        match client(&global).await?.request(&ControlRequest::LocalMode { mode: args.mode.clone() }).await? {
            ControlResponse::Done => outln!("this node is now in mode {}", args.mode),
            ControlResponse::Error(e) => bail!(e),
            other => bail!("unexpected answer from the node: {other:?}"),
        }
        return Ok(0);
    }
    request(&global, &args.peer, Op::SetMode { mode: args.mode.clone() }).await?;
    outln!("{} is now in mode {}", args.peer, args.mode);
    Ok(0)
}
