//! A bare relay client that speaks the relay protocol (v2, or v1 as an old node) frame by frame: for tests that need to
//! misbehave (claim another id, stall, flood) where a real node never would.

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tunnel_proto::relay::{RelayFrame, Speaks, SUBPROTOCOL, SUBPROTOCOL_V1};
use tunnel_proto::{join, NodeId, SecretKey};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn connect(url: &str) -> anyhow::Result<Ws> {
    connect_offering(url, SUBPROTOCOL).await
}

/// Connects offering `protocols` (a `Sec-WebSocket-Protocol` value): [`SUBPROTOCOL_V1`] alone
/// is what a node from before protocol versions sends.
pub async fn connect_offering(url: &str, protocols: &'static str) -> anyhow::Result<Ws> {
    let mut req = url.into_client_request()?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(protocols));
    let (ws, response) = tokio_tungstenite::connect_async(req).await?;
    let agreed = response.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok());
    if protocols == SUBPROTOCOL_V1 && agreed != Some(SUBPROTOCOL_V1) {
        bail!("a v1 client was answered with subprotocol {agreed:?}");
    }
    Ok(ws)
}

pub async fn next_frame(ws: &mut Ws) -> anyhow::Result<RelayFrame> {
    loop {
        match ws.next().await.context("connection closed")?? {
            Message::Binary(b) => return Ok(RelayFrame::decode(&b)?),
            Message::Close(_) => bail!("closed by the relay"),
            _ => continue,
        }
    }
}

/// The next frame that is not presence (`PeerJoined`/`PeerLeft`).
pub async fn next_non_presence(ws: &mut Ws) -> anyhow::Result<RelayFrame> {
    loop {
        match next_frame(ws).await? {
            RelayFrame::PeerJoined { .. } | RelayFrame::PeerLeft { .. } => continue,
            other => return Ok(other),
        }
    }
}

pub async fn send(ws: &mut Ws, frame: &RelayFrame) -> anyhow::Result<()> {
    Ok(ws.send(Message::Binary(frame.encode())).await?)
}

/// Reads the challenge and answers it claiming `claimed`, proving with `key` (which holds
/// `claimed` only if the client is honest). Returns the relay's answer.
pub async fn join_as(ws: &mut Ws, room_id: [u8; 32], key: &SecretKey, claimed: NodeId) -> anyhow::Result<RelayFrame> {
    let RelayFrame::Challenge { nonce, relay_key, speaks } = next_frame(ws).await? else {
        bail!("expected a challenge")
    };
    let proof = join::prove(key, &nonce, &relay_key, &room_id).unwrap_or([0; 32]);
    // Answer in the layout the relay's challenge used: v1 has no version fields.
    let speaks = if speaks.version >= 2 { Speaks::THIS } else { Speaks::V1 };
    send(ws, &RelayFrame::Join { room_id, node_id: claimed, proof, speaks }).await?;
    next_frame(ws).await
}

/// An honest join at the room's path, as a node joins; returns the connection and this
/// client's id.
pub async fn joined(url: &str, room_id: [u8; 32]) -> anyhow::Result<(Ws, SecretKey)> {
    joined_offering(url, room_id, SUBPROTOCOL).await
}

/// [`joined`], offering `protocols`.
pub async fn joined_offering(url: &str, room_id: [u8; 32], protocols: &'static str) -> anyhow::Result<(Ws, SecretKey)> {
    let mut ws = connect_offering(&room_url(url, &room_id), protocols).await?;
    let key = SecretKey::generate(&mut rand::rngs::OsRng);
    match join_as(&mut ws, room_id, &key, key.public()).await? {
        RelayFrame::Welcome { .. } => Ok((ws, key)),
        other => bail!("join refused: {other:?}"),
    }
}

/// `base` (a relay URL without a path) with the room's path, as a node connects.
pub fn room_url(base: &str, room_id: &[u8; 32]) -> String {
    format!("{}{}", base.trim_end_matches('/'), tunnel_proto::relay::room_path(room_id))
}
