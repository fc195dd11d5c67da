//! Port forwarding on the wire. A forwarded TCP connection is one stream: its opener (the
//! side that accepted the TCP connection) names where it should go, the other side (the
//! exit) connects, answers with one [`ConnectReply`] frame (see [`crate::framing`]), and from
//! then on the stream carries the connection's raw bytes both ways.
//!
//! A remote forward (`-R`) is a [`ListenSpec`] stream to the peer that listens: it answers
//! with one [`ListenReply`] frame and keeps its listener exactly as long as the stream
//! lives, so a listener can never outlive the forward that asked for it. Each connection
//! that listener accepts comes back to the forward's owner as a [`ReverseSpec`] stream.

use serde::{Deserialize, Serialize};

/// Largest reply frame either side accepts.
pub const REPLY_FRAME_MAX: usize = 4096;

/// Where the exit connects: a host name or IP literal (resolved at the exit) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectSpec {
    pub host: String,
    pub port: u16,
    /// Only check that policy here allows the destination (and that it resolves); connect
    /// nothing. How `tunnel forward -L` reports a refusal when it opens, not at first use.
    pub probe: bool,
    /// The forward this connection belongs to, for the exit's audit log (`local:8080`).
    pub label: String,
}

/// The exit's answer to a [`ConnectSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectReply {
    /// Connected (or, for a probe, allowed); `to` is the address actually used.
    Connected {
        to: String,
    },
    /// Policy at the exit said no; nothing was attempted.
    Refused(String),
    Failed {
        why: ConnectFailure,
        message: String,
    },
}

/// Why a connection failed, in the terms SOCKS5 replies need (RFC 1928 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectFailure {
    /// The name did not resolve, or no route.
    HostUnreachable,
    NetworkUnreachable,
    ConnectionRefused,
    TimedOut,
    Other,
}

/// Listen on the peer and send each accepted connection back (`-R`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenSpec {
    /// An IP literal; anything but loopback needs `public`.
    pub bind: String,
    /// 0 picks a free port (the reply says which).
    pub port: u16,
    pub public: bool,
    /// Chosen by the owner; each accepted connection's [`ReverseSpec`] carries it back.
    pub key: u64,
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListenReply {
    Listening { addr: String },
    Refused(String),
    Failed(String),
}

/// One connection a [`ListenSpec`] listener accepted, opened back to the forward's owner,
/// which connects it to the destination it alone knows and answers with a [`ConnectReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReverseSpec {
    pub key: u64,
    /// The address the connection came from, for the owner's log.
    pub from: String,
}
