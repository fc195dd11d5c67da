//! The node's open forwards: their tasks, live counters and states, by id.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::info;
use tunnel_proto::NodeId;

use super::{ForwardError, ForwardInfo, ForwardKind, ForwardSpec};

/// Live figures of one forward, shared by its tasks.
pub(crate) struct Stats {
    pub(super) active: AtomicU64,
    pub(super) total: AtomicU64,
    /// Toward the destination.
    pub(super) bytes_out: AtomicU64,
    /// Back from the destination.
    pub(super) bytes_in: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    state: Mutex<String>,
}

impl Stats {
    pub(super) fn new() -> Self {
        Self {
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
            state: Mutex::new("listening".into()),
        }
    }

    /// Counts a connection as active until the guard drops.
    pub(super) fn connection(&self) -> Active<'_> {
        self.total.fetch_add(1, Relaxed);
        self.active.fetch_add(1, Relaxed);
        Active(self)
    }

    pub(super) fn error(&self, why: &str) {
        self.errors.fetch_add(1, Relaxed);
        *self.last_error.lock().expect("stats lock") = Some(why.to_owned());
    }

    pub(super) fn set_state(&self, state: impl Into<String>) {
        *self.state.lock().expect("stats lock") = state.into();
    }
}

pub(super) struct Active<'a>(&'a Stats);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

/// One forward, as the registry keeps it.
pub(super) struct Entry {
    pub(super) spec: ForwardSpec,
    /// The address it listens on (with the port the system picked, if it was 0).
    pub(super) listen: String,
    pub(super) stats: Arc<Stats>,
    pub(super) cancel: CancellationToken,
    pub(super) task: AbortOnDropHandle<()>,
    /// For `-R`: the peer that listens and the key its connections come back with.
    pub(super) reverse: Option<(NodeId, u64)>,
    pub(super) held: bool,
}

/// What a `Reverse` connection needs of its forward.
pub(crate) struct ReverseTarget {
    pub(crate) to: (String, u16),
    pub(crate) label: String,
    pub(crate) stats: Arc<Stats>,
    pub(crate) cancel: CancellationToken,
}

/// Every forward this node runs.
#[derive(Default)]
pub struct Forwards {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// The highest id a forward that opened ever had (ids are never reused).
    opened_max: u64,
    /// Ids handed to opens still under way.
    reserved: std::collections::BTreeSet<u64>,
    entries: BTreeMap<u64, Entry>,
}

impl Entry {
    fn info(&self, id: u64) -> ForwardInfo {
        let s = &self.stats;
        ForwardInfo {
            id,
            kind: self.spec.kind,
            via: self.spec.via.clone(),
            listen: self.listen.clone(),
            to: self.spec.to_text(),
            state: s.state.lock().expect("stats lock").clone(),
            active: s.active.load(Relaxed),
            total: s.total.load(Relaxed),
            bytes_out: s.bytes_out.load(Relaxed),
            bytes_in: s.bytes_in.load(Relaxed),
            errors: s.errors.load(Relaxed),
            last_error: s.last_error.lock().expect("stats lock").clone(),
            held: self.held,
        }
    }
}

/// How a forward names itself in the exit's audit log.
pub(super) fn label(id: u64, kind: ForwardKind) -> String {
    format!("{kind} forward {id}")
}

impl Forwards {
    /// Reserves the id the forward being opened gets: one past every id opened or reserved,
    /// so an open that fails (and [`Forwards::release`]s it) leaves no gap.
    pub(super) fn reserve_id(&self) -> u64 {
        let mut table = self.table.lock().expect("forwards lock");
        let id = table.opened_max.max(table.reserved.last().copied().unwrap_or(0)) + 1;
        table.reserved.insert(id);
        id
    }

    /// Gives back the id of an open that failed.
    pub(super) fn release(&self, id: u64) {
        self.table.lock().expect("forwards lock").reserved.remove(&id);
    }

    pub(super) fn insert(&self, id: u64, entry: Entry) -> ForwardInfo {
        let info = entry.info(id);
        let mut table = self.table.lock().expect("forwards lock");
        table.reserved.remove(&id);
        table.opened_max = table.opened_max.max(id);
        table.entries.insert(id, entry);
        info
    }

    pub fn list(&self) -> Vec<ForwardInfo> {
        self.table.lock().expect("forwards lock").entries.iter().map(|(id, e)| e.info(*id)).collect()
    }

    /// Closes a forward: its listener goes (the port is free when this returns) and its
    /// connections end.
    pub async fn close(&self, id: u64) -> Result<ForwardInfo, ForwardError> {
        let entry = self.table.lock().expect("forwards lock").entries.remove(&id);
        let Some(mut entry) = entry else {
            return Err(ForwardError(format!("no forward {id} on this node (see `tunnel forward list`)")));
        };
        entry.stats.set_state("closed");
        entry.cancel.cancel();
        entry.task.abort();
        // Waiting for the task means its listener is dropped and the port is free.
        let _ = (&mut entry.task).await;
        let info = entry.info(id);
        info!(id, kind = %info.kind, listen = %info.listen, "forward closed");
        Ok(info)
    }

    /// Cancelled when forward `id` closes (for a `--foreground` client to learn of it).
    pub fn closed(&self, id: u64) -> Option<CancellationToken> {
        self.table.lock().expect("forwards lock").entries.get(&id).map(|e| e.cancel.clone())
    }

    /// Closes every forward (the node is stopping).
    pub async fn close_all(&self) {
        let ids: Vec<u64> = self.table.lock().expect("forwards lock").entries.keys().copied().collect();
        for id in ids {
            let _ = self.close(id).await;
        }
    }

    /// The `-R` forward a peer's `Reverse` connection belongs to.
    pub(crate) fn reverse(&self, peer: NodeId, key: u64) -> Option<ReverseTarget> {
        let table = self.table.lock().expect("forwards lock");
        let (id, entry) = table.entries.iter().find(|(_, e)| e.reverse == Some((peer, key)))?;
        Some(ReverseTarget {
            to: entry.spec.to.clone()?,
            label: label(*id, entry.spec.kind),
            stats: entry.stats.clone(),
            cancel: entry.cancel.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_do_not_skip_after_a_failed_open_and_are_never_reused() {
        let forwards = Forwards::default();
        let first = forwards.reserve_id();
        assert_eq!(first, 1);
        forwards.release(first);
        assert_eq!(forwards.reserve_id(), 1, "a failed open leaves no gap");
        // Two opens under way at once get different ids.
        assert_eq!(forwards.reserve_id(), 2);
        let mut table = forwards.table.lock().unwrap();
        table.reserved.clear();
        table.opened_max = 2;
        drop(table);
        assert_eq!(forwards.reserve_id(), 3, "an id that was opened is never handed out again");
    }
}
