//! The `[ssh]` section of the config file: where the inventory comes from and how hosts are
//! reached.
//!
//! ```toml
//! [ssh]
//! hosts_files = ["~/.config/tunnel/hosts.toml"]  # default: hosts.toml beside config.toml
//! ssh_configs = ["~/.ssh/config"]                # opt in: none by default
//! ansible = ["/etc/ansible/hosts"]
//! dynamic = [["/opt/inventory/ec2.py"]]          # argv; `--list` is appended
//! known_hosts = ["~/.ssh/known_hosts"]           # default: OpenSSH's user and system files
//! strict_host_keys = "yes"                       # or "accept-new"
//! connect_timeout_secs = 10
//! max_connecting = 256
//! idle_timeout_secs = 300
//! runners = true        # warm argv commands run in a shell kept on the session
//! ```
//!
//! `~/.ssh/config` is not read unless listed: announcing every host a user has ever configured
//! to the whole room is something to choose, not a default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tunnel_ssh::{ClientSettings, PoolSettings, Sources, StrictHostKeys};

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SshFileConfig {
    hosts_files: Option<Vec<String>>,
    #[serde(default)]
    ssh_configs: Vec<String>,
    #[serde(default)]
    ansible: Vec<String>,
    #[serde(default)]
    dynamic: Vec<Vec<String>>,
    dynamic_timeout_secs: Option<u64>,
    known_hosts: Option<Vec<String>>,
    strict_host_keys: Option<String>,
    connect_timeout_secs: Option<u64>,
    max_connecting: Option<usize>,
    idle_timeout_secs: Option<u64>,
    runners: Option<bool>,
}

/// Resolved SSH settings: inventory sources and pool settings.
#[derive(Debug, Clone)]
pub struct SshSettings {
    pub sources: Sources,
    pub pool: PoolSettings,
}

impl SshSettings {
    /// OpenSSH's defaults and no inventory.
    pub fn empty() -> Self {
        Self {
            sources: Sources { dynamic_timeout: Duration::from_secs(60), ..Sources::default() },
            pool: PoolSettings::new(ClientSettings::from_env()),
        }
    }

    /// Whether any inventory source is configured.
    pub fn has_sources(&self) -> bool {
        let s = &self.sources;
        !(s.hosts_files.is_empty() && s.ssh_configs.is_empty() && s.ansible.is_empty() && s.dynamic.is_empty())
    }

    pub(crate) fn from_file(file: SshFileConfig, config_dir: Option<&Path>) -> Result<Self, String> {
        let paths =
            |list: &[String]| list.iter().map(|p| tunnel_ssh::inventory::expand_home(p)).collect::<Vec<PathBuf>>();
        let mut out = Self::empty();
        out.sources.hosts_files = match &file.hosts_files {
            Some(list) => paths(list),
            // The default file is used only if it exists.
            None => config_dir.map(|d| d.join("hosts.toml")).filter(|p| p.exists()).into_iter().collect(),
        };
        out.sources.ssh_configs = paths(&file.ssh_configs);
        out.sources.ansible = paths(&file.ansible);
        if let Some(empty) = file.dynamic.iter().find(|argv| argv.is_empty()) {
            return Err(format!("ssh.dynamic has an empty command {empty:?}"));
        }
        out.sources.dynamic = file.dynamic;
        if let Some(secs) = file.dynamic_timeout_secs {
            out.sources.dynamic_timeout = Duration::from_secs(secs);
        }
        let client = &mut out.pool.client;
        if let Some(list) = &file.known_hosts {
            client.known_hosts = paths(list);
            if let Some(first) = client.known_hosts.first() {
                client.record_to = first.clone();
            }
        }
        if let Some(s) = &file.strict_host_keys {
            client.strict_host_keys = s.parse::<StrictHostKeys>()?;
        }
        if let Some(secs) = file.connect_timeout_secs {
            client.connect_timeout = Duration::from_secs(secs.max(1));
        }
        if let Some(n) = file.max_connecting {
            out.pool.max_connecting = n.max(1);
        }
        if let Some(secs) = file.idle_timeout_secs {
            out.pool.idle_timeout = Duration::from_secs(secs.max(1));
        }
        if let Some(on) = file.runners {
            out.pool.runners = on;
        }
        Ok(out)
    }
}
