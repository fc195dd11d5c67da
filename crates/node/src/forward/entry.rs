//! The entry of forwarded connections: a listener that takes TCP connections and carries
//! each to its exit through a stream. Also how any side opens such a stream: waiting
//! briefly for a peer that is away (a relay reconnecting), then for the exit's answer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use tunnel_net::{StreamReader, StreamWriter};
use tunnel_proto::forward::{ConnectFailure, ConnectReply, ConnectSpec};
use tunnel_proto::message::StreamKind;
use tunnel_proto::NodeId;

use super::pipe::{pipe, Counters};
use super::registry::Stats;
use super::reply::{answered, failed};
use super::{socks, ForwardKind, ForwardSpec};
use crate::node::Dest;

/// How long a new connection waits for a peer that is not reachable right now.
const PEER_WAIT: Duration = Duration::from_secs(10);
/// How often it looks again meanwhile.
const PEER_RETRY: Duration = Duration::from_millis(250);
/// How long the exit may take to answer once the stream is open (it resolves and connects
/// within its own timeouts first).
const ANSWER_WAIT: Duration = Duration::from_secs(25);
/// Connections one forward carries at once; more are turned away, not queued.
const MAX_CONNECTIONS: usize = 4096;

/// An open forward stream, after the exit said yes.
pub(super) struct Carried {
    pub(super) reader: StreamReader,
    pub(super) writer: StreamWriter,
    /// Bytes the destination sent right behind the answer.
    pub(super) first: Bytes,
    /// The address the exit connected to.
    pub(super) to: String,
}

/// Opens a `kind` stream to `peer` and waits for its [`ConnectReply`]. Any answer but
/// `Connected` (and any failure to get one) comes back as the `Err` reply.
pub(super) async fn open_through(node: &crate::Node, peer: NodeId, kind: StreamKind) -> Result<Carried, ConnectReply> {
    let give_up = tokio::time::Instant::now() + PEER_WAIT;
    let stream = loop {
        match node.open_stream(peer, kind.clone()).await {
            Ok(stream) => break stream,
            Err(e) if tokio::time::Instant::now() + PEER_RETRY < give_up => {
                debug!(error = %e, "waiting for the peer to open a forwarded connection");
                tokio::time::sleep(PEER_RETRY).await;
            }
            Err(e) => {
                let why = format!("peer not reachable for {} s: {e}", PEER_WAIT.as_secs());
                return Err(failed(ConnectFailure::Other, why));
            }
        }
    };
    match answered::<ConnectReply>(node, peer, stream, ANSWER_WAIT).await {
        Ok((stream, ConnectReply::Connected { to }, first)) => {
            Ok(Carried { reader: stream.reader, writer: stream.writer, first, to })
        }
        Ok((_, other, _)) => Err(other),
        Err(why) => Err(failed(ConnectFailure::Other, why)),
    }
}

/// The one-line reason in a reply that is not `Connected`.
pub(super) fn reply_reason(reply: &ConnectReply) -> String {
    match reply {
        ConnectReply::Connected { to } => format!("connected to {to}"),
        ConnectReply::Refused(why) => why.clone(),
        ConnectReply::Failed { message, .. } => message.clone(),
    }
}

/// The stream kind that carries a connection to `host:port` through `dest`.
pub(super) fn connect_kind(dest: &Dest, host: String, port: u16, probe: bool, label: String) -> StreamKind {
    let spec = ConnectSpec { host, port, probe, label };
    match &dest.ssh {
        None => StreamKind::Connect(spec),
        Some(host) => StreamKind::SshConnect { host: host.clone(), spec },
    }
}

/// Binds a forward's listener; the error names the address and why.
pub(super) async fn bind(spec: &ForwardSpec) -> Result<TcpListener, String> {
    let addr = SocketAddr::new(spec.bind, spec.port);
    TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {}: {e}", spec.listen_addr()))
}

/// What an entry listener needs to carry its connections.
pub(super) struct Entry {
    pub(super) node: crate::Node,
    pub(super) dest: Dest,
    pub(super) spec: ForwardSpec,
    pub(super) label: String,
    pub(super) stats: Arc<Stats>,
}

/// Accepts connections until the forward is closed; each is carried in its own task, and
/// all of them end when this does.
pub(super) async fn serve(entry: Entry, listener: TcpListener, cancel: CancellationToken) {
    let entry = Arc::new(entry);
    let problem = |why: String| {
        warn!(listen = %entry.spec.listen_addr(), %why, "forward listener");
        entry.stats.error(&why);
    };
    tokio::select! {
        _ = cancel.cancelled() => {}
        never = accept_each(&listener, |tcp, from| carry(entry.clone(), tcp, from), problem) => match never {},
    }
}

/// Accepts connections for as long as it runs, each carried by `carry` in its own task; the
/// tasks end when this future is dropped. Past [`MAX_CONNECTIONS`] new ones are turned away,
/// and that and accept errors are told to `problem`.
pub(super) async fn accept_each<F, Fut>(listener: &TcpListener, mut carry: F, problem: impl Fn(String)) -> Infallible
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((_, from)) if conns.len() >= MAX_CONNECTIONS => {
                    problem(format!("turned away {from}: {MAX_CONNECTIONS} connections already open"));
                }
                Ok((tcp, from)) => {
                    let _ = tcp.set_nodelay(true);
                    conns.spawn(carry(tcp, from));
                }
                Err(e) => {
                    // Out of file descriptors, usually: wait rather than spin.
                    problem(format!("accept failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn carry(entry: Arc<Entry>, mut tcp: TcpStream, from: SocketAddr) {
    let stats = &entry.stats;
    let _active = stats.connection();
    let (host, port) = match (&entry.spec.kind, &entry.spec.to) {
        (ForwardKind::Socks, _) => match socks::handshake(&mut tcp, entry.spec.socks_auth.as_ref()).await {
            Ok(target) => target,
            Err(why) => {
                debug!(%from, %why, "SOCKS handshake failed");
                return stats.error(&format!("SOCKS client {from}: {why}"));
            }
        },
        (_, Some((host, port))) => (host.clone(), *port),
        (_, None) => return,
    };
    let kind = connect_kind(&entry.dest, host.clone(), port, false, entry.label.clone());
    let opened = open_through(&entry.node, entry.dest.peer, kind).await;
    if entry.spec.kind == ForwardKind::Socks {
        if let Err(e) = socks::reply(&mut tcp, opened.as_ref().err()).await {
            return stats.error(&format!("SOCKS client {from}: {e}"));
        }
    }
    let carried = match opened {
        Ok(c) => c,
        Err(reply) => {
            let why = format!("{from} to {}: {}", crate::policy::host_port(&host, port), reply_reason(&reply));
            warn!(forward = %entry.label, "{why}");
            return stats.error(&why);
        }
    };
    let counters = Counters { sent: &stats.bytes_out, received: &stats.bytes_in };
    if let Err(why) = pipe(tcp, carried.first, carried.reader, carried.writer, counters).await {
        debug!(forward = %entry.label, %from, to = %carried.to, %why, "forwarded connection broke");
        stats.error(&format!("{from} to {}: {why}", carried.to));
    }
}
