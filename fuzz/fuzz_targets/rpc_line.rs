//! JSON-RPC control lines: a call or a typed error, and every error is one well-formed
//! response line.
#![no_main]
use libfuzzer_sys::fuzz_target;
use swarm_api::host::rpc;

fuzz_target!(|data: &[u8]| {
    if let Err((id, e)) = rpc::parse(data) {
        let line = rpc::response(&id, Err(e));
        assert!(line.ends_with(b"\n") && !line[..line.len() - 1].contains(&b'\n'));
    }
});
