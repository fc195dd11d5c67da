//! The tools that ask the node about itself and the room: peers, get_info, set_mode,
//! audit_tail.

use rmcp::model::CallToolResult;
use rmcp::ErrorData as McpError;
use tunnel_node::control::{ControlRequest, ControlResponse};
use tunnel_proto::message::{Op, Reply};

use crate::params::*;
use crate::server::{check_target, failure, invalid, success, TunnelMcp};

/// Most audit records one call returns.
const AUDIT_MAX: u32 = 1000;

fn unexpected(what: &str, resp: &ControlResponse) -> Result<CallToolResult, McpError> {
    failure(format!("the local node gave an unexpected answer to {what}: {resp:?}"))
}

/// What the node says about its own identity.
pub(crate) async fn this_node(srv: &TunnelMcp) -> Result<NodeRef, String> {
    match srv.backend().request(&ControlRequest::Id).await? {
        ControlResponse::Id { id, name } => Ok(NodeRef { name, id }),
        other => Err(format!("unexpected answer to Id: {other:?}")),
    }
}

/// Whether `target` may name this machine's own node. The node is the judge (its target
/// selection); the plain rule covers a node that cannot answer. Erring towards "local" only
/// means a mode can be lowered and not raised.
async fn is_local(srv: &TunnelMcp, target: &str, me: &NodeRef) -> bool {
    let by_rule = target == tunnel_node::LOCAL_TARGET
        || target == me.name
        || (target.len() >= 4 && me.id.starts_with(&target.to_ascii_lowercase()));
    by_rule
        || matches!(
            srv.backend().request(&ControlRequest::Select { target: target.to_owned() }).await,
            Ok(ControlResponse::Targets(t)) if t.iter().any(|t| t.id == me.id)
        )
}

pub(crate) async fn peers(srv: &TunnelMcp, _: NoParams) -> Result<CallToolResult, McpError> {
    let me = match this_node(srv).await {
        Ok(me) => me,
        Err(e) => return failure(e),
    };
    let list = match srv.backend().request(&ControlRequest::Peers).await {
        Ok(ControlResponse::Peers(list)) => list,
        Ok(other) => return unexpected("Peers", &other),
        Err(e) => return failure(e),
    };
    let peers: Vec<PeerOut> = list
        .into_iter()
        .map(|p| PeerOut {
            name: p.name,
            id: p.id,
            tags: p.tags,
            os: format!("{} {} ({}, kernel {})", p.os.family, p.os.distro, p.os.arch, p.os.kernel),
            mode: p.mode,
            version: p.version,
            rtt_ms: p.rtt_ms,
            error: p.error,
        })
        .collect();
    let mut text = format!("this node: {} ({}), target it as `local`\n", me.name, &me.id[..8.min(me.id.len())]);
    if srv.opts.local_only {
        text.push_str(
            "no relay configured: no peers (set TUNNEL_RELAY, TUNNEL_ROOM and TUNNEL_TOKEN to join a room)\n",
        );
    } else if peers.is_empty() {
        text.push_str("no peers in the room yet\n");
    }
    for p in &peers {
        let rtt = p.rtt_ms.map(|r| format!("{r:.1} ms")).unwrap_or_else(|| "-".into());
        let tags = if p.tags.is_empty() { String::new() } else { format!(" [{}]", p.tags.join(",")) };
        let err = p.error.as_deref().map(|e| format!("  error: {e}")).unwrap_or_default();
        text.push_str(&format!("{}{tags}  mode {}  {}  rtt {rtt}{err}\n", p.name, p.mode, p.os));
    }
    success(&PeersOut { this_node: me, connected: !srv.opts.local_only, peers }, text)
}

async fn request(srv: &TunnelMcp, target: &str, op: Op) -> Result<Reply, String> {
    match srv.backend().request(&ControlRequest::Request { target: target.to_owned(), op }).await? {
        ControlResponse::Reply(r) => Ok(r),
        other => Err(format!("unexpected answer from the node: {other:?}")),
    }
}

