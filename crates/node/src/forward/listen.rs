//! The listening side of a remote forward (`-R`): a peer asked this node to listen and send
//! each connection back. The listener lives exactly as long as the asking stream: when the
//! forward closes or its owner goes away, the port is freed and its connections end.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::{debug, info};
use tunnel_net::Stream;
use tunnel_proto::forward::{ListenReply, ListenSpec, ReverseSpec};
use tunnel_proto::message::StreamKind;
use tunnel_proto::NodeId;

use super::entry::{open_through, reply_reason};
use super::pipe::{pipe, Counters};
use super::reply::send_reply;
use crate::exec::{refuse, send_last};
use crate::policy::host_port;

/// Connections one remote forward's listener carries at once.
const MAX_CONNECTIONS: usize = 4096;

pub(crate) async fn serve_listen(node: crate::Node, stream: Stream, spec: ListenSpec) {
    let Stream { peer, mut reader, mut writer, .. } = stream;
    let label: String = spec.label.chars().take(128).collect();
    let detail = serde_json::json!({ "forward": label, "listen": host_port(&spec.bind, spec.port) });
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
    let mut conns = JoinSet::new();
    let why = loop {
        tokio::select! {
            // The owner never writes on this stream: anything but waiting means it is gone.
            end = reader.read() => break match end {
                Ok(_) => "the forward was closed".to_owned(),
                Err(e) => format!("the owner's stream ended: {e}"),
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) if conns.len() >= MAX_CONNECTIONS => drop(tcp),
                Ok((tcp, from)) => {
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(carry_back(node.clone(), peer, spec.key, tcp, from));
                }
                Err(e) => {
                    debug!(error = %e, "remote forward accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    };
    info!(%addr, %why, "remote forward listener closed");
}

/// Sends one accepted connection back to the forward's owner, which connects it.
async fn carry_back(node: crate::Node, owner: NodeId, key: u64, tcp: TcpStream, from: SocketAddr) {
    let kind = StreamKind::Reverse(ReverseSpec { key, from: from.to_string() });
    let carried = match open_through(&node, owner, kind).await {
        Ok(c) => c,
        Err(reply) => return debug!(%from, why = %reply_reason(&reply), "remote forward connection not carried"),
    };
    let (a, b) = (AtomicU64::new(0), AtomicU64::new(0));
    if let Err(why) =
        pipe(tcp, carried.first, carried.reader, carried.writer, Counters { sent: &a, received: &b }).await
    {
        debug!(%from, %why, "remote forward connection broke");
    }
}
