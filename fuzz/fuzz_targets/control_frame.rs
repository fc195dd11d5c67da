//! Control-socket frames, as the node reads a client's (the CLI, `tunnel mcp`) and a client
//! reads the node's: no panic and no allocation past the frame limit on any bytes, and a
//! request that decodes encodes back to itself.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tunnel_node::control::{read_frame, ControlRequest, ControlResponse};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("runtime"))
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        // A stream of frames, as the socket delivers them: read until the first error or the end.
        let mut stream = data;
        while let Ok(Some(_)) = read_frame::<ControlRequest, _>(&mut stream).await {}
        let mut stream = data;
        while let Ok(Some(_)) = read_frame::<ControlResponse, _>(&mut stream).await {}
    });
    if let Ok(request) = postcard::from_bytes::<ControlRequest>(data) {
        let again = postcard::to_allocvec(&request).expect("a decoded request encodes");
        assert_eq!(postcard::from_bytes::<ControlRequest>(&again).expect("and decodes again"), request);
    }
});
