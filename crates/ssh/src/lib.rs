//! The agentless arm: SSH to hosts that run nothing of ours.
//!
//! - [`inventory`]: the hosts, from `hosts.toml`, `~/.ssh/config`, Ansible inventories and
//!   dynamic-inventory commands.
//! - [`known_hosts`]: host keys checked against OpenSSH `known_hosts`, strict by default.
//! - [`Pool`]: one russh client per node, sessions reused and channels multiplexed, with
//!   [`Pool::exec`], [`Pool::read_file`], [`Pool::write_file`] and [`Pool::direct_tcpip`].
//! - `runner`: warm commands run in a long-lived shell on the session instead of a channel
//!   each.
//!
//! Keys and passphrases stay on the node that runs this; only names and tags of hosts are
//! ever announced to the mesh.

mod client;
mod error;
mod exec;
pub mod inventory;
pub mod known_hosts;
mod pool;
pub mod quote;
mod runner;
mod sftp;
mod tcpip;

pub use client::ClientSettings;
pub use error::SshError;
pub use exec::ExecRequest;
pub use inventory::{Host, Inventory, Problem, Sources, StrictHostKeys};
pub use pool::{Pool, PoolSettings};
pub use quote::RemoteCommand;
pub use tcpip::{RemoteListener, TcpipStream};
