use tunnel_proto::NodeId;

/// Why the first connection to the relay failed. Each variant prints as one clear line.
#[derive(Debug, thiserror::Error, Clone)]
#[non_exhaustive]
pub enum ConnectError {
    #[error("bad relay URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("relay {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("relay {url} refused the access token (HTTP 401): check --access-token / TUNNEL_ACCESS_TOKEN")]
    AccessDenied { url: String },
    #[error("relay {url} answered HTTP {status}: {body}")]
    Http { url: String, status: u16, body: String },
    #[error("relay {url} refused to let this node join: {reason}")]
    Refused { url: String, reason: String },
    #[error("relay {url} broke the protocol: {reason}")]
    Protocol { url: String, reason: String },
    #[error("relay {url} did not answer within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("relay {url}: {reason}")]
    Tls { url: String, reason: String },
    #[error("cannot set up TLS for relay {url}: {reason}")]
    Trust { url: String, reason: String },
    /// The direct-path socket could not be opened (a taken `udp_port`).
    #[error("direct paths: {0}")]
    Direct(String),
}

impl ConnectError {
    /// Errors that retrying will not fix without a change of configuration.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::BadUrl { .. }
                | Self::AccessDenied { .. }
                | Self::Refused { .. }
                | Self::Trust { .. }
                | Self::Direct(_)
        )
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetError {
    #[error("peer {0} is not in the room")]
    NotPresent(String),
    #[error("peer {peer}: {reason}")]
    Link { peer: String, reason: String },
    #[error("too much queued for peer {0}; it is not keeping up")]
    Backlog(String),
    #[error("this node is shutting down")]
    Closed,
}

impl NetError {
    pub(crate) fn not_present(id: &NodeId) -> Self {
        Self::NotPresent(id.short())
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    #[error("stream reset by peer: {0}")]
    Reset(String),
    #[error("stream lost: {0}")]
    Lost(String),
    #[error("stream closed")]
    Closed,
}
