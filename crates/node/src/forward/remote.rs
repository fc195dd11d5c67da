//! The owner's side of a remote forward (`-R`): keeps a `Listen` stream open to the peer that
//! listens, and opens it again (with backoff) whenever the peer restarts or the stream breaks,
//! so the forward comes back on its own after an outage.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tunnel_net::Stream;
use tunnel_proto::forward::{ListenReply, ListenSpec};
use tunnel_proto::message::StreamKind;

use crate::Dest;

use super::registry::Stats;
use super::reply::answered;

/// How long the listening peer may take to answer.
const ANSWER_WAIT: Duration = Duration::from_secs(15);
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Asks `dest` (a peer, or an SSH host through its peer) to listen; the stream that keeps
/// the listener, and the address it got.
pub(super) async fn listen(node: &crate::Node, dest: &Dest, spec: &ListenSpec) -> Result<(Stream, String), String> {
    let kind = match &dest.ssh {
        None => StreamKind::Listen(spec.clone()),
        Some(host) => StreamKind::SshListen { host: host.clone(), spec: spec.clone() },
    };
    let peer = dest.peer;
    let stream = node.open_stream(peer, kind).await.map_err(|e| e.to_string())?;
    match answered::<ListenReply>(node, peer, stream, ANSWER_WAIT).await? {
        (stream, ListenReply::Listening { addr }, _) => Ok((stream, addr)),
        (_, ListenReply::Refused(why) | ListenReply::Failed(why), _) => Err(why),
    }
}

/// What keeps one remote forward's listener.
pub(super) struct Keeper {
    pub(super) node: crate::Node,
    pub(super) dest: Dest,
    pub(super) via: String,
    pub(super) spec: ListenSpec,
    pub(super) stats: Arc<Stats>,
}

impl Keeper {
    /// Runs until the forward is closed (the task is aborted, which drops the stream and so
    /// closes the listener on the peer).
    pub(super) async fn run(self, mut held: Stream, cancel: CancellationToken) {
        loop {
            let why = tokio::select! {
                _ = cancel.cancelled() => return,
                end = held.reader.read() => match end {
                    Ok(_) => "it closed the listener".to_owned(),
                    Err(e) => e.to_string(),
                },
            };
            warn!(via = %self.via, %why, "remote forward lost its listener; listening again");
            self.stats.set_state(format!("waiting for {}: {why}", self.via));
            held = match self.relisten(&cancel).await {
                Some(stream) => stream,
                None => return,
            };
        }
    }

    async fn relisten(&self, cancel: &CancellationToken) -> Option<Stream> {
        let mut wait = RETRY_FIRST;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = tokio::time::sleep(wait) => {}
            }
            match listen(&self.node, &self.dest, &self.spec).await {
                Ok((stream, addr)) => {
                    info!(via = %self.via, %addr, "remote forward listening again");
                    self.stats.set_state("listening");
                    return Some(stream);
                }
                Err(why) => {
                    self.stats.set_state(format!("waiting for {}: {why}", self.via));
                    self.stats.error(&why);
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        }
    }
}
