//! Where this node's UDP socket can be reached: its interface addresses (host candidates)
//! and the public mapping STUN servers report (server-reflexive), kept fresh.
//!
//! Interfaces are looked at every few seconds; a change (a new Wi-Fi, a VPN coming up) and a
//! periodic STUN refresh publish a new list, which makes every peer actor without a direct
//! path try again at once.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::debug;
use tunnel_proto::message::{Candidate, CandidateKind};
use tunnel_proto::stun;

use super::socket::{PathSocket, StunReply};

/// Candidates offered to a peer at most; more is noise that costs probes.
pub(crate) const MAX_CANDIDATES: usize = 8;
const INTERFACES_EVERY: Duration = Duration::from_secs(5);
const STUN_EVERY: Duration = Duration::from_secs(60);
/// A STUN query: a request to every server now and twice more, then what came back.
const STUN_TRIES: u32 = 3;
const STUN_SPACING: Duration = Duration::from_millis(250);
const STUN_WAIT: Duration = Duration::from_millis(1000);

/// This machine's IPv4 interface addresses that are up, with `port`; loopback included (a
/// peer on the same machine uses it).
pub(crate) fn host(port: u16) -> Vec<SocketAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut out: Vec<SocketAddr> = addrs
        .filter(|a| a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())))
        .filter(|ip| !is_link_local(ip))
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    out.sort_by_key(|a| (a.ip().is_loopback(), *a));
    out.dedup();
    out
}

fn is_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_link_local())
}

/// Keeps `publish` up to date until cancelled.
pub(crate) async fn keep_fresh(
    socket: Arc<PathSocket>,
    port: u16,
    servers: Vec<String>,
    mut replies: mpsc::Receiver<StunReply>,
    publish: watch::Sender<Vec<Candidate>>,
    cancel: CancellationToken,
) {
    let mut hosts = host(port);
    let mut reflexive = Vec::new();
    let mut stun_due = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= stun_due {
            reflexive = query_stun(&socket, &servers, &mut replies).await;
            stun_due = tokio::time::Instant::now() + STUN_EVERY;
        }
        let list = merge(&hosts, &reflexive);
        publish.send_if_modified(|current| {
            let changed = *current != list;
            if changed {
                debug!(candidates = ?list, "direct-path candidates");
                *current = list;
            }
            changed
        });
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(INTERFACES_EVERY) => {}
        }
        let now = host(port);
        if now != hosts {
            // A new network: the old public mapping means nothing now.
            hosts = now;
            stun_due = tokio::time::Instant::now();
        }
    }
}

/// Host candidates first (a LAN path beats a trip through the NAT), then reflexive ones
/// not already listed.
pub(crate) fn merge(hosts: &[SocketAddr], reflexive: &[SocketAddr]) -> Vec<Candidate> {
    let mut seen = HashSet::new();
    let hosts = hosts.iter().map(|&addr| Candidate { addr, kind: CandidateKind::Host });
    let refl = reflexive.iter().map(|&addr| Candidate { addr, kind: CandidateKind::ServerReflexive });
    hosts.chain(refl).filter(|c| seen.insert(c.addr)).take(MAX_CANDIDATES).collect()
}

/// Asks every STUN server what address our socket has; servers that do not answer are
/// skipped (a relay without `--stun-listen`, UDP blocked).
async fn query_stun(
    socket: &PathSocket,
    servers: &[String],
    replies: &mut mpsc::Receiver<StunReply>,
) -> Vec<SocketAddr> {
    let mut targets = Vec::new();
    for server in servers {
        match tokio::net::lookup_host(server.as_str()).await {
            Ok(addrs) => targets.extend(addrs.filter(SocketAddr::is_ipv4).take(1)),
            Err(e) => debug!(%server, error = %e, "STUN server does not resolve"),
        }
    }
    if targets.is_empty() {
        return Vec::new();
    }
    while replies.try_recv().is_ok() {}
    let mut sent = HashSet::new();
    let mut found = Vec::new();
    let deadline = tokio::time::Instant::now() + STUN_WAIT;
    let mut next_try = tokio::time::Instant::now();
    let mut tries = 0;
    loop {
        if tries < STUN_TRIES && tokio::time::Instant::now() >= next_try {
            for &to in &targets {
                let txid: stun::TransactionId = rand::random();
                sent.insert(txid);
                socket.send_raw(to, &stun::binding_request(&txid));
            }
            tries += 1;
            next_try += STUN_SPACING;
        }
        let wake = if tries < STUN_TRIES { next_try.min(deadline) } else { deadline };
        tokio::select! {
            reply = replies.recv() => {
                let Some((from, bytes)) = reply else { break };
                if let Some((txid, addr)) = stun::parse_binding_response(&bytes) {
                    if sent.contains(&txid) && targets.contains(&from) && !found.contains(&addr) {
                        found.push(addr);
                    }
                }
                if found.len() >= targets.len() {
                    break;
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
            }
        }
    }
    found
}
