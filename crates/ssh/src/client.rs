//! One SSH connection: TCP (or a channel through a jump host), key exchange with the host key
//! checked against `known_hosts` before anything else is sent, then authentication with the
//! host's key files, the agent, and the default key files.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{agent::client::AgentClient, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use zeroize::Zeroizing;

use crate::inventory::{Host, Passphrase, StrictHostKeys};
use crate::known_hosts::{self, Verdict};
use crate::SshError;

/// Settings shared by every connection of a pool.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Read for host keys, in order.
    pub known_hosts: Vec<PathBuf>,
    /// Where `accept-new` records keys.
    pub record_to: PathBuf,
    pub strict_host_keys: StrictHostKeys,
    pub connect_timeout: Duration,
    /// The ssh-agent socket (`SSH_AUTH_SOCK`), if any.
    pub agent: Option<PathBuf>,
    /// The local user, for hosts that name none.
    pub default_user: String,
    /// Tried when a host names no key file: `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`.
    pub default_identities: Vec<PathBuf>,
}

impl ClientSettings {
    /// OpenSSH's defaults for this user.
    pub fn from_env() -> Self {
        let home = crate::inventory::expand_home("~/.ssh");
        Self {
            known_hosts: vec![home.join("known_hosts"), PathBuf::from("/etc/ssh/ssh_known_hosts")],
            record_to: home.join("known_hosts"),
            strict_host_keys: StrictHostKeys::Yes,
            connect_timeout: Duration::from_secs(10),
            agent: std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from),
            default_user: std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "root".into()),
            default_identities: ["id_ed25519", "id_ecdsa", "id_rsa"].iter().map(|f| home.join(f)).collect(),
        }
    }
}

/// Why a host key was not accepted; kept by the handler for the error message.
type KeyProblem = Arc<Mutex<Option<SshError>>>;

/// A connection the server accepted on one of our remote forwards (`tcpip-forward`).
pub(crate) struct ForwardedChannel {
    pub(crate) channel: russh::Channel<client::Msg>,
    /// Who connected, `address:port`, as the server says.
    pub(crate) from: String,
}

/// Where the channels of each remote forward go, by the port the server listens on.
pub(crate) type Forwarded = Arc<Mutex<std::collections::HashMap<u32, tokio::sync::mpsc::Sender<ForwardedChannel>>>>;

pub(crate) struct Client {
    host: Arc<Host>,
    settings: Arc<ClientSettings>,
    problem: KeyProblem,
    forwarded: Forwarded,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            *self.problem.lock().expect("problem lock") = Some(SshError::Config {
                host: self.host.name.clone(),
                reason: "the host presented a certificate; host certificates are not accepted".into(),
            });
            return Ok(false);
        };
        let (host, address) = (&self.host.name, format!("{}:{}", self.host.address, self.host.port));
        let fingerprint = known_hosts::fingerprint(key);
        let refusal = match known_hosts::check(&self.settings.known_hosts, &self.host.address, self.host.port, key) {
            Verdict::Trusted => return Ok(true),
            Verdict::Unknown => {
                let strict = self.host.strict_host_keys.unwrap_or(self.settings.strict_host_keys);
                if strict == StrictHostKeys::AcceptNew {
                    tracing::warn!(%host, %address, %fingerprint, "accept-new: trusting and recording a new host key");
                    match known_hosts::record(&self.settings.record_to, &self.host.address, self.host.port, key) {
                        Ok(()) => return Ok(true),
                        Err(e) => SshError::Config {
                            host: host.clone(),
                            reason: format!(
                                "cannot record the new host key in {}: {e}",
                                self.settings.record_to.display()
                            ),
                        },
                    }
                } else {
                    let keyscan = if self.host.port == 22 {
                        self.host.address.clone()
                    } else {
                        format!("-p {} {}", self.host.port, self.host.address)
                    };
                    SshError::HostKeyUnknown {
                        host: host.clone(),
                        address,
                        key_type: key.algorithm().as_str().to_owned(),
                        fingerprint,
                        keyscan,
                    }
                }
            }
            Verdict::Changed { known_at } => {
                tracing::error!(%host, %address, %fingerprint, %known_at, "HOST KEY CHANGED; refusing to connect");
                SshError::HostKeyChanged { host: host.clone(), address, fingerprint, known_at }
            }
            Verdict::Revoked { at } => SshError::HostKeyRevoked { host: host.clone(), address, fingerprint, at },
        };
        *self.problem.lock().expect("problem lock") = Some(refusal);
        Ok(false)
    }

    /// A connection to one of our remote forwards: to its listener, or refused if it has none
    /// (a forward cancelled a moment ago, or one we never asked for).
    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<client::Msg>,
        _connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let to = self.forwarded.lock().expect("forwarded lock").get(&connected_port).cloned();
        match to {
            Some(to) => {
                reply.accept().await;
                let from = format!("{originator_address}:{originator_port}");
                let _ = to.send(ForwardedChannel { channel, from }).await;
            }
            None => reply.reject(russh::ChannelOpenFailure::AdministrativelyProhibited).await,
        }
        Ok(())
    }
}

pub(crate) type Session = Handle<Client>;

fn russh_config() -> Arc<client::Config> {
    Arc::new(client::Config {
        // The pool closes idle sessions itself; keepalives find dead ones.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        window_size: 2 * 1024 * 1024,
        ..client::Config::default()
    })
}

