//! The accept loop and its supervisor. Connection tasks live in a `JoinSet`; shutdown cancels
//! them (each sends `Restarting` first) and waits a bounded time; drop aborts everything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::RelayConfig;
use crate::metrics::{Metrics, Snapshot};
use crate::rooms::Rooms;

pub(crate) struct Shared {
    pub(crate) config: RelayConfig,
    pub(crate) rooms: Rooms,
    pub(crate) metrics: Metrics,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// A running relay. Dropping it aborts every task; [`Relay::shutdown`] is the graceful way.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    /// Binds `addr` (port 0 picks a free port) and starts serving.
    pub async fn bind(addr: &str, config: RelayConfig) -> Result<Self, RelayError> {
        let listener =
            TcpListener::bind(addr).await.map_err(|source| RelayError::Bind { addr: addr.to_owned(), source })?;
        let local = listener.local_addr().map_err(|source| RelayError::Bind { addr: addr.to_owned(), source })?;
        let shared = Arc::new(Shared { config, rooms: Rooms::default(), metrics: Metrics::default() });
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, shared.clone(), shutdown.clone()));
        info!(addr = %local, "relay listening");
        Ok(Self { addr: local, shared, shutdown, task: Some(task) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// URL of this relay for clients: `wss://` when it serves TLS.
    pub fn url(&self) -> String {
        let scheme = if self.shared.config.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn metrics(&self) -> Snapshot {
        let (rooms, peers) = self.shared.rooms.counts();
        self.shared.metrics.snapshot(rooms, peers)
    }

    /// Tells every peer to reconnect (`Restarting`), closes, and waits up to five seconds.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                warn!("relay shutdown took over 5 s; aborting the rest");
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut conns = JoinSet::new();
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    if conns.len() >= shared.config.max_connections {
                        Metrics::inc(&shared.metrics.rejected_connections);
                        drop(stream);
                        continue;
                    }
                    next_id += 1;
                    conns.spawn(crate::conn::run(stream, addr, next_id, shared.clone(), shutdown.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    // Connections saw the same cancellation and are sending `Restarting`; let them finish.
    while conns.join_next().await.is_some() {}
}
