//! The node's one UDP socket, shared by QUIC and STUN.
//!
//! quinn owns the socket through this wrapper, which takes STUN answers out of what quinn
//! receives (RFC 7983: STUN's first byte is below 4, QUIC's has the 0x40 bit set) and lets
//! the candidate gatherer send STUN requests from the same port, so the public mapping STUN
//! reports is the one QUIC uses. It also carries [`UdpSwitch`], which drops every datagram
//! both ways: how tests cut a direct path without root.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::mpsc;
use tunnel_proto::stun;

/// Drops every datagram on a node's direct-path socket while on: a path cut for tests and
/// drills. Cloning shares the switch.
#[derive(Clone, Default, Debug)]
pub struct UdpSwitch(Arc<AtomicBool>);

impl UdpSwitch {
    pub fn set_blocked(&self, blocked: bool) {
        self.0.store(blocked, Ordering::SeqCst);
    }

    pub fn is_blocked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The most one `sendmsg` may carry with UDP GSO: the kernel builds the whole batch as one
/// IPv4 datagram first, so it fails with `EMSGSIZE` past 65,507 bytes. quinn does not know:
/// with the 64 KiB datagrams MTU discovery finds on loopback it batches several, and each
/// such batch was silently lost (the path crawled along on 1,200-byte loss probes).
const MAX_GSO_BYTES: usize = 65_507;

/// Splits a GSO transmit of `segment`-sized datagrams into batches the kernel accepts.
fn gso_batches(contents: &[u8], segment: usize) -> std::slice::Chunks<'_, u8> {
    let per_batch = (MAX_GSO_BYTES / segment.max(1)).max(1);
    contents.chunks(per_batch * segment.max(1))
}

/// A STUN answer: who answered and what it said.
pub(crate) type StunReply = (SocketAddr, Vec<u8>);

pub(crate) struct PathSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    stun: mpsc::Sender<StunReply>,
    switch: UdpSwitch,
}

impl fmt::Debug for PathSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PathSocket").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl PathSocket {
    pub(crate) fn new(inner: Arc<dyn AsyncUdpSocket>, switch: UdpSwitch) -> (Arc<Self>, mpsc::Receiver<StunReply>) {
        let (stun, replies) = mpsc::channel(64);
        (Arc::new(Self { inner, stun, switch }), replies)
    }

    /// Sends one datagram outside QUIC (a STUN request). Best effort: a full socket buffer
    /// drops it, and the caller's retry covers that.
    pub(crate) fn send_raw(&self, to: SocketAddr, bytes: &[u8]) {
        let transmit = Transmit { destination: to, ecn: None, contents: bytes, segment_size: None, src_ip: None };
        let _ = self.try_send(&transmit);
    }

    /// Removes STUN datagrams from one receive buffer (several datagrams when the kernel
    /// coalesced them, `stride` apart), handing them to the gatherer. Returns the new length.
    fn take_stun(&self, buf: &mut [u8], meta: &RecvMeta) -> usize {
        let stride = meta.stride.max(1);
        let (mut read, mut write) = (0, 0);
        while read < meta.len {
            let end = (read + stride).min(meta.len);
            if stun::is_stun(&buf[read..end]) {
                let _ = self.stun.try_send((meta.addr, buf[read..end].to_vec()));
            } else {
                buf.copy_within(read..end, write);
                write += end - read;
            }
            read = end;
        }
        write
    }
}

impl AsyncUdpSocket for PathSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if self.switch.is_blocked() {
            return Ok(());
        }
        match transmit.segment_size {
            Some(segment) if transmit.contents.len() > MAX_GSO_BYTES => {
                // A WouldBlock part way makes quinn retry the whole transmit: the receiver
                // drops the repeated packets by number, which costs less than losing them.
                for batch in gso_batches(transmit.contents, segment) {
                    let segment_size = (batch.len() > segment).then_some(segment);
                    self.inner.try_send(&Transmit { contents: batch, segment_size, ..*transmit })?;
                }
                Ok(())
            }
            _ => self.inner.try_send(transmit),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let n = match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            if self.switch.is_blocked() {
                continue;
            }
            let mut kept = 0;
            for i in 0..n {
                meta[i].len = self.take_stun(&mut bufs[i], &meta[i]);
                kept += meta[i].len;
            }
            if kept > 0 {
                return Poll::Ready(Ok(n));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    /// One: quinn sizes its receive buffers as segments x the largest datagram, which with
    /// 64 KiB datagrams and the kernel's 64 GRO segments would be 128 MiB. The kernel never
    /// coalesces past 64 KiB (`skb_gro_receive`), which one slot of the largest datagram
    /// (65,527 bytes) holds.
    fn max_receive_segments(&self) -> usize {
        1
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::Runtime;

    #[test]
    fn gso_batches_fit_one_ipv4_datagram() {
        // Loopback's MTU: one datagram per batch.
        let big = vec![0u8; 3 * 65_495 + 10];
        let batches: Vec<usize> = gso_batches(&big, 65_495).map(<[u8]>::len).collect();
        assert_eq!(batches, [65_495, 65_495, 65_495, 10]);
        // Internet-sized datagrams: as many whole ones as fit, then the rest.
        let small = vec![0u8; 64 * 1_452];
        let batches: Vec<usize> = gso_batches(&small, 1_452).map(<[u8]>::len).collect();
        assert_eq!(batches, [45 * 1_452, 19 * 1_452]);
        assert!(batches.iter().all(|&n| n <= MAX_GSO_BYTES));
    }

    /// The kernel refuses a GSO send past 64 KiB and quinn's socket swallows the error: this
    /// is what arrives when quinn batches two big datagrams.
    #[tokio::test]
    async fn a_gso_batch_of_big_datagrams_arrives_whole() {
        let to = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        to.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let from = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inner = quinn::TokioRuntime.wrap_udp_socket(from).unwrap();
        let (socket, _stun) = PathSocket::new(inner, UdpSwitch::default());
        let contents: Vec<u8> = (0..80_000u32).map(|i| i as u8).collect();
        let transmit = Transmit {
            destination: to.local_addr().unwrap(),
            ecn: None,
            contents: &contents,
            segment_size: Some(40_000),
            src_ip: None,
        };
        let mut poller = socket.clone().create_io_poller();
        let sent = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx)).await.unwrap();
                match socket.try_send(&transmit) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            }
        });
        sent.await.expect("the socket turns writable").unwrap();
        let mut buf = vec![0u8; 65_536];
        for part in contents.chunks(40_000) {
            let n = to.recv(&mut buf).expect("a datagram of the batch");
            assert_eq!(&buf[..n], part);
        }
    }
}
