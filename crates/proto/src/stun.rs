//! STUN binding requests and responses (RFC 8489), the little a node needs to learn its
//! public address and a relay needs to tell it.
//!
//! ```text
//! 0                   1                   2                   3
//! |0 0|  message type (14 bits) |        message length          |
//! |                    magic cookie 0x2112A442                    |
//! |                 transaction id (96 bits) ...                  |
//! attributes: type u16, length u16, value padded to 4 bytes
//! ```
//!
//! The first two bits are zero, so STUN shares a UDP socket with QUIC (whose first byte has
//! the 0x40 bit set) and is told apart by its first byte and the cookie (RFC 7983).
//!
//! A server must never be an amplifier: [`binding_response`] answers only a request at least
//! as long as the answer. [`binding_request`] pads itself (with a SOFTWARE attribute, which
//! every server may ignore) so that our own requests always qualify.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_SOFTWARE: u16 = 0x8022;
/// Enough SOFTWARE text that a request outweighs the largest answer (IPv6: 44 bytes).
const SOFTWARE: &[u8; 24] = b"tunnel direct-path probe";

pub type TransactionId = [u8; 12];

/// Whether a datagram looks like STUN (RFC 7983 demultiplexing plus the cookie).
pub fn is_stun(b: &[u8]) -> bool {
    b.len() >= HEADER_LEN && b[0] & 0xC0 == 0 && b[4..8] == MAGIC_COOKIE.to_be_bytes()
}

/// A binding request, padded so that no server answer is larger than it.
pub fn binding_request(txid: &TransactionId) -> Vec<u8> {
    let mut out = header(BINDING_REQUEST, 4 + SOFTWARE.len(), txid);
    push_attr(&mut out, ATTR_SOFTWARE, SOFTWARE);
    out
}

/// The transaction id of a binding request; `None` for anything else.
pub fn parse_binding_request(b: &[u8]) -> Option<TransactionId> {
    let (ty, txid, _) = parse_header(b)?;
    (ty == BINDING_REQUEST).then_some(txid)
}

/// The answer to a binding request from `from`, or `None` when the answer would be larger
/// than the request (a spoofed source must not get more bytes than the sender spent).
pub fn binding_response(request: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    let txid = parse_binding_request(request)?;
    let value = xor_address(from, &txid);
    let mut out = header(BINDING_SUCCESS, 4 + value.len(), &txid);
    push_attr(&mut out, ATTR_XOR_MAPPED_ADDRESS, &value);
    (out.len() <= request.len()).then_some(out)
}

/// The mapped address in a binding success response: `(transaction id, address)`.
pub fn parse_binding_response(b: &[u8]) -> Option<(TransactionId, SocketAddr)> {
    let (ty, txid, mut attrs) = parse_header(b)?;
    if ty != BINDING_SUCCESS {
        return None;
    }
    let mut plain = None;
    while attrs.len() >= 4 {
        let ty = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + len)?;
        match ty {
            ATTR_XOR_MAPPED_ADDRESS => return Some((txid, unxor_address(value, &txid)?)),
            ATTR_MAPPED_ADDRESS => plain = plain.or_else(|| address(value)),
            _ => {}
        }
        attrs = attrs.get((4 + len).next_multiple_of(4)..).unwrap_or_default();
    }
    plain.map(|a| (txid, a))
}

fn header(ty: u16, attrs_len: usize, txid: &TransactionId) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + attrs_len);
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&u16::try_from(attrs_len).expect("small attributes").to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(txid);
    out
}

