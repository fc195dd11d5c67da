//! The direct path to one peer, as its actor sees it: offers in and out, the dial, the live
//! links and which one to send on, and when to try again.
//!
//! - Both sides offer on a new session and answer an invitation with their own offer, then
//!   dial every usable candidate of the other at once.
//! - Both dials may succeed. Each side sends on the link the smaller node id dialed (both
//!   choose the same one) and closes the other after [`RETIRE_AFTER`], once what was sent on
//!   it has landed.
//! - A link that dies sends the actor back to the relay at once; the stream layer resends
//!   what was in flight. Retries back off from [`RETRY_FIRST`] to [`RETRY_MAX`], and start
//!   over when our candidates change.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info};
use tunnel_proto::message::{CandidateKind, PathOffer, PeerMessage};
use tunnel_proto::NodeId;

use super::candidates::MAX_CANDIDATES;
use super::link::{Link, Opened};
use super::{Direct, DirectMode, PathEntry};
use crate::peer::PeerInput;

const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(30);
const RETIRE_AFTER: Duration = Duration::from_secs(2);
/// Invitations prompted by traffic (direct-only) at most this often.
const INVITE_SPACING: Duration = Duration::from_secs(1);

/// What the actor must do after the path changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PathEvent {
    Nothing,
    /// A direct path is up (to this address): send what waited for it.
    Up(SocketAddr),
    /// The direct path is gone (for this reason): resend what was in flight on it, over the
    /// relay.
    Down(String),
    /// `direct-only` and no direct path can be had: fail what waits, with this reason.
    Failed(String),
}

pub(crate) struct PathState {
    direct: Arc<Direct>,
    peer: NodeId,
    input: mpsc::Sender<PeerInput>,
    links: Vec<Link>,
    active: Option<u64>,
    peer_offer: Option<PathOffer>,
    /// The peer said it takes no direct paths.
    declined: bool,
    /// The dial in progress and the addresses it tries.
    dialing: Option<(AbortOnDropHandle<()>, Vec<SocketAddr>)>,
    /// Numbers dials, so the failure of one replaced by another is not taken for its own.
    dial_seq: u64,
    invited_at: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
    retire_at: Option<Instant>,
}

impl PathState {
    pub(crate) fn new(direct: Arc<Direct>, peer: NodeId, input: mpsc::Sender<PeerInput>) -> Self {
        Self {
            direct,
            peer,
            input,
            links: Vec::new(),
            active: None,
            peer_offer: None,
            declined: false,
            dialing: None,
            dial_seq: 0,
            invited_at: None,
            retry_at: None,
            backoff: RETRY_FIRST,
            retire_at: None,
        }
    }

    pub(crate) fn direct_only(&self) -> bool {
        self.direct.mode == DirectMode::DirectOnly
    }

    /// The link to send on.
    pub(crate) fn active(&self) -> Option<&Link> {
        let id = self.active?;
        self.links.iter().find(|l| l.id == id)
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        [self.retry_at, self.retire_at].into_iter().flatten().min()
    }

    /// A session with the peer is up: offer, unless a path exists or the peer declined.
    pub(crate) fn on_session(&mut self) -> Option<PeerMessage> {
        self.wanted().then(|| self.invite())
    }

    /// Traffic waits for a direct path (`direct-only`): invite now unless one is on its way.
    pub(crate) fn want(&mut self) -> Option<PeerMessage> {
        let recent = self.invited_at.is_some_and(|t| t.elapsed() < INVITE_SPACING);
        (self.wanted() && self.dialing.is_none() && !recent).then(|| self.invite())
    }

    /// Our candidates changed (a new network): try again at once.
    pub(crate) fn on_candidates_changed(&mut self) -> Option<PeerMessage> {
        self.backoff = RETRY_FIRST;
        self.on_session()
    }

    fn wanted(&self) -> bool {
        self.active.is_none() && !self.declined
    }

    fn invite(&mut self) -> PeerMessage {
        self.invited_at = Some(Instant::now());
        // If nothing comes of it (an old peer, a lost message), ask again later.
        self.retry_at = Some(Instant::now() + self.backoff);
        PeerMessage::PathOffer(Box::new(self.direct.offer(false)))
    }

