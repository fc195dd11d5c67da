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
pub mod control;
pub mod fleet;
pub mod forward;
pub mod git;
mod identity;
mod jobs;
pub mod mapreduce;
mod node;
pub mod policy;
mod schedules;
pub mod services;
pub mod settings;
pub mod ssh;

pub use identity::{load_or_create_identity, IdentityError};
pub use node::lookup::{with_connect_timeout, CONNECT_TIMEOUT_DEFAULT};
pub use node::membership::PeerInfo;
pub use node::rpc::RpcError;
pub use node::{Dest, JobLaunch, Node, NodeConfig, NodeError, NodeStatus, RelayLine, LOCAL_TARGET};
pub use services::os_info::detect as detect_os;
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