pub(crate) async fn get_info(srv: &TunnelMcp, p: TargetParams) -> Result<CallToolResult, McpError> {
    check_target("get_info", &p.target)?;
    let info = match request(srv, &p.target, Op::Info).await {
        Ok(Reply::Info(info)) => info,
        Ok(other) => return failure(format!("unexpected answer from {}: {other:?}", p.target)),
        Err(e) => return failure(next_step(&p.target, &e)),
    };
    let text = format!(
        "{}: {} ({} {}, kernel {}), up {} h, tunnel {}, mode {}\npolicy:\n  {}",
        p.target,
        info.hostname,
        info.os.distro,
        info.os.arch,
        info.os.kernel,
        info.uptime_secs / 3600,
        info.version,
        info.mode,
        info.policy.join("\n  ")
    );
    success(
        &InfoOut {
            target: p.target,
            hostname: info.hostname,
            os_family: info.os.family,
            distro: info.os.distro,
            kernel: info.os.kernel,
            arch: info.os.arch,
            shell: info.shell,
            uptime_secs: info.uptime_secs,
            version: info.version,
            mode: info.mode,
            policy: info.policy,
        },
        text,
    )
}

pub(crate) async fn set_mode(srv: &TunnelMcp, p: SetModeParams) -> Result<CallToolResult, McpError> {
    check_target("set_mode", &p.target)?;
    let me = match this_node(srv).await {
        Ok(me) => me,
        Err(e) => return failure(e),
    };
    let mode = p.mode.as_str();
    if is_local(srv, &p.target, &me).await {
        // An AI must not lift the limits it works under: the local node only gets safer here.
        let current = match request(srv, tunnel_node::LOCAL_TARGET, Op::Info).await {
            Ok(Reply::Info(info)) => info.mode,
            Ok(other) => return failure(format!("unexpected answer from the local node: {other:?}")),
            Err(e) => return failure(e),
        };
        let current: ModeName = match serde_json::from_value(serde_json::Value::String(current.clone())) {
            Ok(m) => m,
            Err(_) => return failure(format!("the local node reports an unknown mode {current:?}")),
        };
        if p.mode > current {
            return failure(format!(
                "refused: this machine's node is in mode {} and set_mode may only make it safer from here. \
                 Ask its operator to run `tunnel mode local {mode}` if {mode} is really needed.",
                current.as_str()
            ));
        }
        return match srv.backend().request(&ControlRequest::LocalMode { mode: mode.to_owned() }).await {
            Ok(_) => success(
                &SetModeOut { target: p.target.clone(), mode: mode.to_owned() },
                format!("{} is now in mode {mode}", p.target),
            ),
            Err(e) => failure(e),
        };
    }
    match request(srv, &p.target, Op::SetMode { mode: mode.to_owned() }).await {
        Ok(_) => success(
            &SetModeOut { target: p.target.clone(), mode: mode.to_owned() },
            format!("{} is now in mode {mode}", p.target),
        ),
        Err(e) => failure(next_step(&p.target, &e)),
    }
}

