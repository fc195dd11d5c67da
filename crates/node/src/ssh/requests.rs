//! Request/response operations on this node's SSH hosts for peers: stat, list, mkdir and
//! info, as on a peer. This node's policy decides (it holds the keys and acts), and each is
//! audited here.

use std::time::Duration;

use tokio::sync::mpsc;
use tunnel_proto::message::{ExecEvent, NodeInfo, Op, OsInfo, RemoteError, RemoteErrorKind, Reply};
use tunnel_proto::NodeId;
use tunnel_ssh::{ExecRequest, RemoteCommand};

use super::pool_or_refuse;
use super::serve::utf8_path;
use crate::node::requests::LIST_MAX;
use crate::policy::{PathAccess, Refusal};

/// What `info` runs on the host: one fact a line, in the order [`parse_info`] reads them.
const INFO_SCRIPT: &str = "uname -n; uname -s; uname -m; uname -r; \
    cut -d' ' -f1 /proc/uptime 2>/dev/null || echo 0; \
    (. /etc/os-release 2>/dev/null && echo \"$PRETTY_NAME\") || uname -s; echo \"${SHELL:-/bin/sh}\"";
const INFO_TIMEOUT: Duration = Duration::from_secs(15);

/// Answers `op` on SSH host `host` for peer `from`.
pub(crate) async fn answer(node: &crate::Node, from: NodeId, host: String, op: Op) -> Result<Reply, RemoteError> {
    let refused = |r: Refusal| RemoteError { kind: RemoteErrorKind::Refused, message: r.to_string() };
    let failed = |m: String| RemoteError { kind: RemoteErrorKind::Failed, message: m };
    let (event, access, path) = match &op {
        Op::Stat { path } => ("ssh.stat", PathAccess::Read, Some(path)),
        Op::List { path, .. } => ("ssh.list", PathAccess::Read, Some(path)),
        Op::Mkdir { path, .. } => ("ssh.mkdir", PathAccess::Write, Some(path)),
        Op::Info => ("ssh.info", PathAccess::Read, None),
        other => return Err(failed(format!("{} does not apply to an SSH host", other.name()))),
    };
    let path = match path.map(utf8_path).transpose() {
        Ok(path) => path,
        Err(not_utf8) => return Err(failed(not_utf8.rule)),
    };
    let detail = serde_json::json!({ "ssh_host": host, "path": path });
    let checked = node.policy_check(|p| {
        p.check_caller(&from)?;
        path.as_deref().map_or(Ok(()), |path| p.check_remote_path(path, access))
    });
    let pool = match checked.and_then(|()| pool_or_refuse(node, &host)) {
        Ok(pool) => pool,
        Err(r) => {
            node.audit_op(from, event, "refused", Some(r.rule.clone()), detail, None);
            return Err(refused(r));
        }
    };
    let path = path.unwrap_or_default();
    let result = match op {
        Op::Stat { .. } => pool.stat(&host, &path).await.map(Reply::Stat).map_err(|e| e.to_string()),
        Op::List { limit, .. } => pool
            .list(&host, &path, (limit as usize).clamp(1, LIST_MAX))
            .await
            .map(|(entries, truncated)| Reply::List { entries, truncated })
            .map_err(|e| e.to_string()),
        Op::Mkdir { mode, .. } => pool.mkdir(&host, &path, mode).await.map(|()| Reply::Done).map_err(|e| e.to_string()),
        _ => info(node, &pool, &host).await.map(Reply::Info),
    };
    let decision = if result.is_ok() { "allowed" } else { "failed" };
    node.audit_op(from, event, decision, None, detail, None);
    result.map_err(failed)
}

/// What the host is, from [`INFO_SCRIPT`]; mode and policy are this node's, which govern it.
async fn info(node: &crate::Node, pool: &tunnel_ssh::Pool, host: &str) -> Result<NodeInfo, String> {
    let command = RemoteCommand::argv(vec!["/bin/sh".into(), "-c".into(), INFO_SCRIPT.into()], vec![], None)?;
    let request = ExecRequest { command, timeout: Some(INFO_TIMEOUT), output_cap: 64 * 1024, stdin: None };
    let (tx, mut rx) = mpsc::channel(16);
    let run = async {
        let exit = pool.exec(host, request, &tx).await;
        drop(tx);
        exit
    };
    let gather = async {
        let mut out = Vec::new();
        while let Some(event) = rx.recv().await {
            if let ExecEvent::Stdout(bytes) = event {
                out.extend_from_slice(&bytes);
            }
        }
        out
    };
    let (exit, out) = tokio::join!(run, gather);
    let exit = exit.map_err(|e| e.to_string())?;
    if exit.code != Some(0) {
        return Err(format!("the host's facts could not be read (exit {:?})", exit.code));
    }
    let (mode, policy) = node.policy_check(|p| Ok((p.mode.to_string(), p.summary()))).unwrap_or_default();
    let mut info = parse_info(&String::from_utf8_lossy(&out));
    info.mode = mode;
    info.policy = policy;
    info.version = format!("no tunnel: an SSH host reached through {}", node.name());
    Ok(info)
}

/// The lines of [`INFO_SCRIPT`]'s output.
fn parse_info(text: &str) -> NodeInfo {
    let mut lines = text.lines().map(str::trim);
    let mut next = || lines.next().unwrap_or_default().to_owned();
    let hostname = next();
    let family = next().to_ascii_lowercase();
    let arch = next();
    let kernel = next();
    let uptime_secs = next().parse::<f64>().unwrap_or(0.0) as u64;
    let distro = next();
    let shell = next();
    NodeInfo {
        hostname,
        os: OsInfo { family, distro, kernel, arch },
        shell,
        uptime_secs,
        version: String::new(),
        mode: String::new(),
        policy: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_reads_the_script_lines_and_tolerates_missing_ones() {
        let info = parse_info("web-1\nLinux\nx86_64\n6.8.0\n12345.67\nUbuntu 24.04 LTS\n/bin/bash\n");
        assert_eq!((info.hostname.as_str(), info.uptime_secs, info.shell.as_str()), ("web-1", 12345, "/bin/bash"));
        assert_eq!(
            info.os,
            OsInfo {
                family: "linux".into(),
                distro: "Ubuntu 24.04 LTS".into(),
                kernel: "6.8.0".into(),
                arch: "x86_64".into()
            }
        );
        assert_eq!(parse_info("only-a-name\n").uptime_secs, 0);
    }
}
