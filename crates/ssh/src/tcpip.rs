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
