//! A NAT lab in network namespaces, built from `../shared/research/holepunch.md`: two home
//! routers with LANs behind them and a routed "internet" with the relay, each router's NAT
//! kind switchable. Everything lives in namespaces this lab creates and deletes on drop.
//!
//! ```text
//!  lan-a  192.168.1.10 ─┐ br-lan 192.168.1.1 [nat-a] wan 203.0.113.2/32 ─┐
//!  lan-a2 192.168.1.11 ─┘                                                │ [inet] core 203.0.113.1
//!  lan-b  192.168.2.10 ── br-lan 192.168.2.1 [nat-b] wan 203.0.113.3/32 ─┘  relay 203.0.113.10
//! ```
//!
//! The WAN links are routed /32s, so TTLs drop at the core as on the internet. Each router
//! drops unsolicited input (the research note shows what accepting it does to punching).
//! `cut(true)` drops all UDP the core forwards: direct paths die, the relay (TCP, local to
//! `inet`) keeps working.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// RFC 4787 behaviours, as the research note names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// A public address: no NAT, open firewall.
    None,
    /// Full cone: endpoint-independent mapping and filtering.
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    AddrRestricted,
    /// Endpoint-independent mapping, address-and-port-dependent filtering (most homes).
    PortRestricted,
    /// A new random port per destination (carrier-grade and corporate NATs).
    Symmetric,
    /// No UDP at all (TCP still NATed): only the relay works.
    UdpBlocked,
}

impl NatKind {
    pub const ALL: [NatKind; 6] = [
        NatKind::None,
        NatKind::FullCone,
        NatKind::AddrRestricted,
        NatKind::PortRestricted,
        NatKind::Symmetric,
        NatKind::UdpBlocked,
    ];

    /// Whether two peers behind these NATs can punch a direct path (the research matrix).
    pub fn punchable(a: NatKind, b: NatKind) -> bool {
        use NatKind::*;
        !matches!(
            (a, b),
            (UdpBlocked, _)
                | (_, UdpBlocked)
                | (Symmetric, Symmetric)
                | (Symmetric, PortRestricted)
                | (PortRestricted, Symmetric)
        )
    }
}

/// Which router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    A,
    B,
}

pub struct NatLab {
    prefix: String,
    made: Vec<String>,
}

pub const RELAY_IP: &str = "203.0.113.10";

impl NatLab {
    /// Why the lab cannot run here, if it cannot.
    pub fn unavailable() -> Option<String> {
        if let Some(why) = crate::netns::unavailable() {
            return Some(why);
        }
        for tool in ["nft", "conntrack"] {
            let found = Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
            if found.is_err() {
                return Some(format!("`{tool}` is missing (apt-get install nftables conntrack)"));
            }
        }
        None
    }

    pub fn up() -> anyhow::Result<Self> {
        let prefix = format!("nl{:05x}", rand::random::<u32>() & 0xf_ffff);
        let mut lab = Self { prefix, made: Vec::new() };
        lab.build().context("building the NAT lab")?;
        Ok(lab)
    }

