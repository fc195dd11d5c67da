//! `tunnel status`: the one screen a person reads first. Everything here is already known to
//! the node; nothing is asked of peers, so it answers at once even when the relay is down.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::Node;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub version: String,
    /// How the node runs: `systemd service`, `launchd service`, `tunnel run`, `tunnel mcp`.
    pub runs_as: String,
    pub pid: u32,
    pub name: String,
    pub id: String,
    /// `None` for a local-only node (no relay configured).
    pub room: Option<String>,
    pub relay: Option<RelayLine>,
    pub mode: String,
    /// Peers the relay says are in the room, and how each is reached.
    pub peers_present: usize,
    pub peers_by_path: Vec<(String, usize)>,
    /// Direct paths: `auto`, `relay-only` or `direct-only`, and the UDP port when open.
    #[serde(default)]
    pub direct: String,
    #[serde(default)]
    pub udp_port: Option<u16>,
    pub forwards: usize,
    pub ssh_hosts: usize,
    pub uptime_secs: u64,
    /// `tunnel mcp` sessions handed to this process and served in it, since it started.
    #[serde(default)]
    pub mcp_sessions: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayLine {
    pub url: String,
    pub connected: bool,
    /// Unix seconds when `connected` last changed.
    pub since_unix: u64,
    pub last_error: Option<String>,
    /// The relay's protocol version, once joined.
    pub version: Option<u16>,
    /// Frames from the relay dropped as unexpected.
    pub ignored_frames: u64,
}

impl Node {
    pub fn status(&self) -> NodeStatus {
        let inner = &self.inner;
        let relay = inner.endpoint.relay_status().map(|r| RelayLine {
            url: r.url,
            connected: r.connected,
            since_unix: unix_secs(r.since),
            last_error: r.last_error,
            version: r.relay_version,
            ignored_frames: r.ignored_frames,
        });
        let present = inner.endpoint.peers().len();
        let (direct, udp_port) = inner.endpoint.direct();
        NodeStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            runs_as: inner.runs_as.clone(),
            pid: std::process::id(),
            name: inner.name.clone(),
            id: self.id().to_string(),
            room: relay.is_some().then(|| inner.room.clone()),
            relay,
            mode: self.mode().to_string(),
            peers_present: present,
            peers_by_path: by_path(&inner.endpoint),
            direct: direct.to_string(),
            udp_port,
            forwards: inner.forwards.list().len(),
            ssh_hosts: self.own_ssh_hosts().len(),
            uptime_secs: SystemTime::now().duration_since(inner.started).unwrap_or_default().as_secs(),
            mcp_sessions: crate::control::handoff::sessions_served(),
        }
    }
}

/// Present peers counted by the path this node reaches them on: `direct`, then `relay`.
fn by_path(endpoint: &tunnel_net::Endpoint) -> Vec<(String, usize)> {
    let peers = endpoint.peers();
    let direct = peers.iter().filter(|id| endpoint.path(id).direct.is_some()).count();
    [("direct", direct), ("relay", peers.len() - direct)]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(path, n)| (path.to_owned(), n))
        .collect()
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}
