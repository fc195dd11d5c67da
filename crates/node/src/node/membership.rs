//! Who is in the room: relay presence says who is there, each peer's `Hello` says what it is.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use serde::{Deserialize, Serialize};
use tunnel_proto::message::{Hello, OsInfo};
use tunnel_proto::NodeId;

/// One peer as `tunnel peers` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub name: String,
    pub id: String,
    pub short_id: String,
    pub tags: Vec<String>,
    pub os: OsInfo,
    pub version: String,
    pub mode: String,
    /// `direct` (a QUIC path) or `relay`.
    pub path: String,
    /// The direct path's remote address; `None` on the relay. (No `skip_serializing_if`:
    /// the control socket speaks postcard, which cannot skip fields.)
    pub addr: Option<String>,
    /// Round trip of the path in use, in milliseconds (QUIC's estimate on a direct path, the
    /// last ping on the relay).
    pub rtt_ms: Option<f64>,
    /// Why this peer is on the relay, when a direct path failed or the peer declined.
    pub path_note: Option<String>,
    /// Why the last attempt to reach this peer failed, if it did.
    pub error: Option<String>,
}

struct Member {
    hello: Option<Hello>,
    /// The SSH hosts its Hello announced, expanded once.
    ssh_hosts: std::sync::Arc<Vec<crate::ssh::SshHostInfo>>,
    rtt: Option<Duration>,
    error: Option<String>,
    /// When this node last asked something of the peer (pings aside).
    used: Option<Instant>,
}

/// How many departed peers are remembered (to say "left the room 40 s ago").
const DEPARTED_MAX: usize = 4096;

#[derive(Default)]
pub(crate) struct Membership {
    members: HashMap<NodeId, Member>,
    /// Peers that said who they were and then left, by name: who, and when.
    departed: HashMap<String, (NodeId, Instant)>,
    /// Woken on every arrival, greeting and departure, for lookups waiting on one.
    changed: Arc<Notify>,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResolveError {
    #[error("no peer {target:?} in the room ({present})")]
    NotFound { target: String, present: String },
    #[error("{target:?} matches several peers: {candidates}; use more of the node id")]
    Ambiguous { target: String, candidates: String },
}

impl Membership {
    pub(crate) fn present(&mut self, id: NodeId) {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.members.entry(id) {
            slot.insert(Member { hello: None, ssh_hosts: Default::default(), rtt: None, error: None, used: None });
            self.changed.notify_waiters();
        }
    }

    pub(crate) fn absent(&mut self, id: &NodeId) {
        let Some(member) = self.members.remove(id) else { return };
        if let Some(hello) = member.hello {
            if self.departed.len() >= DEPARTED_MAX {
                let oldest = self.departed.iter().min_by_key(|(_, (_, at))| *at).map(|(name, _)| name.clone());
                oldest.map(|name| self.departed.remove(&name));
            }
            self.departed.insert(hello.name, (*id, Instant::now()));
        }
        self.changed.notify_waiters();
    }

