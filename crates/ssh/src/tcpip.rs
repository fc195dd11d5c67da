//! `direct-tcpip` channels: a TCP connection made by an SSH host, for port forwarding.

use russh::client::Msg;
use russh::ChannelStream;

use crate::{Pool, SshError};

/// A byte stream to `to_host:to_port` as seen from an SSH host. Holds its channel slot.
pub struct TcpipStream {
    pub stream: ChannelStream<Msg>,
    _lease: crate::pool::Lease,
}

impl Pool {
    /// Asks host `name` to connect to `to_host:to_port`; the stream carries the connection.
    pub async fn direct_tcpip(&self, name: &str, to_host: &str, to_port: u16) -> Result<TcpipStream, SshError> {
        let mut lease = self.lease(name).await?;
        let target = to_host.to_owned();
        let channel = self
            .open(&mut lease, |s| {
                let target = target.clone();
                async move { s.channel_open_direct_tcpip(target, to_port as u32, "127.0.0.1", 0).await }
            })
            .await
            .map_err(|e| match e {
                SshError::Channel { host, reason } => {
                    SshError::Channel { host, reason: format!("connecting to {to_host}:{to_port}: {reason}") }
                }
                other => other,
            })?;
        Ok(TcpipStream { stream: channel.into_stream(), _lease: lease })
    }
}

/// A remote forward's listener on an SSH host (`tcpip-forward`): the host listens, and each
/// connection it accepts arrives here as a channel. Dropping it cancels the forward and frees
/// its channel slot.
pub struct RemoteListener {
    /// The port the host listens on (the one asked for, or the one it chose for 0).
    pub port: u16,
    incoming: tokio::sync::mpsc::Receiver<crate::client::ForwardedChannel>,
    bind: String,
    lease: Option<crate::pool::Lease>,
}

impl RemoteListener {
    /// The next accepted connection: its stream and who connected (`address:port`). `None`
    /// when the session to the host ended.
    pub async fn accept(&mut self) -> Option<(ChannelStream<Msg>, String)> {
        let forwarded = self.incoming.recv().await?;
        Some((forwarded.channel.into_stream(), forwarded.from))
    }
}

impl Drop for RemoteListener {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else { return };
        lease.conn.forwarded.lock().expect("forwarded lock").remove(&(self.port as u32));
        let (session, bind, port) = (lease.conn.session_handle(), std::mem::take(&mut self.bind), self.port);
        // The lease (and its slot) goes once the host has stopped listening.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = session.cancel_tcpip_forward(bind, port as u32).await;
                drop(lease);
            });
        }
    }
}

impl Pool {
    /// Asks host `name` to listen on `bind:port` (0: a port it chooses) and hand each
    /// connection back. The session stays open while the listener lives.
    pub async fn remote_listen(&self, name: &str, bind: &str, port: u16) -> Result<RemoteListener, SshError> {
        let lease = self.lease(name).await?;
        let refused = |reason: String| SshError::Channel {
            host: name.to_owned(),
            reason: format!("listening on {bind}:{port}: {reason}"),
        };
        let (tx, incoming) = tokio::sync::mpsc::channel(16);
        let session = lease.conn.session_handle();
        // Registered before asking for a fixed port: a connection may arrive before the answer.
        if port != 0 {
            lease.conn.forwarded.lock().expect("forwarded lock").insert(port as u32, tx.clone());
        }
        let granted = match session.tcpip_forward(bind, port as u32).await {
            Ok(0) => port as u32,
            Ok(chosen) => chosen,
            Err(e) => {
                lease.conn.forwarded.lock().expect("forwarded lock").remove(&(port as u32));
                return Err(refused(format!("the host refused ({e}); does its sshd allow TCP forwarding?")));
            }
        };
        let granted = u16::try_from(granted).map_err(|_| refused(format!("the host answered port {granted}")))?;
        lease.conn.forwarded.lock().expect("forwarded lock").insert(granted as u32, tx);
        Ok(RemoteListener { port: granted, incoming, bind: bind.to_owned(), lease: Some(lease) })
    }
}
