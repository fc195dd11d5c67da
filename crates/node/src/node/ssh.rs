//! The node's side of the SSH arm: its inventory and client pool, what it announces, the
//! hosts the mesh knows, and where an `ssh:` target runs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tracing::{info, warn};
use tunnel_proto::message::SshHostGroup;

use super::{Dest, Node};
use crate::node::rpc::RpcError;
use crate::ssh::{SshHostInfo, SshHostList, SshHostRow, SshSettings};

/// How often the inventory files are looked at for changes.
const INVENTORY_CHECK_EVERY: Duration = Duration::from_secs(2);

/// The SSH client of a node with an inventory.
pub(super) struct SshArm {
    pool: tunnel_ssh::Pool,
    /// This node's hosts as targets see them, made once per load: selections run often.
    hosts: Mutex<Arc<Vec<SshHostInfo>>>,
    sources: tunnel_ssh::Sources,
    /// The inventory files' modification times at the last load.
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

fn host_infos(inventory: &tunnel_ssh::Inventory) -> Arc<Vec<SshHostInfo>> {
    Arc::new(inventory.hosts.iter().map(|h| SshHostInfo { name: h.name.clone(), tags: h.tags.clone() }).collect())
}

/// The modification time of every inventory file (a missing one counts as `None`).
fn stamps(sources: &tunnel_ssh::Sources) -> Vec<Option<SystemTime>> {
    let files = sources.hosts_files.iter().chain(&sources.ssh_configs).chain(&sources.ansible);
    files.map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
}

async fn load(sources: &tunnel_ssh::Sources) -> tunnel_ssh::Inventory {
    let inventory = tunnel_ssh::Inventory::load(sources).await;
    for problem in &inventory.problems {
        warn!(%problem, "SSH inventory");
    }
    info!(hosts = inventory.hosts.len(), problems = inventory.problems.len(), "SSH inventory loaded");
    inventory
}

impl SshArm {
    /// Loads the inventory (problems are logged, never fatal) and makes the client pool;
    /// `None` when no inventory source is configured.
    pub(super) async fn start(settings: &SshSettings) -> Option<Self> {
        if !settings.has_sources() {
            return None;
        }
        let stamped = stamps(&settings.sources);
        let inventory = load(&settings.sources).await;
        Some(Self {
            hosts: Mutex::new(host_infos(&inventory)),
            pool: tunnel_ssh::Pool::new(settings.pool.clone(), inventory),
            sources: settings.sources.clone(),
            stamps: Mutex::new(stamped),
        })
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
    /// Loads the SSH inventory again (new, changed and removed hosts take effect for the next
    /// operation; open sessions finish), tells peers, and protects any new identity file.
    /// Returns the hosts and problems now. On `SIGHUP`, and when an inventory file changes.
    pub async fn reload_ssh_inventory(&self) -> Option<(usize, usize)> {
        let arm = self.inner.ssh.as_ref()?;
        *arm.stamps.lock().expect("stamps lock") = stamps(&arm.sources);
        let inventory = load(&arm.sources).await;
        let counts = (inventory.hosts.len(), inventory.problems.len());
        {
            let mut policy = self.inner.policy.write().expect("policy lock");
            for file in inventory.hosts.iter().flat_map(|h| h.identity_files.iter()) {
                policy.secrets.add_identity_file(file);
            }
        }
        *arm.hosts.lock().expect("hosts lock") = host_infos(&inventory);
        arm.pool.set_inventory(inventory);
        let announced = arm.announcement();
        self.inner.endpoint.update_hello(|h| h.ssh_hosts = announced);
        Some(counts)
    }

    /// Reloads the inventory whenever one of its files changes, until the node stops.
    pub(super) async fn watch_ssh_inventory(self) {
        let Some(arm) = self.inner.ssh.as_ref() else { return };
        let mut tick = tokio::time::interval(INVENTORY_CHECK_EVERY);
        loop {
            tokio::select! {
                _ = self.inner.cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let changed = stamps(&arm.sources) != *arm.stamps.lock().expect("stamps lock");
            if changed {
                info!("an SSH inventory file changed; reloading");
                self.reload_ssh_inventory().await;
            }
        }
    }

    /// The SSH client, if this node has an SSH inventory.
    pub fn ssh_pool(&self) -> Option<tunnel_ssh::Pool> {
        self.inner.ssh.as_ref().map(|arm| arm.pool.clone())
    }

    /// This node's own SSH hosts, for target selection.
    pub(super) fn own_ssh_hosts(&self) -> Arc<Vec<SshHostInfo>> {
        self.inner.ssh.as_ref().map(|arm| arm.hosts.lock().expect("hosts lock").clone()).unwrap_or_default()
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
