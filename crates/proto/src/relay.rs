//! The relay protocol (`tunnel-relay.v2`, still serving `v1`): node <-> relay over WebSocket
//! binary messages.
//!
//! One WebSocket message carries exactly one frame. Layout: a type byte, then the fields in
//! order. Fixed-size fields are raw bytes; `u16`/`u32`/`u64` are big-endian; variable fields
//! are a `u32` big-endian length followed by that many bytes. Strings are UTF-8. There is no
//! padding and no trailing data: extra bytes are an error.
//!
//! | type | frame        | fields (after the type byte)                                   | direction |
//! |------|--------------|----------------------------------------------------------------|-----------|
//! | 0x01 | Challenge    | nonce `[32]`, relay_key `[32]`, (v2) version `u16`, features `u64` | relay->node |
//! | 0x02 | Join         | room_id `[32]`, node_id `[32]`, proof `[32]`, (v2) version `u16`, features `u64` | node->relay |
//! | 0x03 | Welcome      | observed_addr `str`, peer count `u32`, peers `[32]` * count    | relay->node |
//! | 0x04 | PeerJoined   | node_id `[32]`                                                 | relay->node |
//! | 0x05 | PeerLeft     | node_id `[32]`                                                 | relay->node |
//! | 0x06 | Send         | to `[32]`, payload `bytes`                                     | node->relay |
//! | 0x07 | Recv         | from `[32]`, payload `bytes`                                   | relay->node |
//! | 0x08 | Dropped      | to `[32]`                                                      | relay->node |
//! | 0x09 | Ping         | data `u64`                                                     | both      |
//! | 0x0a | Pong         | data `u64`                                                     | both      |
//! | 0x0b | Restarting   | reconnect_in_ms `u32`                                          | relay->node |
//! | 0x0c | Error        | code `u16`, text `str`                                         | relay->node |
//!
//! `Send` and `Recv` have the same layout on purpose: the relay forwards by rewriting the
//! type byte and the 32-byte address in place ([`send_to_recv_in_place`]), without copying
//! the payload. The relay stamps `from` itself, so a node cannot forge a source.
//!
//! ## Versions
//! The node offers the subprotocols `tunnel-relay.v2, tunnel-relay.v1`; the relay answers with
//! the newest it speaks, so any pairing of old and new nodes and relays connects. From v2 on,
//! `Challenge` and `Join` end with the sender's [`Speaks`] (its version and feature bits), and
//! bytes after that are extensions of later versions, ignored. A feature is used only when
//! both sides set its bit; unknown bits are ignored. A v1 `Challenge`/`Join` has neither.
//!
//! From v2 on, neither side ends a connection over a frame it does not expect (an unknown type,
//! a frame in the wrong direction, a malformed body): it drops it and counts it. Only a failed
//! join or a broken WebSocket ends a connection. (v1 relays closed on such frames; the node has
//! always tolerated them since v2.)
//!
//! Test vectors shared with the Cloudflare worker: `tests/vectors/relay_frames.json`.

use crate::keys::NodeId;

/// Largest `Send`/`Recv` payload.
pub const MAX_PAYLOAD: usize = 256 * 1024;
/// Largest whole frame: a `Send` with a full payload.
pub const MAX_FRAME: usize = 1 + 32 + 4 + MAX_PAYLOAD;
/// Largest string field (observed address, error text).
pub const MAX_TEXT: usize = 1024;
/// Most peers a `Welcome` may list.
pub const MAX_WELCOME_PEERS: usize = 65_536;
/// WebSocket subprotocol of this version.
pub const SUBPROTOCOL: &str = "tunnel-relay.v2";
/// The first version's subprotocol, still spoken to peers that offer nothing newer.
pub const SUBPROTOCOL_V1: &str = "tunnel-relay.v1";
/// What a node offers, newest first. No space after the comma: tungstenite's client compares
/// the relay's choice with the offer split on commas, untrimmed.
pub const SUBPROTOCOL_OFFER: &str = "tunnel-relay.v2,tunnel-relay.v1";

