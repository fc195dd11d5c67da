//! The exit of a forwarded connection: the node that connects to the destination. It decides
//! under its own policy, audits the connection (`forward.connect`, or `forward.check` for a
//! probe), answers with one [`ConnectReply`], then carries the bytes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;
use tunnel_net::Stream;
use tunnel_proto::forward::{ConnectFailure, ConnectReply, ConnectSpec, ReverseSpec};
use tunnel_proto::NodeId;

use super::pipe::{pipe, Counters};
use super::registry::ReverseTarget;
use super::reply::{clip, failed, send_reply};
use crate::policy::{host_port, Refusal};
use crate::services::exec::{refuse, send_last};

/// How long resolving the destination's name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connecting (all of the name's addresses together) may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The addresses `host` stands for: itself if it is an IP literal, else what it resolves to.
async fn resolve(host: &str, port: u16) -> Result<Vec<IpAddr>, ConnectReply> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let unreachable = |m: String| failed(ConnectFailure::HostUnreachable, m);
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => {
            let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            ips.dedup();
            if ips.is_empty() {
                return Err(unreachable(format!("{host} resolves to no address")));
            }
            Ok(ips)
        }
        Ok(Err(e)) => Err(unreachable(format!("cannot resolve {host}: {e}"))),
        Err(_) => Err(unreachable(format!("resolving {host} timed out after {} s", RESOLVE_TIMEOUT.as_secs()))),
    }
}

fn connect_failure(e: &std::io::Error) -> ConnectFailure {
    const ENETUNREACH: i32 = 101;
    const EHOSTUNREACH: i32 = 113;
    match (e.kind(), e.raw_os_error()) {
        (std::io::ErrorKind::ConnectionRefused, _) => ConnectFailure::ConnectionRefused,
        (_, Some(ENETUNREACH)) => ConnectFailure::NetworkUnreachable,
        (_, Some(EHOSTUNREACH)) => ConnectFailure::HostUnreachable,
        (std::io::ErrorKind::TimedOut, _) => ConnectFailure::TimedOut,
        _ => ConnectFailure::Other,
    }
}

/// Tries each address in turn within [`CONNECT_TIMEOUT`]; the last error explains a failure.
async fn connect_any(addrs: &[IpAddr], port: u16) -> Result<(TcpStream, SocketAddr), ConnectReply> {
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    let mut last = failed(ConnectFailure::HostUnreachable, "no address to connect to".into());
    for ip in addrs {
        let addr = SocketAddr::new(*ip, port);
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                return Ok((tcp, addr));
            }
            Ok(Err(e)) => last = failed(connect_failure(&e), format!("cannot connect to {addr}: {e}")),
            Err(_) => {
                let why = format!("connecting to {addr} timed out after {} s", CONNECT_TIMEOUT.as_secs());
                return Err(failed(ConnectFailure::TimedOut, why));
            }
        }
    }
    Err(last)
}

/// Resolves, applies policy, and connects: the socket, or the answer that explains why not.
/// `Ok(None)` is a probe's success: allowed, nothing connected.
pub(super) async fn decide_and_connect(node: &crate::Node, host: &str, port: u16, probe: bool) -> Decided<TcpStream> {
    let addrs = resolve(host, port).await.map_err(Ok)?;
    let allowed = node.policy_check(|p| p.check_forward(host, port, &addrs)).map_err(Err)?;
    if probe {
        return Ok(None);
    }
    match connect_any(&allowed, port).await {
        Ok((tcp, addr)) => Ok(Some((tcp, addr.to_string()))),
        Err(answer) => Err(Ok(answer)),
    }
}

/// Serves a `Connect` stream from a peer (`-L`, `-D`).
pub(crate) async fn serve_connect(node: crate::Node, stream: Stream, spec: ConnectSpec) {
    let Stream { peer, reader, writer, .. } = stream;
    let detail = serde_json::json!({ "forward": clip(&spec.label), "to": host_port(&spec.host, spec.port) });
    let audited = Audited { node: &node, peer, event: event(&spec), detail };
    if let Err(refusal) = node.policy_check(|p| p.check_caller(&peer)) {
        return audited.conclude(Err(Err(refusal)), reader, writer).await;
    }
    let connected = decide_and_connect(&node, &spec.host, spec.port, spec.probe).await;
    audited.answer(connected, reader, writer, None).await;
}

fn event(spec: &ConnectSpec) -> &'static str {
    if spec.probe {
        "forward.check"
    } else {
        "forward.connect"
    }
}

/// What decided: resolving, policy, connecting. `Ok(Some)` is the connected socket and the
/// address it reached; `Ok(None)` a probe's yes; `Err(Err)` a policy refusal.
type Decided<S> = Result<Option<(S, String)>, Result<ConnectReply, Refusal>>;

/// One connection's caller and audit record.
struct Audited<'a> {
    node: &'a crate::Node,
    peer: NodeId,
    event: &'static str,
    detail: serde_json::Value,
}