fn push_attr(out: &mut Vec<u8>, ty: u16, value: &[u8]) {
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&u16::try_from(value.len()).expect("small attribute").to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Type, transaction id and attributes of a well-formed STUN message.
fn parse_header(b: &[u8]) -> Option<(u16, TransactionId, &[u8])> {
    if !is_stun(b) {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    if len % 4 != 0 || b.len() != HEADER_LEN + len {
        return None;
    }
    let txid = b[8..20].try_into().expect("12 bytes");
    Some((u16::from_be_bytes([b[0], b[1]]), txid, &b[HEADER_LEN..]))
}

/// The XOR mask for an address: the cookie, then (IPv6) the transaction id.
fn mask(txid: &TransactionId) -> [u8; 16] {
    let mut m = [0; 16];
    m[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m[4..].copy_from_slice(txid);
    m
}

fn xor_address(addr: SocketAddr, txid: &TransactionId) -> Vec<u8> {
    let m = mask(txid);
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let (family, ip): (u8, Vec<u8>) = match addr.ip() {
        IpAddr::V4(ip) => (1, ip.octets().iter().zip(m).map(|(a, b)| a ^ b).collect()),
        IpAddr::V6(ip) => (2, ip.octets().iter().zip(m).map(|(a, b)| a ^ b).collect()),
    };
    let mut out = vec![0, family];
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&ip);
    out
}

fn unxor_address(value: &[u8], txid: &TransactionId) -> Option<SocketAddr> {
    let m = mask(txid);
    let mut plain = value.to_vec();
    let port_mask = ((MAGIC_COOKIE >> 16) as u16).to_be_bytes();
    *plain.get_mut(2)? ^= port_mask[0];
    *plain.get_mut(3)? ^= port_mask[1];
    for (b, k) in plain.iter_mut().skip(4).zip(m) {
        *b ^= k;
    }
    address(&plain)
}

/// A MAPPED-ADDRESS value: reserved, family, port, address.
fn address(v: &[u8]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]);
    let ip = match (v.get(1)?, v.len()) {
        (1, 8) => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&v[4..8]).ok()?)),
        (2, 20) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&v[4..20]).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_response_round_trip_for_both_families() {
        let txid = [7; 12];
        let req = binding_request(&txid);
        assert!(is_stun(&req));
        assert_eq!(parse_binding_request(&req), Some(txid));
        for from in ["203.0.113.2:41641", "[2001:db8::1]:3478"] {
            let from: SocketAddr = from.parse().unwrap();
            let resp = binding_response(&req, from).expect("our padded request is answered");
            assert!(resp.len() <= req.len(), "never amplifies");
            assert_eq!(parse_binding_response(&resp), Some((txid, from)));
            assert_eq!(parse_binding_request(&resp), None, "a response is not a request");
        }
    }

    /// RFC 5769 section 2.2: a sample IPv4 response (with SOFTWARE, XOR-MAPPED-ADDRESS,
    /// MESSAGE-INTEGRITY and FINGERPRINT) from a standard server.
    #[test]
    fn parses_the_rfc_5769_ipv4_response() {
        let hex = "0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220\
                   002000080001a147e112a643000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7\
                   80280004c07d4c96";
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let (txid, addr) = parse_binding_response(&bytes).expect("parses");
        assert_eq!(txid, bytes[8..20]);
        assert_eq!(addr, "192.0.2.1:32853".parse().unwrap());
    }

    #[test]
    fn a_bare_request_is_not_answered_and_garbage_is_rejected() {
        let txid = [1; 12];
        let bare = header(BINDING_REQUEST, 0, &txid);
        assert_eq!(parse_binding_request(&bare), Some(txid));
        assert!(binding_response(&bare, "192.0.2.1:1".parse().unwrap()).is_none(), "20 bytes in, 32 out: refused");
        let mut truncated = binding_request(&txid);
        truncated.pop();
        assert!(parse_binding_request(&truncated).is_none());
        assert!(!is_stun(&[0x40; 40]), "a QUIC short header is not STUN");
        let mut resp = binding_response(&binding_request(&txid), "192.0.2.1:1".parse().unwrap()).unwrap();
        resp[22] = 0xff; // attribute length beyond the message
        assert!(parse_binding_response(&resp).is_none());
    }
}