/// A side's relay protocol version and feature bits (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speaks {
    pub version: u16,
    pub features: u64,
}

impl Speaks {
    /// A v1 peer: no version fields on the wire.
    pub const V1: Self = Self { version: 1, features: 0 };
    /// This build. No feature bits are defined yet; the field exists so that later versions
    /// can add one without a new subprotocol.
    pub const THIS: Self = Self { version: 2, features: 0 };

    /// What the subprotocol a connection agreed on implies for the frames' layout.
    pub fn for_subprotocol(protocol: &str) -> Option<Self> {
        match protocol {
            SUBPROTOCOL => Some(Self::THIS),
            SUBPROTOCOL_V1 => Some(Self::V1),
            _ => None,
        }
    }

    /// Features both sides have.
    pub fn common(self, other: Self) -> u64 {
        self.features & other.features
    }

    fn encoded_len(self) -> usize {
        if self.version >= 2 {
            10
        } else {
            0
        }
    }

    fn put(self, out: &mut Vec<u8>) {
        if self.version >= 2 {
            out.extend_from_slice(&self.version.to_be_bytes());
            out.extend_from_slice(&self.features.to_be_bytes());
        }
    }

    /// The fields at the end of a `Challenge`/`Join`: none is v1; anything after them is a
    /// later version's extension.
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        if r.buf.is_empty() {
            return Ok(Self::V1);
        }
        let speaks = Self { version: r.u16()?, features: r.u64()? };
        r.buf = &[];
        Ok(speaks)
    }
}

/// The path a node opens a room at: `/r/` and the room id in lowercase hex. Both relays serve
/// it; the Cloudflare relay routes on it (one Durable Object per room) before any frame, so
/// the room id, never its name or token, is all the path says.
pub fn room_path(room_id: &[u8; 32]) -> String {
    let mut path = String::with_capacity(3 + 64);
    path.push_str("/r/");
    for b in room_id {
        path.push_str(&format!("{b:02x}"));
    }
    path
}

/// The room id a [`room_path`] names, if `path` is one.
pub fn parse_room_path(path: &str) -> Option<[u8; 32]> {
    let hex = path.strip_prefix("/r/")?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut id = [0u8; 32];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(id)
}

/// Why the relay closed a connection or refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BadFrame,
    AuthFailed,
    Replaced,
    RoomFull,
    HandshakeTimeout,
    TooLarge,
    ServerFull,
    Other(u16),
}

impl ErrorCode {
    pub fn to_u16(self) -> u16 {
        match self {
            Self::BadFrame => 1,
            Self::AuthFailed => 2,
            Self::Replaced => 3,
            Self::RoomFull => 4,
            Self::HandshakeTimeout => 5,
            Self::TooLarge => 6,
            Self::ServerFull => 7,
            Self::Other(c) => c,
        }
    }