impl Audited<'_> {
    /// Audits the decision, answers, and carries the connection if there is one (counted
    /// toward `forward`, for this node's own `-R` forwards).
    async fn answer<S: AsyncRead + AsyncWrite>(
        self,
        decided: Decided<S>,
        reader: tunnel_net::StreamReader,
        writer: tunnel_net::StreamWriter,
        forward: Option<&ReverseTarget>,
    ) {
        match decided {
            Ok(Some((socket, to))) => self.carry(socket, to, reader, writer, forward).await,
            Ok(None) => self.conclude(Ok(()), reader, writer).await,
            Err(declined) => self.conclude(Err(declined), reader, writer).await,
        }
    }

    /// Audits and sends an answer that carries nothing: a probe's yes, a failure, a refusal.
    /// The reader is held until the answer is sent, so no reset can overtake it.
    async fn conclude(
        mut self,
        outcome: Result<(), Result<ConnectReply, Refusal>>,
        _reader: tunnel_net::StreamReader,
        writer: tunnel_net::StreamWriter,
    ) {
        let (node, peer, event) = (self.node, self.peer, self.event);
        match outcome {
            Err(Err(refusal)) => refuse(node, peer, event, refusal, self.detail, writer, ConnectReply::Refused).await,
            Err(Ok(answer)) => {
                if let ConnectReply::Failed { message, .. } = &answer {
                    self.detail["error"] = message.clone().into();
                }
                node.audit_op(peer, event, "failed", None, self.detail, None);
                send_last(writer, &answer).await;
            }
            Ok(()) => {
                node.audit_op(peer, event, "allowed", None, self.detail, None);
                send_last(writer, &ConnectReply::Connected { to: String::new() }).await;
            }
        }
    }

    /// Audits the connection to `to`, answers, and carries its bytes.
    async fn carry<S: AsyncRead + AsyncWrite>(
        mut self,
        socket: S,
        to: String,
        reader: tunnel_net::StreamReader,
        mut writer: tunnel_net::StreamWriter,
        forward: Option<&ReverseTarget>,
    ) {
        self.detail["address"] = to.clone().into();
        self.node.audit_op(self.peer, self.event, "allowed", None, self.detail, None);
        if send_reply(&mut writer, &ConnectReply::Connected { to: to.clone() }).await.is_err() {
            return;
        }
        let result = match forward {
            // What comes from the stream goes to the destination.
            Some(f) => {
                let _active = f.stats.connection();
                let counters = Counters { sent: &f.stats.bytes_in, received: &f.stats.bytes_out };
                tokio::select! {
                    r = pipe(socket, Bytes::new(), reader, writer, counters) => r,
                    _ = f.cancel.cancelled() => Err("the forward was closed".into()),
                }
                .inspect_err(|e| f.stats.error(e))
            }
            None => pipe(socket, Bytes::new(), reader, writer, Counters::uncounted()).await,
        };
        if let Err(e) = result {
            debug!(%to, error = %e, "forwarded connection ended");
        }
    }
}

/// Serves an `SshConnect` stream: the same decision, then a `direct-tcpip` channel on one of
/// this node's SSH hosts (which resolves the name itself).
pub(crate) async fn serve_ssh_connect(node: crate::Node, stream: Stream, host: String, spec: ConnectSpec) {
    let Stream { peer, reader, writer, .. } = stream;
    let detail =
        serde_json::json!({ "forward": clip(&spec.label), "ssh_host": host, "to": host_port(&spec.host, spec.port) });
    let audited = Audited { node: &node, peer, event: event(&spec), detail };
    let literal: Vec<IpAddr> = spec.host.parse().into_iter().collect();
    let checked = node.policy_check(|p| {
        p.check_caller(&peer)?;
        p.check_forward(&spec.host, spec.port, &literal)
    });
    let pool = match checked.and_then(|_| crate::ssh::pool_or_refuse(&node, &host)) {
        Ok(pool) => pool,
        Err(refusal) => return audited.conclude(Err(Err(refusal)), reader, writer).await,
    };
    if spec.probe {
        return audited.conclude(Ok(()), reader, writer).await;
    }
    let channel = match pool.direct_tcpip(&host, &spec.host, spec.port).await {
        Ok(channel) => channel,
        Err(e) => {
            let why = match &e {
                tunnel_ssh::SshError::Channel { .. } => ConnectFailure::ConnectionRefused,
                tunnel_ssh::SshError::Timeout { .. } => ConnectFailure::TimedOut,
                tunnel_ssh::SshError::Connect { .. } => ConnectFailure::HostUnreachable,
                _ => ConnectFailure::Other,
            };
            return audited.conclude(Err(Ok(failed(why, e.to_string()))), reader, writer).await;
        }
    };
    // The channel keeps its pool slot for as long as `channel` lives (to the end of this).
    let tunnel_ssh::TcpipStream { stream: socket, .. } = channel;
    let to = format!("{} via ssh:{host}", host_port(&spec.host, spec.port));
    audited.carry(socket, to, reader, writer, None).await;
}

/// Serves a `Reverse` stream: a connection a peer's `-R` listener accepted for one of this
/// node's forwards. The destination is the forward's own; the peer cannot choose it.
pub(crate) async fn serve_reverse(node: crate::Node, stream: Stream, spec: ReverseSpec) {
    let Stream { peer, reader, writer, .. } = stream;
    let Some(forward) = node.forwards().reverse(peer, spec.key) else {
        let why = "no remote forward of this node matches; it was closed".to_owned();
        return send_last(writer, &ConnectReply::Refused(why)).await;
    };
    let (host, port) = forward.to.clone();
    let detail =
        serde_json::json!({ "forward": forward.label, "to": host_port(&host, port), "from": clip(&spec.from) });
    let connected = decide_and_connect(&node, &host, port, false).await;
    if let Err(Ok(ConnectReply::Failed { message, .. }) | Err(Refusal { rule: message })) = &connected {
        forward.stats.error(message);
    }
    let audited = Audited { node: &node, peer, event: "forward.connect", detail };
    audited.answer(connected, reader, writer, Some(&forward)).await;
}
