//! What can go wrong reaching or using an SSH host, each with what to do about it.

/// An SSH operation's failure. Messages name the host and say what to do.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SshError {
    #[error("ssh host {0:?} is not in this node's inventory")]
    UnknownHost(String),
    #[error("ssh host {host}: cannot connect to {address}: {reason}")]
    Connect { host: String, address: String, reason: String },
    #[error(
        "ssh host {host}: {address} is not in known_hosts; it offered {key_type} key {fingerprint}. \
         To trust it, check the fingerprint and run `ssh-keyscan {keyscan} >> ~/.ssh/known_hosts` \
         on the jump node, or set strict_host_keys = \"accept-new\""
    )]
    HostKeyUnknown { host: String, address: String, key_type: String, fingerprint: String, keyscan: String },
    #[error(
        "ssh host {host}: HOST KEY CHANGED for {address}: it offered {fingerprint}, but {known_at} \
         lists another key. Someone may be intercepting the connection; nothing was sent. If the \
         host was really re-keyed, remove the old line and trust the new key"
    )]
    HostKeyChanged { host: String, address: String, fingerprint: String, known_at: String },
    #[error("ssh host {host}: the key {fingerprint} of {address} is revoked ({at}); refusing")]
    HostKeyRevoked { host: String, address: String, fingerprint: String, at: String },
    #[error("ssh host {host}: authentication as {user} failed; tried {tried}")]
    Auth { host: String, user: String, tried: String },
    #[error("ssh host {host}: {what} timed out after {secs} s")]
    Timeout { host: String, what: String, secs: u64 },
    #[error("ssh host {host}: {reason}")]
    Channel { host: String, reason: String },
    #[error("ssh host {host}: {path}: {reason}")]
    File { host: String, path: String, reason: String },
    #[error("ssh host {host}: {reason}")]
    Config { host: String, reason: String },
}

impl SshError {
    /// Whether trying to connect again may help (network trouble), as opposed to a refusal
    /// that will be the same next time (host key, authentication, configuration).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Timeout { .. })
    }
}