    pub fn from_u16(c: u16) -> Self {
        match c {
            1 => Self::BadFrame,
            2 => Self::AuthFailed,
            3 => Self::Replaced,
            4 => Self::RoomFull,
            5 => Self::HandshakeTimeout,
            6 => Self::TooLarge,
            7 => Self::ServerFull,
            c => Self::Other(c),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayFrame {
    Challenge { nonce: [u8; 32], relay_key: NodeId, speaks: Speaks },
    Join { room_id: [u8; 32], node_id: NodeId, proof: [u8; 32], speaks: Speaks },
    Welcome { observed_addr: String, peers: Vec<NodeId> },
    PeerJoined { node_id: NodeId },
    PeerLeft { node_id: NodeId },
    Send { to: NodeId, payload: Vec<u8> },
    Recv { from: NodeId, payload: Vec<u8> },
    Dropped { to: NodeId },
    Ping { data: u64 },
    Pong { data: u64 },
    Restarting { reconnect_in_ms: u32 },
    Error { code: ErrorCode, text: String },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("empty relay frame")]
    Empty,
    #[error("unknown relay frame type 0x{0:02x}")]
    UnknownType(u8),
    #[error("relay frame truncated: {frame} needs {needed} more bytes")]
    Truncated { frame: &'static str, needed: usize },
    #[error("relay frame {frame} has {extra} trailing bytes")]
    Trailing { frame: &'static str, extra: usize },
    #[error("relay frame {frame}: {field} length {len} exceeds the limit {max}")]
    TooLong { frame: &'static str, field: &'static str, len: usize, max: usize },
    #[error("relay frame {frame}: {field} is not UTF-8")]
    NotUtf8 { frame: &'static str, field: &'static str },
}

impl RelayFrame {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Challenge { .. } => "Challenge",
            Self::Join { .. } => "Join",
            Self::Welcome { .. } => "Welcome",
            Self::PeerJoined { .. } => "PeerJoined",
            Self::PeerLeft { .. } => "PeerLeft",
            Self::Send { .. } => "Send",
            Self::Recv { .. } => "Recv",
            Self::Dropped { .. } => "Dropped",
            Self::Ping { .. } => "Ping",
            Self::Pong { .. } => "Pong",
            Self::Restarting { .. } => "Restarting",
            Self::Error { .. } => "Error",
        }
    }

    /// Encodes into a fresh buffer. Panics only on a caller bug: a payload or text over the
    /// limits, which no decoder would accept either.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        match self {
            Self::Challenge { nonce, relay_key, speaks } => {
                out.push(0x01);
                out.extend_from_slice(nonce);
                out.extend_from_slice(relay_key.as_bytes());
                speaks.put(&mut out);
            }
            Self::Join { room_id, node_id, proof, speaks } => {
                out.push(0x02);
                out.extend_from_slice(room_id);
                out.extend_from_slice(node_id.as_bytes());
                out.extend_from_slice(proof);
                speaks.put(&mut out);
            }
            Self::Welcome { observed_addr, peers } => {
                out.push(0x03);
                put_var(&mut out, observed_addr.as_bytes(), MAX_TEXT);
                assert!(peers.len() <= MAX_WELCOME_PEERS, "too many peers for a Welcome");
                out.extend_from_slice(&(peers.len() as u32).to_be_bytes());
                for p in peers {
                    out.extend_from_slice(p.as_bytes());
                }
            }
            Self::PeerJoined { node_id } => put_id(&mut out, 0x04, node_id),
            Self::PeerLeft { node_id } => put_id(&mut out, 0x05, node_id),
            Self::Send { to, payload } => {
                put_id(&mut out, 0x06, to);
                put_var(&mut out, payload, MAX_PAYLOAD);
            }
            Self::Recv { from, payload } => {
                put_id(&mut out, 0x07, from);
                put_var(&mut out, payload, MAX_PAYLOAD);
            }
            Self::Dropped { to } => put_id(&mut out, 0x08, to),
            Self::Ping { data } => {
                out.push(0x09);
                out.extend_from_slice(&data.to_be_bytes());
            }
            Self::Pong { data } => {
                out.push(0x0a);
                out.extend_from_slice(&data.to_be_bytes());
            }
            Self::Restarting { reconnect_in_ms } => {
                out.push(0x0b);
                out.extend_from_slice(&reconnect_in_ms.to_be_bytes());
            }
            Self::Error { code, text } => {
                out.push(0x0c);
                out.extend_from_slice(&code.to_u16().to_be_bytes());
                put_var(&mut out, truncate_utf8(text, MAX_TEXT).as_bytes(), MAX_TEXT);
            }
        }
        debug_assert_eq!(out.len(), self.encoded_len());
        out
    }

