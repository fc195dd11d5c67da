//! Counters behind `GET /metrics` (Prometheus text format).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Default)]
pub struct Metrics {
    pub(crate) connections_total: AtomicU64,
    pub(crate) frames_forwarded: AtomicU64,
    pub(crate) bytes_forwarded: AtomicU64,
    pub(crate) frames_dropped: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
    pub(crate) handshake_timeouts: AtomicU64,
    pub(crate) bad_frames: AtomicU64,
    pub(crate) rejected_connections: AtomicU64,
    pub(crate) replaced_connections: AtomicU64,
}

/// A point-in-time copy, for tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub rooms: u64,
    pub peers: u64,
    pub frames_forwarded: u64,
    pub bytes_forwarded: u64,
    pub frames_dropped: u64,
    pub auth_failures: u64,
}

impl Metrics {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self, rooms: u64, peers: u64) -> Snapshot {
        Snapshot {
            rooms,
            peers,
            frames_forwarded: self.frames_forwarded.load(Relaxed),
            bytes_forwarded: self.bytes_forwarded.load(Relaxed),
            frames_dropped: self.frames_dropped.load(Relaxed),
            auth_failures: self.auth_failures.load(Relaxed),
        }
    }

    pub(crate) fn render(&self, rooms: u64, peers: u64) -> String {
        let mut out = String::new();
        let mut put = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP tunnel_relay_{name} {help}\n# TYPE tunnel_relay_{name} {kind}\ntunnel_relay_{name} {value}\n"
            );
        };
        put("rooms", "gauge", "Rooms with at least one peer.", rooms);
        put("peers", "gauge", "Peers joined to a room.", peers);
        put("connections_total", "counter", "WebSocket connections accepted.", self.connections_total.load(Relaxed));
        put("frames_forwarded_total", "counter", "Peer frames forwarded.", self.frames_forwarded.load(Relaxed));
        put("bytes_forwarded_total", "counter", "Peer payload bytes forwarded.", self.bytes_forwarded.load(Relaxed));
        put(
            "frames_dropped_total",
            "counter",
            "Frames dropped (full mailbox, unknown peer).",
            self.frames_dropped.load(Relaxed),
        );
        put(
            "auth_failures_total",
            "counter",
            "Joins refused: bad proof, weak key, wrong access token.",
            self.auth_failures.load(Relaxed),
        );
        put(
            "handshake_timeouts_total",
            "counter",
            "Connections closed before a Join arrived in time.",
            self.handshake_timeouts.load(Relaxed),
        );
        put(
            "replaced_connections_total",
            "counter",
            "Joins that displaced a live connection of the same node (two processes sharing a key).",
            self.replaced_connections.load(Relaxed),
        );
        put(
            "bad_frames_total",
            "counter",
            "Malformed or unexpected frames received (dropped; the connection stays).",
            self.bad_frames.load(Relaxed),
        );
        put(
            "rejected_connections_total",
            "counter",
            "Connections refused (limits, bad HTTP).",
            self.rejected_connections.load(Relaxed),
        );
        out
    }
}