/// Connects and authenticates. `via` is an open session to the `ProxyJump` host, if any.
pub(crate) async fn connect(
    host: Arc<Host>,
    settings: Arc<ClientSettings>,
    via: Option<Arc<Session>>,
) -> Result<(Session, Forwarded), SshError> {
    let problem = KeyProblem::default();
    let forwarded = Forwarded::default();
    let handler = Client {
        host: host.clone(),
        settings: settings.clone(),
        problem: problem.clone(),
        forwarded: forwarded.clone(),
    };
    let address = format!("{}:{}", host.address, host.port);
    let connect_err = |reason: String| SshError::Connect { host: host.name.clone(), address: address.clone(), reason };
    let config = russh_config();
    let handshake = async {
        match &via {
            None => {
                let tcp = tokio::net::TcpStream::connect((host.address.as_str(), host.port))
                    .await
                    .map_err(|e| connect_err(e.to_string()))?;
                let _ = tcp.set_nodelay(true);
                client::connect_stream(config, tcp, handler).await
            }
            Some(jump) => {
                let channel = jump
                    .channel_open_direct_tcpip(host.address.clone(), host.port as u32, "127.0.0.1", 0)
                    .await
                    .map_err(|e| connect_err(format!("through the jump host: {e}")))?;
                client::connect_stream(config, channel.into_stream(), handler).await
            }
        }
        .map_err(|e| problem.lock().expect("problem lock").take().unwrap_or_else(|| connect_err(e.to_string())))
    };
    let secs = settings.connect_timeout.as_secs().max(1);
    let mut session = tokio::time::timeout(settings.connect_timeout, handshake)
        .await
        .map_err(|_| SshError::Timeout { host: host.name.clone(), what: format!("connecting to {address}"), secs })??;
    let auth = tokio::time::timeout(settings.connect_timeout, authenticate(&mut session, &host, &settings));
    auth.await.map_err(|_| SshError::Timeout { host: host.name.clone(), what: "authentication".into(), secs })??;
    Ok((session, forwarded))
}

async fn authenticate(session: &mut Session, host: &Host, settings: &ClientSettings) -> Result<(), SshError> {
    let user = host.user.clone().unwrap_or_else(|| settings.default_user.clone());
    let mut tried: Vec<String> = Vec::new();
    let channel_err = |e: russh::Error| SshError::Connect {
        host: host.name.clone(),
        address: format!("{}:{}", host.address, host.port),
        reason: format!("during authentication: {e}"),
    };
    let rsa_hash = session.best_supported_rsa_hash().await.map_err(channel_err)?.flatten().or(Some(HashAlg::Sha512));

    // 1. The host's own key files: the user chose them, so their problems are errors.
    for path in &host.identity_files {
        let key = load_key(path, host)?;
        tried.push(path.display().to_string());
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), rsa_hash);
        if session.authenticate_publickey(&user, key).await.map_err(channel_err)?.success() {
            return Ok(());
        }
    }
    // 2. The agent's keys.
    if let Some(sock) = &settings.agent {
        match AgentClient::connect_uds(sock).await {
            Ok(mut agent) => {
                let identities = agent.request_identities().await.unwrap_or_default();
                for identity in identities {
                    let russh::keys::agent::AgentIdentity::PublicKey { key, comment } = identity else { continue };
                    tried.push(format!(
                        "agent key {}",
                        if comment.is_empty() { key.algorithm().to_string() } else { comment }
                    ));
                    let hash = if key.algorithm().is_rsa() { rsa_hash } else { None };
                    match session.authenticate_publickey_with(&user, key, hash, &mut agent).await {
                        Ok(r) if r.success() => return Ok(()),
                        Ok(_) => {}
                        Err(e) => tracing::debug!(host = %host.name, error = %e, "agent could not sign"),
                    }
                }
            }
            Err(e) => tried.push(format!("agent at {} (unreachable: {e})", sock.display())),
        }
    }
    // 3. OpenSSH's default key files, when the host named none. Encrypted ones are skipped.
    if host.identity_files.is_empty() {
        for path in settings.default_identities.iter().filter(|p| p.exists()) {
            let Ok(key) = russh::keys::load_secret_key(path, None) else { continue };
            tried.push(path.display().to_string());
            let key = PrivateKeyWithHashAlg::new(Arc::new(key), rsa_hash);
            if session.authenticate_publickey(&user, key).await.map_err(channel_err)?.success() {
                return Ok(());
            }
        }
    }
    let tried = if tried.is_empty() {
        "no keys: no key file, and no ssh-agent (SSH_AUTH_SOCK)".into()
    } else {
        tried.join(", ")
    };
    Err(SshError::Auth { host: host.name.clone(), user, tried })
}

fn load_key(path: &std::path::Path, host: &Host) -> Result<PrivateKey, SshError> {
    let err = |reason: String| SshError::Config {
        host: host.name.clone(),
        reason: format!("key file {}: {reason}", path.display()),
    };
    let passphrase: Option<Zeroizing<String>> = match &host.passphrase {
        None => None,
        Some(Passphrase::Env(var)) => {
            Some(Zeroizing::new(std::env::var(var).map_err(|_| err(format!("passphrase_env {var} is not set")))?))
        }
        Some(Passphrase::File(file)) => {
            let text =
                std::fs::read_to_string(file).map_err(|e| err(format!("passphrase_file {}: {e}", file.display())))?;
            Some(Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_owned()))
        }
    };
    russh::keys::load_secret_key(path, passphrase.as_deref().map(String::as_str)).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => {
            err("the key is encrypted; set passphrase_env or passphrase_file for this host".into())
        }
        other => err(other.to_string()),
    })
}
