//! The SSH inventory: the hosts this node can reach, from every configured source.
//!
//! Sources are read independently; a bad line or entry is reported with its file and line
//! (a [`Problem`]) and everything else still loads. Hosts are keyed by name; when two sources
//! name the same host, the first source in [`Sources`] order wins and the second is reported.

mod ansible;
mod ansible_ini;
mod ansible_json;
mod ansible_yaml;
mod hosts_toml;
mod patterns;
mod ssh_config;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use patterns::{expand_ranges, glob_match};

/// How strictly a host's key is checked against `known_hosts`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrictHostKeys {
    /// Unknown hosts are refused with their fingerprint and how to trust them.
    #[default]
    Yes,
    /// Unknown hosts are trusted on first use and their key recorded. Changed keys are still
    /// refused.
    AcceptNew,
}

impl std::str::FromStr for StrictHostKeys {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "yes" | "strict" | "true" => Ok(Self::Yes),
            "accept-new" => Ok(Self::AcceptNew),
            other => Err(format!("strict_host_keys {other:?}: expected \"yes\" or \"accept-new\"")),
        }
    }
}

/// Where a passphrase for an encrypted key file comes from; never the passphrase itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Passphrase {
    Env(String),
    File(PathBuf),
}

/// One SSH host, as every source describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub name: String,
    /// What to connect to: a DNS name or an IP address.
    pub address: String,
    pub port: u16,
    /// `None`: the jump peer's own user name.
    pub user: Option<String>,
    pub identity_files: Vec<PathBuf>,
    pub tags: Vec<String>,
    /// Another inventory host to reach this one through (OpenSSH `ProxyJump`).
    pub proxy_jump: Option<String>,
    /// Overrides the node-wide setting for this host.
    pub strict_host_keys: Option<StrictHostKeys>,
    pub passphrase: Option<Passphrase>,
    /// Where the host was defined, `file:line`.
    pub source: String,
}

impl Host {
    pub fn new(name: impl Into<String>, source: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            address: name.clone(),
            name,
            port: 22,
            user: None,
            identity_files: vec![],
            tags: vec![],
            proxy_jump: None,
            strict_host_keys: None,
            passphrase: None,
            source: source.into(),
        }
    }
}

/// A line or entry that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub file: String,
    /// 1-based; 0 when the problem is not about one line (a file that cannot be read).
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(f, "{}: {}", self.file, self.message)
        }
    }
}

/// Hosts and problems, as one source yields them.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) hosts: Vec<Host>,
    pub(crate) problems: Vec<Problem>,
}

impl Loaded {
    pub(crate) fn problem(&mut self, file: &Path, line: usize, message: impl Into<String>) {
        self.problems.push(Problem { file: file.display().to_string(), line, message: message.into() });
    }
}

/// The configured inventory sources, in precedence order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sources {
    /// tunnel's own `hosts.toml` files.
    pub hosts_files: Vec<PathBuf>,
    /// OpenSSH client config files whose `Host` entries become hosts.
    pub ssh_configs: Vec<PathBuf>,
    /// Ansible inventories, INI or YAML (told apart by content).
    pub ansible: Vec<PathBuf>,
    /// Dynamic-inventory commands (argv), each printing Ansible `--list` JSON.
    pub dynamic: Vec<Vec<String>>,
    /// How long a dynamic-inventory command may run.
    pub dynamic_timeout: Duration,
}

/// Every host this node can reach, and what could not be loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub hosts: Vec<Host>,
    pub problems: Vec<Problem>,
}

impl Inventory {
    /// Reads every source. Never fails: what cannot be read becomes a [`Problem`].
    pub async fn load(sources: &Sources) -> Self {
        let mut parts = Vec::new();
        for path in &sources.hosts_files {
            parts.push(read_then(path, hosts_toml::parse));
        }
        for path in &sources.ssh_configs {
            parts.push(ssh_config::load(path));
        }
        for path in &sources.ansible {
            parts.push(read_then(path, |text, path| {
                if ansible_yaml::looks_like_yaml(text) {
                    ansible_yaml::parse(text, path)
                } else {
                    ansible_ini::parse(text, path)
                }
            }));
        }
        for argv in &sources.dynamic {
            parts.push(ansible_json::run(argv, sources.dynamic_timeout).await);
        }
        Self::merge(parts)
    }

    fn merge(parts: Vec<Loaded>) -> Self {
        let mut out = Self::default();
        let mut seen: HashMap<String, String> = HashMap::new();
        for mut part in parts {
            part.problems.sort_by_key(|p| p.line);
            out.problems.extend(part.problems);
            for host in part.hosts {
                if let Some(first) = seen.get(&host.name) {
                    let (file, line) = split_source(&host.source);
                    out.problems.push(Problem {
                        file,
                        line,
                        message: format!("host {:?} is already defined at {first}; this one is ignored", host.name),
                    });
                    continue;
                }
                seen.insert(host.name.clone(), host.source.clone());
                out.hosts.push(host);
            }
        }
        out.sort();
        out
    }

    /// The host named `name`. Hosts are kept sorted by name ([`Inventory::load`] sorts them;
    /// call [`Inventory::sort`] after building one by hand), so this is a binary search.
    pub fn get(&self, name: &str) -> Option<&Host> {
        self.hosts.binary_search_by(|h| h.name.as_str().cmp(name)).ok().map(|i| &self.hosts[i])
    }

    pub fn sort(&mut self) {
        self.hosts.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

fn split_source(source: &str) -> (String, usize) {
    match source.rsplit_once(':') {
        Some((file, line)) if line.parse::<usize>().is_ok() => (file.to_owned(), line.parse().unwrap_or(0)),
        _ => (source.to_owned(), 0),
    }
}

fn read_then(path: &Path, parse: impl FnOnce(&str, &Path) -> Loaded) -> Loaded {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) => {
            let mut loaded = Loaded::default();
            loaded.problem(path, 0, format!("cannot read: {e}"));
            loaded
        }
    }
}

/// `~/x` to the home directory; other paths as they are.
pub fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// The message for a literal password found in an inventory.
pub(crate) const NO_PASSWORDS: &str =
    "literal passwords are not accepted in an inventory; use ssh-agent or a key file (with passphrase_env or passphrase_file)";

/// Host names must be usable as targets: no separators the target grammar uses.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty host name".into());
    }
    if let Some(c) =
        name.chars().find(|c| c.is_whitespace() || matches!(c, ',' | ':' | '[' | ']' | '"' | '\'' | '/' | '\\'))
    {
        return Err(format!("host name {name:?} contains {c:?}"));
    }
    if name.len() > 253 {
        return Err(format!("host name {name:?} is longer than 253 bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
