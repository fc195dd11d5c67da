//! Requests to peers: unique ids, one pending slot per request, timeouts that tell the peer
//! to stop (`Cancel`), and errors that say why a peer did not answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tunnel_net::{Endpoint, NetError};
use tunnel_proto::message::{Op, PeerMessage, RemoteError, Reply};
use tunnel_proto::NodeId;

use crate::node::membership::ResolveError;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RpcError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("{peer} did not answer within {secs} s{}", .cause.as_ref().map(|c| format!(": {c}")).unwrap_or_default())]
    Timeout { peer: String, secs: u64, cause: Option<String> },
    /// The peer could not be reached within the call's connect timeout.
    #[error("{target}: {reason} (waited {secs} s; --connect-timeout sets how long)")]
    Unreachable { target: String, reason: String, secs: u64 },
    #[error("{peer}: {error}")]
    Remote { peer: String, error: RemoteError },
    #[error(transparent)]
    Net(#[from] NetError),
    /// A stream to the peer broke before its answer was complete.
    #[error("{peer}: {reason}")]
    Lost { peer: String, reason: String },
    #[error("the node is shutting down")]
    Closed,
    #[error(transparent)]
    Target(#[from] crate::fleet::targets::TargetError),
}

/// How long a request waits for its answer before it is sent again.
const RESEND_EVERY: Duration = Duration::from_millis(1000);

type Slot = oneshot::Sender<Result<Reply, RemoteError>>;

/// A request waiting for its answer: where the answer goes, and how to make it resend now.
struct Pending {
    slot: Slot,
    resend: Arc<Notify>,
}

pub(crate) struct Rpc {
    next_id: AtomicU64,
    pending: Mutex<HashMap<(NodeId, u64), Pending>>,
}

impl Rpc {
    pub(crate) fn new() -> Self {
        // Random start: ids stay unique across restarts of this node, which matters to peers
        // that remember recent ids to run each request at most once.
        Self { next_id: AtomicU64::new(rand::random::<u64>() >> 1), pending: Mutex::new(HashMap::new()) }
    }

    /// Sends `op` to `peer` and waits for its answer. `cause` explains a timeout (for
    /// instance a failed handshake) when the caller knows one.
    pub(crate) async fn call(
        &self,
        endpoint: &Endpoint,
        peer: NodeId,
        peer_name: &str,
        op: Op,
        timeout: Duration,
        cause: impl FnOnce() -> Option<String>,
    ) -> Result<Reply, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let resend = Arc::new(Notify::new());
        self.pending.lock().expect("rpc lock").insert((peer, id), Pending { slot: tx, resend: resend.clone() });
        let guard = PendingGuard { rpc: self, key: (peer, id) };
        let request = PeerMessage::Request { id, op };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = rx;
        loop {
            endpoint.send(&peer, request.clone()).await?;
            // Resend until answered: the peer runs each id at most once and answers a resend
            // from memory, so a request or answer lost on the way costs one interval.
            // Or at once when a new session forms or the relay is back (see `resend_now`).
            let wake = deadline.min(tokio::time::Instant::now() + RESEND_EVERY);
            let answer = tokio::select! {
                answer = tokio::time::timeout_at(wake, &mut rx) => answer,
                _ = resend.notified(), if wake < deadline => continue,
            };
            match answer {
                Ok(Ok(Ok(reply))) => return Ok(reply),
                Ok(Ok(Err(error))) => return Err(RpcError::Remote { peer: peer_name.to_owned(), error }),
                Ok(Err(_)) => return Err(RpcError::Closed),
                Err(_) if wake < deadline => continue,
                Err(_) => {
                    drop(guard);
                    let _ = endpoint.send(&peer, PeerMessage::Cancel { id }).await;
                    let secs = timeout.as_secs().max(1);
                    return Err(RpcError::Timeout { peer: peer_name.to_owned(), secs, cause: cause() });
                }
            }
        }
    }

    /// Delivers an answer; unknown ids (late, or never ours) are ignored.
    pub(crate) fn complete(&self, from: NodeId, id: u64, result: Result<Reply, RemoteError>) {
        if let Some(pending) = self.pending.lock().expect("rpc lock").remove(&(from, id)) {
            let _ = pending.slot.send(result);
        }
    }

    /// Resends now, rather than at the next resend tick, every request waiting on `peer` (on
    /// every peer for `None`): a new session with it formed, or the relay is back, so what
    /// was lost on the way can go again.
    pub(crate) fn resend_now(&self, peer: Option<NodeId>) {
        for ((to, _), pending) in self.pending.lock().expect("rpc lock").iter() {
            if peer.is_none_or(|p| p == *to) {
                pending.resend.notify_one();
            }
        }
    }
}

/// Removes the pending slot however the call ends (answer, timeout, or the caller gave up).
struct PendingGuard<'a> {
    rpc: &'a Rpc,
    key: (NodeId, u64),
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.rpc.pending.lock().expect("rpc lock").remove(&self.key);
    }
}
