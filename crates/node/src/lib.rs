//! tunnel-node: the peer runtime.
//!
//! ```text
//!  CLI / MCP ──control socket──> control_server ─┐
//!                                                ├─> Node (handle) ──> Endpoint (tunnel-net)
//!  peers ──NetEvent──> node event loop ──────────┘        │
//!                        │ membership (relay presence + Hello)
//!                        │ rpc (request ids, timeouts) and request handlers
//! ```
//!
//! The event loop never waits on a peer: requests are handled in tasks, so a slow peer or a
//! slow handler cannot stall the mesh.
#![forbid(unsafe_code)]

pub mod audit;
pub mod backups;
pub mod call;
mod confine;
pub mod control;
mod control_files;
mod control_fleet;
mod control_job;
mod exec;
mod file_client;
pub mod fleet;
pub mod forward;

mod fs;
mod git_guard;
mod identity;
pub mod mapreduce;
mod membership;
pub mod names;
mod node;
mod os_info;
pub mod policy;
mod recent;
pub mod reduce;
mod rpc;
pub mod settings;
pub mod ssh;
pub mod targets;

pub use identity::{load_or_create_identity, IdentityError};
pub use membership::PeerInfo;
pub use node::{Dest, Node, NodeConfig, NodeError, NodeStatus, RelayLine, LOCAL_TARGET};
pub use os_info::detect as detect_os;
pub use rpc::RpcError;
pub use settings::{Flags, Settings, SettingsError};

#[cfg(test)]
mod test_dirs {
    use std::path::PathBuf;

    /// A fresh, empty, canonical directory for one test.
    pub(crate) fn scratch(label: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tunnel-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::canonicalize(&d).unwrap()
    }
}
