//! Rooms and mailboxes.
//!
//! A mailbox is the outgoing queue of one connection, bounded in bytes. Peer frames that do
//! not fit are dropped (the sender hears `Dropped`). Presence frames must not be lost, so they
//! get a little slack above the bound; a connection that cannot take even those is too far
//! behind to be useful and is closed: it reconnects and gets a fresh `Welcome`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Notify;
use tunnel_proto::relay::RelayFrame;
use tunnel_proto::NodeId;

/// Extra bytes presence frames may use beyond a full mailbox.
const PRESENCE_SLACK: usize = 64 * 1024;

pub(crate) enum Outgoing {
    Frame(Vec<u8>),
    /// Send this encoded `Error` frame and close: replaced by a newer connection, or too
    /// far behind. Encoded up front so every queue slot stays small.
    Close(Vec<u8>),
}

/// The outgoing queue of one connection. A plain deque that allocates on first use and
/// shrinks back after a burst: idle peers are most peers, and they should cost almost
/// nothing here (a channel would reserve a block of slots per connection up front).
pub(crate) struct Mailbox {
    queue: Mutex<VecDeque<Outgoing>>,
    ready: Notify,
    queued: AtomicUsize,
    limit: usize,
    pub(crate) conn_id: u64,
}

impl Mailbox {
    pub(crate) fn new(limit: usize, conn_id: u64) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            queued: AtomicUsize::new(0),
            limit,
            conn_id,
        })
    }

    fn reserve(&self, len: usize, limit: usize) -> bool {
        let before = self.queued.fetch_add(len, Relaxed);
        if before + len > limit {
            self.queued.fetch_sub(len, Relaxed);
            return false;
        }
        true
    }

    fn enqueue(&self, item: Outgoing) {
        self.queue.lock().expect("mailbox lock").push_back(item);
        self.ready.notify_one();
    }

    /// The next item to send. Cancel-safe: an item is taken only when returned.
    pub(crate) async fn next(&self) -> Outgoing {
        loop {
            {
                let mut queue = self.queue.lock().expect("mailbox lock");
                if let Some(item) = queue.pop_front() {
                    if let Outgoing::Frame(bytes) = &item {
                        self.queued.fetch_sub(bytes.len(), Relaxed);
                    }
                    if queue.is_empty() && queue.capacity() > 16 {
                        queue.shrink_to_fit();
                    }
                    return item;
                }
            }
            self.ready.notified().await;
        }
    }

    /// Queues a peer frame; false if the mailbox is full.
    pub(crate) fn push(&self, frame: Vec<u8>) -> bool {
        if !self.reserve(frame.len(), self.limit) {
            return false;
        }
        self.enqueue(Outgoing::Frame(frame));
        true
    }

    /// Queues a presence or control frame, closing the connection if even the slack is used.
    pub(crate) fn push_presence(&self, frame: &RelayFrame) {
        let bytes = frame.encode();
        if self.reserve(bytes.len(), self.limit + PRESENCE_SLACK) {
            self.enqueue(Outgoing::Frame(bytes));
        } else {
            self.close(RelayFrame::Error {
                code: tunnel_proto::relay::ErrorCode::Other(100),
                text: "too far behind: reconnect".into(),
            });
        }
    }

    pub(crate) fn close(&self, error: RelayFrame) {
        self.enqueue(Outgoing::Close(error.encode()));
    }
}

pub(crate) struct Room {
    id: [u8; 32],
    peers: RwLock<HashMap<NodeId, Arc<Mailbox>>>,
}

impl Room {
    pub(crate) fn mailbox(&self, id: &NodeId) -> Option<Arc<Mailbox>> {
        self.peers.read().expect("room lock").get(id).cloned()
    }
}

#[derive(Default)]
pub(crate) struct Rooms {
    map: Mutex<HashMap<[u8; 32], Arc<Room>>>,
    peers: AtomicU64,
}

pub(crate) struct Joined {
    pub(crate) room: Arc<Room>,
    pub(crate) others: Vec<NodeId>,
    /// A live connection of the same node was closed for this one.
    pub(crate) replaced: bool,
}

impl Rooms {
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.map.lock().expect("rooms lock").len() as u64, self.peers.load(Relaxed))
    }

    /// Adds `node` to the room; a previous connection of the same node is told it was
    /// replaced. Everyone else hears `PeerJoined` (also on replacement: the node may have
    /// restarted and lost its sessions). `None` if the room is full.
    pub(crate) fn join(
        &self,
        room_id: [u8; 32],
        node: NodeId,
        mailbox: Arc<Mailbox>,
        max_peers: usize,
    ) -> Option<Joined> {
        // Lock order is map then room everywhere, and the map stays locked until the node is
        // in the room, so an emptying room cannot be removed from under a joiner.
        let mut map = self.map.lock().expect("rooms lock");
        let room =
            map.entry(room_id).or_insert_with(|| Arc::new(Room { id: room_id, peers: RwLock::default() })).clone();
        let mut peers = room.peers.write().expect("room lock");
        if peers.len() >= max_peers && !peers.contains_key(&node) {
            return None;
        }
        let replaced = match peers.insert(node, mailbox) {
            Some(old) => {
                old.close(RelayFrame::Error {
                    code: tunnel_proto::relay::ErrorCode::Replaced,
                    text: "replaced by a newer connection of the same node".into(),
                });
                true
            }
            None => {
                self.peers.fetch_add(1, Relaxed);
                false
            }
        };
        drop(map);
        let joined = RelayFrame::PeerJoined { node_id: node };
        let others = peers
            .iter()
            .filter(|(id, _)| **id != node)
            .map(|(id, mb)| {
                mb.push_presence(&joined);
                *id
            })
            .collect();
        drop(peers);
        Some(Joined { room, others, replaced })
    }

    /// Removes `node` if `conn_id` still holds its slot (a replaced connection leaves quietly).
    pub(crate) fn leave(&self, room: &Arc<Room>, node: &NodeId, conn_id: u64) {
        let mut peers = room.peers.write().expect("room lock");
        if peers.get(node).is_none_or(|mb| mb.conn_id != conn_id) {
            return;
        }
        peers.remove(node);
        self.peers.fetch_sub(1, Relaxed);
        let left = RelayFrame::PeerLeft { node_id: *node };
        for mb in peers.values() {
            mb.push_presence(&left);
        }
        drop(peers);
        self.remove_if_empty(room);
    }

    fn remove_if_empty(&self, room: &Arc<Room>) {
        let mut map = self.map.lock().expect("rooms lock");
        if room.peers.read().expect("room lock").is_empty() {
            map.remove(&room.id);
        }
    }
}
