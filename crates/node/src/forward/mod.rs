//! Port forwarding through the mesh: `-L` (listen here, connect from a peer or an SSH host),
//! `-R` (listen on a peer, connect from here) and `-D` (a SOCKS5 proxy here, egress at a peer
//! or an SSH host).
//!
//! ```text
//!  -L/-D  client ─TCP─> entry (this node) ══Connect stream══> exit (peer) ─TCP─> HOST:PORT
//!                                         ══SshConnect════> jump peer ─direct-tcpip─> SSH host
//!  -R     client ─TCP─> listener (peer) ══Reverse stream══> exit (this node) ─TCP─> HOST:PORT
//! ```
//!
//! Forwards live in the node ([`Forwards`]), not in the CLI that asked for them. The exit
//! always decides under its own policy (`forward_allow`, the mode) and audits each
//! connection; a `-R` listener lives exactly as long as the `Listen` stream of its forward.

mod entry;
mod exit;
mod listen;
mod open;
mod pipe;
mod registry;
mod remote;
mod reply;
mod socks;
mod spec;

pub(crate) use exit::{serve_connect, serve_reverse, serve_ssh_connect};
pub(crate) use listen::{serve_listen, serve_ssh_listen};
pub use registry::Forwards;
pub use spec::{ForwardKind, ForwardSpec, SocksAuth};

use serde::{Deserialize, Serialize};

/// What `tunnel forward list` shows of one forward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForwardInfo {
    pub id: u64,
    pub kind: ForwardKind,
    /// The peer or `ssh:HOST` the forward goes through, as given.
    pub via: String,
    /// Where it listens: here for `-L`/`-D`, on `via` for `-R`.
    pub listen: String,
    /// Where connections go (`HOST:PORT`); `None` for SOCKS, where each client says.
    pub to: Option<String>,
    /// `listening`, `waiting for PEER: why`, `closed`.
    pub state: String,
    pub active: u64,
    pub total: u64,
    /// Bytes toward the destination, and back from it.
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    /// Held by a `--foreground` client: closed when that client goes.
    pub held: bool,
}

/// Why a forward could not be opened or closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ForwardError(pub String);
