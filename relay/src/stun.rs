//! A STUN binding server (RFC 8489) beside the relay: it tells a node which public address
//! its UDP socket has, the server-reflexive candidate for direct paths.
//!
//! It must not become a tool against others: it answers only a request at least as large as
//! the answer (so a spoofed source gets no more bytes than the spoofer spent), and each source
//! address gets a small token bucket (past it, requests are dropped silently). The table of
//! buckets is bounded; when full, the idlest sources are forgotten.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;
use tunnel_proto::stun;

/// Requests per second per source IP, and the burst allowed.
const RATE: f64 = 10.0;
const BURST: f64 = 20.0;
/// Sources remembered at most.
const MAX_SOURCES: usize = 65_536;

/// What the STUN server did, for `/metrics` and tests.
#[derive(Default, Debug)]
pub struct StunStats {
    pub answered: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Not a binding request, or one too small to answer without amplifying.
    pub ignored: AtomicU64,
}

/// A running STUN server; stops on drop.
pub struct StunServer {
    addr: SocketAddr,
    stats: Arc<StunStats>,
    cancel: CancellationToken,
    _task: tokio_util::task::AbortOnDropHandle<()>,
}

impl StunServer {
    pub async fn bind(addr: &str) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(addr).await?;
        let local = socket.local_addr()?;
        let stats = Arc::new(StunStats::default());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(socket, stats.clone(), cancel.clone()));
        info!(addr = %local, "STUN server listening");
        Ok(Self { addr: local, stats, cancel, _task: tokio_util::task::AbortOnDropHandle::new(task) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> &StunStats {
        &self.stats
    }
}

impl Drop for StunServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn serve(socket: UdpSocket, stats: Arc<StunStats>, cancel: CancellationToken) {
    let mut buf = vec![0u8; 2048];
    let mut limits = Limits::default();
    loop {
        let (n, from) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                // ICMP errors from earlier answers surface here on some systems; keep serving.
                Err(_) => continue,
            },
        };
        let Some(answer) = stun::binding_response(&buf[..n], from) else {
            stats.ignored.fetch_add(1, Relaxed);
            continue;
        };
        if !limits.allow(from.ip(), Instant::now()) {
            stats.rate_limited.fetch_add(1, Relaxed);
            continue;
        }
        if socket.send_to(&answer, from).await.is_ok() {
            stats.answered.fetch_add(1, Relaxed);
        }
    }
}

#[derive(Default)]
struct Limits {
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl Limits {
    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&ip) {
            // Forget whoever has been quiet long enough to have a full bucket again.
            let full = Duration::from_secs_f64(BURST / RATE);
            self.buckets.retain(|_, (_, last)| now.duration_since(*last) < full);
            if self.buckets.len() >= MAX_SOURCES {
                return false;
            }
        }
        let (tokens, last) = self.buckets.entry(ip).or_insert((BURST, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * RATE).min(BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_with_the_source_address_and_limits_each_source() {
        let server = StunServer::bind("127.0.0.1:0").await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let txid = [3; 12];
        let request = stun::binding_request(&txid);
        client.send_to(&request, server.local_addr()).await.unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf)).await.unwrap().unwrap();
        assert!(n <= request.len(), "never amplifies: {n} bytes out for {} in", request.len());
        assert_eq!(stun::parse_binding_response(&buf[..n]), Some((txid, client.local_addr().unwrap())));

        // A flood from one source: at most the burst (plus refill) is answered.
        for _ in 0..200 {
            client.send_to(&request, server.local_addr()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let answered = server.stats().answered.load(Relaxed);
        assert!(answered <= 1 + BURST as u64 + 5, "answered {answered} of a 200-request flood");
        assert!(server.stats().rate_limited.load(Relaxed) >= 150);

        // A bare 20-byte request would be amplified by its answer: ignored.
        let bare = &request[..stun::HEADER_LEN];
        let mut bare = bare.to_vec();
        bare[2..4].copy_from_slice(&[0, 0]);
        let ignored = server.stats().ignored.load(Relaxed);
        client.send_to(&bare, server.local_addr()).await.unwrap();
        client.send_to(b"not stun at all", server.local_addr()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(server.stats().ignored.load(Relaxed), ignored + 2);
    }

    #[test]
    fn the_source_table_stays_bounded() {
        let mut limits = Limits::default();
        let now = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 10) {
            limits.allow(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(limits.buckets.len() <= MAX_SOURCES);
    }
}
