//! Opening a forward: every check that can fail is made before anything is registered, so a
//! bad spec, an unknown peer, a port in use or a refusal leaves nothing half open.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::info;
use tunnel_proto::forward::{ConnectReply, ListenSpec};

use super::entry::{self, connect_kind, open_through, reply_reason};
use super::registry::{label, Entry, Stats};
use super::remote::{listen, Keeper};
use super::{ForwardError, ForwardInfo, ForwardKind, ForwardSpec, Forwards};
use crate::policy::host_port;

/// How long opening a forward waits for the exit to judge its destination.
const PROBE_WAIT: Duration = Duration::from_secs(30);

impl Forwards {
    /// Opens a forward and runs it in the node until closed. `held`: a `--foreground` client
    /// owns it (and closes it when it goes).
    pub async fn open(&self, node: &crate::Node, spec: ForwardSpec, held: bool) -> Result<ForwardInfo, ForwardError> {
        let err = |why: String| ForwardError(why);
        spec.validate().map_err(err)?;
        let dest = node.find_dest(&spec.via).await.map_err(|e| err(e.to_string()))?;
        let id = self.next_id();
        let label = label(id, spec.kind);
        let stats = Arc::new(Stats::new());
        let cancel = CancellationToken::new();
        let (listen_addr, task, reverse) = match spec.kind {
            ForwardKind::Local | ForwardKind::Socks => {
                let listener = entry::bind(&spec).await.map_err(err)?;
                if let Some((host, port)) = &spec.to {
                    // Ask the exit now: a refusal or a name it cannot resolve is reported here,
                    // not as a dropped connection later.
                    let kind = connect_kind(&dest, host.clone(), *port, true, label.clone());
                    let probe = tokio::time::timeout(PROBE_WAIT, open_through(node, dest.peer, kind)).await;
                    match probe {
                        Ok(Ok(_)) => {}
                        Ok(Err(reply)) => return Err(err(refused(&spec, &reply))),
                        Err(_) => {
                            return Err(err(format!("{} did not answer within {} s", spec.via, PROBE_WAIT.as_secs())))
                        }
                    }
                }
                let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| spec.listen_addr());
                let entry = entry::Entry { node: node.clone(), dest, spec: spec.clone(), label, stats: stats.clone() };
                let task = tokio::spawn(entry::serve(entry, listener, cancel.clone()));
                (addr, task, None)
            }
            ForwardKind::Remote => {
                let (host, port) = spec.to.clone().expect("validated: -R has a destination");
                // This node is the exit: its own policy must allow the destination.
                match super::exit::decide_and_connect(node, &host, port, true).await {
                    Ok(_) => {}
                    Err(Ok(reply)) => return Err(err(format!("{}: {}", host_port(&host, port), reply_reason(&reply)))),
                    Err(Err(refusal)) => return Err(err(format!("{}: {refusal}", host_port(&host, port)))),
                }
                let key = rand::random();
                let mut listen_spec = ListenSpec {
                    bind: spec.bind.to_string(),
                    port: spec.port,
                    public: spec.public,
                    key,
                    label: label.clone(),
                };
                let (stream, addr) = listen(node, dest.peer, &listen_spec)
                    .await
                    .map_err(|why| err(format!("{} cannot listen on {}: {why}", spec.via, spec.listen_addr())))?;
                // Listening again after an outage must take the same port, even if 0 was asked.
                if let Ok(got) = addr.parse::<std::net::SocketAddr>() {
                    listen_spec.port = got.port();
                }
                let keeper = Keeper {
                    node: node.clone(),
                    peer: dest.peer,
                    via: spec.via.clone(),
                    spec: listen_spec,
                    stats: stats.clone(),
                };
                let task = tokio::spawn(keeper.run(stream, cancel.clone()));
                (addr, task, Some((dest.peer, key)))
            }
        };
        info!(id, kind = %spec.kind, via = %spec.via, listen = %listen_addr, "forward open");
        let entry =
            Entry { spec, listen: listen_addr, stats, cancel, task: AbortOnDropHandle::new(task), reverse, held };
        Ok(self.insert(id, entry))
    }
}

fn refused(spec: &ForwardSpec, reply: &ConnectReply) -> String {
    let to = spec.to_text().unwrap_or_default();
    format!("{} will not forward to {to}: {}", spec.via, reply_reason(reply))
}
