//! Streamable HTTP at `/mcp`. In front of rmcp's service sits a gate: the `Host` (and any
//! `Origin`) must name this server, which defeats DNS rebinding from a browser; and every
//! request must carry the bearer token, because anyone who can call these tools operates the
//! fleet with this machine's identity. Each client gets its own MCP session.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use subtle::ConstantTimeEq;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::TunnelMcp;

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 256;
const PATH: &str = "/mcp";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    #[error(
        "the HTTP transport needs a bearer token: pass --auth-token or set TUNNEL_MCP_TOKEN \
         (`tunnel token` makes a good one); clients send it as `Authorization: Bearer TOKEN`"
    )]
    NoToken,
    #[error("the bearer token must be at least 16 characters")]
    WeakToken,
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

pub struct HttpOptions {
    pub listen: SocketAddr,
    pub auth_token: Option<String>,
    /// Host names, besides loopback ones and the listen address, that clients may use.
    pub allowed_hosts: Vec<String>,
    /// Serve HTTPS with this certificate (reloaded on SIGHUP by whoever made it).
    pub tls: Option<Arc<tunnel_tls::ServerTls>>,
}

/// A bound server, not yet serving: binding first lets the caller print the real address.
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    tls: Option<Arc<tunnel_tls::ServerTls>>,
    gate: Arc<Gate>,
    server: TunnelMcp,
}

struct Gate {
    token: String,
    hosts: Vec<String>,
}

impl HttpServer {
    pub async fn bind(server: TunnelMcp, opts: HttpOptions) -> Result<Self, HttpError> {
        let token = opts.auth_token.filter(|t| !t.is_empty()).ok_or(HttpError::NoToken)?;
        if token.len() < 16 {
            return Err(HttpError::WeakToken);
        }
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| HttpError::Bind { addr: opts.listen, source })?;
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
        if !opts.listen.ip().is_unspecified() {
            hosts.push(opts.listen.ip().to_string());
        }
        hosts.extend(opts.allowed_hosts.into_iter().map(|h| h.to_ascii_lowercase()));
        Ok(Self { listener, tls: opts.tls, gate: Arc::new(Gate { token, hosts }), server })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled; open sessions end with it.
    pub async fn run(self, shutdown: CancellationToken) {
        let config = StreamableHttpServerConfig::default()
            .with_allowed_hosts(self.gate.hosts.clone())
            .with_cancellation_token(shutdown.child_token());
        let server = self.server;
        let mcp =
            StreamableHttpService::new(move || Ok(server.clone()), Arc::new(LocalSessionManager::default()), config);
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                accepted = self.listener.accept(), if conns.len() < MAX_CONNECTIONS => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let (gate, mcp, stop) = (self.gate.clone(), mcp.clone(), shutdown.clone());
                    let tls = self.tls.clone();
                    conns.spawn(async move {
                        let Some(stream) = secure(stream, tls.as_deref()).await else { return };
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let (gate, mcp) = (gate.clone(), mcp.clone());
                            async move {
                                Ok::<_, Infallible>(match gate.check(&req) {
                                    Err((status, why)) => reply(status, &why),
                                    Ok(()) => mcp.handle(req).await,
                                })
                            }
                        });
                        let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                        tokio::pin!(conn);
                        tokio::select! {
                            r = conn.as_mut() => if let Err(e) = r { debug!(%peer, error = %e, "HTTP connection ended") },
                            _ = stop.cancelled() => {}
                        }
                    });
                }
            }
        }
        info!("MCP HTTP server stopped");
    }
}

/// TLS when configured (handshake within ten seconds); `None` when the connection is done.
async fn secure(tcp: tokio::net::TcpStream, tls: Option<&tunnel_tls::ServerTls>) -> Option<Box<dyn tunnel_tls::Io>> {
    let Some(tls) = tls else { return Some(Box::new(tcp)) };
    let plain_hint = "this MCP server serves HTTPS: use an https:// URL";
    let accepted = tokio::time::timeout(std::time::Duration::from_secs(10), tls.accept(tcp, plain_hint)).await.ok()?;
    accepted.map_err(|why| debug!(why, "MCP HTTPS connection refused")).ok()
}

fn reply(status: StatusCode, message: &str) -> Response<BoxBody<Bytes, Infallible>> {
    let mut resp = Response::new(Full::new(Bytes::from(format!("{message}\n"))).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
    }
    resp
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` → the host, lowercased.
fn host_part(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_owned();
    }
    a.rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(a.clone(), |(h, _)| h.to_owned())
}

impl Gate {
    /// `Err` carries the status and the reason the client is told.
    fn check<B>(&self, req: &Request<B>) -> Result<(), (StatusCode, String)> {
        let header = |name: http::header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
        let Some(host) = header(http::header::HOST) else {
            return Err((StatusCode::FORBIDDEN, "a Host header is required".into()));
        };
        if !self.hosts.contains(&host_part(host)) {
            return Err((
                StatusCode::FORBIDDEN,
                format!("Host {host:?} is not this server (allowed: {})", self.hosts.join(", ")),
            ));
        }
        if let Some(origin) = header(http::header::ORIGIN) {
            let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
            if !authority.is_some_and(|a| self.hosts.contains(&host_part(a))) {
                return Err((StatusCode::FORBIDDEN, format!("Origin {origin:?} may not use this server")));
            }
        }
        let presented = header(http::header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default();
        if !bool::from(presented.as_bytes().ct_eq(self.token.as_bytes())) {
            let why = if presented.is_empty() { "missing bearer token" } else { "wrong bearer token" };
            return Err((StatusCode::UNAUTHORIZED, why.into()));
        }
        if req.uri().path() != PATH {
            return Err((StatusCode::NOT_FOUND, "the MCP endpoint is /mcp".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_part_strips_ports_and_brackets() {
        assert_eq!(host_part("LocalHost:8001"), "localhost");
        assert_eq!(host_part("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_part("[::1]:80"), "::1");
        assert_eq!(host_part("evil.example:80"), "evil.example");
    }
}