    fn encoded_len(&self) -> usize {
        1 + match self {
            Self::Challenge { speaks, .. } => 64 + speaks.encoded_len(),
            Self::Join { speaks, .. } => 96 + speaks.encoded_len(),
            Self::Welcome { observed_addr, peers } => 4 + observed_addr.len() + 4 + 32 * peers.len(),
            Self::PeerJoined { .. } | Self::PeerLeft { .. } | Self::Dropped { .. } => 32,
            Self::Send { payload, .. } | Self::Recv { payload, .. } => 36 + payload.len(),
            Self::Ping { .. } | Self::Pong { .. } => 8,
            Self::Restarting { .. } => 4,
            Self::Error { text, .. } => 2 + 4 + truncate_utf8(text, MAX_TEXT).len(),
        }
    }

    /// Decodes one whole frame. Lengths are checked against the limits and against the bytes
    /// present before anything is allocated.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let (&ty, rest) = buf.split_first().ok_or(DecodeError::Empty)?;
        let frame = match ty {
            0x01 => "Challenge",
            0x02 => "Join",
            0x03 => "Welcome",
            0x04 => "PeerJoined",
            0x05 => "PeerLeft",
            0x06 => "Send",
            0x07 => "Recv",
            0x08 => "Dropped",
            0x09 => "Ping",
            0x0a => "Pong",
            0x0b => "Restarting",
            0x0c => "Error",
            other => return Err(DecodeError::UnknownType(other)),
        };
        let mut r = Reader { buf: rest, frame };
        let out = match ty {
            0x01 => Self::Challenge { nonce: r.array()?, relay_key: r.id()?, speaks: Speaks::read(&mut r)? },
            0x02 => {
                Self::Join { room_id: r.array()?, node_id: r.id()?, proof: r.array()?, speaks: Speaks::read(&mut r)? }
            }
            0x03 => {
                let observed_addr = r.text("observed_addr")?;
                let count = r.u32()? as usize;
                if count > MAX_WELCOME_PEERS {
                    return Err(DecodeError::TooLong { frame, field: "peers", len: count, max: MAX_WELCOME_PEERS });
                }
                r.need(count * 32)?;
                let peers = (0..count).map(|_| r.id()).collect::<Result<_, _>>()?;
                Self::Welcome { observed_addr, peers }
            }
            0x04 => Self::PeerJoined { node_id: r.id()? },
            0x05 => Self::PeerLeft { node_id: r.id()? },
            0x06 => Self::Send { to: r.id()?, payload: r.var("payload", MAX_PAYLOAD)?.to_vec() },
            0x07 => Self::Recv { from: r.id()?, payload: r.var("payload", MAX_PAYLOAD)?.to_vec() },
            0x08 => Self::Dropped { to: r.id()? },
            0x09 => Self::Ping { data: r.u64()? },
            0x0a => Self::Pong { data: r.u64()? },
            0x0b => Self::Restarting { reconnect_in_ms: r.u32()? },
            _ => Self::Error { code: ErrorCode::from_u16(r.u16()?), text: r.text("text")? },
        };
        r.finish()?;
        Ok(out)
    }
}

/// Checks that `buf` is a well-formed `Send` frame and turns it into the `Recv` the relay
/// forwards, in place: same length, type byte and address rewritten. Returns the destination.
pub fn send_to_recv_in_place(buf: &mut [u8], from: &NodeId) -> Result<NodeId, DecodeError> {
    let frame = "Send";
    let mut r = Reader { buf: buf.get(1..).ok_or(DecodeError::Empty)?, frame };
    if buf[0] != 0x06 {
        return Err(DecodeError::UnknownType(buf[0]));
    }
    let to = r.id()?;
    r.var("payload", MAX_PAYLOAD)?;
    r.finish()?;
    buf[0] = 0x07;
    buf[1..33].copy_from_slice(from.as_bytes());
    Ok(to)
}

/// Bytes before the payload in a `Send` (and `Recv`) frame.
pub const SEND_HEADER_LEN: usize = 1 + 32 + 4;