    /// Woken whenever a peer arrives, says who it is, or leaves.
    pub(crate) fn changes(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// A peer `target` named (by name or node id prefix) that has left the room: its name
    /// and how long ago it left.
    pub(crate) fn departed(&self, target: &str) -> Option<(String, Duration)> {
        let lower = target.to_ascii_lowercase();
        self.departed
            .iter()
            .filter(|(name, (id, _))| {
                name.as_str() == target || (target.len() >= 4 && id.to_string().starts_with(&lower))
            })
            .max_by_key(|(_, (_, at))| *at)
            .filter(|(name, _)| !self.members.values().any(|m| m.hello.as_ref().is_some_and(|h| &h.name == *name)))
            .map(|(name, (_, at))| (name.clone(), at.elapsed()))
    }

    pub(crate) fn hello(&mut self, id: NodeId, hello: Hello) {
        self.present(id);
        if let Some(m) = self.members.get_mut(&id) {
            m.ssh_hosts = std::sync::Arc::new(crate::ssh::expand(&hello.ssh_hosts));
            m.hello = Some(hello);
            m.error = None;
        }
        self.changed.notify_waiters();
    }

    pub(crate) fn rtt(&mut self, id: &NodeId, rtt: Duration) {
        if let Some(m) = self.members.get_mut(id) {
            m.rtt = Some(rtt);
            m.error = None;
        }
    }

    pub(crate) fn link_error(&mut self, id: &NodeId, reason: String) {
        if let Some(m) = self.members.get_mut(id) {
            m.error = Some(reason);
        }
    }

    pub(crate) fn error_of(&self, id: &NodeId) -> Option<String> {
        self.members.get(id).and_then(|m| m.error.clone())
    }

    /// Records that this node asked something of `id` now.
    pub(crate) fn used(&mut self, id: &NodeId) {
        if let Some(m) = self.members.get_mut(id) {
            m.used = Some(Instant::now());
        }
    }

    /// Greeted peers this node asked something of within `within`: the ones whose round trip
    /// is worth keeping fresh. (Pinging every peer ever greeted would keep every session of a
    /// node that once talked to a whole fleet alive, for good.)
    pub(crate) fn in_use(&self, within: Duration) -> Vec<NodeId> {
        self.members
            .iter()
            .filter(|(_, m)| m.hello.is_some() && m.used.is_some_and(|t| t.elapsed() < within))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Peers present that have not said who they are yet.
    pub(crate) fn without_hello(&self) -> Vec<NodeId> {
        self.members.iter().filter(|(_, m)| m.hello.is_none()).map(|(id, _)| *id).collect()
    }

    /// Every peer as a fleet target sees it.
    pub(crate) fn candidates(&self) -> Vec<crate::fleet::targets::Candidate> {
        self.members
            .iter()
            .map(|(id, m)| crate::fleet::targets::Candidate {
                id: *id,
                name: self.name_of(id),
                tags: m.hello.as_ref().map(|h| h.tags.clone()).unwrap_or_default(),
                os: m.hello.as_ref().map(|h| h.os.clone()),
                is_self: false,
                ssh_hosts: m.ssh_hosts.clone(),
            })
            .collect()
    }

    pub(crate) fn name_of(&self, id: &NodeId) -> String {
        self.members.get(id).and_then(|m| m.hello.as_ref()).map_or_else(|| id.short(), |h| h.name.clone())
    }

    /// Every member, with the path `path_of` says this node uses to reach it.
    pub(crate) fn list(&self, path_of: impl Fn(&NodeId) -> tunnel_net::PeerPath) -> Vec<PeerInfo> {
        let mut out: Vec<PeerInfo> = self
            .members
            .iter()
            .map(|(id, m)| {
                let h = m.hello.as_ref();
                let path = path_of(id);
                let direct = path.direct.as_ref();
                PeerInfo {
                    name: h.map_or_else(String::new, |h| h.name.clone()),
                    id: id.to_string(),
                    short_id: id.short(),
                    tags: h.map(|h| h.tags.clone()).unwrap_or_default(),
                    os: h.map(|h| h.os.clone()).unwrap_or_default(),
                    version: h.map_or_else(String::new, |h| h.tunnel_version.clone()),
                    mode: h.map_or_else(String::new, |h| h.mode.clone()),
                    path: if direct.is_some() { "direct" } else { "relay" }.into(),
                    addr: direct.map(|d| d.addr.to_string()),
                    rtt_ms: direct.map(|d| d.rtt).or(m.rtt).map(|d| d.as_secs_f64() * 1000.0),
                    path_note: path.note,
                    error: m.error.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        out
    }

    /// A peer by exact name, else by unique node id prefix (at least 4 characters).
    pub(crate) fn resolve(&self, target: &str) -> Result<NodeId, ResolveError> {
        let by_name: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(_, m)| m.hello.as_ref().is_some_and(|h| h.name == target))
            .map(|(id, _)| *id)
            .collect();
        let candidates = if by_name.is_empty() && target.len() >= 4 {
            let lower = target.to_ascii_lowercase();
            self.members.keys().filter(|id| id.to_string().starts_with(&lower)).copied().collect()
        } else {
            by_name
        };
        match candidates.as_slice() {
            [one] => Ok(*one),
            [] => Err(ResolveError::NotFound { target: target.to_owned(), present: self.describe_present() }),
            many => Err(ResolveError::Ambiguous {
                target: target.to_owned(),
                candidates: many
                    .iter()
                    .map(|id| format!("{} ({})", self.name_of(id), id.short()))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    fn describe_present(&self) -> String {
        if self.members.is_empty() {
            return "no peers are present: do all nodes use the same relay, room name and room token?".into();
        }
        let mut names: Vec<String> = self.members.keys().map(|id| self.name_of(id)).collect();
        names.sort();
        format!("present: {}", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn departed_peers_are_remembered_by_name_and_id_until_they_return() {
        let mut m = Membership::default();
        let a = NodeId::from_bytes([1; 32]);
        m.hello(a, Hello::new("web-1"));
        assert_eq!(m.departed("web-1"), None);
        m.absent(&a);
        let (name, ago) = m.departed("web-1").expect("remembered");
        assert_eq!(name, "web-1");
        assert!(ago < Duration::from_secs(5));
        assert_eq!(m.departed(&a.to_string()[..8]).map(|d| d.0), Some("web-1".into()));
        assert_eq!(m.departed("web-2"), None);
        // Back under a new key (a reinstalled machine): present, so not departed.
        m.hello(NodeId::from_bytes([3; 32]), Hello::new("web-1"));
        assert_eq!(m.departed("web-1"), None);
        // A peer that never said who it was leaves no name behind.
        let quiet = NodeId::from_bytes([4; 32]);
        m.present(quiet);
        m.absent(&quiet);
        assert_eq!(m.departed(&quiet.to_string()[..8]), None);
    }

    #[test]
    fn resolves_names_and_prefixes_with_clear_errors() {
        let mut m = Membership::default();
        let err = m.resolve("web").unwrap_err().to_string();
        assert!(err.contains("same relay, room name and room token"), "{err}");
        let a = NodeId::from_bytes([1; 32]);
        let b = NodeId::from_bytes([2; 32]);
        m.hello(a, Hello::new("web"));
        m.hello(b, Hello::new("db"));
        assert_eq!(m.resolve("web").unwrap(), a);
        assert_eq!(m.resolve(&b.to_string()[..6]).unwrap(), b);
        let err = m.resolve("cache").unwrap_err().to_string();
        assert!(err.contains("present: db, web"), "{err}");
        m.hello(NodeId::from_bytes([3; 32]), Hello::new("web"));
        assert!(matches!(m.resolve("web"), Err(ResolveError::Ambiguous { .. })));
    }
}
