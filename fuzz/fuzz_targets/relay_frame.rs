//! The relay frame decoder and the relay's in-place Send rewrite: no panic on any input, and
//! whatever decodes re-encodes to the same bytes (to a prefix of them for `Challenge` and
//! `Join`, whose later-version extensions are dropped).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunnel_proto::relay::{send_to_recv_in_place, RelayFrame};
use tunnel_proto::NodeId;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = RelayFrame::decode(data) {
        let again = frame.encode();
        match frame {
            RelayFrame::Challenge { .. } | RelayFrame::Join { .. } => assert_eq!(&data[..again.len()], &again[..]),
            _ => assert_eq!(again, data),
        }
    }
    let mut copy = data.to_vec();
    let _ = send_to_recv_in_place(&mut copy, &NodeId::from_bytes([7; 32]));
});