    /// The namespace of a host: `inet`, `nat-a`, `nat-b`, `lan-a`, `lan-a2`, `lan-b`.
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// `ip netns exec NS` for `host`.
    pub fn prefix(&self, host: &str) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.ns(host)]
    }

    fn build(&mut self) -> anyhow::Result<()> {
        for host in ["inet", "nat-a", "nat-b", "lan-a", "lan-a2", "lan-b"] {
            let ns = self.ns(host);
            run("ip", &["netns", "add", &ns])?;
            self.made.push(ns.clone());
            self.ip(host, &["link", "set", "lo", "up"])?;
            // Routers forward; nobody filters by reverse path (hairpins, asymmetric routes);
            // bridged LAN frames skip the router's filter (a per-namespace default of 1).
            for (key, value) in [
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
                ("net.ipv4.conf.all.send_redirects", "0"),
                ("net.ipv6.conf.all.disable_ipv6", "1"),
            ] {
                self.exec(host, "sysctl", &["-qw", &format!("{key}={value}")])?;
            }
            let _ = self.exec(host, "sysctl", &["-qw", "net.bridge.bridge-nf-call-iptables=0"]);
        }
        // The core: a routed /32 to each router's WAN, the relay's address on its loopback.
        self.ip("inet", &["addr", "add", &format!("{RELAY_IP}/32"), "dev", "lo"])?;
        for (site, wan_ip, lan_net, lan_gw) in
            [("a", "203.0.113.2", "192.168.1", "192.168.1.1"), ("b", "203.0.113.3", "192.168.2", "192.168.2.1")]
        {
            let router = format!("nat-{site}");
            let core_end = format!("p{site}");
            self.ip(
                "inet",
                &["link", "add", &core_end, "type", "veth", "peer", "name", "wan", "netns", &self.ns(&router)],
            )?;
            self.ip("inet", &["addr", "add", "203.0.113.1/32", "dev", &core_end])?;
            self.ip("inet", &["link", "set", &core_end, "up"])?;
            self.ip("inet", &["route", "add", &format!("{wan_ip}/32"), "dev", &core_end])?;
            // With no NAT the LAN is public: the core routes it to the router.
            self.ip("inet", &["route", "add", &format!("{lan_net}.0/24"), "via", wan_ip, "dev", &core_end, "onlink"])?;
            self.ip(&router, &["addr", "add", &format!("{wan_ip}/32"), "dev", "wan"])?;
            self.ip(&router, &["link", "set", "wan", "up"])?;
            self.ip(&router, &["route", "add", "default", "via", "203.0.113.1", "dev", "wan", "onlink"])?;
            self.ip(&router, &["link", "add", "br-lan", "type", "bridge"])?;
            self.ip(&router, &["addr", "add", &format!("{lan_gw}/24"), "dev", "br-lan"])?;
            self.ip(&router, &["link", "set", "br-lan", "up"])?;
            let hosts: &[(&str, &str)] =
                if site == "a" { &[("lan-a", "10"), ("lan-a2", "11")] } else { &[("lan-b", "10")] };
            for (i, (host, last)) in hosts.iter().enumerate() {
                let port = format!("l{i}");
                self.ip(
                    &router,
                    &["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &self.ns(host)],
                )?;
                self.ip(&router, &["link", "set", &port, "master", "br-lan", "up"])?;
                self.ip(host, &["addr", "add", &format!("{lan_net}.{last}/24"), "dev", "eth0"])?;
                self.ip(host, &["link", "set", "eth0", "up"])?;
                self.ip(host, &["route", "add", "default", "via", lan_gw])?;
            }
        }
        self.set_nat(Site::A, NatKind::PortRestricted)?;
        self.set_nat(Site::B, NatKind::PortRestricted)?;
        Ok(())
    }

    /// Replaces a router's rules with those of `kind`, and forgets every mapping.
    pub fn set_nat(&self, site: Site, kind: NatKind) -> anyhow::Result<()> {
        let router = router(site);
        let _ = self.exec(router, "nft", &["delete", "table", "ip", "natlab"]);
        self.nft(router, &rules(kind))?;
        self.flush(router)
    }

    /// Forgets every connection-tracking entry on both routers (a NAT reboot).
    pub fn flush_all(&self) -> anyhow::Result<()> {
        self.flush("nat-a")?;
        self.flush("nat-b")
    }

    /// Forgets one router's mappings while its hosts keep talking: a NAT that rebinds (a
    /// reboot, a carrier NAT reclaiming ports). A symmetric NAT then maps the next packet to a
    /// new public port.
    pub fn rebind(&self, site: Site) -> anyhow::Result<()> {
        self.flush(router(site))
    }

    /// How long both routers keep an idle UDP mapping (30 s unreplied and 120 s for a
    /// stream by default): shorten it to see whether keepalives hold the mappings.
    pub fn udp_timeout(&self, seconds: u32) -> anyhow::Result<()> {
        for host in ["nat-a", "nat-b"] {
            for key in ["net.netfilter.nf_conntrack_udp_timeout", "net.netfilter.nf_conntrack_udp_timeout_stream"] {
                self.exec(host, "sysctl", &["-qw", &format!("{key}={seconds}")])?;
            }
        }
        Ok(())
    }

    fn flush(&self, router: &str) -> anyhow::Result<()> {
        // `conntrack -F` exits 1 when the table was already empty on some versions.
        let _ = self.exec(router, "conntrack", &["-F"]);
        Ok(())
    }

    /// Drops (or stops dropping) every UDP packet the core forwards.
    pub fn cut(&self, on: bool) -> anyhow::Result<()> {
        if on {
            self.nft("inet", "table ip cut {\n chain drop_udp { type filter hook forward priority -10; policy accept; meta l4proto udp drop; }\n}\n")
        } else {
            self.exec("inet", "nft", &["delete", "table", "ip", "cut"])
        }
    }

    /// Drops `percent` of the UDP packets the core forwards, at random, both ways (0: none).
    /// The kernel here has no `netem`, so loss is what the lab can impair, not delay.
    pub fn lossy(&self, percent: u8) -> anyhow::Result<()> {
        let _ = self.exec("inet", "nft", &["delete", "table", "ip", "lossy"]);
        if percent == 0 {
            return Ok(());
        }
        self.nft(
            "inet",
            &format!(
                "table ip lossy {{\n chain drop_some {{ type filter hook forward priority -10; policy accept; \
                 meta l4proto udp numgen random mod 100 < {percent} drop; }}\n}}\n"
            ),
        )
    }

    fn ip(&self, host: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["-n", &self.ns(host)].into_iter().map(str::to_owned).collect::<Vec<_>>();
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run("ip", &all)
    }

    fn exec(&self, host: &str, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let ns = self.ns(host);
        let mut all = vec!["netns", "exec", ns.as_str(), program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    fn nft(&self, host: &str, script: &str) -> anyhow::Result<()> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft")?;
        child.stdin.take().context("nft stdin")?.write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("nft in {host}: {}\n{script}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(())
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            // Processes still inside would keep the namespace's interfaces alive.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn router(site: Site) -> &'static str {
    match site {
        Site::A => "nat-a",
        Site::B => "nat-b",
    }
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The router's nftables rules for one NAT kind (research note, section 3).
fn rules(kind: NatKind) -> String {
    let mut forward_extra = String::new();
    let mut nat = String::new();
    match kind {
        NatKind::None => forward_extra.push_str("iifname \"wan\" accept\n"),
        NatKind::FullCone => nat.push_str(
            "map fc { type inet_service : ipv4_addr . inet_service; flags dynamic; }\n\
             chain postrouting { type nat hook postrouting priority srcnat; oifname \"wan\" masquerade; }\n\
             chain learn { type filter hook postrouting priority srcnat + 10; oifname \"wan\" meta l4proto udp update @fc { udp sport : ct original ip saddr . ct original proto-src }; }\n\
             chain prerouting { type nat hook prerouting priority dstnat; iifname \"wan\" udp dport @fc dnat ip addr . port to udp dport map @fc; }\n",
        ),
        NatKind::AddrRestricted => nat.push_str(
            "map ar { type inet_service . ipv4_addr : ipv4_addr . inet_service; flags dynamic; }\n\
             chain postrouting { type nat hook postrouting priority srcnat; oifname \"wan\" masquerade; }\n\
             chain learn { type filter hook postrouting priority srcnat + 10; oifname \"wan\" meta l4proto udp update @ar { udp sport . ip daddr : ct original ip saddr . ct original proto-src }; }\n\
             chain prerouting { type nat hook prerouting priority dstnat; iifname \"wan\" udp dport . ip saddr @ar dnat ip addr . port to udp dport . ip saddr map @ar; }\n",
        ),
        NatKind::PortRestricted | NatKind::UdpBlocked => {
            nat.push_str("chain postrouting { type nat hook postrouting priority srcnat; oifname \"wan\" masquerade; }\n")
        }
        NatKind::Symmetric => nat.push_str(
            "chain postrouting { type nat hook postrouting priority srcnat; oifname \"wan\" masquerade fully-random; }\n",
        ),
    }
    let udp_drop = if kind == NatKind::UdpBlocked { "meta l4proto udp drop\n" } else { "" };
    format!(
        "table ip natlab {{\n\
         chain input {{ type filter hook input priority filter; policy drop;\n\
           iif \"lo\" accept\n ct state established,related accept\n iifname \"br-lan\" accept\n icmp type echo-request accept\n }}\n\
         chain forward {{ type filter hook forward priority filter; policy drop;\n\
           {udp_drop} ct state established,related accept\n ct status dnat accept\n iifname \"br-lan\" accept\n {forward_extra} }}\n\
         {nat}}}\n"
    )
}
