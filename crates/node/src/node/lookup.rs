//! Finding a peer, and waiting (bounded) for one that cannot be reached yet.
//!
//! A call issued while the relay is down, or while its peer is away (restarting, say), waits
//! up to the call's connect timeout for the peer to be reachable, then fails saying why:
//! "relay unreachable since 12:03:04 UTC: connection refused", "peer web-1 left the room 40 s
//! ago". A name nobody in the room ever had fails at once: waiting would not help a typo.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use tunnel_proto::NodeId;

use super::{Node, DISCOVER_WAIT};
use crate::node::membership::ResolveError;
use crate::node::rpc::RpcError;

/// How long a call waits for its peer to become reachable, unless the caller says otherwise.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(15);
/// How often a waiting call looks again, besides being woken by membership changes.
const RECHECK: Duration = Duration::from_millis(100);

tokio::task_local! {
    /// The connect timeout of the call this task serves (a control connection's, an MCP
    /// tool call's). Tasks spawned by the call use the default.
    static CONNECT_TIMEOUT: Duration;
}

/// Runs `call` with `bound` as the connect timeout of every lookup and peer contact in it.
pub async fn with_connect_timeout<F: Future>(bound: Duration, call: F) -> F::Output {
    CONNECT_TIMEOUT.scope(bound, call).await
}

/// `task` with the connect timeout of the call under way: for what a call spawns (task-locals
/// do not cross `tokio::spawn`).
pub(crate) fn inherit<F: Future>(task: F) -> impl Future<Output = F::Output> {
    CONNECT_TIMEOUT.scope(connect_timeout(), task)
}

/// The connect timeout of the call under way.
pub(crate) fn connect_timeout() -> Duration {
    CONNECT_TIMEOUT.try_with(|d| *d).unwrap_or(CONNECT_TIMEOUT_DEFAULT)
}

impl Node {
    /// [`Node::resolve`], after discovering peers if the target is not known yet, and waiting
    /// up to the connect timeout for a peer that left or is behind a relay that is down.
    pub async fn find(&self, target: &str) -> Result<NodeId, RpcError> {
        let bound = connect_timeout();
        let deadline = Instant::now() + bound;
        let mut discovered = false;
        loop {
            let changes = self.inner.members.lock().expect("members lock").changes();
            let changed = changes.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.resolve(target) {
                Err(RpcError::Resolve(ResolveError::NotFound { .. })) => {}
                found => return found,
            }
            if !discovered {
                // Present but not yet greeted: ask who they are, once.
                discovered = true;
                self.discover(DISCOVER_WAIT.min(deadline.saturating_duration_since(Instant::now()))).await;
                continue;
            }
            let Some(reason) = self.unreachable_because(Some(target)) else { return self.resolve(target) };
            if Instant::now() >= deadline {
                return Err(RpcError::Unreachable { target: target.to_owned(), reason, secs: bound.as_secs() });
            }
            tokio::select! {
                _ = changed => self.discover(DISCOVER_WAIT.min(RECHECK * 10)).await,
                _ = tokio::time::sleep(RECHECK) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Waits until `peer` can be reached (in the room, and the relay up or a direct path to
    /// it), at most the connect timeout; fails naming why not.
    pub(crate) async fn reachable(&self, peer: NodeId) -> Result<(), RpcError> {
        let bound = connect_timeout();
        let deadline = Instant::now() + bound;
        let endpoint = &self.inner.endpoint;
        loop {
            let direct = endpoint.path(&peer).direct.is_some();
            let reason = if peer == self.id() || (direct && endpoint.is_present(&peer)) {
                None
            } else if let Some(relay_down) = self.unreachable_because(None) {
                Some(relay_down)
            } else if !endpoint.is_present(&peer) {
                let short = peer.short();
                let departed = self.inner.members.lock().expect("members lock").departed(&short);
                Some(match departed {
                    Some((name, ago)) => format!("peer {name} left the room {} s ago", ago.as_secs()),
                    None => format!("peer {short} is not in the room"),
                })
            } else {
                None
            };
            let Some(reason) = reason else { return Ok(()) };
            if Instant::now() >= deadline {
                let name = self.inner.members.lock().expect("members lock").name_of(&peer);
                return Err(RpcError::Unreachable { target: name, reason, secs: bound.as_secs() });
            }
            tokio::time::sleep(RECHECK.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// Why a call cannot reach its peer now, if there is a reason to wait for it: the relay
    /// is down, or (for a lookup by `target`) the peer it names left the room.
    pub(crate) fn unreachable_because(&self, target: Option<&str>) -> Option<String> {
        if let Some(relay) = self.inner.endpoint.relay_status().filter(|r| !r.connected) {
            let error = relay.last_error.map(|e| format!(": {e}")).unwrap_or_default();
            return Some(format!("relay unreachable since {}{error}", clock(relay.since)));
        }
        let (name, ago) = self.inner.members.lock().expect("members lock").departed(target?)?;
        Some(format!("peer {name} left the room {} s ago", ago.as_secs()))
    }
}

/// `12:03:04 UTC`: a time of day, enough to match a log line.
fn clock(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() % 86_400;
    format!("{:02}:{:02}:{:02} UTC", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_reads_as_a_time_of_day() {
        assert_eq!(clock(UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 12 * 3600 + 3 * 60 + 4)), "12:03:04 UTC");
    }

    #[tokio::test]
    async fn the_connect_timeout_is_the_calls_or_the_default() {
        assert_eq!(connect_timeout(), CONNECT_TIMEOUT_DEFAULT);
        let inner = with_connect_timeout(Duration::from_secs(2), async { connect_timeout() }).await;
        assert_eq!(inner, Duration::from_secs(2));
    }
}
