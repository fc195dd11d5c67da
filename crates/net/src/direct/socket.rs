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
        self.inner.try_send(transmit)
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