    /// The peer's offer: remember its certificate, dial it, answer an invitation.
    pub(crate) fn on_offer(&mut self, offer: PathOffer) -> (Option<PeerMessage>, PathEvent) {
        if offer.candidates.is_empty() {
            self.declined = true;
            self.retry_at = None;
            self.note("the peer takes no direct paths (it runs relay-only)");
            let event = if self.direct_only() {
                PathEvent::Failed(format!("peer {} runs relay-only and this node direct-only", self.peer.short()))
            } else {
                PathEvent::Nothing
            };
            return (None, event);
        }
        self.declined = false;
        // A new certificate: the peer restarted, and any link we hold goes nowhere.
        let restarted = self.peer_offer.as_ref().is_some_and(|o| o.fingerprint != offer.fingerprint);
        let event = if restarted { self.reset("the peer restarted") } else { PathEvent::Nothing };
        self.direct.announce(self.peer, offer.fingerprint);
        let reply = (!offer.reply).then(|| PeerMessage::PathOffer(Box::new(self.direct.offer(true))));
        self.peer_offer = Some(offer);
        if self.active.is_none() {
            // A dial already under way continues unless the offer brings other addresses
            // (the peer learned its public one from STUN after its first offer): then the
            // new set is dialed at once rather than after the old dial times out.
            self.dial();
        }
        (reply, event)
    }

    /// Drops every link (the peer restarted: they lead to a process that is gone) so that
    /// traffic takes the relay at once instead of waiting for the links to time out.
    pub(crate) fn reset(&mut self, why: &str) -> PathEvent {
        self.dialing = None;
        self.links.clear();
        self.retire_at = None;
        let event = self.choose(why);
        if matches!(event, PathEvent::Down(_)) {
            self.note(&format!("direct path dropped: {why}"));
        }
        event
    }

    fn dial(&mut self) {
        let Some(offer) = &self.peer_offer else { return };
        let addrs = usable(offer, &self.direct.host_ips());
        if addrs.is_empty() {
            self.note("the peer offered no address this node can use");
            return;
        }
        if self.dialing.as_ref().is_some_and(|(_, dialed)| *dialed == addrs) {
            return;
        }
        debug!(peer = %self.peer.short(), ?addrs, "dialing a direct path");
        let (direct, input, pin) = (self.direct.clone(), self.input.clone(), offer.fingerprint);
        let dialed = addrs.clone();
        self.dial_seq += 1;
        let attempt = self.dial_seq;
        let task = tokio::spawn(async move {
            let result = direct.dial(addrs, pin).await;
            let _ = input.send(PeerInput::Dialed { attempt, result }).await;
        });
        self.dialing = Some((AbortOnDropHandle::new(task), dialed));
    }

    pub(crate) fn on_dialed(&mut self, attempt: u64, result: Result<Opened, String>) -> PathEvent {
        let current = attempt == self.dial_seq;
        if current {
            self.dialing = None;
        }
        match result {
            // A path is a path, even from a dial that was replaced.
            Ok(opened) => self.add(opened, true),
            Err(_) if !current => PathEvent::Nothing,
            Err(_) if self.active.is_some() => PathEvent::Nothing, // the peer's dial made it
            Err(e) => {
                debug!(peer = %self.peer.short(), error = %e, "no direct path");
                self.note(&format!("direct path failed: {e}"));
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
                if self.direct_only() {
                    PathEvent::Failed(format!("no direct path to peer {} (direct-only): {e}", self.peer.short()))
                } else {
                    PathEvent::Nothing
                }
            }
        }
    }

    pub(crate) fn on_accepted(&mut self, opened: Opened) -> PathEvent {
        self.add(opened, false)
    }

    fn add(&mut self, opened: Opened, dialed: bool) -> PathEvent {
        // A newer link in the same role replaces the older (a redial after a network change).
        self.links.retain(|l| l.dialed != dialed);
        self.links.push(Link::start(opened, dialed, self.input.clone()));
        if self.links.len() > 1 {
            self.retire_at = Some(Instant::now() + RETIRE_AFTER);
        }
        self.choose("replaced")
    }

    pub(crate) fn on_link_down(&mut self, link: u64, reason: &str) -> PathEvent {
        let before = self.links.len();
        self.links.retain(|l| l.id != link);
        if self.links.len() == before {
            return PathEvent::Nothing;
        }
        if self.active == Some(link) && self.links.is_empty() {
            info!(peer = %self.peer.short(), %reason, "direct path lost; using the relay");
            self.backoff = RETRY_FIRST;
            self.retry_at = Some(Instant::now() + RETRY_FIRST);
        }
        let event = self.choose(reason);
        if matches!(event, PathEvent::Down(_)) {
            self.note(&format!("direct path lost: {reason}"));
        }
        event
    }