pub(crate) async fn audit_tail(srv: &TunnelMcp, p: AuditParams) -> Result<CallToolResult, McpError> {
    let limit = p.limit.unwrap_or(50);
    if !(1..=AUDIT_MAX).contains(&limit) {
        return Err(invalid("audit_tail", "limit", &format!("field `limit` must be 1 to {AUDIT_MAX}")));
    }
    let prefix = p.event_prefix.unwrap_or_default();
    let target = p.target.unwrap_or_else(|| tunnel_node::LOCAL_TARGET.to_owned());
    check_target("audit_tail", &target)?;
    let local = target == tunnel_node::LOCAL_TARGET
        || match this_node(srv).await {
            Ok(me) => is_local(srv, &target, &me).await,
            Err(_) => false,
        };
    let (lines, truncated) = if local {
        // This machine's own log, read where it lies (also when the node is not running).
        let state_dir = srv.opts.state_dir.clone();
        let read = move || tunnel_node::audit::newest_lines(&state_dir, limit as usize, &prefix);
        match tokio::task::spawn_blocking(read).await {
            Ok(Ok(lines)) => (lines, false),
            Ok(Err(e)) => return failure(format!("cannot read this machine's audit log: {e}")),
            Err(e) => return failure(format!("reading the audit log failed: {e}")),
        }
    } else {
        let op = Op::AuditTail { limit, event_prefix: prefix };
        match srv.backend().request(&ControlRequest::Request { target: target.clone(), op }).await {
            Ok(ControlResponse::Reply(Reply::Audit { lines, truncated })) => (lines, truncated),
            Ok(other) => return unexpected("AuditTail", &other),
            Err(e) => return failure(next_step(&target, &e)),
        }
    };
    let records: Vec<AuditRecordOut> = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<tunnel_node::audit::AuditRecord>(line).ok())
        .map(|r| AuditRecordOut {
            seq: r.seq,
            time_ms: r.time_ms,
            event: r.entry.event,
            decision: r.entry.decision,
            caller: r.entry.caller_name.or(r.entry.caller),
            rule: r.entry.rule,
            exit_code: r.entry.exit_code,
            bytes: r.entry.bytes,
            duration_ms: r.entry.duration_ms,
            detail: r.entry.detail,
        })
        .collect();
    let more = if truncated { " (older ones left out: ask for fewer)" } else { "" };
    let mut text = format!("{} audit records of {target}{more}\n", records.len());
    let mut body = String::new();
    for r in &records {
        let rule = r.rule.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        let who = r.caller.as_deref().unwrap_or("local");
        body.push_str(&format!("#{} {} {} by {who}{rule} {}\n", r.seq, r.event, r.decision, r.detail));
    }
    if !records.is_empty() {
        text.push_str(&crate::fence::fenced(&format!("audit records of {target}"), &body));
    }
    success(&AuditOut { target, records, truncated }, text)
}

/// Adds what to do next to an error from reaching a target.
pub(crate) fn next_step(target: &str, error: &str) -> String {
    if error.contains("no peer") {
        format!("{error}. Call `peers` to see the nodes you can target (this machine is `local`).")
    } else if error.contains("did not answer") {
        format!("{error}. {target} may be offline or overloaded; check `peers` and try again.")
    } else if error.contains("not an admin") {
        format!("{error}. Only nodes in {target}'s `admins` list change its mode; its operator can run `tunnel mode local MODE` there.")
    } else {
        error.to_owned()
    }
}

/// `op` on every peer `target` selects (SSH hosts left out), in parallel: each peer's name and
/// answer, in the selection's order.
pub(crate) async fn ask_each(
    srv: &TunnelMcp,
    target: &str,
    op: Op,
) -> Result<Vec<(String, Result<Reply, String>)>, String> {
    let targets = match srv.backend().request(&ControlRequest::Select { target: target.to_owned() }).await {
        Ok(ControlResponse::Targets(t)) => t,
        Ok(other) => return Err(format!("unexpected answer from the local node: {other:?}")),
        Err(e) => return Err(next_step(target, &e)),
    };
    let mut asks = tokio::task::JoinSet::new();
    for (i, t) in targets.into_iter().filter(|t| t.ssh.is_none()).enumerate() {
        let (backend, op) = (srv.backend().clone(), op.clone());
        asks.spawn(async move {
            let answer = match backend.request(&ControlRequest::Request { target: t.id.clone(), op }).await {
                Ok(ControlResponse::Reply(reply)) => Ok(reply),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(e),
            };
            (i, t.name, answer)
        });
    }
    let mut answers = asks.join_all().await;
    answers.sort_by_key(|(i, ..)| *i);
    Ok(answers.into_iter().map(|(_, name, answer)| (name, answer)).collect())
}
