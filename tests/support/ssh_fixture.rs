//! A lightweight SSH server for scale benchmarks: one process serving thousands of
//! (address, port) endpoints with russh, accepting any public key, answering every `exec`
//! with a fixed line and exit status 0. It stands in for thousands of machines where real
//! sshd processes would measure sshd, not the client.

use std::sync::Arc;

use russh::keys::PrivateKey;
use russh::server::{self, Auth, Msg, Session};
use russh::{Channel, ChannelId};
use tokio::net::TcpListener;

/// What every command prints.
pub const ANSWER: &str = "Linux fixture 6.1.0 x86_64 GNU/Linux\n";

#[derive(Clone)]
struct Fixture;

impl server::Handler for Fixture {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        session.data(channel, ANSWER.as_bytes().to_vec())?;
        session.exit_status_request(channel, 0)?;
        session.eof(channel)?;
        session.close(channel)?;
        Ok(())
    }
}

/// Serves SSH on every listener until the returned tasks are dropped (they abort on drop).
pub fn serve(host_key: PrivateKey, listeners: Vec<TcpListener>) -> Vec<tokio_util::task::AbortOnDropHandle<()>> {
    let config = Arc::new(server::Config {
        keys: vec![host_key],
        auth_rejection_time: std::time::Duration::from_millis(0),
        inactivity_timeout: None,
        ..Default::default()
    });
    listeners
        .into_iter()
        .map(|listener| {
            let config = config.clone();
            tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                let mut sessions = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { continue };
                            let _ = socket.set_nodelay(true);
                            let config = config.clone();
                            sessions.spawn(async move {
                                if let Ok(running) = server::run_stream(config, socket, Fixture).await {
                                    let _ = running.await;
                                }
                            });
                        }
                        Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                    }
                }
            }))
        })
        .collect()
}
