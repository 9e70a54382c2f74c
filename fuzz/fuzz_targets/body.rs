//! Commit bodies, layout paths and vCards: never panic; a body that parses re-encodes
//! canonically and parses to the same body.
#![no_main]
use libfuzzer_sys::fuzz_target;
use swarm_api::body::Body;
use swarm_api::layout::Path;

fuzz_target!(|data: &[u8]| {
    let _ = swarm_api::validate::check_vcard(data, false);
    let _ = swarm_api::validate::check_vcard(data, true);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Path::parse(text);
    if let Ok(b) = Body::parse(text) {
        let again = Body::parse(&b.to_message()).expect("a canonical body parses");
        assert_eq!(again.to_message(), b.to_message());
    }
});