/// Writes a `Send` header into the first [`SEND_HEADER_LEN`] bytes of `frame`, for the
/// payload that fills the rest. Lets a sender seal straight into the frame.
pub fn write_send_header(frame: &mut [u8], to: &NodeId) {
    let len = frame.len() - SEND_HEADER_LEN;
    assert!(len <= MAX_PAYLOAD, "relay payload over its limit");
    frame[0] = TYPE_SEND;
    frame[1..33].copy_from_slice(to.as_bytes());
    frame[33..37].copy_from_slice(&(len as u32).to_be_bytes());
}

/// The frame type byte, if any: lets the relay route `Send` without a full decode.
pub fn frame_type(buf: &[u8]) -> Option<u8> {
    buf.first().copied()
}

/// Type byte of `Send`.
pub const TYPE_SEND: u8 = 0x06;

fn put_id(out: &mut Vec<u8>, ty: u8, id: &NodeId) {
    out.push(ty);
    out.extend_from_slice(id.as_bytes());
}

fn put_var(out: &mut Vec<u8>, bytes: &[u8], max: usize) {
    assert!(bytes.len() <= max, "relay frame field over its limit");
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Reader<'a> {
    buf: &'a [u8],
    frame: &'static str,
}

impl<'a> Reader<'a> {
    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { frame: self.frame, needed: n - self.buf.len() });
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        self.need(n)?;
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }

    fn id(&mut self) -> Result<NodeId, DecodeError> {
        Ok(NodeId::from_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn var(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(DecodeError::TooLong { frame: self.frame, field, len, max });
        }
        self.take(len)
    }

    fn text(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let bytes = self.var(field, MAX_TEXT)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::NotUtf8 { frame: self.frame, field })
    }

    fn finish(self) -> Result<(), DecodeError> {
        if !self.buf.is_empty() {
            return Err(DecodeError::Trailing { frame: self.frame, extra: self.buf.len() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_travel_in_challenge_and_join_and_later_extensions_are_ignored() {
        let key = NodeId::from_bytes([9; 32]);
        let v1 = RelayFrame::Challenge { nonce: [1; 32], relay_key: key, speaks: Speaks::V1 };
        assert_eq!(v1.encode().len(), 65, "a v1 Challenge carries no version fields");
        assert_eq!(RelayFrame::decode(&v1.encode()).unwrap(), v1);
        let v2 = RelayFrame::Join { room_id: [2; 32], node_id: key, proof: [3; 32], speaks: Speaks::THIS };
        assert_eq!(RelayFrame::decode(&v2.encode()).unwrap(), v2);
        // A later version: a higher number, unknown feature bits, and fields of its own.
        let later = Speaks { version: 7, features: 0xffff_0000_0000_0001 };
        let mut bytes = RelayFrame::Join { room_id: [2; 32], node_id: key, proof: [3; 32], speaks: later }.encode();
        bytes.extend_from_slice(b"fields of version 7");
        let RelayFrame::Join { speaks, .. } = RelayFrame::decode(&bytes).unwrap() else { panic!("not a Join") };
        assert_eq!(speaks, later);
        assert_eq!(Speaks::THIS.common(later), 0, "no feature is shared that this build does not know");
        // Half a version field is still an error.
        let mut cut = v2.encode();
        cut.truncate(cut.len() - 4);
        assert!(matches!(RelayFrame::decode(&cut), Err(DecodeError::Truncated { .. })));
        assert_eq!(Speaks::for_subprotocol(SUBPROTOCOL), Some(Speaks::THIS));
        assert_eq!(Speaks::for_subprotocol(SUBPROTOCOL_V1), Some(Speaks::V1));
        assert_eq!(Speaks::for_subprotocol("tunnel-relay.v0"), None);
    }

    #[test]
    fn room_paths_round_trip_and_refuse_anything_else() {
        let id: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
        let path = room_path(&id);
        assert_eq!(path.len(), 3 + 64);
        assert_eq!(parse_room_path(&path), Some(id));
        for bad in ["/", "/r/", "/r/00", &path.to_uppercase(), &format!("{path}0"), &path.replace('/', "\\")] {
            assert_eq!(parse_room_path(bad), None, "{bad}");
        }
    }
}
