//! Helpers shared by the endpoint tests.

use std::time::Duration;

use tokio::sync::mpsc;
use tunnel_net::NetEvent;
use tunnel_proto::NodeId;

/// The first event `f` accepts, within `within`.
pub(crate) async fn wait_for<T>(
    rx: &mut mpsc::Receiver<NetEvent>,
    within: Duration,
    mut f: impl FnMut(NetEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(within, async {
        loop {
            if let Some(t) = f(rx.recv().await.expect("events open")) {
                return t;
            }
        }
    })
    .await
    .expect("event in time")
}

/// Waits until the relay says `id` is present.
pub(crate) async fn present(rx: &mut mpsc::Receiver<NetEvent>, id: NodeId) {
    wait_for(rx, Duration::from_secs(10), |e| matches!(e, NetEvent::PeerPresent(p) if p == id).then_some(())).await
}
