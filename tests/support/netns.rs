//! Network namespaces made by a test: separate hosts on one machine, joined by veth pairs,
//! so a test can build a LAN that only some processes can reach. Removed on drop.

use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// Why namespace tests cannot run here, if they cannot (they need root and `ip`).
pub fn unavailable() -> Option<String> {
    if !crate::running_as_root() {
        return Some("network namespaces need root".into());
    }
    if Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return Some("`ip` is missing (apt-get install iproute2)".into());
    }
    None
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A network namespace with its loopback up.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(label: &str) -> anyhow::Result<Self> {
        let name = format!("t{label}{:06x}", rand::random::<u32>() & 0xff_ffff);
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Joins this namespace to the current one with a veth pair: `outside` (CIDR) on our side,
    /// `inside` (CIDR) in the namespace. No routes beyond the link itself.
    pub fn link_to_host(&self, outside: &str, inside: &str) -> anyhow::Result<()> {
        let suffix = &self.name[self.name.len() - 6..];
        let (host_end, ns_end) = (format!("vh{suffix}"), format!("vn{suffix}"));
        ip(&["link", "add", &host_end, "type", "veth", "peer", "name", &ns_end])?;
        ip(&["link", "set", &ns_end, "netns", &self.name])?;
        ip(&["addr", "add", outside, "dev", &host_end])?;
        ip(&["link", "set", &host_end, "up"])?;
        ip(&["-n", &self.name, "addr", "add", inside, "dev", &ns_end])?;
        ip(&["-n", &self.name, "link", "set", &ns_end, "up"])?;
        Ok(())
    }

    /// The namespace's own `/etc/hosts`: `ip netns exec` puts it in place of the real one
    /// for the processes it starts.
    pub fn hosts(&self, text: &str) -> anyhow::Result<()> {
        let dir = std::path::Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("hosts"), text)?;
        Ok(())
    }

    /// `ip netns exec NAME` as a command prefix.
    pub fn prefix(&self) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.name.clone()]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace removes its veth end, and with it the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
        let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(&self.name));
    }
}
