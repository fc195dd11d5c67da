//! Just enough HTTP/1.1 for the relay: read one request head, answer `/healthz` and
//! `/metrics`, or validate a WebSocket upgrade and answer `101`. A whole HTTP stack would
//! cost more memory per idle peer than the rest of the relay.

use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tunnel_proto::relay::{Speaks, SUBPROTOCOL, SUBPROTOCOL_V1};

const MAX_HEAD: usize = 8 * 1024;

pub(crate) struct RequestHead {
    pub(crate) method: String,
    pub(crate) path: String,
    headers: Vec<(String, String)>,
}

impl RequestHead {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Reads a request head. Returns it and any bytes read past its end.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(RequestHead, Vec<u8>), &'static str> {
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() >= MAX_HEAD {
            return Err("request head too large");
        }
        // A TLS ClientHello (a wss:// URL) on a plain port: answer at once in plain text,
        // which the client's TLS reports as "not TLS", instead of waiting for a head.
        if buf.first() == Some(&0x16) {
            return Err("a TLS handshake on a plain relay: use a ws:// URL, or give the relay --tls-cert");
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.map_err(|_| "connection error")?;
        if n == 0 {
            return Err("connection closed before the request head ended");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "request head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (method, path) = match (first.next(), first.next(), first.next()) {
        (Some(m), Some(p), Some(v)) if v.starts_with("HTTP/1.") => (m.to_owned(), p.to_owned()),
        _ => return Err("malformed request line"),
    };
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let rest = buf[end..].to_vec();
    Ok((RequestHead { method, path, headers }, rest))
}

pub(crate) async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, status: &str, content_type: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Why an upgrade was refused: HTTP status and a one-line reason for the client.
pub(crate) struct Refusal {
    pub(crate) status: &'static str,
    pub(crate) reason: &'static str,
    pub(crate) auth: bool,
}

/// Checks an upgrade request; on success returns the `101` response to send and the protocol
/// agreed on: the newest the client offers, up to `newest` (this relay's).
pub(crate) fn accept_upgrade(
    head: &RequestHead,
    access_token: Option<&str>,
    newest: u16,
) -> Result<(String, Speaks), Refusal> {
    let refuse = |status, reason| Refusal { status, reason, auth: false };
    if head.method != "GET" {
        return Err(refuse("405 Method Not Allowed", "use GET"));
    }
    if !head.header_has_token("Upgrade", "websocket") || !head.header_has_token("Connection", "upgrade") {
        return Err(refuse(
            "426 Upgrade Required",
            "this endpoint speaks WebSocket (subprotocol tunnel-relay.v2 or tunnel-relay.v1)",
        ));
    }
    if head.header("Sec-WebSocket-Version") != Some("13") {
        return Err(refuse("400 Bad Request", "Sec-WebSocket-Version must be 13"));
    }
    let Some(key) = head.header("Sec-WebSocket-Key") else {
        return Err(refuse("400 Bad Request", "missing Sec-WebSocket-Key"));
    };
    let protocol = if newest >= 2 && head.header_has_token("Sec-WebSocket-Protocol", SUBPROTOCOL) {
        SUBPROTOCOL
    } else if head.header_has_token("Sec-WebSocket-Protocol", SUBPROTOCOL_V1) {
        SUBPROTOCOL_V1
    } else {
        return Err(refuse(
            "400 Bad Request",
            "missing subprotocol tunnel-relay.v2 or tunnel-relay.v1 (client and relay versions differ?)",
        ));
    };
    if let Some(expected) = access_token {
        let given = head.header("Authorization").and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
        // Constant time on equal lengths; the length itself is not secret enough to matter.
        let ok = given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()));
        if !ok {
            return Err(Refusal {
                status: "401 Unauthorized",
                reason: "this relay needs a valid access token",
                auth: true,
            });
        }
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
    );
    Ok((response, Speaks::for_subprotocol(protocol).expect("a subprotocol this relay speaks")))
}
