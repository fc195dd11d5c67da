//! Opening a forward: every check that can fail is made before anything is registered, so a
//! bad spec, an unknown peer, a port in use or a refusal leaves nothing half open.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::info;
use tunnel_proto::forward::ListenSpec;
use tunnel_proto::NodeId;

use super::entry::{self, connect_kind, open_through, reply_reason};
use super::registry::{label, Entry, Stats};
use super::remote::{listen, Keeper};
use super::{ForwardError, ForwardInfo, ForwardKind, ForwardSpec, Forwards};
use crate::node::Dest;
use crate::policy::host_port;

/// A forward's running task, once everything it needs is in place.
struct Started {
    listen: String,
    task: JoinHandle<()>,
    /// For `-R`: the listening peer and the key its connections come back with.
    reverse: Option<(NodeId, u64)>,
}

/// What starting either kind of forward needs.
struct Starting<'a> {
    node: &'a crate::Node,
    spec: &'a ForwardSpec,
    dest: Dest,
    label: String,
    stats: Arc<Stats>,
    cancel: CancellationToken,
}

impl Forwards {
    /// Opens a forward and runs it in the node until closed. `held`: a `--foreground` client
    /// owns it (and closes it when it goes).
    pub async fn open(&self, node: &crate::Node, spec: ForwardSpec, held: bool) -> Result<ForwardInfo, ForwardError> {
        spec.validate().map_err(ForwardError)?;
        let dest = node.find_dest(&spec.via).await.map_err(|e| ForwardError(e.to_string()))?;
        let id = self.reserve_id();
        let (stats, cancel) = (Arc::new(Stats::new()), CancellationToken::new());
        let starting = Starting {
            node,
            spec: &spec,
            dest,
            label: label(id, spec.kind),
            stats: stats.clone(),
            cancel: cancel.clone(),
        };
        let started = match spec.kind {
            ForwardKind::Local | ForwardKind::Socks => starting.entry().await,
            ForwardKind::Remote => starting.remote().await,
        };
        let started = started.map_err(|why| {
            self.release(id);
            ForwardError(why)
        })?;
        info!(id, kind = %spec.kind, via = %spec.via, listen = %started.listen, "forward open");
        let task = AbortOnDropHandle::new(started.task);
        let entry = Entry { spec, listen: started.listen, stats, cancel, task, reverse: started.reverse, held };
        Ok(self.insert(id, entry))
    }
}

impl Starting<'_> {
    /// `-L`/`-D`: the listener here, after asking the exit about a fixed destination now, so
    /// a refusal or a name it cannot resolve is reported here, not as a dropped connection.
    async fn entry(self) -> Result<Started, String> {
        let spec = self.spec;
        let listener = entry::bind(spec).await?;
        if let Some((host, port)) = &spec.to {
            let kind = connect_kind(&self.dest, host.clone(), *port, true, self.label.clone());
            if let Err(reply) = open_through(self.node, self.dest.peer, kind).await {
                let to = host_port(host, *port);
                return Err(format!("{} will not forward to {to}: {}", spec.via, reply_reason(&reply)));
            }
        }
        let listen = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| spec.listen_addr());
        let entry = entry::Entry {
            node: self.node.clone(),
            dest: self.dest,
            spec: spec.clone(),
            label: self.label,
            stats: self.stats,
        };
        Ok(Started { listen, task: tokio::spawn(entry::serve(entry, listener, self.cancel)), reverse: None })
    }

    /// `-R`: this node is the exit, so its own policy must allow the destination first; then
    /// the peer listens.
    async fn remote(self) -> Result<Started, String> {
        let spec = self.spec;
        let (host, port) = spec.to.clone().expect("validated: -R has a destination");
        match super::exit::decide_and_connect(self.node, &host, port, true).await {
            Ok(_) => {}
            Err(Ok(reply)) => return Err(format!("{}: {}", host_port(&host, port), reply_reason(&reply))),
            Err(Err(refusal)) => return Err(format!("{}: {refusal}", host_port(&host, port))),
        }
        let key = rand::random();
        let mut listen_spec =
            ListenSpec { bind: spec.bind.to_string(), port: spec.port, public: spec.public, key, label: self.label };
        let (stream, addr) = listen(self.node, &self.dest, &listen_spec)
            .await
            .map_err(|why| format!("{} cannot listen on {}: {why}", spec.via, spec.listen_addr()))?;
        // Listening again after an outage must take the same port, even if 0 was asked.
        if let Ok(got) = addr.parse::<std::net::SocketAddr>() {
            listen_spec.port = got.port();
        }
        let peer = self.dest.peer;
        let keeper = Keeper {
            node: self.node.clone(),
            dest: self.dest,
            via: spec.via.clone(),
            spec: listen_spec,
            stats: self.stats,
        };
        Ok(Started { listen: addr, task: tokio::spawn(keeper.run(stream, self.cancel)), reverse: Some((peer, key)) })
    }
}
