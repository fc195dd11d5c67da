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

    /// Runs the server side on one end of a loopback connection; the client writes `bytes`
    /// and gets back what the server answered.
    async fn exchange(bytes: &[u8], auth: Option<SocksAuth>) -> (Result<(String, u16), String>, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(bytes).await.unwrap();
        let result = handshake(&mut server, auth.as_ref()).await;
        // A FIN, not a close: closing with the client's bytes unread would reset the
        // connection and could discard the answer before the client reads it.
        server.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        (result, answer)
    }

    #[tokio::test]
    async fn connect_requests_by_address_type() {
        let v6 = [&[5u8, 1, 0, 5, 1, 0, IPV6][..], &[0; 15], &[1]].concat();
        let (target, answer) = exchange(&[v6, vec![0x01, 0xbb]].concat(), None).await;
        assert_eq!(target, Ok(("::1".into(), 443)));
        assert_eq!(answer, [5, 0]);
        let v4 = [5, 1, 0, 5, 1, 0, IPV4, 10, 0, 0, 7, 0, 22];
        assert_eq!(exchange(&v4, None).await.0, Ok(("10.0.0.7".into(), 22)));
        let name = [&[5u8, 1, 0, 5, 1, 0, DOMAIN, 8][..], b"db.local", &[0x15, 0x38]].concat();
        assert_eq!(exchange(&name, None).await.0, Ok(("db.local".into(), 5432)));
    }

    #[tokio::test]
    async fn what_it_does_not_do_is_answered_in_the_protocol() {
        let bind = [5, 1, 0, 5, 2, 0, IPV4, 10, 0, 0, 7, 0, 22];
        let (result, answer) = exchange(&bind, None).await;
        assert!(result.unwrap_err().contains("only CONNECT"));
        assert_eq!(answer[2..4], [5, COMMAND_NOT_SUPPORTED]);
        let odd_type = [5, 1, 0, 5, 1, 0, 9];
        let (result, answer) = exchange(&odd_type, None).await;
        assert!(result.unwrap_err().contains("address type 9"));
        assert_eq!(answer[2..4], [5, ADDRESS_TYPE_NOT_SUPPORTED]);
        let (result, answer) = exchange(&[4, 1, 0], None).await;
        assert!(result.unwrap_err().contains("not a SOCKS5 client"));
        assert!(answer.is_empty());
        let auth = SocksAuth { user: "u".into(), password: "pw".into() };
        let (result, answer) = exchange(&[5, 1, NO_AUTH], Some(auth.clone())).await;
        assert!(result.unwrap_err().contains("requires"));
        assert_eq!(answer, [5, NO_ACCEPTABLE_METHOD]);
        let wrong = [&[5u8, 1, USER_PASSWORD, 1, 1][..], b"u", &[2], b"no"].concat();
        let (result, answer) = exchange(&wrong, Some(auth.clone())).await;
        assert_eq!(result.unwrap_err(), "wrong username or password");
        assert_eq!(answer, [5, USER_PASSWORD, 1, 1]);
        let right =
            [&[5u8, 1, USER_PASSWORD, 1, 1][..], b"u", &[2], b"pw", &[5, 1, 0, IPV4, 1, 2, 3, 4, 0, 80]].concat();
        assert_eq!(exchange(&right, Some(auth)).await.0, Ok(("1.2.3.4".into(), 80)));
    }

    #[test]
    fn constant_time_equality() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
        assert!(same(b"", b""));
    }
}
