//! The listening side of a remote forward (`-R`): a peer asked this node to listen and send
//! each connection back. The listener lives exactly as long as the asking stream: when the
//! forward closes or its owner goes away, the port is freed and its connections end.

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpListener;
use tracing::{debug, info};
use tunnel_net::Stream;
use tunnel_proto::forward::{ListenReply, ListenSpec, ReverseSpec};
use tunnel_proto::message::StreamKind;
use tunnel_proto::NodeId;

use super::entry::{accept_each, open_through, reply_reason};
use super::pipe::{pipe, Counters};
use super::reply::{clip, send_reply};
use crate::policy::host_port;
use crate::services::exec::{refuse, send_last};

pub(crate) async fn serve_listen(node: crate::Node, stream: Stream, spec: ListenSpec) {
    let Stream { peer, mut reader, mut writer, .. } = stream;
    let detail = serde_json::json!({ "forward": clip(&spec.label), "listen": host_port(&spec.bind, spec.port) });
    let bind: IpAddr = match spec.bind.parse() {
        Ok(ip) => ip,
        Err(_) => {
            return send_last(writer, &ListenReply::Failed(format!("{:?} is not an IP address", spec.bind))).await
        }
    };
    let checked = node.policy_check(|p| {
        p.check_caller(&peer)?;
        p.check_listen(bind, spec.port, spec.public)
    });
    if let Err(refusal) = checked {
        return refuse(&node, peer, "forward.listen", refusal, detail, writer, ListenReply::Refused).await;
    }
    let listener = match TcpListener::bind(SocketAddr::new(bind, spec.port)).await {
        Ok(l) => l,
        Err(e) => {
            let why = format!("cannot listen on {}: {e}", host_port(&spec.bind, spec.port));
            node.audit_op(peer, "forward.listen", "failed", None, detail, None);
            return send_last(writer, &ListenReply::Failed(why)).await;
        }
    };
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    node.audit_op(peer, "forward.listen", "allowed", None, detail, None);
    if send_reply(&mut writer, &ListenReply::Listening { addr: addr.clone() }).await.is_err() {
        return;
    }
    info!(%addr, for_peer = %peer.short(), "listening for a remote forward");
    // The owner never writes on this stream: anything but waiting means it is gone.
    let carry = |tcp, from| carry_back(node.clone(), peer, spec.key, tcp, from);
    let why = tokio::select! {
        end = reader.read() => match end {
            Ok(_) => "the forward was closed".to_owned(),
            Err(e) => format!("the owner's stream ended: {e}"),
        },
        never = accept_each(&listener, carry, |why| debug!(%why, "remote forward listener")) => match never {},
    };
    info!(%addr, %why, "remote forward listener closed");
}

/// [`serve_listen`] on SSH host `host`: the host listens (`tcpip-forward`) for as long as
/// the asking stream lives, and each connection comes back the same way. This node's policy
/// decides, as for a listener of its own.
pub(crate) async fn serve_ssh_listen(node: crate::Node, stream: Stream, host: String, spec: ListenSpec) {
    let Stream { peer, mut reader, mut writer, .. } = stream;
    let detail = serde_json::json!({
        "forward": clip(&spec.label), "ssh_host": host, "listen": host_port(&spec.bind, spec.port),
    });
    let Ok(bind) = spec.bind.parse::<IpAddr>() else {
        return send_last(writer, &ListenReply::Failed(format!("{:?} is not an IP address", spec.bind))).await;
    };
    let checked = node.policy_check(|p| {
        p.check_caller(&peer)?;
        p.check_listen(bind, spec.port, spec.public)
    });
    let pool = match checked.and_then(|()| crate::ssh::pool_or_refuse(&node, &host)) {
        Ok(pool) => pool,
        Err(refusal) => return refuse(&node, peer, "ssh.listen", refusal, detail, writer, ListenReply::Refused).await,
    };
    let mut listener = match pool.remote_listen(&host, &spec.bind, spec.port).await {
        Ok(l) => l,
        Err(e) => {
            node.audit_op(peer, "ssh.listen", "failed", None, detail, None);
            return send_last(writer, &ListenReply::Failed(e.to_string())).await;
        }
    };
    let addr = host_port(&spec.bind, listener.port);
    node.audit_op(peer, "ssh.listen", "allowed", None, detail, None);
    if send_reply(&mut writer, &ListenReply::Listening { addr: addr.clone() }).await.is_err() {
        return;
    }
    info!(%host, %addr, for_peer = %peer.short(), "an SSH host listens for a remote forward");
    let why = loop {
        tokio::select! {
            end = reader.read() => break match end {
                Ok(_) => "the forward was closed".to_owned(),
                Err(e) => format!("the owner's stream ended: {e}"),
            },
            accepted = listener.accept() => match accepted {
                Some((channel, from)) => {
                    tokio::spawn(carry_back(node.clone(), peer, spec.key, channel, from));
                }
                None => break format!("the session to {host} ended"),
            },
        }
    };
    info!(%host, %addr, %why, "remote forward listener on an SSH host closed");
}

/// Sends one accepted connection back to the forward's owner, which connects it.
async fn carry_back<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    node: crate::Node,
    owner: NodeId,
    key: u64,
    socket: S,
    from: impl std::fmt::Display,
) {
    let kind = StreamKind::Reverse(ReverseSpec { key, from: from.to_string() });
    let carried = match open_through(&node, owner, kind).await {
        Ok(c) => c,
        Err(reply) => return debug!(%from, why = %reply_reason(&reply), "remote forward connection not carried"),
    };
    if let Err(why) = pipe(socket, carried.first, carried.reader, carried.writer, Counters::uncounted()).await {
        debug!(%from, %why, "remote forward connection broke");
    }
}
