//! `forward_allow`: the destinations (and `-R` listen addresses) a node in `plan` mode still
//! forwards to. A pattern is `HOST:PORT`:
//!
//! - HOST: a name glob (`db.internal`, `*.corp`, matched case-insensitively against the name
//!   the caller asked for), an IP address, or a CIDR block (`10.0.0.0/8`, `[fd00::/8]`),
//!   matched against the address the node actually connects to after resolving;
//! - PORT: a number, a range `8000-8999`, or `*`.

use std::net::IpAddr;

/// One `forward_allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardRule {
    host: HostPattern,
    ports: (u16, u16),
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Glob(String),
    Net { addr: IpAddr, prefix: u8 },
}

impl std::fmt::Display for ForwardRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for ForwardRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("forward_allow entry {text:?}: {why}");
        let (host, port) = match text.strip_prefix('[') {
            Some(rest) => {
                let (inside, after) = rest.split_once(']').ok_or_else(|| bad("missing `]`"))?;
                (inside, after.strip_prefix(':').ok_or_else(|| bad("want [ADDR]:PORT"))?)
            }
            None => text.rsplit_once(':').ok_or_else(|| bad("want HOST:PORT (PORT may be `*` or a range)"))?,
        };
        if host.is_empty() {
            return Err(bad("the host is empty; use `*` for any"));
        }
        let ports = parse_ports(port).ok_or_else(|| bad("the port must be a number, LOW-HIGH, or `*`"))?;
        let host = match host.split_once('/') {
            Some((addr, prefix)) => {
                let addr: IpAddr = addr.parse().map_err(|_| bad("the network before `/` is not an IP address"))?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let prefix = prefix.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| bad("bad prefix length"))?;
                HostPattern::Net { addr, prefix }
            }
            None => match host.parse::<IpAddr>() {
                Ok(addr) => HostPattern::Net { addr, prefix: if addr.is_ipv4() { 32 } else { 128 } },
                Err(_) => HostPattern::Glob(host.to_ascii_lowercase()),
            },
        };
        Ok(Self { host, ports, text: text.to_owned() })
    }
}

fn parse_ports(text: &str) -> Option<(u16, u16)> {
    if text == "*" {
        return Some((0, u16::MAX));
    }
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let (low, high) = (low.parse().ok()?, high.parse().ok()?);
    (low <= high).then_some((low, high))
}

impl ForwardRule {
    /// Whether this rule lets a connection go to `addr` (or, when the caller named the host,
    /// to the name `name`) on `port`.
    pub fn allows(&self, name: &str, addr: Option<IpAddr>, port: u16) -> bool {
        if port < self.ports.0 || port > self.ports.1 {
            return false;
        }
        match &self.host {
            HostPattern::Glob(glob) => tunnel_ssh::inventory::glob_match(glob, &name.to_ascii_lowercase()),
            HostPattern::Net { addr: net, prefix } => addr.is_some_and(|a| in_network(a, *net, *prefix)),
        }
    }
}

fn in_network(addr: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    };
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> ForwardRule {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn names_networks_and_ports() {
        assert!(rule("db.internal:5432").allows("DB.internal", ip("10.1.2.3"), 5432));
        assert!(!rule("db.internal:5432").allows("db.internal", ip("10.1.2.3"), 5433));
        assert!(rule("*.corp:*").allows("git.corp", None, 22));
        assert!(!rule("*.corp:*").allows("corp.evil", None, 22));
        assert!(rule("10.0.0.0/8:8000-8999").allows("anything", ip("10.200.0.1"), 8080));
        assert!(!rule("10.0.0.0/8:8000-8999").allows("anything", ip("11.0.0.1"), 8080));
        assert!(!rule("10.0.0.0/8:8000-8999").allows("10.0.0.1", None, 8080), "a network needs the address");
        assert!(rule("127.0.0.1:80").allows("localhost", ip("127.0.0.1"), 80));
        assert!(rule("127.0.0.1:80").allows("x", ip("::ffff:127.0.0.1"), 80), "v4-mapped addresses");
        assert!(rule("[::1]:80").allows("localhost", ip("::1"), 80));
        assert!(rule("[fd00::/8]:*").allows("x", ip("fd12::1"), 1));
        assert!(!rule("[fd00::/8]:*").allows("x", ip("fe80::1"), 1));
        assert!(rule("0.0.0.0/0:443").allows("x", ip("8.8.8.8"), 443));
    }

    #[test]
    fn malformed_entries_say_what_is_wrong() {
        for (text, why) in [
            ("db.internal", "HOST:PORT"),
            ("db:http", "port"),
            ("db:90-80", "port"),
            ("10.0.0.0/33:1", "prefix"),
            ("nope/8:1", "not an IP"),
            ("[::1:80", "]"),
            (":80", "empty"),
        ] {
            let err = text.parse::<ForwardRule>().unwrap_err();
            assert!(err.contains(why) && err.contains(text), "{text}: {err}");
        }
    }
}
