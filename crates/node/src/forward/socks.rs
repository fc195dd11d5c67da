//! The SOCKS5 server side of `-D` (RFC 1928): CONNECT to an IPv4 or IPv6 address or to a
//! domain name (resolved at the exit, so names of the exit's network work), with either no
//! authentication or username/password (RFC 1929) when the forward has credentials.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_proto::forward::{ConnectFailure, ConnectReply};

use super::SocksAuth;

/// How long a client may take to say where it wants to go.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0x00;
const USER_PASSWORD: u8 = 0x02;
const NO_ACCEPTABLE_METHOD: u8 = 0xff;
const CONNECT: u8 = 1;
const IPV4: u8 = 1;
const DOMAIN: u8 = 3;
const IPV6: u8 = 4;

/// Reply codes (RFC 1928 section 6).
const GENERAL_FAILURE: u8 = 1;
const NOT_ALLOWED: u8 = 2;
const NETWORK_UNREACHABLE: u8 = 3;
const HOST_UNREACHABLE: u8 = 4;
const CONNECTION_REFUSED: u8 = 5;
const TTL_EXPIRED: u8 = 6;
const COMMAND_NOT_SUPPORTED: u8 = 7;
const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 8;

/// Runs the handshake up to the CONNECT request; returns where the client wants to go.
/// Clients that speak something else, or fail authentication, get the protocol's answer
/// and an error.
pub(super) async fn handshake(tcp: &mut TcpStream, auth: Option<&SocksAuth>) -> Result<(String, u16), String> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, negotiate(tcp, auth)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no complete request within {} s", HANDSHAKE_TIMEOUT.as_secs())),
    }
}

async fn negotiate(tcp: &mut TcpStream, auth: Option<&SocksAuth>) -> Result<(String, u16), String> {
    let io = |e: std::io::Error| format!("connection: {e}");
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).await.map_err(io)?;
    if head[0] != VERSION {
        return Err(format!("not a SOCKS5 client (version byte {})", head[0]));
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    tcp.read_exact(&mut methods).await.map_err(io)?;
    let wanted = if auth.is_some() { USER_PASSWORD } else { NO_AUTH };
    if !methods.contains(&wanted) {
        tcp.write_all(&[VERSION, NO_ACCEPTABLE_METHOD]).await.map_err(io)?;
        return Err(match auth {
            Some(_) => "the client does not offer username/password authentication, which this proxy requires".into(),
            None => "the client offers no method this proxy accepts (it needs no authentication)".into(),
        });
    }
    tcp.write_all(&[VERSION, wanted]).await.map_err(io)?;
    if let Some(auth) = auth {
        check_credentials(tcp, auth).await?;
    }
    let mut request = [0u8; 4];
    tcp.read_exact(&mut request).await.map_err(io)?;
    let [version, command, _, address_type] = request;
    if version != VERSION {
        return Err(format!("bad request version {version}"));
    }
    let host = match address_type {
        IPV4 => {
            let mut a = [0u8; 4];
            tcp.read_exact(&mut a).await.map_err(io)?;
            std::net::Ipv4Addr::from(a).to_string()
        }
        IPV6 => {
            let mut a = [0u8; 16];
            tcp.read_exact(&mut a).await.map_err(io)?;
            std::net::Ipv6Addr::from(a).to_string()
        }
        DOMAIN => {
            let len = tcp.read_u8().await.map_err(io)?;
            let mut name = vec![0u8; usize::from(len)];
            tcp.read_exact(&mut name).await.map_err(io)?;
            match String::from_utf8(name) {
                Ok(name) if !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c.is_control()) => name,
                _ => {
                    send_code(tcp, HOST_UNREACHABLE).await.map_err(io)?;
                    return Err("the requested domain name is not a valid name".into());
                }
            }
        }
        other => {
            send_code(tcp, ADDRESS_TYPE_NOT_SUPPORTED).await.map_err(io)?;
            return Err(format!("address type {other} is not supported"));
        }
    };
    let port = tcp.read_u16().await.map_err(io)?;
    if command != CONNECT {
        send_code(tcp, COMMAND_NOT_SUPPORTED).await.map_err(io)?;
        return Err(format!("command {command} is not supported (only CONNECT)"));
    }
    Ok((host, port))
}

/// RFC 1929: one username/password exchange; a mismatch is answered, then the connection ends.
async fn check_credentials(tcp: &mut TcpStream, auth: &SocksAuth) -> Result<(), String> {
    let io = |e: std::io::Error| format!("connection: {e}");
    let version = tcp.read_u8().await.map_err(io)?;
    if version != 1 {
        return Err(format!("bad username/password version {version}"));
    }
    let user_len = tcp.read_u8().await.map_err(io)?;
    let mut user = vec![0u8; usize::from(user_len)];
    tcp.read_exact(&mut user).await.map_err(io)?;
    let password_len = tcp.read_u8().await.map_err(io)?;
    let mut password = vec![0u8; usize::from(password_len)];
    tcp.read_exact(&mut password).await.map_err(io)?;
    // Both compared in full, whatever the first says: the time taken tells nothing.
    let ok = same(&user, auth.user.as_bytes()) & same(&password, auth.password.as_bytes());
    tcp.write_all(&[1, if ok { 0 } else { 1 }]).await.map_err(io)?;
    if ok {
        Ok(())
    } else {
        Err("wrong username or password".into())
    }
}

/// Equality in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(!x);
    }
    diff == 0
}

async fn send_code(tcp: &mut TcpStream, code: u8) -> std::io::Result<()> {
    // The bound address is not meaningful through a mesh; 0.0.0.0:0, as many servers send.
    tcp.write_all(&[VERSION, code, 0, IPV4, 0, 0, 0, 0, 0, 0]).await
}

/// Tells the client how its CONNECT went: success, or the code that fits the exit's answer.
pub(super) async fn reply(tcp: &mut TcpStream, failed: Option<&ConnectReply>) -> std::io::Result<()> {
    let code = match failed {
        None | Some(ConnectReply::Connected { .. }) => 0,
        Some(ConnectReply::Refused(_)) => NOT_ALLOWED,
        Some(ConnectReply::Failed { why, .. }) => match why {
            ConnectFailure::HostUnreachable => HOST_UNREACHABLE,
            ConnectFailure::NetworkUnreachable => NETWORK_UNREACHABLE,
            ConnectFailure::ConnectionRefused => CONNECTION_REFUSED,
            ConnectFailure::TimedOut => TTL_EXPIRED,
            ConnectFailure::Other => GENERAL_FAILURE,
        },
    };
    send_code(tcp, code).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_equality() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
        assert!(same(b"", b""));
    }
}
