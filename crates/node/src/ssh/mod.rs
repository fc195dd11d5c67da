//! The SSH arm inside the node: which hosts it announces to the mesh, what peers announce,
//! and the services that run operations on this node's SSH hosts for peers.

pub(crate) mod job;
mod requests;
mod serve;
mod settings;
pub(crate) mod targets;

pub(crate) use job::serve_job;
pub(crate) use requests::answer as answer_request;
pub(crate) use serve::{pool_or_refuse, serve_exec, serve_read, serve_write};
pub(crate) use settings::SshFileConfig;
pub use settings::SshSettings;

use std::collections::BTreeMap;

use tunnel_proto::message::SshHostGroup;
use tunnel_ssh::Inventory;

/// Most SSH hosts taken from one peer's announcement; more is a hostile or broken peer.
pub const MAX_ANNOUNCED_HOSTS: usize = 100_000;
/// Largest announcement a Hello carries, so it always fits one relay frame.
const ANNOUNCE_BUDGET: usize = 160 * 1024;

/// One SSH host as the mesh knows it: a name, tags, and the peer that reaches it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SshHostInfo {
    pub name: String,
    pub tags: Vec<String>,
}

/// One row of `tunnel ssh hosts`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SshHostRow {
    pub name: String,
    pub tags: Vec<String>,
    /// The peer that reaches it (this node's name for its own).
    pub via: String,
    pub via_id: String,
    /// `user@address:port`, for this node's own hosts only: peers never announce addresses.
    pub address: Option<String>,
    /// Where this node's own host is defined, `file:line`.
    pub source: Option<String>,
}

/// Every SSH host the mesh knows, and what this node could not load of its own inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SshHostList {
    pub hosts: Vec<SshHostRow>,
    pub problems: Vec<String>,
}

/// Hosts grouped by tag set, names compacted (`web-[01-20]`), within the Hello budget.
/// Returns the groups and how many hosts did not fit.
pub(crate) fn announce(inventory: &Inventory) -> (Vec<SshHostGroup>, usize) {
    let mut by_tags: BTreeMap<Vec<String>, Vec<&str>> = BTreeMap::new();
    for host in &inventory.hosts {
        let mut tags = host.tags.clone();
        tags.sort();
        tags.dedup();
        by_tags.entry(tags).or_default().push(&host.name);
    }
    let mut groups = Vec::new();
    let (mut size, mut left_out) = (0usize, 0usize);
    for (tags, names) in by_tags {
        let group = SshHostGroup { names: crate::fleet::names::compact(&names), tags };
        let cost = group.names.len() + group.tags.iter().map(|t| t.len() + 2).sum::<usize>() + 8;
        if size + cost > ANNOUNCE_BUDGET {
            left_out += names.len();
            continue;
        }
        size += cost;
        groups.push(group);
    }
    (groups, left_out)
}

/// The hosts a peer announced, expanded; at most [`MAX_ANNOUNCED_HOSTS`], bad patterns skipped.
pub(crate) fn expand(groups: &[SshHostGroup]) -> Vec<SshHostInfo> {
    let mut out = Vec::new();
    for group in groups {
        for term in crate::fleet::targets::split_terms(&group.names) {
            let Ok(names) = crate::fleet::names::expand(term) else { continue };
            for name in names {
                if out.len() >= MAX_ANNOUNCED_HOSTS {
                    return out;
                }
                out.push(SshHostInfo { name, tags: group.tags.clone() });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tunnel_ssh::Host;

    #[test]
    fn announcements_round_trip_compactly() {
        let mut inventory = Inventory::default();
        for i in 1..=5000 {
            let mut h = Host::new(format!("web-{i:05}"), "t");
            h.tags = vec!["web".into(), "prod".into()];
            inventory.hosts.push(h);
        }
        inventory.hosts.push(Host::new("bastion", "t"));
        let (groups, left_out) = announce(&inventory);
        assert_eq!(left_out, 0);
        assert_eq!(groups.len(), 2);
        let encoded: usize = groups.iter().map(|g| g.names.len()).sum();
        assert!(encoded < 100, "{groups:?}");
        let hosts = expand(&groups);
        assert_eq!(hosts.len(), 5001);
        assert!(hosts.iter().any(|h| h.name == "web-04999" && h.tags == ["prod", "web"]));
        assert!(hosts.iter().any(|h| h.name == "bastion" && h.tags.is_empty()));
        // A hostile announcement is bounded.
        let huge = vec![SshHostGroup { tags: vec![], names: "h[0-99999], g[0-99999]".into() }];
        assert_eq!(expand(&huge).len(), MAX_ANNOUNCED_HOSTS);
    }
}
