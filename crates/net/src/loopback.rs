//! The node's way to itself: streams and messages addressed to our own id never touch the
//! relay. Two stream tables, one per side, hand each other their messages in memory, so a
//! local operation runs through exactly the code a remote one does (the node's policy and
//! audit included), without a session, encryption or retransmits (nothing is lost here).

use std::collections::VecDeque;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tunnel_proto::message::PeerMessage;
use tunnel_proto::NodeId;

use crate::endpoint::NetEvent;
use crate::peer::PeerCmd;
use crate::stream::{StreamCmd, StreamPorts, StreamTable};

/// The opening side (what callers hold) and the serving side (what the node is handed).
const CALLER: usize = 0;
const SERVER: usize = 1;

struct Side {
    table: StreamTable,
    ports: StreamPorts,
    data: mpsc::Receiver<StreamCmd>,
    ctl: mpsc::UnboundedReceiver<StreamCmd>,
}

impl Side {
    fn new(me: NodeId, local_odd: bool) -> Self {
        let (data_tx, data) = mpsc::channel(16);
        let (ctl_tx, ctl) = mpsc::unbounded_channel();
        Self { table: StreamTable::with_parity(me, local_odd), ports: StreamPorts::new(data_tx, ctl_tx), data, ctl }
    }
}

/// Creates the loopback actor; the caller spawns the future.
pub(crate) fn start(
    me: NodeId,
    events: mpsc::Sender<NetEvent>,
    stop: CancellationToken,
) -> (mpsc::Sender<PeerCmd>, impl std::future::Future<Output = ()>) {
    let (cmd_tx, cmd) = mpsc::channel(64);
    let actor = Loopback { me, events, sides: [Side::new(me, true), Side::new(me, false)] };
    (cmd_tx, actor.run(cmd, stop))
}

struct Loopback {
    me: NodeId,
    events: mpsc::Sender<NetEvent>,
    sides: [Side; 2],
}

impl Loopback {
    async fn run(mut self, mut cmd: mpsc::Receiver<PeerCmd>, stop: CancellationToken) {
        loop {
            let [caller, server] = &mut self.sides;
            let (from, stream_cmd) = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(c) = caller.ctl.recv() => (CALLER, c),
                Some(c) = server.ctl.recv() => (SERVER, c),
                c = cmd.recv() => match c {
                    Some(c) => { self.on_cmd(c).await; continue; }
                    None => break,
                },
                Some(c) = caller.data.recv() => (CALLER, c),
                Some(c) = server.data.recv() => (SERVER, c),
            };
            if matches!(stream_cmd, StreamCmd::Reset { .. }) {
                // As in the peer actor: a reset must not overtake data queued before it.
                while let Ok(queued) = self.sides[from].data.try_recv() {
                    let msgs = self.sides[from].table.local_cmd(queued);
                    self.deliver(1 - from, msgs).await;
                }
            }
            let msgs = self.sides[from].table.local_cmd(stream_cmd);
            self.deliver(1 - from, msgs).await;
        }
        for side in &mut self.sides {
            side.table.fail_all("this node is shutting down");
        }
    }

    async fn on_cmd(&mut self, cmd: PeerCmd) {
        match cmd {
            PeerCmd::Send(msg) => {
                let _ = self.events.send(NetEvent::Message { from: self.me, msg }).await;
            }
            PeerCmd::Open { kind, reply } => {
                let (stream, open) = self.sides[CALLER].table.open(kind, &self.sides[CALLER].ports);
                let _ = reply.send(stream);
                self.deliver(SERVER, vec![open]).await;
            }
        }
    }

    /// Hands messages to side `to`, and its answers back, until nothing is left to say.
    async fn deliver(&mut self, to: usize, msgs: Vec<PeerMessage>) {
        let mut queue: VecDeque<(usize, PeerMessage)> = msgs.into_iter().map(|m| (to, m)).collect();
        while let Some((to, msg)) = queue.pop_front() {
            let side = &mut self.sides[to];
            let replies = match msg {
                PeerMessage::Open { stream, kind, window } => {
                    let (accepted, replies) = side.table.on_open(stream, kind, window, &side.ports);
                    if let Some(stream) = accepted {
                        let _ = self.events.send(NetEvent::Stream(stream)).await;
                    }
                    replies
                }
                PeerMessage::Data { stream, offset, bytes } => side.table.on_data(stream, offset, bytes.0),
                PeerMessage::Credit { stream, max_offset, received } => {
                    side.table.on_credit(stream, max_offset, received).into_iter().collect()
                }
                PeerMessage::Close { stream, final_offset, error } => side.table.on_close(stream, final_offset, error),
                _ => vec![],
            };
            queue.extend(replies.into_iter().map(|m| (1 - to, m)));
        }
    }
}
