//! The STUN readers a node's UDP socket and the relay's STUN server run on every datagram
//! from the network: no panic, and a request answered is one that parses as a request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunnel_proto::stun;

fuzz_target!(|data: &[u8]| {
    let is_stun = stun::is_stun(data);
    let request = stun::parse_binding_request(data);
    if request.is_some() {
        assert!(is_stun, "a binding request must be recognised as STUN");
    }
    let from = "192.0.2.1:3478".parse().unwrap();
    if let Some(answer) = stun::binding_response(data, from) {
        let (txid, addr) = stun::parse_binding_response(&answer).expect("our own answer parses");
        assert_eq!(Some(txid), request);
        assert_eq!(addr, from);
    }
    let _ = stun::parse_binding_response(data);
});
