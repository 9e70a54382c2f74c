//! DHT address records from arbitrary bytes: a typed error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = transport_dht::record::verify(data, 1_800_000_000, &|_| Vec::new());
});
