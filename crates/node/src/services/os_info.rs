//! What this machine is, for `Hello` and `tunnel peers`.

use tunnel_proto::message::OsInfo;

pub fn detect() -> OsInfo {
    OsInfo {
        family: std::env::consts::OS.to_owned(),
        distro: distro().unwrap_or_default(),
        kernel: read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_default(),
        arch: std::env::consts::ARCH.to_owned(),
    }
}

/// `PRETTY_NAME` from os-release, e.g. `Debian GNU/Linux 12 (bookworm)`.
fn distro() -> Option<String> {
    let text =
        std::fs::read_to_string("/etc/os-release").or_else(|_| std::fs::read_to_string("/usr/lib/os-release")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_owned())
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// This machine's host name.
pub(crate) fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname")
        .or_else(|| read_trimmed("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tunnel-node".into())
}

/// Seconds since boot, where the system says.
pub(crate) fn uptime_secs() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    text.split_whitespace().next()?.parse::<f64>().ok().map(|s| s as u64)
}