    /// Sends on the link the smaller node id dialed when there is one, else the newest.
    fn choose(&mut self, why_down: &str) -> PathEvent {
        let preferred = self.direct.id < self.peer;
        let best = self.links.iter().max_by_key(|l| (l.dialed == preferred, l.id));
        let was = self.active;
        self.active = best.map(|l| l.id);
        if let Some(link) = best {
            self.direct.table.set(self.peer, PathEntry { conn: Some(link.conn.clone()), note: None });
        }
        match (was, best.map(Link::remote)) {
            (None, Some(addr)) => {
                info!(peer = %self.peer.short(), %addr, "direct path up");
                self.retry_at = None;
                self.backoff = RETRY_FIRST;
                PathEvent::Up(addr)
            }
            (Some(_), None) => PathEvent::Down(why_down.to_owned()),
            // Moving between two live links: what was sent on the old one still lands.
            _ => PathEvent::Nothing,
        }
    }

    /// Retires a redundant link, or invites again after a failure.
    pub(crate) fn on_timer(&mut self) -> Option<PeerMessage> {
        let now = Instant::now();
        if self.retire_at.is_some_and(|t| t <= now) {
            self.retire_at = None;
            let keep = self.active;
            self.links.retain(|l| Some(l.id) == keep);
        }
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            if self.wanted() && self.dialing.is_none() {
                return Some(self.invite());
            }
        }
        None
    }

    fn note(&self, note: &str) {
        self.direct.table.set(self.peer, PathEntry { conn: None, note: Some(note.to_owned()) });
    }
}

impl Drop for PathState {
    fn drop(&mut self) {
        self.direct.forget(&self.peer);
    }
}

/// The peer's candidates worth dialing: IPv4 (our socket's family), real unicast
/// addresses, and loopback only when the peer is on this machine (it shares an interface
/// address with us).
fn usable(offer: &PathOffer, our_hosts: &[IpAddr]) -> Vec<SocketAddr> {
    let same_machine = offer
        .candidates
        .iter()
        .any(|c| c.kind == CandidateKind::Host && !c.addr.ip().is_loopback() && our_hosts.contains(&c.addr.ip()))
        || (our_hosts.iter().all(IpAddr::is_loopback)
            && offer.candidates.iter().all(|c| c.kind != CandidateKind::Host || c.addr.ip().is_loopback()));
    let mut out: Vec<SocketAddr> = Vec::new();
    for c in &offer.candidates {
        let IpAddr::V4(ip) = c.addr.ip() else { continue };
        let junk = ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || c.addr.port() == 0;
        if junk || (ip.is_loopback() && !same_machine) || out.contains(&c.addr) {
            continue;
        }
        out.push(c.addr);
        if out.len() == MAX_CANDIDATES {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tunnel_proto::message::Candidate;

    fn offer(cands: &[(&str, CandidateKind)]) -> PathOffer {
        PathOffer {
            fingerprint: [0; 32],
            candidates: cands.iter().map(|(a, kind)| Candidate { addr: a.parse().unwrap(), kind: *kind }).collect(),
            reply: false,
        }
    }

    #[test]
    fn loopback_is_dialed_only_on_the_same_machine() {
        use CandidateKind::*;
        let o = offer(&[("10.0.0.5:4000", Host), ("127.0.0.1:4000", Host), ("203.0.113.2:5000", ServerReflexive)]);
        let same: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap(), "127.0.0.1".parse().unwrap()];
        let other: Vec<IpAddr> = vec!["10.0.0.6".parse().unwrap(), "127.0.0.1".parse().unwrap()];
        assert_eq!(usable(&o, &same).len(), 3);
        let addrs = usable(&o, &other);
        assert_eq!(addrs.len(), 2);
        assert!(addrs.iter().all(|a| !a.ip().is_loopback()), "{addrs:?}");
    }

    #[test]
    fn junk_and_duplicate_candidates_are_never_dialed() {
        use CandidateKind::*;
        let o = offer(&[
            ("0.0.0.0:4000", Host),
            ("224.0.0.1:4000", Host),
            ("255.255.255.255:4000", Host),
            ("10.0.0.5:0", Host),
            ("[2001:db8::1]:4000", Host),
            ("10.0.0.5:4000", Host),
            ("10.0.0.5:4000", ServerReflexive),
        ]);
        assert_eq!(usable(&o, &[]), vec!["10.0.0.5:4000".parse::<SocketAddr>().unwrap()]);
    }
}
