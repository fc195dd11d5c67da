//! One node per machine for any number of `tunnel mcp` sessions, with no `tunnel run`.
//!
//! The first session hosts the node (it holds the host lock and serves the control socket);
//! the others attach to the socket and each waits, on a blocking thread, for the lock. The
//! kernel frees it the moment the host exits, so one waiter takes over at once: it starts
//! the node (same key, so the relay sees one node id at a time) and serves the socket. Until
//! then a call waits, bounded, for the new host; a call that was in flight on the old host's
//! socket fails with an error that says to retry.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{info, warn};
use tunnel_node::control::{BoundControl, ControlError, ControlServer, HostLock};
use tunnel_node::{Node, NodeConfig};

/// How long a call waits for another session to take over the node.
const TAKEOVER_WAIT: Duration = Duration::from_secs(15);

/// What `tunnel status` says of a node a session hosts.
pub const RUNS_AS: &str = "tunnel mcp (foreground)";

/// Makes this machine's node config when this session must host it.
pub type MakeConfig = Box<dyn Fn() -> Result<NodeConfig, String> + Send + Sync>;

pub struct SharedNode {
    socket: PathBuf,
    make_config: MakeConfig,
    hosted: Mutex<Option<Hosted>>,
    took_over: Notify,
}

struct Hosted {
    node: Node,
    /// `None` for a node this session only uses (a session handed to `tunnel run`): it
    /// neither serves the socket nor stops the node.
    control: Option<ControlServer>,
}

impl SharedNode {
    /// The node of the process this session is served in (a session `tunnel mcp` handed to
    /// `tunnel run`); the session never stops it.
    pub fn of(node: Node) -> Arc<Self> {
        Self::never_hosting(PathBuf::new(), Some(Hosted { node, control: None }))
    }

    /// Attached to the node of the process behind `socket`, never hosting it: for a session
    /// `tunnel run` handed back as it stopped. Hosting would keep `tunnel run` from starting
    /// again; calls wait for it instead, bounded.
    pub fn attached(socket: PathBuf) -> Arc<Self> {
        Self::never_hosting(socket, None)
    }

    /// A session that uses a node it is never to host: `hosted` has it in this process, else
    /// it is behind `socket`.
    fn never_hosting(socket: PathBuf, hosted: Option<Hosted>) -> Arc<Self> {
        Arc::new(Self {
            socket,
            make_config: Box::new(|| Err("this session never hosts the node: its host is tunnel run".into())),
            hosted: Mutex::new(hosted),
            took_over: Notify::new(),
        })
    }

    /// Hosts the node if no process does, else attaches and waits to take over.
    pub async fn start(socket: PathBuf, make_config: MakeConfig) -> Result<Arc<Self>, String> {
        let shared = Arc::new(Self { socket, make_config, hosted: Mutex::new(None), took_over: Notify::new() });
        let lock = HostLock::try_acquire(&shared.socket).map_err(|e| format!("{}: {e}", shared.socket.display()))?;
        match lock {
            Some(lock) => shared.host(lock).await?,
            // A node that `tunnel run` or the service hosts is theirs to restart: taking it
            // over would keep the service from starting again. Calls wait for it instead.
            None if shared.host_is_a_session().await => {
                info!(socket = %shared.socket.display(), "attached to the node another tunnel mcp session hosts");
                tokio::spawn(Self::wait_to_take_over(Arc::downgrade(&shared), shared.socket.clone()));
            }
            None => info!(socket = %shared.socket.display(), "attached to this machine's running node"),
        }
        Ok(shared)
    }

    async fn host_is_a_session(&self) -> bool {
        match self.status().await {
            Some(s) => s.runs_as == RUNS_AS,
            // Between hosts: whoever takes the lock next hosts, and may as well be us.
            None => true,
        }
    }

    /// The node's own account of itself.
    pub async fn status(&self) -> Option<tunnel_node::NodeStatus> {
        if let Some(node) = self.node() {
            return Some(node.status());
        }
        let mut client = tunnel_node::control::ControlClient::connect(&self.socket).await.ok()?;
        match client.request(&tunnel_node::control::ControlRequest::Status).await {
            Ok(tunnel_node::control::ControlResponse::Status(s)) => Some(*s),
            _ => None,
        }
    }

    /// The node, when this session hosts it.
    pub fn node(&self) -> Option<Node> {
        self.hosted.lock().expect("hosted lock").as_ref().map(|h| h.node.clone())
    }

    async fn host(self: &Arc<Self>, lock: HostLock) -> Result<(), String> {
        let config = tunnel_node::NodeConfig { runs_as: RUNS_AS.into(), ..(self.make_config)()? };
        let bound = BoundControl::bind_locked(&self.socket, lock).await.map_err(|e| e.to_string())?;
        let node = Node::start(config).await.map_err(|e| format!("starting this machine's node: {e}"))?;
        let (yield_tx, mut yield_rx) = tokio::sync::mpsc::channel(1);
        let control = bound.serve_yielding(node.clone(), yield_tx);
        *self.hosted.lock().expect("hosted lock") = Some(Hosted { node, control: Some(control) });
        self.took_over.notify_waiters();
        // A `tunnel run` starting here (the service, say) gets the node; this session then
        // attaches to it like the others.
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            if yield_rx.recv().await.is_some() {
                if let Some(me) = me.upgrade() {
                    info!("handing this machine's node to the `tunnel run` that asked for it");
                    me.shutdown().await;
                }
            }
        });
        Ok(())
    }

    async fn wait_to_take_over(me: std::sync::Weak<Self>, socket: PathBuf) {
        let lock = loop {
            match HostLock::acquire(&socket).await {
                // A `tunnel run` is taking the node over: let it have the lock.
                Ok(lock) if HostLock::handover_pending(&socket) => {
                    drop(lock);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Ok(lock) => break lock,
                Err(e) => {
                    return warn!(error = %e, "cannot wait for the node's host lock; this session will not take over")
                }
            }
        };
        let Some(me) = me.upgrade() else { return };
        info!("the session hosting this machine's node ended; this one hosts it now");
        if let Err(e) = me.host(lock).await {
            warn!(error = %e, "taking over this machine's node failed");
        }
    }

    /// A control connection to the node: in process when hosting, else through the socket,
    /// waiting (bounded) for a takeover when the host has just gone.
    pub(crate) async fn connect(&self) -> Result<crate::backend::Conn, String> {
        let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
        loop {
            if let Some(node) = self.node() {
                return Ok(Box::new(tunnel_node::control::connect_in_process(&node)));
            }
            let woken = self.took_over.notified();
            match tunnel_node::control::ControlClient::connect(&self.socket).await {
                Ok(client) => return Ok(Box::new(client.into_stream())),
                Err(ControlError::NotRunning { .. }) => {}
                Err(e) => return Err(e.to_string()),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "this machine's node went away and no session took it over within {} s; retry, or start `tunnel run`",
                    TAKEOVER_WAIT.as_secs()
                ));
            }
            // Another session may be the one taking over: poll its socket too.
            let _ = tokio::time::timeout(Duration::from_millis(100), woken).await;
        }
    }

    /// Leaves the room if this session hosts the node.
    pub async fn shutdown(&self) {
        let hosted = {
            let mut hosted = self.hosted.lock().expect("hosted lock");
            if hosted.as_ref().is_some_and(|h| h.control.is_none()) {
                return; // not ours to stop
            }
            hosted.take()
        };
        if let Some(h) = hosted {
            // Leave the room before letting go of the host lock: the next host joins with the
            // same node id, and the relay would count that as displacing a live connection.
            h.node.shutdown().await;
            drop(h.control);
        }
    }
}
