//! The node's side of the SSH arm: its inventory and client pool, what it announces, the
//! hosts the mesh knows, and where an `ssh:` target runs.

use std::sync::Arc;

use tracing::{info, warn};
use tunnel_proto::message::SshHostGroup;

use super::{Dest, Node};
use crate::node::rpc::RpcError;
use crate::ssh::{SshHostInfo, SshHostList, SshHostRow, SshSettings};

/// The SSH client of a node with an inventory.
pub(super) struct SshArm {
    pool: tunnel_ssh::Pool,
    /// This node's hosts as targets see them, made once: selections run often.
    hosts: Arc<Vec<SshHostInfo>>,
}

impl SshArm {
    /// Loads the inventory (problems are logged, never fatal) and makes the client pool;
    /// `None` when no inventory source is configured.
    pub(super) async fn start(settings: &SshSettings) -> Option<Self> {
        if !settings.has_sources() {
            return None;
        }
        let inventory = tunnel_ssh::Inventory::load(&settings.sources).await;
        for problem in &inventory.problems {
            warn!(%problem, "SSH inventory");
        }
        info!(hosts = inventory.hosts.len(), problems = inventory.problems.len(), "SSH inventory loaded");
        let hosts = inventory.hosts.iter().map(|h| SshHostInfo { name: h.name.clone(), tags: h.tags.clone() });
        let hosts = Arc::new(hosts.collect());
        Some(Self { pool: tunnel_ssh::Pool::new(settings.pool.clone(), inventory), hosts })
    }

    /// Every identity file the inventory names: secrets of this node.
    pub(super) fn identity_files(&self) -> Vec<std::path::PathBuf> {
        self.pool.inventory().hosts.iter().flat_map(|h| h.identity_files.iter().cloned()).collect()
    }

    /// What this node's Hello says of its hosts.
    pub(super) fn announcement(&self) -> Vec<SshHostGroup> {
        let (groups, left_out) = crate::ssh::announce(&self.pool.inventory());
        if left_out > 0 {
            warn!(left_out, "the SSH inventory is too large to announce whole; {left_out} hosts are not announced");
        }
        groups
    }
}

impl Node {
    /// The SSH client, if this node has an SSH inventory.
    pub fn ssh_pool(&self) -> Option<tunnel_ssh::Pool> {
        self.inner.ssh.as_ref().map(|arm| arm.pool.clone())
    }

    /// This node's own SSH hosts, for target selection.
    pub(super) fn own_ssh_hosts(&self) -> Arc<Vec<SshHostInfo>> {
        self.inner.ssh.as_ref().map(|arm| arm.hosts.clone()).unwrap_or_default()
    }

    /// Every SSH host this node and its peers announce (call [`Node::discover`] first to
    /// hear from every peer). Addresses and sources are known for this node's own only.
    pub fn ssh_hosts(&self) -> SshHostList {
        let mut list = SshHostList::default();
        let row = |name: &str, tags: &[String], via: &str, via_id: String| SshHostRow {
            name: name.to_owned(),
            tags: tags.to_vec(),
            via: via.to_owned(),
            via_id,
            address: None,
            source: None,
        };
        if let Some(arm) = &self.inner.ssh {
            let inventory = arm.pool.inventory();
            list.problems = inventory.problems.iter().map(ToString::to_string).collect();
            for h in &inventory.hosts {
                let user = h.user.as_deref().map(|u| format!("{u}@")).unwrap_or_default();
                list.hosts.push(SshHostRow {
                    address: Some(format!("{user}{}:{}", h.address, h.port)),
                    source: Some(h.source.clone()),
                    ..row(&h.name, &h.tags, &self.inner.name, self.id().to_string())
                });
            }
        }
        let peers = self.inner.members.lock().expect("members lock").candidates();
        for peer in peers {
            for h in peer.ssh_hosts.iter() {
                list.hosts.push(row(&h.name, &h.tags, &peer.name, peer.id.to_string()));
            }
        }
        list.hosts.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.via.cmp(&b.via)));
        list
    }

    /// Where a single target runs: a peer as [`Node::find`] resolves it, or `ssh:HOST`
    /// through the peer that announces the host.
    pub async fn find_dest(&self, target: &str) -> Result<Dest, RpcError> {
        if !target.starts_with(crate::fleet::targets::SSH_PREFIX) {
            return Ok(self.find(target).await?.into());
        }
        let selected = self.select(target).await?;
        match selected.as_slice() {
            [one] => one.dest().ok_or_else(|| {
                crate::fleet::targets::TargetError::Bad { term: target.to_owned(), why: "not a node id".into() }.into()
            }),
            many => Err(crate::fleet::targets::TargetError::Bad {
                term: target.to_owned(),
                why: format!("names {} SSH hosts; this operation takes one (use tunnel fleet for many)", many.len()),
            }
            .into()),
        }
    }
}
